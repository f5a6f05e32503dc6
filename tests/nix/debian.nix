# Debian's dynamically linked tools (dash, coreutils, fakeroot, proot, shadow's useradd) put in
# the store, for fakeRootCommands without nixpkgs: fakeroot's LD_PRELOAD fakes root for dynamic
# programs only, so the commands cannot be busybox's. Their libraries come from the sandbox's
# /lib and /usr/lib, bound into the chroot too. `debianDir` holds them in bin/ (the tests copy
# them there), Debian's fakeroot script as bin/fakeroot.sh.
{ debianDir, sh }:
rec {
  debian = builtins.path { path = debianDir; name = "debian-tools"; };

  fakeroot = derivation {
    name = "fakeroot-debian";
    system = builtins.currentSystem;
    builder = sh;
    # In the sandbox's user namespace a chown to an unmapped id fails with EINVAL, which
    # Debian's fakeroot passes on (nixpkgs' is patched to swallow it): do not try for real.
    args = [ "-c" ''
      mkdir -p $out/bin
      sed -e "1s|.*|#!${debian}/bin/sh\nexport FAKEROOTDONTTRYCHOWN=1|" \
        -e "s|^FAKEROOT_BINDIR=.*|FAKEROOT_BINDIR=${debian}/bin|" \
        ${debian}/bin/fakeroot.sh > $out/bin/fakeroot
      chmod +x $out/bin/fakeroot
    '' ];
  };

  # What nix/ takes to run fakeRootCommands with them.
  nixArgs = {
    runtimeShell = "${debian}/bin/sh";
    coreutils = debian;
    inherit fakeroot;
    proot = debian;
    chrootBinds = [ "/lib" "/lib64" "/usr/lib" ];
  };
}
