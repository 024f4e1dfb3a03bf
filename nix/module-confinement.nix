# services.qbittorrent-vpn: qbittorrent-nox confined to an AirVPN WireGuard
# tunnel in its own network namespace, replacing a VPN container (hotio's
# qbittorrent image) with three native units:
#
#   qbittorrent-vpn-tunnel.service  namespace, kill switch, LAN veth, tunnel
#                                   (watchdog/qbt_vpn_watchdog/vpn-netns.sh, shared with the lab)
#   qbittorrent-vpn.service         qbittorrent-nox inside the namespace
#   qbt-vpn-watchdog.service        the watchdog, pointed at both
#
# Any other unit joins the same namespace with
# `systemd.services.<name>.qbtVpn.enable = true` (Prowlarr, SABnzbd, Jackett:
# whatever should reach the world only through the tunnel), and nixpkgs'
# own `services.qbittorrent` (NixOS 25.11 and later) is confined that way
# instead of qbittorrent-vpn.service when it is enabled: see
# `qbittorrent.unit` below.
#
# Inside the namespace there is lo, the WireGuard interface (created in the
# root namespace and moved in, so its encrypted UDP socket stays outside) and
# one veth to the host. The only default route is the tunnel; an nftables kill
# switch lets packets out only through the tunnel, and through the veth only
# as WebUI replies to the allowed LAN/Tailscale ranges. The WebUI listens on
# the veth address only, never on the tunnel.
{
  config,
  options,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.qbittorrent-vpn;
  inherit (lib) mkOption mkEnableOption mkIf mkDefault types;

  tunnelUnit = "qbittorrent-vpn-tunnel.service";
  # nixpkgs' services.qbittorrent exists in this NixOS (25.11 and later).
  nixpkgsHasQbittorrent = options.services ? qbittorrent;
  nixpkgsQbt = cfg.qbittorrent.unit == "nixpkgs";
  qbtUnitName = if nixpkgsQbt then "qbittorrent" else "qbittorrent-vpn";
  qbtUnit = "${qbtUnitName}.service";

  # Every unit confined into the namespace (systemd.services.<name>.qbtVpn).
  confined = lib.filterAttrs (n: s: s.qbtVpn.enable) config.systemd.services;
  confinedUnits = map (n: "${n}.service") (builtins.attrNames confined);
  # The WebUI and every confined unit's own ports: open on the veth, forwarded from the host.
  lanPorts = lib.unique (
    [ cfg.webui.port ] ++ lib.concatMap (s: s.qbtVpn.ports) (builtins.attrValues confined)
  );
  hostTableName = "qbittorrent_vpn_host";

  addressOf = cidr: builtins.head (lib.splitString "/" cidr);
  nsAddress = addressOf cfg.veth.nsAddress;
  hostAddress = addressOf cfg.veth.hostAddress;
  isV4 = a: !(lib.hasInfix ":" a);
  clientRanges4 = builtins.filter isV4 cfg.webui.allowedRanges;

  # The bring-up script's arguments (watchdog/qbt_vpn_watchdog/vpn-netns.sh documents them).
  netnsArgs = lib.escapeShellArgs (
    [
      "--netns"
      cfg.namespace
      "--interface"
      cfg.wireguard.interface
      "--config"
      cfg.wireguard.configFile
      "--lan-veth"
      "${cfg.veth.hostName}:${cfg.veth.nsName}"
      "--lan-host-addr"
      cfg.veth.hostAddress
      "--lan-ns-addr"
      cfg.veth.nsAddress
      # The host's end of the veth is where the watchdog's WebUI probe comes from.
      "--lan-ranges"
      (lib.concatStringsSep "," (cfg.webui.allowedRanges ++ [ "${hostAddress}/32" ]))
      "--webui-port"
      (lib.concatMapStringsSep "," toString lanPorts)
    ]
    ++ lib.optionals (cfg.wireguard.privateKeyFile != null) [
      "--private-key-file"
      cfg.wireguard.privateKeyFile
    ]
    ++ lib.optionals (cfg.wireguard.mtu != null) [
      "--mtu"
      (toString cfg.wireguard.mtu)
    ]
    ++ lib.optionals (cfg.wireguard.dns != [ ]) [
      "--dns"
      (lib.concatStringsSep "," cfg.wireguard.dns)
    ]
    ++ lib.optionals (cfg.wireguard.address != [ ]) [
      "--address"
      (lib.concatStringsSep "," cfg.wireguard.address)
    ]
    ++ lib.optionals (cfg.forwardedPort != null) [
      "--forwarded-port"
      (toString cfg.forwardedPort)
    ]
  );
  netns = "${cfg.package}/bin/qbt-vpn-netns";

  # Host side: LAN and Tailscale clients reach the WebUI at the host's own
  # addresses, port webui.port; it is forwarded to the namespace's end of the
  # veth with the client's source address kept (qBittorrent bans by address,
  # so a proxy would let one client's typos lock everyone out). Nothing else
  # is forwarded into the namespace, and the namespace can never use the host
  # as a router around the tunnel.
  hostTableBody = ''
    set webui_clients {
      # auto-merge: overlapping ranges (10.0.0.0/8 and 10.88.0.0/16) are
      # an error in an interval set without it.
      type ipv4_addr; flags interval; auto-merge;
      ${lib.optionalString (clientRanges4 != [ ]) "elements = { ${lib.concatStringsSep ", " clientRanges4} }"}
    }
    chain prerouting {
      type nat hook prerouting priority dstnat; policy accept;
      ${lib.concatMapStringsSep "\n  " (
      p: "fib daddr type local ip saddr @webui_clients tcp dport ${toString p} dnat ip to ${nsAddress}:${toString p}"
    ) lanPorts}
    }
    chain forward {
      type filter hook forward priority filter; policy accept;
      ${lib.concatMapStringsSep "\n  " (
        p: ''oifname "${cfg.veth.hostName}" ip daddr ${nsAddress} tcp dport ${toString p} ip saddr @webui_clients accept''
      ) lanPorts}
      oifname "${cfg.veth.hostName}" drop
      iifname "${cfg.veth.hostName}" ct state established,related accept
      iifname "${cfg.veth.hostName}" drop
    }
  '';
  # The whole table, replaced atomically (the same three statements NixOS's
  # nftables service writes for each of networking.nftables.tables).
  hostRuleset = ''
    table inet ${hostTableName}
    delete table inet ${hostTableName}
    table inet ${hostTableName} {
    ${hostTableBody}
    }
  '';
  hostTable = pkgs.writeText "qbittorrent-vpn-host.nft" hostRuleset;

  # Who loads the host table. NixOS's nftables service starts every load and
  # reload with `flush ruleset`, which deletes every table in the root
  # namespace; a table loaded by the tunnel unit would vanish at the next
  # nixos-rebuild switch and the WebUI would silently stop answering. So with
  # networking.nftables the table is part of what that service loads:
  # networking.nftables.tables where NixOS has it (23.05 and later), else the
  # ruleset text. With the iptables firewall nothing flushes it and the tunnel
  # unit loads it.
  hostNftables = config.networking.nftables.enable;
  nftablesHasTables = options.networking.nftables ? tables;
  tableByUnit = cfg.webui.forwardFromHost && !hostNftables;
  tableByNftables = cfg.webui.forwardFromHost && hostNftables;
  nft = "${pkgs.nftables}/bin/nft";

  # qBittorrent.conf keys enforced at every start; nested attribute names are
  # joined with "\" as qBittorrent (QSettings) writes them.
  flatten = prefix: attrs:
    builtins.foldl' (
      acc: name:
      let
        value = attrs.${name};
        key = if prefix == "" then name else "${prefix}\\${name}";
      in
      acc // (if builtins.isAttrs value then flatten key value else { ${key} = value; })
    ) { } (builtins.attrNames attrs);
  # What confinement needs from qBittorrent, whichever unit runs it: bound to
  # the tunnel, listening on the forwarded port, the WebUI on the veth only.
  enforcedSettings = {
    BitTorrent.Session = {
      Interface = cfg.wireguard.interface;
      InterfaceName = cfg.wireguard.interface;
    } // lib.optionalAttrs (cfg.forwardedPort != null) { Port = cfg.forwardedPort; };
    Preferences = {
      # The WebUI listens on the veth only: it cannot be reached through the
      # tunnel even if the kill switch were gone.
      WebUI.Address = nsAddress;
      WebUI.Port = cfg.webui.port;
      # Nothing to map behind a VPN; UPnP would only probe the namespace.
      Connection.UPnP = false;
    };
  };
  qbtSettings = lib.mapAttrs (section: keys: flatten "" keys) (
    lib.recursiveUpdate cfg.qbittorrent.settings (
      lib.recursiveUpdate enforcedSettings { LegalNotice.Accepted = true; }
    )
  );
  qbtSettingsFile = pkgs.writeText "qbittorrent-vpn-settings.json" (builtins.toJSON qbtSettings);
  qbtConf = "${cfg.qbittorrent.profileDir}/qBittorrent/config/qBittorrent.conf";

  notInStore = name: path: {
    assertion = path == null || !(lib.hasPrefix "/nix/store" path);
    message = "services.qbittorrent-vpn.${name} must not be in the Nix store (it is world-readable): use a secret file such as /run/secrets/...";
  };
