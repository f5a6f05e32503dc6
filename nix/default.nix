# buildLayeredImage and streamLayeredImage: drop-ins for nixpkgs' dockerTools functions of the
# same names, built by layered-gen.
#
# With nixpkgs:     (pkgs.callPackage ./nix { layered-gen = pkgs.callPackage ./nix/package.nix { }; })
# Without nixpkgs:  import ./nix { layered-gen = <path with bin/layered-gen>; runtimeShell = "/nix/store/...-bash/bin/sh"; }
{
  # A derivation or store path with bin/layered-gen.
  layered-gen,
  # A shell: runs extraCommands, and is the interpreter of streamLayeredImage's script.
  runtimeShell,
  # Optional: put on PATH for extraCommands (bash alone has no mkdir, ln, ...).
  coreutils ? null,
  # For includeNixDB (callPackage fills them from nixpkgs): nix-store loads the database,
  # sqlite3 fixes its registration times.
  nix ? null,
  sqlite ? null,
  # For fakeRootCommands (callPackage fills them from nixpkgs): fakeroot fakes root for the
  # commands, proot makes the customisation tree their / with enableFakechroot.
  fakeroot ? null,
  proot ? null,
  # Host paths bound into that chroot besides the store, /dev, /proc and /sys: with Nix-built
  # tools nothing else is needed (tests that use Debian's tools bind /lib and /usr/lib).
  chrootBinds ? [ ],
  # The package set's stdenv (callPackage fills it): the builds run on its build platform, and
  # an image's architecture defaults to its host platform, as dockerTools' does. Without it,
  # `system` (or, failing that, the evaluating machine: not allowed in pure evaluation).
  stdenv ? null,
  system ? null,
  ...
}:
let
  buildSystem =
    if stdenv != null then stdenv.buildPlatform.system
    else if system != null then system
    else builtins.currentSystem;
  hostSystem =
    if stdenv != null then stdenv.hostPlatform.system
    else if system != null then system
    else null;

  # The last component of "registry.example:5000/my/image" names the derivation.
  derivationName = name: builtins.baseNameOf name;

  # The runtime config, written by a tiny derivation so that the store paths it mentions are
  # references of the file, and so part of the image's closure (as dockerTools does).
  configFile = name: config: derivation {
    name = "${derivationName name}-config.json";
    system = buildSystem;
    builder = runtimeShell;
    args = [ "-c" ''printf '%s' "$json" > "$out"'' ];
    json = builtins.toJSON config;
  };

  # layeringPipeline as the JSON file --layering-pipeline reads (store paths in it stay
  # paths; the file is an input of the image, not part of it).
  pipelineFile = name: pipeline: derivation {
    name = "${derivationName name}-layering-pipeline.json";
    system = buildSystem;
    builder = runtimeShell;
    args = [ "-c" ''printf '%s' "$json" > "$out"'' ];
    json = builtins.toJSON pipeline;
  };

  # The PATH extraCommands run with: the package set's standard tools (stdenv's initialPath,
  # as dockerTools' runCommand gives them), or coreutils without nixpkgs.
  commandsPath =
    if stdenv != null then builtins.concatStringsSep ":" (map (p: "${p}/bin") stdenv.initialPath)
    else if coreutils != null then "${coreutils}/bin"
    else null;

  # extraCommands run as dockerTools runs them: in the tree the contents make at / (its
  # symlinkJoin), then fakeRootCommands as root under fakeroot (with enableFakechroot, in a
  # chroot made by proot whose / is the tree). The tree is stored with the modes the commands
  # gave it recorded beside it (the store keeps only 0444 and 0555: perms.json gives them
  # back), and after fakeRootCommands the owners too, read under the same fakeroot that faked
  # them. Everything the tree links to is referenced, so in the image; its own store path is
  # left out of the image.
  customisation = name: contents: extraCommands: fakeRootCommands: enableFakechroot:
    let
      lg = "${layered-gen}/bin/layered-gen";
      record = owners: ''"${lg}" record-modes ${if owners then "--owners " else ""}"$out/tree" > "$out/perms.json"'';
      binds = builtins.concatStringsSep " "
        (map (p: "-b ${p}") ([ "/dev" "/proc" "/sys" builtins.storeDir ] ++ chrootBinds));
      # fakeroot's own LD_PRELOAD reaches the commands through proot.
      asRoot =
        if fakeRootCommands == "" then record false
        else if enableFakechroot then ''
          ${fakeroot}/bin/fakeroot -- ${runtimeShell} -e -c '
            ${proot}/bin/proot -r "$out/tree" ${binds} -w / ${runtimeShell} -e -c "$fakeRootCommands"
            ${record true}'
        '' else ''
          ${fakeroot}/bin/fakeroot -- ${runtimeShell} -e -c '
            cd "$out/tree"
            eval "$fakeRootCommands"
            cd "$out"
            ${record true}'
        '';
    in
    derivation ({
      name = "${derivationName name}-customisation";
      system = buildSystem;
      builder = runtimeShell;
      contents = map (p: "${p}") contents;
      inherit extraCommands fakeRootCommands;
      # As stdenv sets it: tools that stamp dates (useradd's password dates) stamp this one.
      SOURCE_DATE_EPOCH = "315532800";
      args = [ "-e" "-c" ''
        set --
        for p in $contents; do set -- "$@" --contents "$p"; done
        "${lg}" link-contents "$@" "$out/tree"
        cd "$out/tree"
        eval "$extraCommands"
        cd "$out"
        ${asRoot}
      '' ];
    } // (if commandsPath == null then { } else { PATH = commandsPath; }));

  compressorFlag = compressor:
    { none = "none"; gz = "gzip"; zstd = "zstd"; }.${compressor}
      or (throw "layered-gen: compressor must be \"none\", \"gz\" or \"zstd\", not \"${compressor}\"");

  suffix = { none = ""; gz = ".gz"; zstd = ".zst"; };

  # extraTags (ours; nixpkgs has no such argument): more tags after the main one.
  extraTagArgs = builtins.concatMap (t: [ "--tag" t ]);

  # Every argument of nixpkgs' streamLayeredImage (buildLayeredImage adds compressor), then
  # ours. Anything else is an evaluation error, as in nixpkgs.
  knownArgs = [
    "name" "tag" "fromImage" "contents" "config" "architecture" "created" "mtime" "uid" "gid"
    "uname" "gname" "maxLayers" "extraCommands" "fakeRootCommands" "enableFakechroot"
    "includeStorePaths" "includeNixDB" "passthru" "meta" "layeringPipeline" "debug"
    "extraTags" "format" "layering" "perms" "fromImageConfig"
  ];

  # The arguments, checked: an unknown one, or one layered-gen cannot honour yet, fails the
  # evaluation with what to use instead; nothing is accepted and ignored.
  checkArgs = function: allowed: args:
    let
      unknown = builtins.filter (a: !(builtins.elem a allowed)) (builtins.attrNames args);
      refuse = why: throw "layered-gen ${function}: ${why}";
    in
    if unknown != [ ] then
      refuse "called with unexpected argument '${builtins.head unknown}'"
    else if (args.fakeRootCommands or "") != "" && fakeroot == null then
      refuse ("fakeRootCommands needs fakeroot: callPackage passes it from nixpkgs; without "
        + "nixpkgs, import ./nix { fakeroot = ...; ... }, or give owners and modes with "
        + "perms = [ { path = \"/data\"; uid = 1000; gid = 1000; mode = \"0755\"; } ]")
    else if (args.enableFakechroot or false) && proot == null then
      refuse ("enableFakechroot needs proot: callPackage passes it from nixpkgs; without "
        + "nixpkgs, import ./nix { proot = ...; ... }")
    else if (args.includeNixDB or false) && (nix == null || sqlite == null) then
      refuse ("includeNixDB needs nix and sqlite: callPackage passes them from nixpkgs; "
        + "without nixpkgs, import ./nix { nix = ...; sqlite = ...; ... }")
    else if (args.layeringPipeline or null) != null && args ? layering then
      refuse "give layeringPipeline or layering, not both"
    else args;

  # The arguments both functions share, as layered-gen flags.
  commonArgs = args: [ "--name" (toLower args.name) ] ++ imageArgs args;

  # The same without the name, which a copyTo* destination may give instead.
  imageArgs = args@
    { name
    , fromImage ? null
    , contents ? [ ]
    , config ? { }
    , architecture ? null
    , created ? "1970-01-01T00:00:01Z"
    , mtime ? "1970-01-01T00:00:01Z"
    , maxLayers ? 100
    , extraCommands ? ""
    , fakeRootCommands ? ""
    , enableFakechroot ? false
    , perms ? [ ]
    , uid ? 0
    , gid ? 0
    , uname ? "root"
    , gname ? "root"
    , includeStorePaths ? true
    , format ? "docker-archive"
    , layering ? "popularity"
    , layeringPipeline ? null
    , debug ? false
    , fromImageConfig ? "all"
    , ...
    }:
    let
      custom = customisation name (toList contents) extraCommands fakeRootCommands enableFakechroot;
      db = nixDatabase args;
    in
    [ "--max-layers" (toString maxLayers) "--created" created "--mtime" mtime
      "--uid" (toString uid) "--gid" (toString gid) "--uname" uname "--gname" gname
      "--format" format "--base-config" fromImageConfig
      "--config" "${configFile name config}" "--exclude" "${configFile name config}" ]
    ++ (if !(hasCommands args) then builtins.concatMap (p: [ "--contents" "${p}" ]) (toList contents)
        else [ "--extra-dir" "${custom}/tree" "--perms" "${custom}/perms.json" "--exclude" "${custom}" ])
    ++ (if layeringPipeline == null then [ "--layering" layering ]
        else [ "--layering-pipeline" "${pipelineFile name layeringPipeline}" ])
    # debug: the layering in the build log, as dockerTools prints its pipeline's steps.
    ++ (if debug then [ "--print-plan" ] else [ ])
    ++ (if architecture != null then [ "--architecture" architecture ]
        else if hostSystem != null then [ "--architecture" hostSystem ]
        else [ ])
    ++ (if fromImage == null then [ ] else [ "--from-image" "${fromImage}" ])
    ++ (if args.includeNixDB or false
        then [ "--extra-dir" "${db}/tree" "--perms" "${db}/perms.json" "--exclude" "${db}" ]
        else [ ])
    ++ (if perms == [ ] then [ ] else [ "--perms" "${builtins.toFile "perms.json" (builtins.toJSON perms)}" ])
    ++ (if includeStorePaths then [ ] else [ "--no-store-paths" ]);

  # includeNixDB: a Nix database registering exactly the image's store paths, as nixpkgs'
  # mkDbExtraCommand makes it: nix-store --load-db of the closure's registration, every
  # registration time set to 1 (the bytes are then reproducible), a GC root for each contents
  # path. It goes in beside the customisation tree, its modes recorded the same way.
  nixDatabase = args@{ name, contents ? [ ], ... }: derivation {
    name = "${derivationName name}-nix-db";
    system = buildSystem;
    builder = runtimeShell;
    __structuredAttrs = true;
    exportReferencesGraph.closure = closureRoots args;
    args = [ "-e" "-c" ''
      ${if commandsPath == null then "" else "export PATH=${commandsPath}"}
      out=${builtins.placeholder "out"}
      lg=${layered-gen}/bin/layered-gen
      "$lg" registration --closure .attrs.json --closure-key closure \
        ${builtins.concatStringsSep " " (map (p: "--exclude ${p}") (excludedRoots args))} \
        > "$PWD/registration"
      registration=$PWD/registration
      "$lg" link-contents "$out/tree"
      cd "$out/tree"
      export NIX_REMOTE="local?root=$PWD" USER=nobody HOME="$out/home"
      ${nix}/bin/nix-store --load-db < "$registration"
      ${sqlite}/bin/sqlite3 nix/var/nix/db/db.sqlite "UPDATE ValidPaths SET registrationTime = 1"
      # What nix-store leaves beside the database is made again when needed: the space it
      # reserves for the garbage collector (megabytes), its lock, an empty store directory.
      rm -f nix/var/nix/db/reserved nix/var/nix/db/big-lock nix/var/nix/gc.lock
      rmdir nix/store/.links nix/store
      "$lg" link-contents nix/var/nix/gcroots/docker
      for p in ${builtins.concatStringsSep " " (map (p: "${p}") (toList contents))}; do
        ln -s "$p" "nix/var/nix/gcroots/docker/''${p##*/}"
      done
      cd "$out"
      "$lg" record-modes "$out/tree" > "$out/perms.json"
    '' ];
  };

  # The roots that are in the closure only for what they reference: left out of the image.
  excludedRoots = args@{ name, config ? { }, ... }:
    [ (configFile name config) ] ++ (if hasCommands args then [ (customisationOf args) ] else [ ]);

  # Whether the image has commands to run in its customisation tree.
  hasCommands = args: (args.extraCommands or "") != "" || (args.fakeRootCommands or "") != "";

  customisationOf = args@{ name, contents ? [ ], extraCommands ? "", fakeRootCommands ? ""
    , enableFakechroot ? false, ... }:
    customisation name (toList contents) extraCommands fakeRootCommands enableFakechroot;

  # closureRoots, and the Nix database when there is one.
  imageRoots = args: closureRoots args
    ++ (if args.includeNixDB or false then [ (nixDatabase args) ] else [ ]);

  # What the image holds is the closure of these, less the roots themselves where they are
  # only there for what they reference (the config JSON, the customisation tree: --exclude).
  # With extraCommands the contents come in through the tree, as in nixpkgs.
  closureRoots = args@{ name, contents ? [ ], config ? { }, ... }:
    (if hasCommands args then [ (customisationOf args) ] else toList contents)
    ++ [ (configFile name config) ];

  # `contents` is a derivation or a list of them, as in nixpkgs.
  toList = x: if builtins.isList x then x else [ x ];

  # nixpkgs names the image by its name lower-cased (what a registry allows).
  toLower = builtins.replaceStrings
    [ "A" "B" "C" "D" "E" "F" "G" "H" "I" "J" "K" "L" "M" "N" "O" "P" "Q" "R" "S" "T" "U" "V" "W" "X" "Y" "Z" ]
    [ "a" "b" "c" "d" "e" "f" "g" "h" "i" "j" "k" "l" "m" "n" "o" "p" "q" "r" "s" "t" "u" "v" "w" "x" "y" "z" ];

  # `.override`, as lib.makeOverridable gives nixpkgs' functions: new arguments (or a function
  # of the old ones) over the old.
  overridable = function: given: result:
    result // {
      override = change: function (given // (if builtins.isFunction change then change given else change));
    };

  # An executable ($out/bin/copy-to-KIND, what `nix run` runs) that copies the image
  # straight from the store: to a registry (`docker://NAME` under the image's tags, or the
  # destination given as its first argument), into the Docker daemon, or into podman. No
  # archive is ever written to the store; the closure is embedded in the script.
  copyScript = kind: args: tag: derivation {
    name = "copy-to-${kind}";
    system = buildSystem;
    inherit runtimeShell tag;
    extraTags = args.extraTags or [ ];
    layeredGen = "${layered-gen}";
    builder = "${layered-gen}/bin/layered-gen";
    args = [ "stream-script" "--attrs" ".attrs.json" ];
    copyTo = kind;
    imageName = toLower args.name;
    streamArgs = imageArgs args;
    __structuredAttrs = true;
    exportReferencesGraph.closure = imageRoots args;
  };

  # Everything that decides the image, as a small JSON file (nixpkgs' conf.json plays this
  # part): the layered-gen arguments and the store paths the image holds.
  confOf = args: derivation {
    name = "${derivationName args.name}-conf.json";
    system = buildSystem;
    builder = runtimeShell;
    args = [ "-c" ''printf '%s' "$json" > "$out"'' ];
    json = builtins.toJSON {
      arguments = commonArgs args;
      roots = map (root: "${root}") (imageRoots args);
    };
  };

  # The tag of an image given none: the store hash of its conf, as nixpkgs takes it, so that
  # buildLayeredImage and streamLayeredImage of the same arguments share it. The conf is not
  # built for this: its path is known from its inputs.
  imageTagOf = args:
    if args.tag or null != null then args.tag
    else builtins.substring 0 32 (builtins.baseNameOf (builtins.unsafeDiscardStringContext (confOf args).outPath));

  # imageName and imageTag, set whatever the arguments (tag null: see imageTagOf), and the
  # copyTo* executables, as nix2container has them.
  withImageAttrs = args: drv:
    let
      imageTag = imageTagOf args;
    in
    drv // (args.passthru or { }) // {
      imageName = toLower args.name;
      meta = args.meta or { };
      inherit imageTag;
      copyToRegistry = copyScript "registry" args imageTag;
      copyToDockerDaemon = copyScript "docker-daemon" args imageTag;
      copyToPodman = copyScript "podman" args imageTag;
      # The derivation that runs extraCommands and fakeRootCommands (null without them): its
      # tree and perms.json are the customisation layer.
      customisationLayer = if hasCommands args then customisationOf args else null;
    };
