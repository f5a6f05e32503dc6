# The smallest useful image built with layered-gen from Nix: copy this file and adapt it.
#
#   nix-build examples/nix --arg layeredGenDir ./lg --arg busyboxDir ./bb && docker load < result
#
# With nixpkgs you would write instead:
#   let layered = pkgs.callPackage ./nix { layered-gen = pkgs.callPackage ./nix/package.nix { }; };
#   in layered.buildLayeredImage { name = "example/hello"; contents = [ pkgs.busybox ]; ... }
# This example needs no nixpkgs, so it also runs on a machine with nothing but Nix.
{
  layeredGenDir, # a directory holding bin/layered-gen
  busyboxDir, # a directory holding bin/busybox (static) and bin/sh -> busybox
}:
let
  busybox = builtins.path { path = busyboxDir; name = "busybox-static"; };
  layered = import ../../nix {
    layered-gen = builtins.path { path = layeredGenDir; name = "layered-gen"; };
    runtimeShell = "${busybox}/bin/sh";
  };
  # A real package built by Nix: a script that greets.
  hello = derivation {
    name = "hello-1.0";
    system = builtins.currentSystem;
    builder = "${busybox}/bin/sh";
    args = [ "-c" ''
      mkdir -p $out/bin
      printf '#!${busybox}/bin/sh\necho "$GREETING from a layered-gen image"\n' > $out/bin/hello
      chmod +x $out/bin/hello
    '' ];
  };
in
layered.buildLayeredImage {
  name = "example/hello"; # the image's name; a registry and slashes are fine
  tag = "latest-example"; # omit it to get the output's hash, so one tag names one image
  contents = [ busybox hello ]; # linked at /: /bin/sh, /bin/hello, ...
  config = {
    Cmd = [ "/bin/hello" ]; # what `docker run example/hello:latest-example` runs
    Env = [ "GREETING=Hello" ]; # a repeated name keeps its last value
  };
  maxLayers = 10; # store paths are grouped as dockerTools does (auto) into at most this many layers
  extraCommands = "mkdir -p tmp && chmod 1777 tmp"; # shell run in the image root
  compressor = "gz"; # the whole archive: "none", "gz" or "zstd"
}