in
{
  imports = [ ./module-watchdog.nix ];

  # systemd.services.<name>.qbtVpn: any unit into the namespace, as
  # VPN-Confinement's systemd.services.<name>.vpnConfinement does for its own.
  options.systemd.services = mkOption {
    type = types.attrsOf (
      types.submodule (
        { name, config, ... }:
        {
          options.qbtVpn = {
            enable = mkEnableOption "running this unit inside services.qbittorrent-vpn's network namespace (the world only through the tunnel)";
            ports = mkOption {
              type = types.listOf types.port;
              default = [ ];
              example = [ 9696 ];
              description = ''
                TCP ports this unit serves to the LAN (a web UI): opened on the
                namespace's veth for webui.allowedRanges and, with
                webui.forwardFromHost, forwarded from the host's own addresses
                like the qBittorrent WebUI. Listen on the veth address
                (veth.nsAddress) or on all addresses.
              '';
            };
          };
          config = mkIf config.qbtVpn.enable {
            # Never without the tunnel: stopped with it, and restarted with it
            # (a restart of the tunnel unit puts it into the new namespace).
            bindsTo = [ tunnelUnit ];
            partOf = [ tunnelUnit ];
            after = [ tunnelUnit ];
            serviceConfig = {
              NetworkNamespacePath = "/run/netns/${cfg.namespace}";
              # NetworkNamespacePath= does not do what `ip netns exec` does for DNS.
              # Give the process the namespace's resolv.conf (norbind: a symlinked
              # /etc/resolv.conf is followed and its target covered), and hide the
              # host's nscd, resolvconf and systemd-resolved (nss-resolve's varlink
              # socket, not the directory, which may hold the bind's target): each
              # would answer from the host's namespace, outside the tunnel.
              BindReadOnlyPaths = [ "/etc/netns/${cfg.namespace}/resolv.conf:/etc/resolv.conf:norbind" ];
              InaccessiblePaths = [
                "-/run/nscd"
                "-/run/resolvconf"
                "-/run/systemd/resolve/io.systemd.Resolve"
              ];
            };
          };
        }
      )
    );
  };

  options.services.qbittorrent-vpn = {
    enable = mkEnableOption "qbittorrent-nox confined to a WireGuard (AirVPN) tunnel in a network namespace";

    package = mkOption {
      type = types.package;
      default = config.services.qbt-vpn-watchdog.package;
      defaultText = lib.literalExpression "config.services.qbt-vpn-watchdog.package";
      description = "Package providing `qbt-vpn-netns`, the namespace and tunnel bring-up script.";
    };

    namespace = mkOption {
      type = types.strMatching "[A-Za-z0-9_.-]{1,32}";
      default = "vpn";
      description = "Name of the network namespace (/run/netns/<name>).";
    };

    wireguard = {
      interface = mkOption {
        type = types.strMatching "[A-Za-z0-9_.-]{1,15}";
        default = "wg0";
        description = "WireGuard interface name (inside the namespace).";
      };
      configFile = mkOption {
        type = types.strMatching "/.+";
        example = "/run/secrets/airvpn-wg0.conf";
        description = ''
          The WireGuard configuration generated by AirVPN's Config Generator
          (wg-quick format: Address, DNS, MTU, PrivateKey, the peer with its
          PresharedKey, Endpoint and AllowedIPs). It holds the private key, so
          keep it in a secret (sops-nix, agenix, or a root-only file): a
          string, never a Nix path, so it is never copied into the store.
        '';
      };
      privateKeyFile = mkOption {
        type = types.nullOr (types.strMatching "/.+");
        default = null;
        description = "The private key in its own file, when `configFile` has no PrivateKey.";
      };
      mtu = mkOption {
        type = types.nullOr (types.ints.between 1280 9000);
        default = null;
        example = 1320;
        description = "Override the config's MTU (AirVPN's is 1320; the script defaults to it).";
      };
      dns = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "10.128.0.1" ];
        description = "Override the config's DNS servers (written to /etc/netns/<namespace>/resolv.conf).";
      };
      address = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "Override the config's Address list.";
      };
    };

    forwardedPort = mkOption {
      type = types.nullOr types.port;
      default = null;
      example = 51413;
      description = ''
        The port reserved in AirVPN's client area. qBittorrent listens on it
        and the kill switch accepts it inbound on the tunnel only.
      '';
    };

    webui = {
      port = mkOption {
        type = types.port;
        default = 8080;
        description = "WebUI port (inside the namespace and on the host).";
      };
      allowedRanges = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [
          "10.88.0.0/16"
          "100.64.0.0/10"
        ];
        description = ''
          Source ranges that may use the WebUI (LAN, Podman's network for
          qui and the *arr services, Tailscale's 100.64.0.0/10). Replies to
          them are routed back through the veth, not the tunnel.
        '';
      };
      forwardFromHost = mkOption {
        type = types.bool;
        default = true;
        description = ''
          Forward webui.port on the host's own addresses to the namespace
          (nftables DNAT, IPv4), so clients use http://<host>:8080. Turns on
          IPv4 forwarding. Without it, clients must route to the namespace's
          veth address themselves.
        '';
      };
    };

    veth = {
      hostName = mkOption {
        type = types.strMatching "[A-Za-z0-9_.-]{1,15}";
        default = "qbtvpn-host";
        description = "Host end of the veth link.";
      };
      nsName = mkOption {
        type = types.strMatching "[A-Za-z0-9_.-]{1,15}";
        default = "qbtvpn-ns";
        description = "Namespace end of the veth link.";
      };
      hostAddress = mkOption {
        type = types.str;
        default = "10.231.0.1/30";
        description = "Address/prefix of the host end (a small subnet used nowhere else).";
      };
      nsAddress = mkOption {
        type = types.str;
        default = "10.231.0.2/30";
        description = "Address/prefix of the namespace end; the WebUI listens here.";
      };
    };

    qbittorrent = {
      unit = mkOption {
        type = types.enum [
          "own"
          "nixpkgs"
        ];
        default = if nixpkgsHasQbittorrent && config.services.qbittorrent.enable then "nixpkgs" else "own";
        defaultText = lib.literalExpression ''if services.qbittorrent.enable then "nixpkgs" else "own"'';
        description = ''
          Which unit runs qBittorrent in the namespace. `"nixpkgs"`: nixpkgs'
          own `services.qbittorrent` (NixOS 25.11 and later), confined with
          `systemd.services.qbittorrent.qbtVpn` and set through its own options
          (`webuiPort`, `torrentingPort`, `serverConfig`); the other
          `qbittorrent.*` options here are then unused. `"own"`:
          `qbittorrent-vpn.service`, this module's unit, for releases without
          `services.qbittorrent` or for keeping WebUI changes across restarts
          (nixpkgs' unit rewrites the whole qBittorrent.conf from `serverConfig`
          at every start; ours sets only the keys it names).
        '';
      };
      package = lib.mkPackageOption pkgs "qbittorrent-nox" { };
      user = mkOption {
        type = types.str;
        default = "qbittorrent";
        description = "User qbittorrent-nox runs as.";
      };
      group = mkOption {
        type = types.str;
        default = "qbittorrent";
        description = "Group qbittorrent-nox runs as (give the *arr services' user this group to share downloads).";
      };
      profileDir = mkOption {
        type = types.strMatching "/.+";
        default = "/var/lib/qbittorrent-vpn";
        description = "Passed as --profile; holds qBittorrent/config and the resume data.";
      };
      extraArgs = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "--confirm-legal-notice" ];
        description = "Extra qbittorrent-nox arguments (qBittorrent 5 accepts --confirm-legal-notice).";
      };
      readWritePaths = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "/srv/media/downloads" ];
        description = "Directories qBittorrent may write besides its profile (save paths).";
      };
      settings = mkOption {
        type = types.attrsOf (types.attrsOf types.anything);
        default = { };
        example = lib.literalExpression ''
          {
            BitTorrent.Session.DefaultSavePath = "/srv/media/downloads";
            Preferences.WebUI.Username = "admin";
          }
        '';
        description = ''
          qBittorrent.conf keys set at every start (nested names are joined
          with "\"); every other key, including what was changed in the WebUI,
          is kept. The binding to the tunnel, the forwarded port and the
          WebUI address are always enforced on top of these.
        '';
      };
    };

    generated = mkOption {
      type = types.attrsOf types.anything;
      readOnly = true;
      internal = true;
      description = "What this module generates, for inspection and tests (not settable).";
    };

    watchdog.enable = mkOption {
      type = types.bool;
      default = true;
      description = "Enable services.qbt-vpn-watchdog with settings matching this setup.";
    };
  };

  config = lib.mkMerge [
  {
    assertions = [
      {
        assertion = cfg.enable || confined == { };
        message = "systemd.services.{${lib.concatStringsSep "," (builtins.attrNames confined)}}.qbtVpn.enable needs services.qbittorrent-vpn.enable: there is no namespace to confine them to.";
      }
      {
        # Our own unit beside an enabled services.qbittorrent: that one would
        # run in the root namespace, outside the tunnel.
        assertion =
          !(cfg.enable && !nixpkgsQbt && nixpkgsHasQbittorrent && config.services.qbittorrent.enable)
          || config.systemd.services.qbittorrent.qbtVpn.enable;
        message = "services.qbittorrent is enabled but not confined (services.qbittorrent-vpn.qbittorrent.unit = \"own\" runs a second qBittorrent): it would run outside the tunnel. Disable services.qbittorrent, or set qbittorrent.unit = \"nixpkgs\".";
      }
      {
        assertion = !(cfg.enable && nixpkgsQbt) || (nixpkgsHasQbittorrent && config.services.qbittorrent.enable);
        message = "services.qbittorrent-vpn.qbittorrent.unit = \"nixpkgs\" needs nixpkgs' services.qbittorrent enabled (NixOS 25.11 and later): enable it, or use unit = \"own\".";
      }
    ];
  }

  # nixpkgs' services.qbittorrent, confined and set through its own options.
  # Only where that module exists: a definition of an option NixOS does not
  # declare is an error even under mkIf false.
  (lib.optionalAttrs nixpkgsHasQbittorrent {
    services.qbittorrent = mkIf (cfg.enable && nixpkgsQbt) {
      # Set services.qbittorrent-vpn.webui.port and .forwardedPort, not these:
      # a different value here is reported as conflicting definitions.
      webuiPort = cfg.webui.port;
      torrentingPort = mkIf (cfg.forwardedPort != null) cfg.forwardedPort;
      serverConfig = lib.recursiveUpdate enforcedSettings {
        LegalNotice.Accepted = mkDefault true;
      };
    };
    systemd.services = mkIf (cfg.enable && nixpkgsQbt) {
      qbittorrent.qbtVpn.enable = true;
    };
  })

  (mkIf cfg.enable {
    services.qbittorrent-vpn.generated = {
      inherit confinedUnits lanPorts qbtUnit;
      qbittorrentSettings = if nixpkgsQbt then null else qbtSettings;
      inherit hostRuleset hostTableBody;
      hostTableLoadedBy =
        if !cfg.webui.forwardFromHost then null
        else if !hostNftables then tunnelUnit
        else if nftablesHasTables then "networking.nftables.tables"
        else "networking.nftables.ruleset";
    };

    assertions = [
      (notInStore "wireguard.configFile" cfg.wireguard.configFile)
      (notInStore "wireguard.privateKeyFile" cfg.wireguard.privateKeyFile)
      {
        assertion = cfg.veth.hostAddress != cfg.veth.nsAddress;
        message = "services.qbittorrent-vpn.veth: hostAddress and nsAddress must differ.";
      }
      {
        assertion =
          !cfg.webui.forwardFromHost
          || builtins.elem (config.boot.kernel.sysctl."net.ipv4.conf.all.forwarding" or null) [ true 1 "1" ];
        message = "services.qbittorrent-vpn.webui.forwardFromHost needs boot.kernel.sysctl.\"net.ipv4.conf.all.forwarding\" on, and something forces it off: set webui.forwardFromHost = false, or stop forcing it.";
      }
    ];

    # Loaded at boot so the tunnel unit does not depend on autoloading.
    boot.kernelModules = [ "wireguard" ];
    # NixOS's networking module sets this key with mkDefault (false unless an
    # interface uses proxy ARP), and the key takes exactly one definition per
    # priority: mkDefault here would collide with it. 96 is above nat (99),
    # docker (98) and tailscale (97), which all set it to true as well.
    boot.kernel.sysctl = mkIf cfg.webui.forwardFromHost {
      "net.ipv4.conf.all.forwarding" = lib.mkOverride 96 true;
    };

    networking.nftables = mkIf tableByNftables (
      if nftablesHasTables then
        {
          tables.${hostTableName} = {
            family = "inet";
            content = hostTableBody;
          };
        }
      else
        { ruleset = hostRuleset; }
    );

    users.users = mkIf (!nixpkgsQbt && cfg.qbittorrent.user == "qbittorrent") {
      qbittorrent = {
        isSystemUser = true;
        group = cfg.qbittorrent.group;
        home = cfg.qbittorrent.profileDir;
      };
    };
    users.groups = mkIf (!nixpkgsQbt && cfg.qbittorrent.group == "qbittorrent") { qbittorrent = { }; };

    systemd.tmpfiles.rules = lib.optionals (!nixpkgsQbt) [
      "d ${cfg.qbittorrent.profileDir} 0750 ${cfg.qbittorrent.user} ${cfg.qbittorrent.group} -"
    ];

    systemd.services.qbittorrent-vpn-tunnel = {
      description = "Network namespace ${cfg.namespace} with WireGuard ${cfg.wireguard.interface} and its kill switch";
      # wg resolves the AirVPN endpoint's hostname when the peer is set.
      after = [
        "network-online.target"
        "nss-lookup.target"
      ];
      wants = [
        "network-online.target"
        "nss-lookup.target"
      ];
      wantedBy = [ "multi-user.target" ];
      restartTriggers = lib.optional tableByUnit hostTable;
      # Keep qBittorrent (and every other confined unit) running whenever the
      # tunnel is up: after a failed boot-time start is retried below, their
      # dependent start jobs are gone.
      upholds = confinedUnits;
      # Retry forever (a VPN outage at boot must not leave it down).
      startLimitIntervalSec = 0;
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        ExecStart = "${netns} ${netnsArgs} up";
        ExecStartPost = lib.optional tableByUnit "${nft} -f ${hostTable}";
        # Re-read the AirVPN config and recreate only the WireGuard link
        # (namespace, kill switch and qBittorrent stay): the watchdog's tier-2
        # remediation, and what to run after rotating the config secret.
        ExecReload = "${netns} ${netnsArgs} restart-tunnel";
        # ExecStopPost, not ExecStop: it also runs after a failed start, so a
        # half-made namespace never survives into the next attempt.
        ExecStopPost = [
          "${netns} ${netnsArgs} down"
        ]
        ++ lib.optional tableByUnit "-${nft} delete table inet ${hostTableName}";
        Restart = "on-failure";
        RestartSec = 15;
        # `ip netns add` bind-mounts /run/netns/<name> for everyone, so this
        # unit must share the host's mount namespace: no ProtectSystem,
        # PrivateTmp or other option that would give it a private one.
        # The same sandbox as systemd/qbittorrent-vpn-tunnel.service, which the
        # systemd VM test runs under a real systemd (tests/artefacts/test_nixos_eval.py keeps
        # the two equal).
        CapabilityBoundingSet = [
          "CAP_NET_ADMIN" # links, addresses, routes, nftables, WireGuard
          "CAP_SYS_ADMIN" # ip netns add/exec (mounts, setns)
        ];
        NoNewPrivileges = true;
        RestrictAddressFamilies = [
          "AF_UNIX"
          "AF_INET"
          "AF_INET6"
          "AF_NETLINK"
        ];
        # ip netns add makes a network namespace; ip netns exec a mount namespace.
        RestrictNamespaces = "net mnt";
        # @mount: ip netns add/exec bind-mount /run/netns/<name> and /sys.
        SystemCallFilter = [
          "@system-service"
          "@mount"
        ];
        SystemCallArchitectures = "native";
        LockPersonality = true;
        MemoryDenyWriteExecute = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        ProtectHostname = true;
        ProtectClock = true;
      };
    };

    systemd.services.qbittorrent-vpn = mkIf (!nixpkgsQbt) {
      description = "qBittorrent (qbittorrent-nox) confined to WireGuard ${cfg.wireguard.interface} in namespace ${cfg.namespace}";
      # In the namespace, bound to the tunnel, stopped and restarted with it
      # (the watchdog's tier 2); Upholds= above starts it again too.
      qbtVpn.enable = true;
      wantedBy = [ "multi-user.target" ];
      restartTriggers = [ qbtSettingsFile ];
      serviceConfig = {
        Type = "simple";
        User = cfg.qbittorrent.user;
        Group = cfg.qbittorrent.group;
        ExecStartPre = "${pkgs.python3}/bin/python3 ${./qbittorrent-settings.py} ${qbtSettingsFile} ${qbtConf}";
        ExecStart = lib.escapeShellArgs (
          [
            (lib.getExe cfg.qbittorrent.package)
            "--profile=${cfg.qbittorrent.profileDir}"
            "--webui-port=${toString cfg.webui.port}"
          ]
          ++ lib.optional (cfg.forwardedPort != null) "--torrenting-port=${toString cfg.forwardedPort}"
          ++ cfg.qbittorrent.extraArgs
        );
        Restart = "on-failure";
        RestartSec = 10;
        # Time to write resume data for many torrents.
        TimeoutStopSec = 300;
        UMask = "0002";

        CapabilityBoundingSet = "";
        NoNewPrivileges = true;
        ProtectSystem = "strict";
        ReadWritePaths = [ cfg.qbittorrent.profileDir ] ++ cfg.qbittorrent.readWritePaths;
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
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        MemoryDenyWriteExecute = true;
        RemoveIPC = true;
        RestrictAddressFamilies = [
          "AF_UNIX"
          "AF_INET"
          "AF_INET6"
          "AF_NETLINK"
        ];
        SystemCallArchitectures = "native";
        SystemCallFilter = [ "@system-service" ];
      };
    };

    services.qbt-vpn-watchdog = mkIf cfg.watchdog.enable {
      enable = mkDefault true;
      after = [
        tunnelUnit
        qbtUnit
      ];
      settings = {
        namespace.name = mkDefault cfg.namespace;
        # Built by vpn-netns.sh: its restart-tunnel (the reload below) re-installs
        # the kill switch and turns IPv6 off, so killswitch/ipv6 failures restart it.
        namespace.built_by_vpn_netns = mkDefault true;
        wireguard.interface = mkDefault cfg.wireguard.interface;
        # NixOS uses the kernel's WireGuard.
        wireguard.reader = mkDefault "kernel";
        # From the root namespace straight over the veth.
        qbittorrent.url = mkDefault "http://${nsAddress}:${toString cfg.webui.port}";
        qbittorrent.forwarded_port = mkDefault (if cfg.forwardedPort == null then 0 else cfg.forwardedPort);
        # Without a forwarded port there is nothing to reach from outside (it would only say not_configured).
        checks.port_forward.enabled = mkDefault (cfg.forwardedPort != null);
        # Tier-2 remediation: the unit's reload is the script's
        # restart-tunnel, the same step the lab's restart runs: only the
        # WireGuard link is recreated, the namespace, kill switch and
        # qBittorrent stay. When the unit is not active it is started.
        remediation.restart_command = mkDefault [
          "systemctl"
          "reload-or-restart"
          tunnelUnit
        ];
      };
    };
  })
  ];
}
