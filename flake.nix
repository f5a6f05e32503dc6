{
  description = "layered-gen: reproducible, layered container images from Nix store closures";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAll = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAll (pkgs: rec {
        layered-gen = pkgs.callPackage ./nix/package.nix { };
        default = layered-gen;
      });

      # buildLayeredImage and streamLayeredImage, per system.
      lib = forAll (pkgs: pkgs.callPackage ./nix {
        layered-gen = self.packages.${pkgs.stdenv.hostPlatform.system}.layered-gen;
      });

      overlays.default = final: prev: {
        layered-gen = final.callPackage ./nix/package.nix { };
        layeredImages = final.callPackage ./nix { };
      };
    };
}
