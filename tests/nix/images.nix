# Images built by nix/default.nix for tests/nix_functions.rs, from real derivations made with a
# static busybox (no nixpkgs).
{ layeredGenDir, busyboxDir, nixDir ? null, sqliteDir ? null, debianDir ? null, maxLayers ? 10
, config ? { }, extra ? { }, signKey ? null }:
let
  busybox = builtins.path { path = busyboxDir; name = "busybox-static"; };
  sh = "${busybox}/bin/sh";
  layered = import ../../nix {
    layered-gen = builtins.path { path = layeredGenDir; name = "layered-gen"; };
    runtimeShell = sh;
    # Debian's nix-store and sqlite3, put in the store for includeNixDB (their libraries come
    # from the sandbox's /lib and /usr/lib).
    nix = if nixDir == null then null else builtins.path { path = nixDir; name = "nix"; };
    sqlite = if sqliteDir == null then null else builtins.path { path = sqliteDir; name = "sqlite"; };
  };
  debianTools = import ./debian.nix { inherit debianDir sh; };
  rooted = import ../../nix ({
    layered-gen = builtins.path { path = layeredGenDir; name = "layered-gen"; };
  } // debianTools.nixArgs);
  mk = name: script: derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = sh;
    args = [ "-c" script ];
  };
  lib = mk "libgreet-2.0" "mkdir -p $out/lib && echo 'greet() { echo \"hi $1\"; }' > $out/lib/greet.sh";
  app = mk "app-1.0" ''
    mkdir -p $out/bin
    printf '#!${sh}\n. ${lib}/lib/greet.sh\ngreet "$NAME"\n' > $out/bin/app
    chmod +x $out/bin/app
  '';
  app2 = mk "app2-1.0" ''
    mkdir -p $out/bin
    printf '#!${sh}\n. ${lib}/lib/greet.sh\ngreet "two $NAME"\n' > $out/bin/app2
    chmod +x $out/bin/app2
  '';
  common = {
    contents = [ busybox app ];
    inherit maxLayers;
    config = { Cmd = [ "/bin/app" ]; Env = [ "NAME=top" ]; } // config;
  };
