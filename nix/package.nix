# How nixpkgs builds layered-gen itself. Not built by this repository's tests (there is no
# nixpkgs offline); kept short and conventional.
{ lib, rustPlatform }:

rustPlatform.buildRustPackage {
  pname = "layered-gen";
  version = "0.1.0";

  src = lib.cleanSource ../.;
  cargoLock.lockFile = ../Cargo.lock;

  # The integration tests need Docker, podman, skopeo, umoci and a Nix store.
  doCheck = false;

  meta = {
    description = "Turn a Nix store closure into a reproducible, layered container image";
    license = lib.licenses.mit;
    mainProgram = "layered-gen";
  };
}
