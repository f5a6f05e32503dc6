# Layers as derivations, measured with a real nix-build on the shared corpus
# (../shared/corpus/make-corpus): each corpus package is imported into the store and wrapped in
# a derivation that references its dependencies' wrappers, so an image of the root has the
# corpus's graph. `updated` names a package whose content changes (a one-package update);
# `without` names a top-level package the sibling image leaves out. run.sh drives it.
{
  corpus,
  layeredGenDir,
  busyboxDir,
  updated ? "",
  without ? "",
  # A JSON file mapping corpus paths to their content already in the store (run.sh writes it
  # from `contentPaths`): evaluation then takes them as they are instead of hashing the whole
  # corpus again, which would dwarf every build measured.
  imported ? null,
  maxLayers ? 100,
}:
let
  busybox = builtins.path {
    path = busyboxDir;
    name = "busybox-static";
  };
  sh = "${busybox}/bin/sh";
  layered = import ../../nix {
    layered-gen = builtins.path {
      path = layeredGenDir;
      name = "layered-gen";
    };
    runtimeShell = sh;
  };
  graph = builtins.fromJSON (builtins.readFile (corpus + "/graph.json"));
  root = builtins.head (builtins.filter (n: n.path == rootPath) graph);
  rootPath = builtins.replaceStrings [ "\n" ] [ "" ] (builtins.readFile (corpus + "/root"));
  # A corpus path's package name, as a store name may spell it.
  nameOf =
    p:
    builtins.replaceStrings [ "~" ":" ] [ "_" "_" ] (
      builtins.substring 33 (-1) (builtins.baseNameOf p)
    );
  importedPaths = if imported == null then { } else builtins.fromJSON (builtins.readFile imported);
  # The files, imported as they are; the updated package's gain a file.
  content =
    n:
    let
      imported =
        if importedPaths ? ${n.path} then
          builtins.storePath importedPaths.${n.path}
        else
          builtins.path {
            path = n.path;
            name = "${nameOf n.path}-content";
          };
    in
    if nameOf n.path == updated then
      derivation {
        name = "${nameOf n.path}-content-updated";
        system = builtins.currentSystem;
        builder = sh;
        args = [
          "-c"
          "${busybox}/bin/busybox cp -a ${imported} $out && ${busybox}/bin/busybox chmod u+w $out && echo updated > $out/.updated"
        ];
      }
    else
      imported;
  # The package: its content and its dependencies, referenced.
  packages = builtins.listToAttrs (
    map (n: {
      name = n.path;
      value = derivation {
        name = nameOf n.path;
        system = builtins.currentSystem;
        builder = sh;
        content = content n;
        deps = map (r: packages.${r}) (builtins.filter (r: r != n.path && r != rootPath) n.references);
        args = [
          "-c"
          "${busybox}/bin/busybox mkdir $out && ${busybox}/bin/busybox ln -s $content $out/content && echo $deps > $out/deps"
        ];
      };
    }) (builtins.filter (n: n.path != rootPath) graph)
  );
  top = map (r: packages.${r}) (builtins.filter (r: r != rootPath) root.references);
  # The image's root: it references the top-level packages (linked at / is only its own file).
  rootOf =
    name: deps:
    derivation {
      inherit name deps;
      system = builtins.currentSystem;
      builder = sh;
      args = [
        "-c"
        "${busybox}/bin/busybox mkdir $out && echo $deps > $out/packages"
      ];
    };
  imageRoot = rootOf "image-root" top;
  siblingRoot = rootOf "sibling-root" (builtins.filter (p: p.name != without) top);
  args = {
    name = "bench/corpus";
    contents = [ imageRoot ];
    format = "oci";
    layering = "reuse";
    inherit maxLayers;
  };
  streamArgs = builtins.removeAttrs args [ "format" ];
in
{
  packages = top;
  contentPaths = builtins.listToAttrs (
    map (n: {
      name = n.path;
      value = "${content n}";
    }) (builtins.filter (n: n.path != rootPath && nameOf n.path != updated) graph)
  );
  stream = layered.streamLayeredImage streamArgs;
  streamSplit = layered.streamLayeredImage (streamArgs // { layerDerivations = true; });
  whole = layered.buildLayeredImage args;
  split = layered.buildLayeredImage (args // { layerDerivations = true; });
  splitLayers = (layered.buildLayeredImage (args // { layerDerivations = true; })).layers;
  sibling = layered.buildLayeredImage (
    args
    // {
      name = "bench/sibling";
      contents = [ siblingRoot ];
      layerDerivations = true;
    }
  );
  siblingLayers =
    (layered.buildLayeredImage (
      args
      // {
        name = "bench/sibling";
        contents = [ siblingRoot ];
        layerDerivations = true;
      }
    )).layers;
}
