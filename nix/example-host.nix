# A storage host: qbittorrent-nox confined to an AirVPN
# WireGuard tunnel, its WebUI on 8080 for the LAN / Podman network (qui and the
# *arr services) and for Tailscale, the watchdog guarding it, and Prometheus
# scraping the watchdog.
#
# Import it from the host's configuration, or copy the parts you need. With
# the flake: `imports = [ qbt-vpn-watchdog.nixosModules.default ];` instead
# of the relative import below.
{ ... }:
{
  imports = [ ./module-confinement.nix ];

  services.qbittorrent-vpn = {
    enable = true;
    namespace = "vpn";

    # AirVPN's Config Generator output (WireGuard, one server or a region such
    # as europe3.vpn.airdns.org:1637), kept in a secret: sops-nix or agenix put
    # it in /run/secrets, root-only. Never a path literal (it would be copied
    # to the world-readable store). Its MTU (1320) and DNS (10.128.0.1) are
    # used inside the namespace.
    wireguard.configFile = "/run/secrets/airvpn-wg0.conf";

    # The port reserved under Client Area -> Forwarded ports.
    forwardedPort = 47123;

    webui = {
      port = 8080;
      allowedRanges = [
        "10.88.0.0/16" # Podman's network: qui, sonarr, radarr, ...
        "100.64.0.0/10" # Tailscale
      ];
    };

    qbittorrent = {
      settings = {
        BitTorrent.Session.DefaultSavePath = "/srv/media/downloads";
        Preferences.WebUI.Username = "admin";
      };
      readWritePaths = [ "/srv/media/downloads" ];
    };
  };

  services.qbt-vpn-watchdog = {
    # The same password the WebUI uses (set it once in the WebUI, or
    # declare its PBKDF2 hash in qbittorrent.settings).
    passwordFile = "/run/secrets/qbittorrent-webui-password";
    # This host's Prometheus gets the alert and recording rules (rendered by
    # the mixin; runbook_url points at the runbook the package ships, unless
    # prometheusRules.runbookUrlPattern names a URL your on-call can open).
    prometheusRules.enable = true;
    settings = {
      # The first days on a new host: only report what it would do (`qbt-vpn-watchdog
      # check`, and the "would ..." lines in `journalctl -u qbt-vpn-watchdog`).
      # Switch to "enforce" (the default: stop torrents, restart the tunnel) once
      # check passes and those lines are what you want done.
      watchdog.mode = "observe";
      qbittorrent.username = "admin";
      # Prometheus runs on this host. For a Prometheus elsewhere, use the
      # host's Tailscale address here and set openFirewall = true with
      # firewallFilter = "-i tailscale0 -p tcp -m tcp --dport 9879" (or
      # firewallRules with networking.nftables) to open the port there only.
      watchdog.listen_address = "127.0.0.1";
      remediation = {
        # Tier 1 re-resolves this name, so AirVPN can hand out another server.
        endpoint = "europe3.vpn.airdns.org:1637";
        max_restarts_per_hour = 6;
      };
    };
  };

  services.tailscale.enable = true;

  services.prometheus = {
    enable = true;
    scrapeConfigs = [
      {
        job_name = "qbt-vpn-watchdog";
        scrape_interval = "15s";
        static_configs = [ { targets = [ "127.0.0.1:9879" ]; } ];
      }
    ];
  };
}
