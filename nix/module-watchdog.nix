# services.qbt-vpn-watchdog: the watchdog and Prometheus exporter as a
# hardened systemd service (Type=notify, WatchdogSec=).
#
# It runs in the root network namespace and enters the confined one for the
# probes that must happen inside it (sockets created there via setns, netlink
# to the WireGuard interface there), because it also has to reach the WebUI
# from the LAN side, serve /metrics on the host's network and restart the
# tunnel unit through systemd. Running it inside the namespace would give it
# none of those without extra holes in the kill switch.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.qbt-vpn-watchdog;
  inherit (lib) mkOption mkEnableOption mkIf types;

  settingsFormat = pkgs.formats.toml { };
  generatedConfig = settingsFormat.generate "qbt-vpn-watchdog.toml" renderedSettings;

  # The package comes from pkgs when an overlay (the flake's) puts it there,
  # else it is built from this repository.
  withOwnPackage = pkgs // {
    qbt-vpn-watchdog = pkgs.qbt-vpn-watchdog or (pkgs.python3Packages.callPackage ./package.nix { });
  };

  # Per-check timeouts as in watchdog/qbt_vpn_watchdog/config/schema.py (tests/artefacts/test_nixos_eval.py keeps this
  # table equal to the dataclass defaults).
  defaultCheckTimeouts = {
    handshake = 2;
    return_path = 5;
    dns = 3;
    path_mtu = 10;
    exit_ip = 10;
    bind = 5;
    webui = 5;
    ipv6 = 2;
    killswitch = 2;
    port_forward = 5;
  };
  checkTimeout = name: lib.attrByPath [ "checks" name "timeout" ] defaultCheckTimeouts.${name} cfg.settings;
  checksEnabled = name: lib.attrByPath [ "checks" name "enabled" ] true cfg.settings;
  sumTimeouts = lib.foldl' (a: n: a + (if checksEnabled n then checkTimeout n else 0)) 0 (
    lib.attrNames defaultCheckTimeouts
  );
  actionTimeout = lib.attrByPath [ "remediation" "action_timeout" ] 30 cfg.settings;
  # WATCHDOG=1 is sent once per completed cycle, so systemd must allow three
  # intervals plus a cycle in which every check runs into its timeout and every
  # action a cycle can run (the held-torrents read, stop_torrents, a tier-2
  # tunnel restart, rebind: 4) runs into its own: only a loop that is really
  # stuck gets the service restarted. The same formula as systemd.watchdog_sec and
  # /healthz's "stalled" (health.stall_limit; tests/artefacts/test_nixos_eval.py keeps them equal).
  actionsPerCycle = 4;
  ceil = x: let i = builtins.floor x; in if i == x then i else i + 1;
  defaultWatchdogSec = ceil (
    3 * cfg.settings.watchdog.interval + sumTimeouts + actionsPerCycle * actionTimeout
  );

  credentialName = cfg.settings.qbittorrent.password_credential;

  # `qbt-vpn-watchdog` on root's PATH, reading the service's own config (and,
  # through its password_file, the same password the service gets as a
  # credential): `qbt-vpn-watchdog check` (and `check --json`) need no argument.
  # --config still overrides it.
  cli = pkgs.writeShellScriptBin "qbt-vpn-watchdog" ''
    export QBT_VPN_WATCHDOG_CONFIG=${cfg.configFile}
    exec ${lib.getExe cfg.package} "$@"
  '';

  # The rules as the mixin renders them for prometheusRules.*.
  renderedRules = pkgs.runCommand "qbt-vpn-watchdog.rules.yml" { } (
    lib.escapeShellArgs (
      [
        "${cfg.package}/bin/qbt-vpn-watchdog-mixin"
        "--selector"
        cfg.prometheusRules.selector
        "--runbook-url-pattern"
        cfg.prometheusRules.runbookUrlPattern
      ]
      ++ lib.concatLists (lib.mapAttrsToList (k: v: [ "--label" "${k}=${v}" ]) cfg.prometheusRules.labels)
    )
    + " > $out"
  );

  port = toString cfg.settings.watchdog.listen_port;
  firewallFilter =
    if cfg.firewallFilter != null then cfg.firewallFilter else "-p tcp -m tcp --dport ${port}";
  firewallRules =
    if cfg.firewallRules != null then
      cfg.firewallRules
    else
      ''tcp dport ${port} accept comment "qbt-vpn-watchdog"'';
  nftables = config.networking.nftables.enable;

  # Every `*_file` key in `settings`, at any depth, as [ { path = "settings.a.b_file"; value; } ].
  fileSettings =
    let
      walk =
        prefix: attrs:
        lib.concatLists (
          lib.mapAttrsToList (
            name: value:
            if lib.isAttrs value && !(lib.isDerivation value) then
              walk (prefix ++ [ name ]) value
            else if lib.hasSuffix "_file" name then
              [
                {
                  path = lib.concatStringsSep "." (prefix ++ [ name ]);
                  inherit value;
                }
              ]
            else
              [ ]
          ) attrs
        );
    in
    walk [ "settings" ] cfg.settings;
  # A Nix path literal (./key.pem) is copied into the store when the TOML is
  # written; a string under /nix/store already is there. Both are
  # world-readable, whatever the file's mode was.
  inStore =
    value:
    builtins.isPath value
    || (lib.isDerivation value)
    || (builtins.isString value && lib.hasPrefix builtins.storeDir value);

  # Web secrets reach the service as systemd credentials: systemd reads them
  # (the service needs no access to where they live) and the TOML names the
  # copy under the unit's credentials directory.
  credentialsDir = "/run/credentials/qbt-vpn-watchdog.service";
  webFiles = lib.filterAttrs (
    name: value: lib.hasSuffix "_file" name && builtins.isString value && value != ""
  ) (cfg.settings.web or { });
  webCredential = name: "web-" + lib.replaceStrings [ "_" ] [ "-" ] (lib.removeSuffix "_file" name);
  renderedSettings = lib.recursiveUpdate cfg.settings (
    lib.optionalAttrs (webFiles != { }) {
      web = lib.mapAttrs (name: _: "${credentialsDir}/${webCredential name}") webFiles;
    }
  );
