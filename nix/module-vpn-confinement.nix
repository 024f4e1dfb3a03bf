# The watchdog for a namespace built by VPN-Confinement
# (github.com/Maroka-chan/VPN-Confinement): `vpnNamespaces.<name>` makes the
# namespace <name>, the WireGuard interface <name>0 in it, the bridge
# <name>-br (bridgeAddress, 192.168.15.5/24) in the root namespace with the
# veth pair veth-<name>-br / veth-<name> (namespaceAddress, 192.168.15.1/24,
# plus the ULA fd93:9701:1d00::2/64), /etc/netns/<name>/resolv.conf from the
# config's DNS, and the unit <name>.service that builds and removes all of it.
# `systemd.services.<unit>.vpnConfinement` puts a unit into it.
#
# This module maps that onto services.qbt-vpn-watchdog's settings (each with
# mkDefault: set any of them yourself to override):
#
#   namespace.name                  <name>
#   wireguard.interface / reader    <name>0 / kernel
#   qbittorrent.url                 http://<namespaceAddress>:<webuiPort>
#   qbittorrent.forwarded_port      forwardedPort (an openVPNPorts entry)
#   checks.dns.resolver             "" (the namespace's resolv.conf, as VPN-Confinement writes it)
#   remediation.restart_unit        <name>.service (VPN-Confinement's unit; a
#                                   restart rebuilds the namespace and, through
#                                   BindsTo=, restarts every confined unit)
#   after                           <name>.service, <unit>.service
#
# It does not import VPN-Confinement: import both. It reads
# vpnNamespaces.<name>.namespaceAddress when VPN-Confinement is imported, and
# VPN-Confinement's default (192.168.15.1) otherwise.
{
  config,
  options,
  lib,
  ...
}:
let
  cfg = config.services.qbt-vpn-watchdog.vpnConfinement;
  inherit (lib) mkOption mkDefault mkIf types;
  hasVpnConfinement = options ? vpnNamespaces;
  hasQbittorrent = options.services ? qbittorrent;
  namespaceAddress =
    if hasVpnConfinement && config.vpnNamespaces ? ${cfg.namespace} then
      config.vpnNamespaces.${cfg.namespace}.namespaceAddress
    else
      "192.168.15.1";
in
{
  imports = [ ./module-watchdog.nix ];

  options.services.qbt-vpn-watchdog.vpnConfinement = {
    namespace = mkOption {
      type = types.nullOr (types.strMatching "[A-Za-z0-9_-]{1,7}");
      default = null;
      example = "wg";
      description = ''
        The VPN-Confinement namespace to watch (the <name> of
        `vpnNamespaces.<name>`, at most 7 characters as VPN-Confinement
        requires); null = this mapping is off.
      '';
    };
    unit = mkOption {
      type = types.str;
      default = "qbittorrent";
      description = "The qBittorrent unit confined there (systemd.services.<unit>.vpnConfinement).";
    };
    webuiPort = mkOption {
      type = types.port;
      default =
        if hasQbittorrent && config.services.qbittorrent.webuiPort != null then
          config.services.qbittorrent.webuiPort
        else
          8080;
      defaultText = lib.literalExpression "services.qbittorrent.webuiPort, else 8080";
      description = "qBittorrent's WebUI port inside the namespace (portMappings' `to`).";
    };
    forwardedPort = mkOption {
      type = types.nullOr types.port;
      default = if hasQbittorrent then config.services.qbittorrent.torrentingPort else null;
      defaultText = lib.literalExpression "services.qbittorrent.torrentingPort";
      description = "The VPN's forwarded port (an entry of openVPNPorts); null = none.";
    };
  };

  config = mkIf (cfg.namespace != null) {
    services.qbt-vpn-watchdog = {
      enable = mkDefault true;
      after = [
        "${cfg.namespace}.service"
        "${cfg.unit}.service"
      ];
      settings = {
        namespace.name = mkDefault cfg.namespace;
        wireguard.interface = mkDefault "${cfg.namespace}0";
        wireguard.reader = mkDefault "kernel";
        qbittorrent.url = mkDefault "http://${namespaceAddress}:${toString cfg.webuiPort}";
        qbittorrent.forwarded_port = mkDefault (if cfg.forwardedPort == null then 0 else cfg.forwardedPort);
        remediation.restart_unit = mkDefault "${cfg.namespace}.service";
      };
    };
  };
}
