# How nixpkgs builds layered-gen itself (`callPackage ./nix/package.nix { }`).
{ lib, rustPlatform, util-linux }:

rustPlatform.buildRustPackage {
  pname = "layered-gen";
  version = "0.1.0";

  src = lib.cleanSource ../.;
  cargoLock.lockFile = ../Cargo.lock;

  # The hermetic tier: unit, property and binary-only tests, which need nothing but the
  # build. The tool tier (Docker, podman, skopeo, umoci, Nix, a registry; the `tool-tests`
  # feature) runs in the repository's .ci/run.
  doCheck = true;
  # `script` gives the terminal tests a pseudo-terminal.
  nativeCheckInputs = [ util-linux ];

  meta = {
    description = "Turn a Nix store closure into a reproducible, layered container image";
    license = lib.licenses.mit;
    mainProgram = "layered-gen";
  };
}