in
{
  options.services.qbt-vpn-watchdog = {
    enable = mkEnableOption "qbt-vpn-watchdog, the watchdog and Prometheus exporter for a WireGuard-confined qBittorrent";

    package = lib.mkPackageOption withOwnPackage "qbt-vpn-watchdog" {
      extraDescription = "Without an overlay that provides it, the package is built from this repository (nix/package.nix).";
    };

    settings = mkOption {
      default = { };
      description = ''
        The watchdog's configuration, rendered to TOML. Every key of
        watchdog/qbt_vpn_watchdog/example.toml can be set here (see its comments); the ones
        below are typed. Unknown keys are rejected by the watchdog at start.
        Secrets never go here: use `passwordFile`.
      '';
      type = types.submodule {
        freeformType = settingsFormat.type;
        options = {
          watchdog = {
            interval = mkOption {
              type = types.numbers.positive;
              default = 10;
              description = "Seconds between poll cycles.";
            };
            mode = mkOption {
              type = types.enum [
                "enforce"
                "observe"
              ];
              default = "enforce";
              description = ''"enforce" stops torrents and restarts the tunnel; "observe" only reports (what it would do: the journal's "would ..." lines). On a new host start with "observe" and switch once `qbt-vpn-watchdog check` passes and those lines are what you want done.'';
            };
            log_level = mkOption {
              type = types.enum [ "debug" "info" "warning" "error" ];
              default = "info";
              description = "Log level (the flag --log.level).";
            };
            log_format = mkOption {
              type = types.enum [ "text" "logfmt" "json" ];
              default = "text";
              description = "Log lines as text, logfmt or JSON (the flag --log.format); journald keeps each line's priority.";
            };
            listen_address = mkOption {
              type = types.str;
              default = "127.0.0.1";
              description = ''Address of /metrics and /healthz: an IP address, IPv4 or IPv6 (e.g. "127.0.0.1", "0.0.0.0" or "::"). Use the host's LAN or Tailscale address for a remote Prometheus.'';
            };
            listen_port = mkOption {
              type = types.port;
              default = 9879;
              description = "Port of /metrics and /healthz.";
            };
          };
          namespace.name = mkOption {
            type = types.str;
            default = "";
            example = "vpn";
            description = ''The network namespace holding the tunnel and qBittorrent ("" = the root namespace).'';
          };
          namespace.built_by_vpn_netns = mkOption {
            type = types.bool;
            default = false;
            description = ''
              The namespace and its kill switch are built by this project's vpn-netns.sh
              (services.qbt-vpn-confinement sets it): killswitch and ipv6 failures then
              restart the tunnel, which re-installs the kill switch. false: they only hold
              the torrents (a restart cannot repair another module's rules).
            '';
          };
          checks.port_forward = {
            interval = mkOption {
              type = types.numbers.nonnegative;
              default = 300;
              description = "Seconds between connects to the exit address and forwarded port (from the host).";
            };
            exit_ip = mkOption {
              type = types.str;
              default = "";
              example = "203.0.113.7";
              description = ''The exit address AirVPN forwards the port on ("" = the one the exit_ip check saw last).'';
            };
          };
          checks.ipv6.lan_prefixes = mkOption {
            type = types.listOf types.str;
            default = [ ];
            example = [ "fd51:7a6c::/48" ];
            description = "The LAN's own IPv6 prefixes: a route to them beside the tunnel is reported, not acted on.";
          };
          wireguard.interface = mkOption {
            type = types.strMatching "[^/[:space:]]{1,15}";
            default = "wg0";
            description = "The WireGuard interface (inside the namespace).";
          };
          qbittorrent = {
            url = mkOption {
              type = types.strMatching "https?://.+";
              default = "http://127.0.0.1:8080";
              description = "The WebUI as the watchdog reaches it from the root namespace.";
            };
            username = mkOption {
              type = types.str;
              default = "admin";
              description = "The WebUI user.";
            };
            password_credential = mkOption {
              type = types.strMatching "[A-Za-z0-9_.-]+";
              default = "qbittorrent-password";
              description = "Name of the systemd credential that carries `passwordFile`.";
            };
            forwarded_port = mkOption {
              type = types.ints.between 0 65535;
              default = 0;
              description = "The port forwarded by AirVPN (0 = none); `bind` checks qBittorrent listens on it.";
            };
          };
        };
      };
    };

    generatedSettings = mkOption {
      type = types.attrsOf types.anything;
      internal = true;
      readOnly = true;
      default = renderedSettings;
      description = "`settings` as the generated TOML has them: each `web.*_file` names its systemd credential.";
    };

    configFile = mkOption {
      type = types.path;
      default = generatedConfig;
      defaultText = lib.literalExpression "a TOML file generated from `settings`";
      example = "/etc/qbt-vpn-watchdog.toml";
      description = ''
        The watchdog's TOML configuration file. By default it is generated
        from `settings`; set it to use a file written by hand or by another
        tool instead (`settings` is then ignored, and so is the default of
        `watchdogSec`, which is computed from `settings`: set it too). It is
        read by the service at start and on reload; no secret belongs in it.
      '';
    };

    passwordFile = mkOption {
      type = types.nullOr (types.strMatching "/.+");
      default = null;
      example = "/run/secrets/qbittorrent-webui-password";
      description = ''
        File holding the WebUI password, read by systemd and handed to the
        service with LoadCredential= (so the service needs no access to the
        file's directory). A string, not a path, so that it is never copied
        into the world-readable Nix store.
      '';
    };

    watchdogSec = mkOption {
      type = types.ints.positive;
      default = defaultWatchdogSec;
      defaultText = lib.literalExpression "3 * interval + the enabled checks' timeouts + remediation.action_timeout";
      description = "systemd's WatchdogSec=: the service is restarted when no cycle completes for this long.";
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Open `settings.watchdog.listen_port` (TCP) for a Prometheus on
        another host, as the nixpkgs exporters do: by `firewallFilter`
        (iptables) or `firewallRules` (nftables, when
        `networking.nftables.enable`). By default from every interface and
        address: narrow it with those two options. `listen_address` must
        not be 127.0.0.1 for this to be of use.
      '';
    };

    firewallFilter = mkOption {
      type = types.nullOr types.str;
      default = null;
      defaultText = lib.literalExpression ''"-p tcp -m tcp --dport ''${toString settings.watchdog.listen_port}"'';
      example = "-i tailscale0 -p tcp -m tcp --dport 9879";
      description = ''
        iptables filter for `openFirewall` (the iptables firewall): used as
        `ip46tables -A nixos-fw <filter> -j nixos-fw-accept`. For example
        only the interface your Prometheus comes from.
      '';
    };

    firewallRules = mkOption {
      type = types.nullOr types.lines;
      default = null;
      defaultText = lib.literalExpression ''"tcp dport ''${toString settings.watchdog.listen_port} accept comment \"qbt-vpn-watchdog\""'';
      example = ''iifname "tailscale0" tcp dport 9879 accept comment "qbt-vpn-watchdog"'';
      description = ''
        nftables rules for `openFirewall` when `networking.nftables.enable`:
        added to the firewall's input chain (`networking.firewall.extraInputRules`).
      '';
    };

    prometheusRules = {
      enable = mkEnableOption ''
        handing this host's Prometheus (`services.prometheus`) the watchdog's
        alert and recording rules through `services.prometheus.ruleFiles`,
        rendered for the options below''
      ;
      selector = mkOption {
        type = types.str;
        default = "";
        example = ''job="torrent-box"'';
        description = ''
          Label matchers put into every query of the rules (see
          docs/alerting.md). Set it when the scrape job is not called
          "qbt-vpn-watchdog" or when Prometheus scrapes more than one.
        '';
      };
      runbookUrlPattern = mkOption {
        type = types.strMatching ".*%s.*";
        default = "file://${cfg.package}/share/qbt-vpn-watchdog/docs/runbook.md#%s";
        defaultText = lib.literalExpression ''"file://''${package}/share/qbt-vpn-watchdog/docs/runbook.md#%s"'';
        example = "https://wiki.example.org/runbooks/qbt-vpn-watchdog#%s";
        description = ''
          Every alert's runbook_url; `%s` is the alert name lowercased (the
          section's anchor in the runbook). The default is the runbook the
          package ships, on this host; a URL your on-call can open is better.
        '';
      };
      labels = mkOption {
        type = types.attrsOf types.str;
        default = { };
        example = {
          team = "media";
        };
        description = "Labels added to every alert (for Alertmanager's routes).";
      };
      file = mkOption {
        type = types.path;
        readOnly = true;
        default = renderedRules;
        defaultText = lib.literalExpression "the rules rendered by qbt-vpn-watchdog-mixin";
        description = "The rendered rule file (for a Prometheus configured elsewhere).";
      };
    };

    after = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [
        "qbittorrent-vpn-tunnel.service"
        "qbittorrent-vpn.service"
      ];
      description = ''
        Units the watchdog starts after and wants (the tunnel and
        qBittorrent). Deliberately not BindsTo=: the watchdog must keep
        running while they are down, to report it and to restart them.
      '';
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.passwordFile == null || !(lib.hasPrefix "/nix/store" cfg.passwordFile);
        message = "services.qbt-vpn-watchdog.passwordFile must not be in the Nix store (it is world-readable).";
      }
      {
        assertion = (cfg.firewallFilter != null || cfg.firewallRules != null) -> cfg.openFirewall;
        message = "services.qbt-vpn-watchdog.firewallFilter/firewallRules have no effect unless services.qbt-vpn-watchdog.openFirewall = true.";
      }
      {
        assertion = cfg.prometheusRules.enable -> config.services.prometheus.enable;
        message = ''
          services.qbt-vpn-watchdog.prometheusRules.enable needs services.prometheus on this host.
          For a Prometheus elsewhere, load services.qbt-vpn-watchdog.prometheusRules.file
          (or share/qbt-vpn-watchdog/alerts/qbt-vpn-watchdog.rules.yml of the package) there.'';
      }
    ]
    ++ map (f: {
      assertion = !(inStore f.value);
      message = ''
        services.qbt-vpn-watchdog.${f.path} = ${builtins.toJSON (toString f.value)} is, or would be copied into, the Nix store, which every user can read. Give the file as a string outside the store, e.g. "/run/secrets/qbt-vpn-watchdog-key.pem" (a Nix path such as ./key.pem is copied into the store).'';
    }) fileSettings;

    warnings = lib.optional (
      cfg.openFirewall
      && builtins.elem cfg.settings.watchdog.listen_address [
        "127.0.0.1"
        "::1"
        "localhost"
      ]
    ) "services.qbt-vpn-watchdog.openFirewall opens port ${port}, but settings.watchdog.listen_address is ${cfg.settings.watchdog.listen_address}: no other host can reach it. Set listen_address to the address Prometheus connects to.";

    # As nixpkgs' exporters (services/monitoring/prometheus/exporters.nix).
    networking.firewall.extraCommands = mkIf (cfg.openFirewall && !nftables) (
      "ip46tables -A nixos-fw ${firewallFilter} -m comment --comment qbt-vpn-watchdog -j nixos-fw-accept"
    );
    networking.firewall.extraInputRules = mkIf (cfg.openFirewall && nftables) firewallRules;

    services.prometheus.ruleFiles = mkIf cfg.prometheusRules.enable [ renderedRules ];

    # The file's path (never its content) in the config: the service reads the
    # credential first; a root shell's `qbt-vpn-watchdog check` reads the file.
    services.qbt-vpn-watchdog.settings.qbittorrent.password_file = mkIf (cfg.passwordFile != null) (
      lib.mkDefault cfg.passwordFile
    );
    # Before the package, should it be installed too: the same command, pointed at the config.
    environment.systemPackages = [ (lib.hiPrio cli) ];

    systemd.services.qbt-vpn-watchdog = {
      description = "Watchdog and Prometheus exporter for the WireGuard-confined qBittorrent";
      after = [ "network.target" ] ++ cfg.after;
      wants = cfg.after;
      wantedBy = [ "multi-user.target" ];
      restartTriggers = [ cfg.configFile ];

      serviceConfig = {
        Type = "notify";
        NotifyAccess = "main";
        ExecStart = "${lib.getExe cfg.package} run --config ${cfg.configFile}";
        ExecReload = "${pkgs.coreutils}/bin/kill -HUP $MAINPID";
        WatchdogSec = cfg.watchdogSec;
        Restart = "on-failure";
        RestartSec = 5;
        # Bounds measured in the lab (docs/systemd.md#limits): at most 32 fds,
        # 15 threads and 44 MiB during the 92-byte failure with qBittorrent
        # hung; a 200 MiB WebUI answer adds 33 MiB before the 32 MiB cap cuts it.
        LimitNOFILE = 1024;
        TasksMax = 128;
        MemoryHigh = "256M";
        MemoryMax = "384M";
        # The WebUI password, and the web secrets: every settings.web.*_file
        # (the TOML names the copy under ${credentialsDir}).
        LoadCredential =
          lib.optional (cfg.passwordFile != null) "${credentialName}:${cfg.passwordFile}"
          ++ lib.mapAttrsToList (name: value: "${webCredential name}:${value}") webFiles;

        # Root, with a bounding set of exactly three capabilities. CAP_SYS_ADMIN
        # is required for setns() into the confined namespace, and a process
        # holding it is root-equivalent whatever its UID: a dedicated user with
        # ambient capabilities plus a polkit rule would add moving parts
        # without taking any power away. Restarting the tunnel unit needs no
        # polkit rule either: systemctl run as root talks to systemd over its
        # root-only private socket, and on the bus systemd lets a caller with
        # CAP_SYS_ADMIN manage units.
        CapabilityBoundingSet = [
          "CAP_SYS_ADMIN" # setns(CLONE_NEWNET) into /run/netns/<name>; restart the tunnel unit
          "CAP_NET_ADMIN" # WireGuard genetlink: WG_CMD_GET_DEVICE (peer counters) and WG_CMD_SET_DEVICE (re-set the endpoint)
          "CAP_NET_RAW" # path_mtu: DF-marked ICMP echoes (and a fragmented one) on raw sockets in the namespace
        ];
        NoNewPrivileges = true;

        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectClock = true;
        ProtectHostname = true;
        ProtectProc = "invisible";
        RestrictSUIDSGID = true;
        RestrictRealtime = true;
        LockPersonality = true;
        MemoryDenyWriteExecute = true;
        RemoveIPC = true;
        UMask = "0077";
        # Netlink: rtnetlink counters and WireGuard genetlink. Unix: sd_notify,
        # systemd's bus and the wireguard-go UAPI socket.
        RestrictAddressFamilies = [
          "AF_UNIX"
          "AF_INET"
          "AF_INET6"
          "AF_NETLINK"
        ];
        # Only network namespaces may be entered (setns), none created.
        RestrictNamespaces = "net";
        SystemCallArchitectures = "native";
        # @system-service includes setns (via @process).
        SystemCallFilter = [
          "@system-service"
          "~@privileged @resources"
        ];
        SystemCallErrorNumber = "EPERM";
        # The state that must survive restarts (which torrents it stopped) is
        # kept as qBittorrent tags; nothing is written locally.
        RuntimeDirectory = "qbt-vpn-watchdog";
      };
    };
  };
}