in
rec {
  # Layers as derivations: busybox alone, and the app on it (busybox's paths left out).
  busyboxLayer = layered.buildLayer { deps = [ busybox ]; compressor = [ "gz" "zstd" ]; };
  appLayer = layered.buildLayer { deps = [ app ]; layers = [ busyboxLayer ]; };
  onLayers = layered.buildLayeredImage (common // {
    name = "layered-gen-test/on-layers";
    compressor = "none";
    layers = [ busyboxLayer appLayer ];
  });
  # A layer with busybox linked at /: the image runs its shell.
  shellLayer = layered.buildLayer { contents = [ busybox ]; name = "shell"; };
  onShellLayer = layered.buildLayeredImage {
    name = "layered-gen-test/on-shell-layer";
    contents = [ app ];
    layers = [ shellLayer ];
    compressor = "none";
    config.Cmd = [ "/bin/sh" "-c" "echo from the shell layer" ];
  };
  onLayersOci = layered.buildLayeredImage (common // {
    name = "layered-gen-test/on-layers";
    format = "oci";
    layers = [ busyboxLayer ];
  });
  onLayersStream = layered.streamLayeredImage (common // {
    name = "layered-gen-test/on-layers";
    layers = [ busyboxLayer appLayer ];
  });
  layerTwice = layered.buildLayeredImage (common // {
    name = "layered-gen-test/layer-twice";
    layers = [ busyboxLayer busyboxLayer ];
  });
  layersOverlap = layered.buildLayeredImage (common // {
    name = "layered-gen-test/layers-overlap";
    layers = [ busyboxLayer (layered.buildLayer { deps = [ busybox app ]; }) ];
  });
  # layerDerivations: the same plan, as one derivation and as a derivation per layer; a
  # sibling image sharing busybox and libgreet.
  splitArgs = common // { name = "layered-gen-test/split"; compressor = "none"; layering = "reuse"; };
  whole = layered.buildLayeredImage splitArgs;
  split = layered.buildLayeredImage (splitArgs // { layerDerivations = true; });
  sibling = layered.buildLayeredImage (splitArgs // {
    name = "layered-gen-test/sibling";
    contents = [ busybox app2 ];
    config.Cmd = [ "/bin/app2" ];
    layerDerivations = true;
  });

  # The common image with `extra` arguments, for the argument checks.
  custom = layered.buildLayeredImage (common // { name = "layered-gen-test/custom"; compressor = "none"; } // extra);
  customStream = layered.streamLayeredImage (common // { name = "layered-gen-test/custom"; } // extra);
  # contents as one derivation, and a name with capitals (nixpkgs lower-cases it).
  single = layered.buildLayeredImage {
    name = "Layered-Gen-Test/Single";
    contents = busybox;
    compressor = "none";
    config.Cmd = [ "/bin/sh" "-c" "echo single" ];
  };
  base = layered.buildLayeredImage {
    name = "registry.example:5000/layered-gen-test/base";
    contents = [ busybox ];
    config = { Env = [ "FROM_BASE=yes" "NAME=base" ]; };
    compressor = "none";
  };
  # A base with a Cmd, and images on it keeping its whole config (Docker's FROM, our default)
  # or its Env only (nixpkgs' dockerTools).
  cmdBase = layered.buildLayeredImage {
    name = "layered-gen-test/cmd-base";
    contents = [ busybox ];
    config = { Cmd = [ "/bin/sh" "-c" "echo from the base" ]; Env = [ "FROM_BASE=yes" ]; };
    compressor = "none";
  };
  onCmdBase = layered.buildLayeredImage { name = "layered-gen-test/on-cmd-base"; fromImage = cmdBase; compressor = "none"; };
  onCmdBaseEnvOnly = layered.buildLayeredImage {
    name = "layered-gen-test/on-cmd-base";
    fromImage = cmdBase;
    fromImageConfig = "env";
    compressor = "none";
  };
  # base's arguments, streamed: the same tag, the same bytes.
  baseStream = layered.streamLayeredImage {
    name = "registry.example:5000/layered-gen-test/base";
    contents = [ busybox ];
    config = { Env = [ "FROM_BASE=yes" "NAME=base" ]; };
  };
  # The default compressor (gz) as a base, as dockerTools users write it.
  baseGz = layered.buildLayeredImage {
    name = "layered-gen-test/base-gz";
    contents = [ busybox ];
    config = { Env = [ "FROM_BASE=gz" ]; };
  };
  onGz = layered.buildLayeredImage (common // {
    name = "layered-gen-test/on-gz";
    fromImage = baseGz;
    compressor = "none";
  });
  top = layered.buildLayeredImage (common // {
    name = "layered-gen-test/top";
    fromImage = base;
    tag = "nix";
    compressor = "none";
    perms = [ { path = "/var/lib/app"; recursive = true; uid = 1000; gid = 1000; mode = "0750"; } ];
    extraCommands = "mkdir -p var/lib/app && echo state > var/lib/app/state";
  });
  topStream = layered.streamLayeredImage (common // {
    name = "layered-gen-test/top";
    fromImage = base;
    tag = "nix";
    perms = [ { path = "/var/lib/app"; recursive = true; uid = 1000; gid = 1000; mode = "0750"; } ];
    extraCommands = "mkdir -p var/lib/app && echo state > var/lib/app/state";
  });
  zstd = layered.buildLayeredImage (common // { name = "layered-gen-test/zstd"; compressor = "zstd"; layering = "reuse"; });
  oci = layered.buildLayeredImage (common // { name = "layered-gen-test/oci"; format = "oci"; tag = "oci"; });
  tagged = layered.buildLayeredImage (common // {
    name = "layered-gen-test/tagged";
    tag = "main";
    extraTags = [ "latest" "v1" ];
    compressor = "none";
  });
  taggedStream = layered.streamLayeredImage (common // {
    name = "layered-gen-test/tagged";
    tag = "main";
    extraTags = [ "latest" "v1" ];
  });
  merged = layered.mergeImages [ base tagged baseGz ];
  amd64 = layered.buildLayeredImage (common // {
    name = "layered-gen-test/multi";
    architecture = "amd64";
    compressor = "none";
  });
  arm64 = layered.buildLayeredImage (common // {
    name = "layered-gen-test/multi";
    architecture = "aarch64-linux";
    compressor = "none";
  });
  multi = layered.buildImageIndex {
    name = "layered-gen-test/multi";
    images = [ amd64 arm64 ];
  };
  # Not reproducible on purpose: what `nix-build --check` then `layered-gen diff` explain.
  now = layered.buildLayeredImage (common // {
    name = "layered-gen-test/now";
    created = "now";
    compressor = "none";
  });
  # extraCommands as the nixpkgs manual writes them: run in the tree the contents make (here
  # a contents link is renamed), modes that the store would drop, and a link to a store path
  # that only the commands mention.
  certs = mk "certs-1.0" "mkdir -p $out/etc/ssl/certs && echo 'a certificate' > $out/etc/ssl/certs/ca.crt";
  commandsArgs = {
    name = "layered-gen-test/commands";
    tag = "cmds";
    contents = [ busybox app ];
    extraCommands = ''
      mkdir -m 1777 tmp
      mkdir -p etc data
      ln -s ${certs}/etc/ssl etc/ssl
      chmod 0750 data
      echo secret > data/key
      chmod 0600 data/key
      mv bin/app bin/greet
    '';
    config.Cmd = [ "/bin/greet" ];
  };
  commands = layered.buildLayeredImage (commandsArgs // { compressor = "none"; });
  commandsStream = layered.streamLayeredImage commandsArgs;
  # includeNixDB: the image's own store paths registered in a Nix database.
  withDbArgs = common // {
    name = "layered-gen-test/with-db";
    tag = "db";
    compressor = "none";
    extraCommands = "mkdir -m 1777 tmp";
  };
  withDb = layered.buildLayeredImage (withDbArgs // { includeNixDB = true; });
  # nixpkgs' name for the same image.
  withDbByName = layered.buildLayeredImageWithNixDb withDbArgs;
  # fakeRootCommands as root under fakeroot, in the tree (the manual's alice example), and
  # with enableFakechroot in a chroot, making a user as shadowSetup and useradd do (the
  # manual's redis example).
  fakeRoot = rooted.buildLayeredImage {
    name = "layered-gen-test/fake-root";
    tag = "alice";
    contents = [ busybox app ];
    compressor = "none";
    extraCommands = "mkdir -m 1777 tmp";
    fakeRootCommands = ''
      mkdir -p ./home/alice
      chown 1000 ./home/alice
      mkdir data
      chown 1000:1001 data
      chmod 0700 data
      ln -s ${app}/bin/app ./hello
      chown -h 1000:1000 ./hello
    '';
  };
  fakeChrootArgs = {
    name = "layered-gen-test/fake-chroot";
    tag = "redis";
    contents = [ busybox ];
    fakeRootCommands = ''
      mkdir -p /etc/pam.d
      [ -f /etc/passwd ] || echo "root:x:0:0::/root:/bin/sh" > /etc/passwd
      [ -f /etc/shadow ] || echo "root:!x:::::::" > /etc/shadow
      [ -f /etc/group ] || echo "root:x:0:" > /etc/group
      [ -f /etc/gshadow ] || echo "root:x::" > /etc/gshadow
      touch /etc/login.defs
      groupadd -r redis
      useradd -r -g redis redis
      mkdir /data
      chown redis:redis /data
    '';
    enableFakechroot = true;
  };
  fakeChroot = rooted.buildLayeredImage (fakeChrootArgs // { compressor = "none"; });
  fakeChrootStream = rooted.streamLayeredImage fakeChrootArgs;
  noStore = layered.buildLayeredImage (common // { name = "layered-gen-test/nostore"; includeStorePaths = false; compressor = "none"; });
  # Supply chain: SBOMs beside the image, provenance, a signed push.
  audited = layered.buildLayeredImage (common // {
    name = "layered-gen-test/audited";
    tag = "1";
    compressor = "none";
    contents = [ busybox (app // { meta = { description = "The test app"; homepage = [ "https://example.org/app" ]; license = { spdxId = "MIT"; fullName = "MIT License"; }; }; }) ];
    sbom = [ "cyclonedx" "spdx" ];
    inherit signKey;
  });
  auditedOci = layered.buildLayeredImage (common // {
    name = "layered-gen-test/audited";
    tag = "1";
    format = "oci";
    sbom = [ "spdx" ];
  });
  keyAsPath = layered.streamLayeredImage (common // { name = "k"; signKey = ./images.nix; });
  keyInStore = layered.streamLayeredImage (common // { name = "k"; signKey = "${busybox}/key.pem"; });
}