in
rec {
  # An image file (docker-archive, or an OCI layout with format = "oci"), compressed as a whole
  # by `compressor` ("none", "gz", "zstd").
  buildLayeredImage = given:
    let
      args = checkArgs "buildLayeredImage" (knownArgs ++ [ "compressor" ]) given;
      inherit (args) name;
      extraTags = args.extraTags or [ ];
      compressor = args.compressor or "gz";
      format = args.format or "docker-archive";
    in
    overridable buildLayeredImage given ((withImageAttrs args (derivation {
      name = derivationName name
        + (if format == "oci" then "-oci" else ".tar" + suffix.${compressor} or "");
      system = buildSystem;
      builder = "${layered-gen}/bin/layered-gen";
      args = commonArgs args ++ [
        "--closure" ".attrs.json" "--closure-key" "closure"
        "--output-from-attrs" ".attrs.json" "--quiet"
      ]
      ++ (if format == "oci" then [ ] else [ "--archive-compression" (compressorFlag compressor) ])
      ++ [ "--tag" (imageTagOf args) ]
      ++ extraTagArgs extraTags;
      __structuredAttrs = true;
      exportReferencesGraph.closure = imageRoots args;
    })) // {
      # The same image as a stream, as dockerTools gives it.
      stream = streamLayeredImage (builtins.removeAttrs given [ "compressor" ]);
    });

  # An executable that streams the image to stdout: `$(nix-build ...) | docker load`. Only the
  # script goes into the store; the image is made from the store each time it runs.
  streamLayeredImage = given:
    let
      args = checkArgs "streamLayeredImage" knownArgs given;
      inherit (args) name;
      extraTags = args.extraTags or [ ];
      tag = imageTagOf args;
      script = derivation {
        name = "stream-${derivationName name}";
        system = buildSystem;
        inherit runtimeShell tag extraTags;
        layeredGen = "${layered-gen}";
        builder = "${layered-gen}/bin/layered-gen";
        args = [ "stream-script" "--attrs" ".attrs.json" ];
        streamArgs = commonArgs args;
        __structuredAttrs = true;
        exportReferencesGraph.closure = imageRoots args;
      };
    in
    overridable streamLayeredImage given (withImageAttrs args script // {
      # As dockerTools' stream: an executable, its configuration, and the script itself.
      isExe = true;
      conf = confOf args;
      streamScript = script;
    });

  # Several images in one docker-archive, as dockerTools' mergeImages: layers they share are
  # stored once, every image keeps its tags, `docker load < result` loads them all. Takes
  # images as buildLayeredImage makes them (compressed or not), or any docker-archive.
  mergeImages = images: derivation {
    name = "merge-docker-images";
    system = buildSystem;
    builder = "${layered-gen}/bin/layered-gen";
    args = [ "merge" ] ++ map (image: "${image}") images ++ [
      "--output-from-attrs" ".attrs.json" "--archive-compression" "gzip" "--quiet"
    ];
    __structuredAttrs = true;
  };

  # One multi-platform image from images of several platforms (each built with its own
  # `architecture`): an OCI layout holding an image index, each image's platform from its
  # config. `skopeo copy --all oci:result:TAG docker://...` (or `layered-gen index ... -o
  # docker://...`) pushes all of them.
  buildImageIndex = { name, tag ? null, extraTags ? [ ], images }:
    let
      index = derivation {
        name = "${derivationName name}-index";
        system = buildSystem;
        builder = "${layered-gen}/bin/layered-gen";
        args = [ "index" ] ++ map (image: "${image}") images ++ [
          "--name" (toLower name) "--output-from-attrs" ".attrs.json" "--quiet"
        ]
        ++ (if tag == null then [ "--tag-from-output" ] else [ "--tag" tag ])
        ++ extraTagArgs extraTags;
        __structuredAttrs = true;
      };
    in
    index // {
      imageName = toLower name;
      imageTag =
        if tag != null then tag
        else builtins.substring 0 32 (builtins.baseNameOf (builtins.unsafeDiscardStringContext index.outPath));
    };
}
