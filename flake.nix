{
  description = "qbt-vpn-watchdog: watchdog and Prometheus exporter for qBittorrent confined to a WireGuard (AirVPN) tunnel, with NixOS modules";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAll = f: nixpkgs.lib.genAttrs systems (system: f (import ./nix { pkgs = nixpkgs.legacyPackages.${system}; revision = self.rev or self.dirtyRev or ""; }));
    in
    {
      packages = forAll (p: {
        default = p.package;
        qbt-vpn-watchdog = p.package;
      });
      nixosModules = (import ./nix { pkgs = null; }).nixosModules;
      # `nix flake check` builds the package (with its unit tests) and runs
      # the VM test, which needs KVM.
      checks = forAll (p: {
        package = p.package;
        vm-test = p.vmTest;
      });
    };
}
