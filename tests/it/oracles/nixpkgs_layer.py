"""Writes one store layer to stdout as nixpkgs' dockerTools writes it.

dockerTools (stream_layered_image.py) writes each layer with Python's tarfile in stream mode
and its default PAX format: the directories /nix and /nix/store (0755) first, then for each
store path, in the order given, the path and everything under it sorted as Paths sort, each
entry described by gettarinfo with its name made absolute again, hard links written as regular
files, and mtime, uid, gid, uname and gname set for every entry. This script does the same, so
that the test can compare our `--tar-compat nixpkgs` layers with Python's own output.

usage: nixpkgs_layer.py CONF.json > layer.tar
CONF: {"root": "/where/the/store/is/read" or "", "paths": [...], "mtime": 1, "uid": 0,
       "gid": 0, "uname": "root", "gname": "root"}
"""

import json
import pathlib
import sys
import tarfile


def main():
    with open(sys.argv[1]) as f:
        conf = json.load(f)
    root = conf["root"]

    def owned(info):
        info.mtime = conf["mtime"]
        info.uid = conf["uid"]
        info.gid = conf["gid"]
        info.uname = conf["uname"]
        info.gname = conf["gname"]
        return info

    with tarfile.open(fileobj=sys.stdout.buffer, mode="w|") as tar:
        for top in ("/nix", "/nix/store"):
            info = tarfile.TarInfo(top)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(owned(info))
        for store_path in conf["paths"]:
            on_disk = pathlib.Path(root + store_path)
            if on_disk.is_symlink():
                found = [on_disk]
            else:
                found = [on_disk, *on_disk.rglob("*")]
            for disk_name in sorted(found):
                name = store_path + str(disk_name)[len(str(on_disk)):]
                info = tar.gettarinfo(disk_name, arcname=name)
                info.name = "/" + info.name
                if info.islnk():
                    info.type = tarfile.REGTYPE
                    info.linkname = ""
                    info.size = disk_name.stat().st_size
                owned(info)
                if info.isfile():
                    with open(disk_name, "rb") as content:
                        tar.addfile(info, content)
                else:
                    tar.addfile(info)


main()
