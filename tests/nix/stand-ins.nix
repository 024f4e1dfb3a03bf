# NixOS options that nix/ uses and NixOS 20.09 (the frozen tree in
# ../shared/nixos-eval) does not have yet, declared as the release that added
# them declares them, so that the rest of the system can be evaluated for
# real. Loaded only for the frozen tree: against a real nixpkgs checkout
# (NIXPKGS=/path) the tests use NixOS's own declarations and none of these.
# Keep this list short; every entry names the release that has the option.
{ lib, ... }:
let
  inherit (lib) mkOption types;
in
{
  options = {
    # systemd.services.<name>.upholds: NixOS 23.11 (nixos/lib/systemd-unit-options.nix),
    # rendered as Upholds= in [Unit] as that release does.
    systemd.services = mkOption {
      type = types.attrsOf (
        types.submodule (
          { config, ... }:
          {
            options.upholds = mkOption {
              type = types.listOf types.str;
              default = [ ];
              description = "Keeps the listed units running while this unit runs (Upholds=).";
            };
            config.unitConfig = lib.mkIf (config.upholds != [ ]) {
              Upholds = lib.concatStringsSep " " config.upholds;
            };
          }
        )
      );
    };

    # networking.firewall.extraInputRules: NixOS 23.05 (nftables-based
    # firewall), where the nixpkgs exporters put `firewallRules`; the
    # watchdog module does the same. Declared only: 20.09 has no nftables
    # firewall to render it into.
    networking.firewall.extraInputRules = mkOption {
      type = types.lines;
      default = "";
      description = "Extra nftables rules for the firewall's input chain.";
    };

    # services.dnsmasq.settings: NixOS 23.05 (RFC 42 settings replaced extraConfig).
    # Used by the VM test's airvpn node. Declared only: 20.09's dnsmasq module
    # does not render it, so its values reach no file here.
    services.dnsmasq.settings = mkOption {
      type = types.attrsOf types.anything;
      default = { };
      description = "dnsmasq.conf as an attribute set.";
    };
  };
}
