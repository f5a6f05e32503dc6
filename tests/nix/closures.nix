# Real store paths and the closure files Nix writes about them, built with nothing but a static
# busybox (no nixpkgs): `bbDir` is a directory holding `busybox`.
{ bbDir }:
let
  bb = builtins.path { path = bbDir; name = "busybox-static"; };
  sh = "${bb}/busybox";
  mk = name: script: extra: derivation ({
    inherit name;
    system = builtins.currentSystem;
    builder = sh;
    args = [ "sh" "-c" script ];
  } // extra);

  # A small graph with a diamond (app -> liba, libb -> libc) and a self-reference (libc).
  libc = mk "fake-libc-1.0" "${sh} mkdir -p $out/lib && echo $out > $out/lib/self" { };
  liba = mk "liba-2.0" "${sh} mkdir -p $out/lib && echo ${libc} > $out/lib/deps" { };
  libb = mk "libb-3.1" "${sh} mkdir -p $out/lib && echo ${libc} > $out/lib/deps" { };
  app = mk "app-1.0" ''
    ${sh} mkdir -p $out/bin
    ${sh} cp ${bb}/busybox $out/bin/busybox
    ${sh} ln -s busybox $out/bin/sh
    echo ${liba} ${libb} > $out/deps
  '' { };

  # The path of this derivation's output, read from .attrs.json (there is no $out with
  # structured attrs).
  attrsOut = "$(${sh} sed -n 's/.*\"out\":\"\\([^\"]*\\)\".*/\\1/p' .attrs.json)";
in
{
  inherit app;
  # exportReferencesGraph's text format.
  closureText = mk "closure-text" "${sh} cp closure $out" {
    exportReferencesGraph = [ "closure" app ];
  };
  # exportReferencesGraph with structured attrs: the whole .attrs.json.
  closureAttrs = mk "closure-attrs" "${sh} cp .attrs.json ${attrsOut}" {
    __structuredAttrs = true;
    exportReferencesGraph.closure = [ app ];
  };
}
