# Non-flake entry point:
#
#   let qbtVpn = import /path/to/qbt-vpn-watchdog/nix { inherit pkgs; };
#   in {
#     imports = [ qbtVpn.nixosModules.default ];
#   }
#
# nixosModules.watchdog is the watchdog alone (services.qbt-vpn-watchdog);
# nixosModules.confinement (= default) adds the confined tunnel and
# qbittorrent-nox (services.qbittorrent-vpn) and imports the watchdog module.
{
  pkgs ? import <nixpkgs> { },
  revision ? "", # the git revision, for qbtvpn_build_info (the flake passes its own)
}:
{
  package = pkgs.python3Packages.callPackage ./package.nix { inherit revision; };

  nixosModules = {
    watchdog = ./module-watchdog.nix;
    confinement = ./module-confinement.nix;
    default = ./module-confinement.nix;
  };

  # Needs KVM; not run in this project's CI (see docs/nixos-host.md).
  vmTest = pkgs.testers.runNixOSTest (import ./tests/vm-test.nix);
}
