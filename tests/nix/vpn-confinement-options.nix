# VPN-Confinement's interface (github.com/Maroka-chan/VPN-Confinement,
# modules/options.nix and modules/systemd.nix): the options a host sets, with
# their names, types and defaults, and nothing of what they build. Enough to
# evaluate nix/module-vpn-confinement.nix against a host configured the way
# VPN-Confinement's README shows, without VPN-Confinement's code.
{ lib, ... }:
let
  inherit (lib) mkOption types;
  portOption = extra: types.submodule {
    options = extra // {
      protocol = mkOption {
        type = types.enum [ "tcp" "udp" "both" ];
        default = "tcp";
      };
    };
  };
in
{
  options.vpnNamespaces = mkOption {
    default = { };
    type = types.attrsOf (types.submodule {
      options = {
        enable = lib.mkEnableOption "vpn netns";
        accessibleFrom = mkOption { type = types.listOf types.str; default = [ ]; };
        allowedEgress = mkOption { type = types.listOf types.str; default = [ ]; };
        namespaceAddress = mkOption { type = types.str; default = "192.168.15.1"; };
        namespaceAddressIPv6 = mkOption { type = types.str; default = "fd93:9701:1d00::2"; };
        bridgeAddress = mkOption { type = types.str; default = "192.168.15.5"; };
        bridgeAddressIPv6 = mkOption { type = types.str; default = "fd93:9701:1d00::1"; };
        openVPNPorts = mkOption {
          type = types.listOf (portOption { port = mkOption { type = types.port; }; });
          default = [ ];
        };
        portMappings = mkOption {
          type = types.listOf (portOption {
            from = mkOption { type = types.port; };
            to = mkOption { type = types.port; };
          });
          default = [ ];
        };
        wireguardConfigFile = mkOption { type = types.str; };
      };
    });
  };
  options.systemd.services = mkOption {
    type = types.attrsOf (types.submodule {
      options.vpnConfinement = {
        enable = mkOption { type = types.bool; default = false; };
        vpnNamespace = mkOption { type = types.str; default = ""; };
      };
    });
  };
}
