# Publishes what ../shared/nixos-eval/eval.nix does not print: the values the
# tests read, each as JSON in the serviceConfig of a masked unit
# (enable = false: it is never started, nor written as a unit file) named
# qvn-eval-probe. The tests ask eval.nix for that unit's serviceConfig.
{ config, options, lib, ... }:
let
  json = builtins.toJSON;
  has = path: lib.hasAttrByPath path options;
  wd = config.services.qbt-vpn-watchdog;
  vpn = config.services.qbittorrent-vpn;
in
{
  systemd.services.qvn-eval-probe = {
    enable = false;
    serviceConfig = {
      X-Firewall = json {
        inherit (config.networking.firewall) enable allowedTCPPorts extraCommands;
        extraInputRules = if has [ "networking" "firewall" "extraInputRules" ] then config.networking.firewall.extraInputRules else null;
      };
      X-Prometheus-RuleFiles = json (if config.services.prometheus.enable then map toString config.services.prometheus.ruleFiles else null);
      X-Nftables-Tables = json (if has [ "networking" "nftables" "tables" ] then config.networking.nftables.tables else null);
      X-Tmpfiles = json config.systemd.tmpfiles.rules;
      X-Prometheus = json (if config.services.prometheus.enable then config.services.prometheus.scrapeConfigs else null);
      X-Users = json (lib.mapAttrs (n: u: { inherit (u) isSystemUser group home; }) (
        lib.filterAttrs (n: u: n == "qbittorrent") config.users.users
      ));
    }
    // lib.optionalAttrs (has [ "services" "qbt-vpn-watchdog" ] && wd.enable) {
      X-Watchdog = json {
        inherit (wd) settings generatedSettings watchdogSec;
        configFile = toString wd.configFile;
        package = toString wd.package;
        # The `qbt-vpn-watchdog` commands on the system's PATH: (priority, script text).
        commands = map (p: { priority = p.meta.priority or 5; text = p.text or null; }) (
          builtins.filter (p: (p.name or "") == "qbt-vpn-watchdog") config.environment.systemPackages
        );
        prometheusRules = {
          file = toString wd.prometheusRules.file;
          # The build script of the rendered rules (pkgs.runCommand's buildCommand).
          command = wd.prometheusRules.file.buildCommand;
        };
      };
    }
    // lib.optionalAttrs (has [ "services" "qbittorrent-vpn" ] && vpn.enable) {
      X-Confinement = json vpn.generated;
    };
  };
}
