# buildLayeredImage and streamLayeredImage: drop-ins for nixpkgs' dockerTools functions of the
# same names, built by layered-gen; mergeImages and buildImageIndex beside them.
#
# With nixpkgs:     (pkgs.callPackage ./nix { layered-gen = pkgs.callPackage ./nix/package.nix { }; })
# Without nixpkgs:  import ./nix { layered-gen = <path with bin/layered-gen>; runtimeShell = "/nix/store/...-bash/bin/sh"; }
#
# An image argument is one row of `imageArguments` below: its default and the layered-gen flags
# it becomes. The rest of this file only turns the rows into derivations.
{
  # A derivation or store path with bin/layered-gen.
  layered-gen,
  # A shell: runs extraCommands, and is the interpreter of streamLayeredImage's script.
  runtimeShell,
  # nixpkgs' lib (callPackage passes it); without it, the few functions used are defined here.
  lib ? null,
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
  # nixpkgs' lib where it is given, else the same functions on builtins alone.
  l =
    if lib != null then
      {
        inherit (lib) toLower toList concatMapStringsSep;
      }
    else
      let
        characters = s: builtins.genList (i: builtins.substring i 1 s) (builtins.stringLength s);
      in
      {
        toLower = builtins.replaceStrings (characters "ABCDEFGHIJKLMNOPQRSTUVWXYZ") (
          characters "abcdefghijklmnopqrstuvwxyz"
        );
        toList = x: if builtins.isList x then x else [ x ];
        concatMapStringsSep = separator: f: list: builtins.concatStringsSep separator (map f list);
      };

  lg = "${layered-gen}/bin/layered-gen";

  buildSystem =
    if stdenv != null then
      stdenv.buildPlatform.system
    else if system != null then
      system
    else
      builtins.currentSystem;
  hostSystem =
    if stdenv != null then
      stdenv.hostPlatform.system
    else if system != null then
      system
    else
      null;

  # The last component of "registry.example:5000/my/image" names the derivation.
  derivationName = name: builtins.baseNameOf name;

  # nixpkgs names the image by its name lower-cased (what a registry allows).
  imageName = args: l.toLower args.name;

  # A JSON file written by a tiny derivation, so that the store paths it mentions are
  # references of the file (the runtime config's are then part of the image's closure, as
  # dockerTools has it).
  jsonFile =
    name: value:
    derivation {
      inherit name;
      system = buildSystem;
      builder = runtimeShell;
      args = [
        "-c"
        ''printf '%s' "$json" > "$out"''
      ];
      json = builtins.toJSON value;
    };

  # The runtime config, and layeringPipeline as the file --layering-pipeline reads (store paths
  # in it stay paths; the file is an input of the image, not part of it).
  configFile = args: jsonFile "${derivationName args.name}-config.json" (args.config or { });
  pipelineFile =
    args: jsonFile "${derivationName args.name}-layering-pipeline.json" args.layeringPipeline;

  # The PATH extraCommands run with: the package set's standard tools (stdenv's initialPath,
  # as dockerTools' runCommand gives them), or coreutils without nixpkgs.
  commandsPath =
    if stdenv != null then
      l.concatMapStringsSep ":" (p: "${p}/bin") stdenv.initialPath
    else if coreutils != null then
      "${coreutils}/bin"
    else
      null;

  # Whether the image has commands to run in its customisation tree.
  hasCommands = args: (args.extraCommands or "") != "" || (args.fakeRootCommands or "") != "";

  # Every image argument, in the order its flags are given (later --perms rules win): its
  # default, and the flags it becomes given the value and all the (defaulted) arguments.
  # name, tag, extraTags, passthru and meta are read where they are used.
  imageArguments = [
    # SBOMs beside the image ("cyclonedx", "spdx"): files in an archive, artifacts in a
    # layout or a registry. The Docker daemon and podman keep nothing beside an image: their
    # copy scripts leave them out (image.sbom has it).
    (arg "sbom" [ ] (
      v: args: if v == [ ] then [ ] else builtins.concatMap (format: [ "--sbom" format ]) v ++ sbomMetaArgs args
    ))
    # A private key outside the store, read when copyToRegistry runs (see signKeyArgs).
    (arg "signKey" null none)
    (flag "maxLayers" 100 (v: [
      "--max-layers"
      (toString v)
    ]))
    (flag "created" "1970-01-01T00:00:01Z" (v: [
      "--created"
      v
    ]))
    (flag "mtime" "1970-01-01T00:00:01Z" (v: [
      "--mtime"
      v
    ]))
    (flag "uid" 0 (v: [
      "--uid"
      (toString v)
    ]))
    (flag "gid" 0 (v: [
      "--gid"
      (toString v)
    ]))
    (flag "uname" "root" (v: [
      "--uname"
      v
    ]))
    (flag "gname" "root" (v: [
      "--gname"
      v
    ]))
    (flag "format" "docker-archive" (v: [
      "--format"
      v
    ]))
    (flag "fromImageConfig" "all" (v: [
      "--base-config"
      v
    ]))
    # The config file is in the closure for the paths it references, not in the image.
    (arg "config" { } (
      _: args: [
        "--config"
        "${configFile args}"
        "--exclude"
        "${configFile args}"
      ]
    ))
    # With commands, the contents come in through the customisation tree, as in nixpkgs.
    (arg "contents" [ ] (
      v: args:
      if hasCommands args then
        [
          "--extra-dir"
          "${customisation args}/tree"
          "--perms"
          "${customisation args}/perms.json"
          "--exclude"
          "${customisation args}"
        ]
      else
        builtins.concatMap (p: [
          "--contents"
          "${p}"
        ]) (l.toList v)
    ))
    (arg "extraCommands" "" none)
    (arg "fakeRootCommands" "" none)
    (arg "enableFakechroot" false none)
    # nixpkgs' current default grouping (auto-layer.py, since November 2024).
    (arg "layering" "auto" (
      v: args:
      if args.layeringPipeline == null then
        [
          "--layering"
          v
        ]
      else
        [ ]
    ))
    (arg "layeringPipeline" null (
      v: args:
      if v == null then
        [ ]
      else
        [
          "--layering-pipeline"
          "${pipelineFile args}"
        ]
    ))
    # Layers in dockerTools' own tar format wherever the grouping is one dockerTools makes
    # (auto, its default, or a layeringPipeline): the store layers are then the very blobs a
    # dockerTools image of the same paths has, so registries and hosts store them once. With
    # the other layerings no dockerTools image has those layers, and ours is the format.
    (arg "tarCompat" null (
      _: args: [
        "--tar-compat"
        (tarCompatOf args)
      ]
    ))
    # Layers built before (buildLayer): taken as they are, after the base's; the layer
    # directories themselves are in the closure only for the paths they hold.
    (arg "layers" [ ] (
      v: _:
      builtins.concatMap (layer: [
        "--layer"
        "${layer}"
        "--exclude"
        "${layer}"
      ]) v
    ))
    # Read by the functions (planned layers become buildLayer derivations, below).
    (arg "layerDerivations" false none)
    # debug: the layering in the build log, as dockerTools prints its pipeline's steps.
    (flag "debug" false (v: if v then [ "--print-plan" ] else [ ]))
    (flag "architecture" null (
      v:
      if v != null then
        [
          "--architecture"
          v
        ]
      else if hostSystem != null then
        [
          "--architecture"
          hostSystem
        ]
      else
        [ ]
    ))
    (flag "fromImage" null (
      v:
      if v == null then
        [ ]
      else
        [
          "--from-image"
          "${v}"
        ]
    ))
    (arg "includeNixDB" false (
      v: args:
      if v then
        [
          "--extra-dir"
          "${nixDatabase args}/tree"
          "--perms"
          "${nixDatabase args}/perms.json"
          "--exclude"
          "${nixDatabase args}"
        ]
      else
        [ ]
    ))
    (flag "perms" [ ] (
      v:
      if v == [ ] then
        [ ]
      else
        [
          "--perms"
          "${builtins.toFile "perms.json" (builtins.toJSON v)}"
        ]
    ))
    (flag "includeStorePaths" true (v: if v then [ ] else [ "--no-store-paths" ]))
  ];

  # dockerTools' tar format wherever the grouping is one dockerTools makes (see its row).
  tarCompatOf =
    given:
    let
      args = withDefaults given;
    in
    if args.tarCompat != null then
      args.tarCompat
    else if args.layeringPipeline != null || args.layering == "auto" then
      "nixpkgs"
    else
      "none";

  # A row of imageArguments: `flags` takes the value and every argument; `flag` rows only the
  # value; `none` makes no flag (the argument is read by another row).
  arg = name: default: flags: { inherit name default flags; };
  flag = name: default: flags: arg name default (v: _: flags v);
  none = _: _: [ ];

  # Every argument of nixpkgs' streamLayeredImage (buildLayeredImage adds compressor), then
  # ours. Anything else is an evaluation error, as in nixpkgs.
  knownArgs =
    map (a: a.name) imageArguments
    ++ [
      "name"
      "tag"
      "passthru"
      "meta"
      "extraTags"
    ];

  # The arguments with their defaults.
  withDefaults =
    args:
    builtins.listToAttrs (
      map (a: {
        inherit (a) name;
        value = args.${a.name} or a.default;
      }) imageArguments
    )
    // args;

  # The image's flags but its name, which a copyTo* destination may give instead.
  imageArgs =
    given:
    let
      args = withDefaults given;
    in
    builtins.concatMap (a: a.flags args.${a.name} args) imageArguments;

  # The flags both functions share.
  commonArgs =
    args:
    [
      "--name"
      (imageName args)
    ]
    ++ imageArgs args;

  # extraTags (ours; nixpkgs has no such argument): more tags after the main one.
  extraTagArgs = builtins.concatMap (t: [
    "--tag"
    t
  ]);

  # The arguments, checked: an unknown one, or one layered-gen cannot honour here, fails the
  # evaluation with what to use instead; nothing is accepted and ignored.
  checkArgs =
    function: allowed: args:
    let
      unknown = builtins.filter (a: !(builtins.elem a allowed)) (builtins.attrNames args);
      refuse = why: throw "layered-gen ${function}: ${why}";
    in
    if unknown != [ ] then
      refuse "called with unexpected argument '${builtins.head unknown}'"
    else if !(args ? name) then
      refuse "called without required argument 'name'"
    else if (args.fakeRootCommands or "") != "" && fakeroot == null then
      refuse (
        "fakeRootCommands needs fakeroot: callPackage passes it from nixpkgs; without "
        + "nixpkgs, import ./nix { fakeroot = ...; ... }, or give owners and modes with "
        + "perms = [ { path = \"/data\"; uid = 1000; gid = 1000; mode = \"0755\"; } ]"
      )
    else if (args.enableFakechroot or false) && proot == null then
      refuse (
        "enableFakechroot needs proot: callPackage passes it from nixpkgs; without "
        + "nixpkgs, import ./nix { proot = ...; ... }"
      )
    else if (args.includeNixDB or false) && (nix == null || sqlite == null) then
      refuse (
        "includeNixDB needs nix and sqlite: callPackage passes them from nixpkgs; "
        + "without nixpkgs, import ./nix { nix = ...; sqlite = ...; ... }"
      )
    else if (args.layeringPipeline or null) != null && args ? layering then
      refuse "give layeringPipeline or layering, not both"
    else
      # A bad signKey fails the evaluation of any of the image's attributes, not only of
      # copyToRegistry.
      builtins.seq (signKeyArgs args) args;

  # extraCommands run as dockerTools runs them: in the tree the contents make at / (its
  # symlinkJoin), then fakeRootCommands as root under fakeroot (with enableFakechroot, in a
  # chroot made by proot whose / is the tree). The tree is stored with the modes the commands
  # gave it recorded beside it (the store keeps only 0444 and 0555: perms.json gives them
  # back), and after fakeRootCommands the owners too, read under the same fakeroot that faked
  # them. Everything the tree links to is referenced, so in the image; its own store path is
  # left out of the image.
  customisation =
    given:
    let
      args = withDefaults given;
      inherit (args) fakeRootCommands enableFakechroot;
      record =
        owners: ''"${lg}" record-modes ${if owners then "--owners " else ""}"$out/tree" > "$out/perms.json"'';
      binds = l.concatMapStringsSep " " (p: "-b ${p}") (
        [
          "/dev"
          "/proc"
          "/sys"
          builtins.storeDir
        ]
        ++ chrootBinds
      );
      # fakeroot's own LD_PRELOAD reaches the commands through proot.
      asRoot =
        if fakeRootCommands == "" then
          record false
        else if enableFakechroot then
          ''
            ${fakeroot}/bin/fakeroot -- ${runtimeShell} -e -c '
              ${proot}/bin/proot -r "$out/tree" ${binds} -w / ${runtimeShell} -e -c "$fakeRootCommands"
              ${record true}'
          ''
        else
          ''
            ${fakeroot}/bin/fakeroot -- ${runtimeShell} -e -c '
              cd "$out/tree"
              eval "$fakeRootCommands"
              cd "$out"
              ${record true}'
          '';
    in
    derivation (
      {
        name = "${derivationName args.name}-customisation";
        system = buildSystem;
        builder = runtimeShell;
        contents = map (p: "${p}") (l.toList args.contents);
        inherit (args) extraCommands fakeRootCommands;
        # As stdenv sets it: tools that stamp dates (useradd's password dates) stamp this one.
        SOURCE_DATE_EPOCH = "315532800";
        args = [
          "-e"
          "-c"
          ''
            set --
            for p in $contents; do set -- "$@" --contents "$p"; done
            "${lg}" link-contents "$@" "$out/tree"
            cd "$out/tree"
            eval "$extraCommands"
            cd "$out"
            ${asRoot}
          ''
        ];
      }
      // (if commandsPath == null then { } else { PATH = commandsPath; })
    );

  # includeNixDB: a Nix database registering exactly the image's store paths, as nixpkgs'
  # mkDbExtraCommand makes it: nix-store --load-db of the closure's registration, every
  # registration time set to 1 (the bytes are then reproducible), a GC root for each contents
  # path. It goes in beside the customisation tree, its modes recorded the same way.
  nixDatabase =
    args:
    derivation {
      name = "${derivationName args.name}-nix-db";
      system = buildSystem;
      builder = runtimeShell;
      __structuredAttrs = true;
      exportReferencesGraph.closure = closureRoots args;
      args = [
        "-e"
        "-c"
        ''
          ${if commandsPath == null then "" else "export PATH=${commandsPath}"}
          out=${builtins.placeholder "out"}
          lg=${lg}
          "$lg" registration --closure .attrs.json --closure-key closure \
            ${l.concatMapStringsSep " " (p: "--exclude ${p}") (excludedRoots args)} \
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
          for p in ${l.concatMapStringsSep " " (p: "${p}") (l.toList (args.contents or [ ]))}; do
            ln -s "$p" "nix/var/nix/gcroots/docker/''${p##*/}"
          done
          cd "$out"
          "$lg" record-modes "$out/tree" > "$out/perms.json"
        ''
      ];
    };

  # What the image holds is the closure of these, less the roots themselves where they are
  # only there for what they reference (the config JSON, the customisation tree: --exclude).
  # With extraCommands the contents come in through the tree, as in nixpkgs.
  closureRoots =
    args:
    (if hasCommands args then [ (customisation args) ] else l.toList (args.contents or [ ]))
    ++ [ (configFile args) ]
    ++ (args.layers or [ ]);

  # The roots that are in the closure only for what they reference: left out of the image.
  excludedRoots =
    args:
    [ (configFile args) ]
    ++ (if hasCommands args then [ (customisation args) ] else [ ])
    ++ (args.layers or [ ]);

  # Whether the image ends in a customisation layer (as layered-gen decides it).
  hasCustomisationLayer =
    args:
    l.toList (args.contents or [ ]) != [ ]
    || hasCommands args
    || (args.includeNixDB or false)
    || tarCompatOf args == "nixpkgs";

  # layerDerivations: the image planned in a small derivation, read back at evaluation (import
  # from derivation), and each planned layer made a buildLayer of exactly its paths. A layer's
  # derivation depends only on its own paths and the options that decide its bytes, so images
  # sharing paths share layers, and an update rebuilds only the layers whose paths changed.
  plannedLayers =
    given:
    let
      args = withDefaults given;
      plan = layeredGenDerivation {
        name = "${derivationName args.name}-plan.json";
        args =
          [ "plan" ]
          ++ fromAttrs
          ++ [
            "--max-layers"
            (toString args.maxLayers)
          ]
          ++ (
            if args.layeringPipeline != null then
              [
                "--layering-pipeline"
                "${pipelineFile args}"
              ]
            else
              [
                "--layering"
                args.layering
              ]
          )
          ++ builtins.concatMap (p: [
            "--exclude"
            "${p}"
          ]) (excludedRoots args)
          ++ builtins.concatMap (layer: [
            "--layer"
            "${layer}"
          ]) args.layers
          ++ (
            if args.fromImage == null then
              [ ]
            else
              [
                "--from-image"
                "${args.fromImage}"
              ]
          )
          ++ (if hasCustomisationLayer args then [ "--customisation-layer" ] else [ ]);
        exportReferencesGraph.closure = imageRoots args;
      };
      planned = builtins.fromJSON (builtins.unsafeDiscardStringContext (builtins.readFile plan));
      storeLayers = builtins.filter (layer: layer.kind == "store") planned.layers;
      nameOf = path: builtins.substring 33 (-1) (builtins.baseNameOf path);
    in
    map (
      layer:
      buildLayer {
        name = nameOf (builtins.head layer.paths);
        paths = map builtins.storePath layer.paths;
        tarCompat = tarCompatOf given;
        inherit (args)
          mtime
          uid
          gid
          uname
          gname
          ;
      }
    ) storeLayers;

  # The arguments with layerDerivations turned into layers.
  withLayerDerivations =
    given:
    if given.layerDerivations or false then
      builtins.removeAttrs given [ "layerDerivations" ]
      // {
        layers = (given.layers or [ ]) ++ plannedLayers given;
      }
    else
      given;

  # closureRoots, and the Nix database when there is one.
  imageRoots =
    args: closureRoots args ++ (if args.includeNixDB or false then [ (nixDatabase args) ] else [ ]);

  # `.override`, as lib.makeOverridable gives nixpkgs' functions: new arguments (or a function
  # of the old ones) over the old.
  overridable =
    function: given: result:
    result
    // {
      override =
        change: function (given // (if builtins.isFunction change then change given else change));
    };

  # layered-gen as a builder: the closure Nix exported as `closure` into .attrs.json, and the
  # output path from it.
  fromAttrs = [
    "--closure"
    ".attrs.json"
    "--closure-key"
    "closure"
    "--output-from-attrs"
    ".attrs.json"
  ];

  # A derivation that layered-gen builds from a structured-attrs derivation's .attrs.json.
  layeredGenDerivation =
    attrs:
    derivation (
      {
        system = buildSystem;
        builder = lg;
        __structuredAttrs = true;
      }
      // attrs
    );

  # An executable that streams the image from the store: to stdout (`stream`), or, as
  # $out/bin/copy-to-KIND, to a registry (`docker://NAME` under the image's tags, or the
  # destination given as its first argument), into the Docker daemon, or into podman. Only
  # the script goes into the store; the closure is embedded in it.
  streamScript =
    {
      name,
      copyTo ? null,
      streamArgs,
      args,
      tag,
    }:
    layeredGenDerivation (
      {
        inherit
          name
          runtimeShell
          tag
          streamArgs
          ;
        extraTags = args.extraTags or [ ];
        layeredGen = "${layered-gen}";
        args = [
          "stream-script"
          "--attrs"
          ".attrs.json"
        ];
        exportReferencesGraph.closure = imageRoots args;
      }
      // (
        if copyTo == null then
          { }
        else
          {
            inherit copyTo;
            imageName = imageName args;
          }
      )
    );

  copyScript =
    kind: args: tag:
    streamScript {
      name = "copy-to-${kind}";
      copyTo = kind;
      streamArgs =
        if kind == "registry" then
          imageArgs args ++ signKeyArgs args
        else
          imageArgs (builtins.removeAttrs args [ "sbom" ]);
      inherit args tag;
    };

  # signKey: a path outside the store, as a string, read when copyToRegistry runs; never a
  # Nix path (which would copy the private key into the world-readable store).
  signKeyArgs =
    args:
    let
      key = args.signKey or null;
    in
    if key == null then
      [ ]
    else if builtins.isPath key then
      throw (
        "layered-gen: signKey must be a string naming a file outside the store (\"/run/secrets/"
        + "cosign.key\"), not a Nix path, which would copy the private key into the store"
      )
    else if
      builtins.hasContext key
      || builtins.substring 0 (builtins.stringLength builtins.storeDir + 1) key == builtins.storeDir + "/"
    then
      throw "layered-gen: signKey ${builtins.unsafeDiscardStringContext key} is in the Nix store, which anyone can read: keep the private key outside it"
    else
      [
        "--sign-key"
        key
      ];

  # What the contents' `meta` says (description, homepage, licenses), as a small JSON file
  # for --sbom-meta; none when no package of the contents has a meta.
  sbomMetaArgs =
    args:
    let
      described = builtins.filter (p: builtins.isAttrs p && p ? meta) (l.toList (args.contents or [ ]));
      licensesOf =
        license:
        map (
          x:
          if builtins.isAttrs x then
            {
              spdxId = x.spdxId or null;
              fullName = x.fullName or null;
            }
          else
            {
              spdxId = null;
              fullName = toString x;
            }
        ) (l.toList license);
      firstOf = x: if builtins.isList x then (if x == [ ] then null else builtins.head x) else x;
      entry = p: {
        path = "${p}";
        description = p.meta.description or null;
        homepage = firstOf (p.meta.homepage or null);
        licenses = licensesOf (p.meta.license or [ ]);
      };
    in
    if described == [ ] then
      [ ]
    else
      [
        "--sbom-meta"
        "${jsonFile "${derivationName args.name}-sbom-meta.json" (map entry described)}"
      ];

  # The closure's SBOM as its own small derivation (image.sbom): `sbom`'s first format, or
  # CycloneDX. It describes the closure (the image's digests are known only once it is made;
  # the documents beside the image name them).
  sbomOf =
    args:
    let
      format = if (args.sbom or [ ]) == [ ] then "cyclonedx" else builtins.head args.sbom;
      suffix = if format == "spdx" then "spdx.json" else "cdx.json";
    in
    layeredGenDerivation {
      name = "${derivationName args.name}-sbom.${suffix}";
      args = [
        "sbom"
        "--format"
        format
        "--created"
        (args.created or "1970-01-01T00:00:01Z")
      ]
      ++ sbomMetaArgs args
      ++ fromAttrs;
      exportReferencesGraph.closure = imageRoots args;
    };

  # Everything that decides the image, as a small JSON file (nixpkgs' conf.json plays this
  # part): the layered-gen arguments and the store paths the image holds.
  confOf =
    args:
    jsonFile "${derivationName args.name}-conf.json" {
      arguments = commonArgs args;
      roots = map (root: "${root}") (imageRoots args);
    };

  # The tag of an image given none: the store hash of a derivation (for buildLayeredImage and
  # streamLayeredImage, their conf's, so that both of the same arguments share it). The
  # derivation is not built for this: its path is known from its inputs.
  storeHash =
    drv: builtins.substring 0 32 (builtins.baseNameOf (builtins.unsafeDiscardStringContext drv.outPath));
  imageTagOf = args: if args.tag or null != null then args.tag else storeHash (confOf args);

  # imageName and imageTag, set whatever the arguments (tag null: see imageTagOf), and the
  # copyTo* executables, as nix2container has them.
  withImageAttrs =
    args: drv:
    let
      imageTag = imageTagOf args;
    in
    drv
    // (args.passthru or { })
    // {
      imageName = imageName args;
      meta = args.meta or { };
      inherit imageTag;
      copyToRegistry = copyScript "registry" args imageTag;
      copyToDockerDaemon = copyScript "docker-daemon" args imageTag;
      copyToPodman = copyScript "podman" args imageTag;
      # The closure's bill of materials (see sbomOf).
      sbom = sbomOf args;
      # The derivation that runs extraCommands and fakeRootCommands (null without them): its
      # tree and perms.json are the customisation layer.
      customisationLayer = if hasCommands args then customisation args else null;
      # The layers it takes as they are (`layers`, and those layerDerivations planned).
      layers = args.layers or [ ];
    };

  compressorFlag =
    compressor:
    {
      none = "none";
      gz = "gzip";
      zstd = "zstd";
    }
    .${compressor}
      or (throw "layered-gen: compressor must be \"none\", \"gz\" or \"zstd\", not \"${compressor}\"");

  suffix = {
    none = "";
    gz = ".gz";
    zstd = ".zst";
  };
  # One layer as a derivation (`layered-gen layer`): its tarball's diff_id, its blob once per
  # compressor ("gz", "zstd", "none", or a list of them) with digest and size, and the store
  # paths it holds, in layer.json. Built once, on any builder, substituted from a binary cache
  # afterwards; images take it with `layers = [ ... ]`, as it is. `deps`: store paths whose
  # closure goes in, less the paths of `layers` (layers it goes on); `contents`: the same, and
  # their trees linked at / in the layer, as an image's contents are (a shell layer with
  # /bin/sh); `paths`: exactly these paths, in this order (what layerDerivations gives). The owner, mtime and tarCompat must be
  # the image's for the layer to be the one the image would make itself.
  buildLayer =
    {
      deps ? [ ],
      contents ? [ ],
      layers ? [ ],
      paths ? null,
      compressor ? "gz",
      name ? null,
      tarCompat ? "none",
      mtime ? "1970-01-01T00:00:01Z",
      uid ? 0,
      gid ? 0,
      uname ? "root",
      gname ? "root",
    }:
    layeredGenDerivation {
      name = if name == null then "layer" else "${name}-layer";
      args =
        [ "layer" ]
        ++ fromAttrs
        ++ [
          "--quiet"
          "--mtime"
          mtime
          "--uid"
          (toString uid)
          "--gid"
          (toString gid)
          "--uname"
          uname
          "--gname"
          gname
          "--tar-compat"
          tarCompat
        ]
        ++ builtins.concatMap (c: [
          "--compression"
          (compressorFlag c)
        ]) (l.toList compressor)
        ++ builtins.concatMap (layer: [
          "--layer"
          "${layer}"
        ]) layers
        ++ builtins.concatMap (p: [
          "--contents"
          "${p}"
        ]) (l.toList contents)
        ++ (
          if paths == null then
            [ ]
          else
            builtins.concatMap (p: [
              "--path"
              "${p}"
            ]) paths
        );
      exportReferencesGraph.closure = (if paths == null then deps else paths) ++ l.toList contents;
    };

