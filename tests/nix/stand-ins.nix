# NixOS options that nix/ uses and NixOS 20.09 (the frozen tree in
# ../shared/nixos-eval) does not have yet, declared as the release that added
# them declares them, so that the rest of the system can be evaluated for
# real. Loaded only for the frozen tree: against a real nixpkgs checkout
# (NIXPKGS=/path) the tests use NixOS's own declarations and none of these.
# Keep this list short; every entry names the release that has the option.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types;

  # services.qbittorrent: NixOS 25.11 (nixos/modules/services/torrent/qbittorrent.nix;
  # not in 25.05's list of new modules). Its options with their names, types and
  # defaults, and the unit it renders, in the same shape: qBittorrent.conf
  # written whole from serverConfig at every start (nested names joined with
  # "\"), --profile, --webui-port, --torrenting-port, and its hardening
  # (PrivateUsers, ProcSubset=pid, no capabilities). Only what 20.09 lacks is
  # replaced: tmpfiles.rules for tmpfiles.settings, lib.escapeShellArgs for
  # utils.escapeSystemdExecArgs.
  qbt = config.services.qbittorrent;
  iniKeys = prefix: v:
    if builtins.isAttrs v then
      lib.concatLists (lib.mapAttrsToList (k: x: iniKeys "${prefix}\\${k}" x) v)
    else
      [ "${prefix}=${lib.generators.mkValueStringDefault { } v}" ];
  qbtIni = lib.concatStrings (
    lib.mapAttrsToList (
      section: keys:
      "[${section}]\n"
      + lib.concatMapStrings (l: l + "\n") (
        lib.concatLists (lib.mapAttrsToList (k: v: iniKeys k v) keys)
      )
      + "\n"
    ) (lib.recursiveUpdate { BitTorrent.Session.QueueingSystemEnabled = false; } qbt.serverConfig)
  );
  qbtConf = pkgs.writeText "qBittorrent.conf" qbtIni;
in
{
  options = {
    services.qbittorrent = {
      enable = lib.mkEnableOption "qbittorrent, BitTorrent client";
      package = lib.mkPackageOption pkgs "qbittorrent-nox" { };
      user = mkOption { type = types.str; default = "qbittorrent"; description = "User account."; };
      group = mkOption { type = types.str; default = "qbittorrent"; description = "Group."; };
      profileDir = mkOption { type = types.path; default = "/var/lib/qBittorrent/"; description = "--profile."; };
      openFirewall = lib.mkEnableOption "opening webuiPort and torrentingPort over TCP";
      webuiPort = mkOption { type = types.nullOr types.port; default = 8080; description = "--webui-port."; };
      torrentingPort = mkOption { type = types.nullOr types.port; default = null; description = "--torrenting-port."; };
      serverConfig = mkOption {
        type = types.submodule { freeformType = types.attrsOf (types.attrsOf types.anything); };
        default = { };
        description = "qBittorrent.conf, written whole at every start.";
      };
      extraArgs = mkOption { type = types.listOf types.str; default = [ ]; description = "Extra arguments."; };
    };

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

  config = lib.mkIf qbt.enable {
    systemd.tmpfiles.rules = [
      "d ${qbt.profileDir}/qBittorrent/ 755 ${qbt.user} ${qbt.group} -"
      "d ${qbt.profileDir}/qBittorrent/config/ 755 ${qbt.user} ${qbt.group} -"
    ];
    systemd.services.qbittorrent = {
      description = "qbittorrent BitTorrent client";
      wants = [ "network-online.target" ];
      after = [ "local-fs.target" "network-online.target" "nss-lookup.target" ];
      wantedBy = [ "multi-user.target" ];
      restartTriggers = lib.optional (qbt.serverConfig != { }) qbtConf;
      serviceConfig = {
        Type = "simple";
        User = qbt.user;
        Group = qbt.group;
        ExecStartPre = lib.mkIf (qbt.serverConfig != { })
          "${pkgs.coreutils}/bin/install -Dm600 ${qbtConf} \"${qbt.profileDir}/qBittorrent/config/qBittorrent.conf\"";
        ExecStart = lib.escapeShellArgs (
          [ (lib.getExe qbt.package) "--profile=${qbt.profileDir}" ]
          ++ lib.optional (qbt.webuiPort != null) "--webui-port=${toString qbt.webuiPort}"
          ++ lib.optional (qbt.torrentingPort != null) "--torrenting-port=${toString qbt.torrentingPort}"
          ++ qbt.extraArgs
        );
        TimeoutStopSec = 1800;
        PrivateTmp = false;
        PrivateNetwork = false;
        RemoveIPC = true;
        NoNewPrivileges = true;
        PrivateDevices = true;
        PrivateUsers = true;
        ProtectHome = "yes";
        ProtectProc = "invisible";
        ProcSubset = "pid";
        ProtectSystem = "full";
        ProtectClock = true;
        ProtectHostname = true;
        ProtectKernelLogs = true;
        ProtectKernelModules = true;
        ProtectKernelTunables = true;
        ProtectControlGroups = true;
        RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_NETLINK" ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        MemoryDenyWriteExecute = true;
        SystemCallArchitectures = "native";
        CapabilityBoundingSet = "";
        SystemCallFilter = [ "@system-service" ];
      };
    };
    users.users = lib.mkIf (qbt.user == "qbittorrent") {
      qbittorrent = { inherit (qbt) group; isSystemUser = true; };
    };
    users.groups = lib.mkIf (qbt.group == "qbittorrent") { qbittorrent = { }; };
    networking.firewall.allowedTCPPorts = lib.mkIf qbt.openFirewall (
      lib.optional (qbt.webuiPort != null) qbt.webuiPort
      ++ lib.optional (qbt.torrentingPort != null) qbt.torrentingPort
    );
  };
}