in
rec {
  # An image file (docker-archive, or an OCI layout with format = "oci"), compressed as a whole
  # by `compressor` ("none", "gz", "zstd").
  buildLayeredImage =
    given:
    let
      args = withLayerDerivations (checkArgs "buildLayeredImage" (knownArgs ++ [ "compressor" ]) given);
      compressor = args.compressor or "gz";
      format = args.format or "docker-archive";
    in
    overridable buildLayeredImage given (
      (withImageAttrs args (layeredGenDerivation {
        name =
          derivationName args.name
          + (if format == "oci" then "-oci" else ".tar" + suffix.${compressor} or "");
        args =
          commonArgs args
          ++ fromAttrs
          ++ [ "--quiet" ]
          ++ (
            if format == "oci" then
              [ ]
            else
              [
                "--archive-compression"
                (compressorFlag compressor)
              ]
          )
          ++ [
            "--tag"
            (imageTagOf args)
          ]
          ++ extraTagArgs (args.extraTags or [ ]);
        exportReferencesGraph.closure = imageRoots args;
      }))
      // {
        # The same image as a stream, as dockerTools gives it.
        stream = streamLayeredImage (builtins.removeAttrs given [ "compressor" ]);
      }
    );

  # An executable that streams the image to stdout: `$(nix-build ...) | docker load`. Only the
  # script goes into the store; the image is made from the store each time it runs.
  streamLayeredImage =
    given:
    let
      args = withLayerDerivations (checkArgs "streamLayeredImage" knownArgs given);
      script = streamScript {
        name = "stream-${derivationName args.name}";
        streamArgs = commonArgs args;
        tag = imageTagOf args;
        inherit args;
      };
    in
    overridable streamLayeredImage given (
      withImageAttrs args script
      // {
        # As dockerTools' stream: an executable, its configuration, and the script itself.
        isExe = true;
        conf = confOf args;
        streamScript = script;
      }
    );

  inherit buildLayer;

  # nixpkgs' buildLayeredImageWithNixDb: buildLayeredImage with includeNixDB, a Nix database
  # registering the image's store paths so that nix commands work in the container. (nixpkgs
  # has no streamLayeredImageWithNixDb; streamLayeredImage takes includeNixDB itself.)
  buildLayeredImageWithNixDb = given: buildLayeredImage (given // { includeNixDB = true; });

  # Several images in one docker-archive, as dockerTools' mergeImages: layers they share are
  # stored once, every image keeps its tags, `docker load < result` loads them all. Takes
  # images as buildLayeredImage makes them (compressed or not), or any docker-archive.
  mergeImages =
    images:
    layeredGenDerivation {
      name = "merge-docker-images";
      args =
        [ "merge" ]
        ++ map (image: "${image}") images
        ++ [
          "--output-from-attrs"
          ".attrs.json"
          "--archive-compression"
          "gzip"
          "--quiet"
        ];
    };

  # One multi-platform image from images of several platforms (each built with its own
  # `architecture`): an OCI layout holding an image index, each image's platform from its
  # config. `skopeo copy --all oci:result:TAG docker://...` (or `layered-gen index ... -o
  # docker://...`) pushes all of them.
  buildImageIndex =
    {
      name,
      tag ? null,
      extraTags ? [ ],
      images,
    }:
    let
      index = layeredGenDerivation {
        name = "${derivationName name}-index";
        args =
          [ "index" ]
          ++ map (image: "${image}") images
          ++ [
            "--name"
            (l.toLower name)
            "--output-from-attrs"
            ".attrs.json"
            "--quiet"
          ]
          ++ (
            if tag == null then
              [ "--tag-from-output" ]
            else
              [
                "--tag"
                tag
              ]
          )
          ++ extraTagArgs extraTags;
      };
    in
    index
    // {
      imageName = l.toLower name;
      imageTag = if tag != null then tag else storeHash index;
    };
}
