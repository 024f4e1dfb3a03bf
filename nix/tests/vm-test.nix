# NixOS VM test: the confined setup against a fake AirVPN node.
#
#   nix build .#checks.x86_64-linux.vm-test     (needs KVM)
#   nix-build -E 'with import <nixpkgs> {}; testers.runNixOSTest (import ./nix/tests/vm-test.nix)'
#
# airvpn:  a WireGuard server on :1637 with AirVPN's addressing (DNS 10.128.0.1),
#          dnsmasq, an exit-IP endpoint answering like airvpn.org/api/whatismyip,
#          and a qbittorrent-nox seeder with its embedded tracker.
# storage: the example storage host, built from module-confinement.nix.
# lan:     a LAN client for the WebUI.
#
# Not run in this project's CI: it has no KVM and no nixpkgs offline.
# The keys below are throwaway test keys for these VMs only.
let
  serverPrivateKey = "2NPXNO0X/YMqnLkoUu3HbSyqH4nqMIH+y+8WNTATLng=";
  serverPublicKey = "vo8oucTxCpGjbAn8scp7f14UEKR62N7q6C051AGqZ0w=";
  clientPrivateKey = "ePASzBS5vDpqQikzMIbURjk3Hqs5T3D8eM/+e/ua5m4=";
  clientPublicKey = "ttRL916VHRGycj9fSlJ94stz74QBPC71egobMGlw8gg=";
  presharedKey = "9veUxCUz4XQ9HXQOECcoCdDu6pNGNeE6hbN4abZB7ng=";
  clientAddress = "10.140.0.2";
  forwardedPort = 47123;
  webuiPassword = "vm-test-password";
  # PBKDF2-HMAC-SHA512, 100000 iterations, salt 00..0f: qBittorrent's format.
  webuiPasswordHash = "@ByteArray(AAECAwQFBgcICQoLDA0ODw==:Ub8xEbGd+RdIH6wHOKJUmVJ/PwO5kN+c/akUmSdi6EVNBHSJFOageqDWWUo8b6FFyX1PbRUcQPPApSo1aHowoA==)";

  # What AirVPN's Config Generator produces, pointed at the fake node.
  airvpnConfig = ''
    [Interface]
    Address = ${clientAddress}/32
    PrivateKey = ${clientPrivateKey}
    MTU = 1320
    DNS = 10.128.0.1

    [Peer]
    PublicKey = ${serverPublicKey}
    PresharedKey = ${presharedKey}
    Endpoint = airvpn:1637
    AllowedIPs = 0.0.0.0/0
    PersistentKeepalive = 15
  '';

  exitIpServer = ''
    import json
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"ip": self.client_address[0], "airvpn": True,
                               "geo": {"code": "nl"}, "result": "ok"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    HTTPServer(("10.128.0.1", 80), H).serve_forever()
  '';
in
{
  name = "qbt-vpn-watchdog-confinement";

  nodes = {
    airvpn =
      { pkgs, ... }:
      {
        networking.firewall.enable = false;
        environment.systemPackages = [
          pkgs.mktorrent
          pkgs.curl
          pkgs.nftables
        ];
        networking.wireguard.interfaces.wg0 = {
          ips = [ "10.128.0.1/16" ];
          listenPort = 1637;
          privateKeyFile = "${pkgs.writeText "server.key" serverPrivateKey}";
          peers = [
            {
              publicKey = clientPublicKey;
              presharedKeyFile = "${pkgs.writeText "psk" presharedKey}";
              allowedIPs = [ "${clientAddress}/32" ];
            }
          ];
        };
        services.dnsmasq = {
          enable = true;
          resolveLocalQueries = false;
          settings = {
            listen-address = "10.128.0.1";
            bind-dynamic = true;
            no-resolv = true;
            address = [ "/airvpn.org/10.128.0.1" ];
          };
        };
        systemd.services.whatismyip = {
          wantedBy = [ "multi-user.target" ];
          after = [ "wireguard-wg0.service" ];
          serviceConfig.ExecStart = "${pkgs.python3}/bin/python3 ${pkgs.writeText "whatismyip.py" exitIpServer}";
          serviceConfig.Restart = "always";
        };
        # The seeder: embedded tracker on the tunnel address, bound to it
        # (libtorrent would otherwise hand out 127.0.0.1).
        systemd.services.seeder = {
          wantedBy = [ "multi-user.target" ];
          after = [ "wireguard-wg0.service" ];
          preStart = ''
            mkdir -p /var/lib/seeder/qBittorrent/config
            cat > /var/lib/seeder/qBittorrent/config/qBittorrent.conf <<'EOF'
            [LegalNotice]
            Accepted=true
            [BitTorrent]
            Session\Interface=wg0
            Session\InterfaceName=wg0
            Session\InterfaceAddress=10.128.0.1
            Session\Port=6881
            [Preferences]
            Advanced\trackerEnabled=true
            Advanced\trackerPort=9000
            WebUI\Address=127.0.0.1
            WebUI\Port=8081
            WebUI\LocalHostAuth=false
            EOF
          '';
          serviceConfig.ExecStart = "${pkgs.qbittorrent-nox}/bin/qbittorrent-nox --profile=/var/lib/seeder";
        };
      };

    storage =
      { pkgs, ... }:
      {
        imports = [ ../module-confinement.nix ];
        virtualisation.memorySize = 1536;
        environment.systemPackages = [
          pkgs.curl
          pkgs.jq
        ];
        # Secrets arrive at runtime, as sops-nix/agenix would put them.
        system.activationScripts.test-secrets = ''
          install -Dm600 ${pkgs.writeText "airvpn.conf" airvpnConfig} /run/secrets/airvpn-wg0.conf
          install -Dm600 ${pkgs.writeText "pw" webuiPassword} /run/secrets/qbittorrent-webui-password
        '';
        services.qbittorrent-vpn = {
          enable = true;
          wireguard.configFile = "/run/secrets/airvpn-wg0.conf";
          inherit forwardedPort;
          webui.allowedRanges = [ "192.168.1.0/24" ];
          qbittorrent.settings = {
            Preferences.WebUI.Username = "admin";
            Preferences.WebUI.Password_PBKDF2 = ''"${webuiPasswordHash}"'';
            # Slow enough that the download is still running when the fault hits.
            BitTorrent.Session.GlobalDLSpeedLimit = 256;
            BitTorrent.Session.DHTEnabled = false;
            BitTorrent.Session.PeXEnabled = false;
            BitTorrent.Session.LSDEnabled = false;
          };
        };
        services.qbt-vpn-watchdog = {
          passwordFile = "/run/secrets/qbittorrent-webui-password";
          settings = {
            qbittorrent.username = "admin";
            watchdog.interval = 5;
            checks.exit_ip = {
              url = "http://10.128.0.1/api/whatismyip/";
              interval = 10;
            };
            checks.dns.names = [ "airvpn.org" ];
          };
        };
      };

    lan =
      { pkgs, ... }:
      {
        environment.systemPackages = [ pkgs.curl ];
      };
  };

  testScript = ''
    import json

    metrics = "curl -sf http://127.0.0.1:9879/metrics"
    login = (
        "curl -sf -c /tmp/jar --data-urlencode username=admin "
        "--data-urlencode password=${webuiPassword} http://10.231.0.2:8080/api/v2/auth/login"
    )

    def torrents():
        storage.succeed(login)
        return json.loads(storage.succeed("curl -sf -b /tmp/jar http://10.231.0.2:8080/api/v2/torrents/info"))

    start_all()
    airvpn.wait_for_unit("wireguard-wg0.service")
    airvpn.wait_for_unit("seeder.service")
    storage.wait_for_unit("qbittorrent-vpn-tunnel.service")
    storage.wait_for_unit("qbittorrent-vpn.service")
    storage.wait_for_unit("qbt-vpn-watchdog.service")

    with subtest("criteria 2, 7, 8: tunnel, exit IP and DNS through it, all checks pass"):
        storage.wait_until_succeeds("ip netns exec vpn wg show wg0 latest-handshakes | grep -v '\t0$'", timeout=60)
        storage.succeed("ip netns exec vpn curl -sf http://10.128.0.1/api/whatismyip/ | grep -q '\"${clientAddress}\"'")
        storage.succeed("grep -q 'nameserver 10.128.0.1' /etc/netns/vpn/resolv.conf")
        storage.wait_until_succeeds(metrics + " | grep -qx 'qbtvpn_healthy 1.0'", timeout=120)

    with subtest("criterion 4: nothing leaves the namespace except through the tunnel"):
        storage.succeed("ip netns exec vpn ip route show default | grep -q 'dev wg0'")
        storage.succeed("ip netns exec vpn nft list chain inet vpn_killswitch output | grep -q 'policy drop'")
        # The LAN is routed through the veth (for WebUI replies), yet nothing
        # but WebUI replies may use it.
        storage.fail("ip netns exec vpn ping -c1 -W2 lan")
        lan.succeed("ping -c1 -W2 storage")

    with subtest("criteria 5, 6: WebUI from the LAN, not through the VPN"):
        lan.succeed("curl -sf --max-time 10 -o /dev/null http://storage:8080/")
        airvpn.fail("curl -sf --max-time 5 http://${clientAddress}:8080/")

    with subtest("criterion 9: a torrent downloads through the tunnel"):
        airvpn.succeed(
            "mkdir -p /srv/seed && head -c 200M /dev/urandom > /srv/seed/data && "
            "mktorrent -p -a http://10.128.0.1:9000/announce -l 20 -o /srv/seed/data.torrent /srv/seed/data && "
            "curl -sf -F torrents=@/srv/seed/data.torrent -F savepath=/srv/seed -F skip_checking=true "
            "http://127.0.0.1:8081/api/v2/torrents/add"
        )
        airvpn.copy_from_vm("/srv/seed/data.torrent", "")
        storage.copy_from_host(str(airvpn.out_dir / "data.torrent"), "/tmp/data.torrent")
        storage.succeed(login)
        storage.succeed(
            "curl -sf -b /tmp/jar -F torrents=@/tmp/data.torrent "
            "http://10.231.0.2:8080/api/v2/torrents/add"
        )
        storage.wait_until_succeeds(
            metrics + " | grep -E '^qbtvpn_qbittorrent_download_speed_bytes_per_second [1-9]'", timeout=120
        )

    with subtest("the 92-byte failure: return path cut, torrents stopped"):
        airvpn.succeed(
            "nft -f - <<'EOF'\n"
            "table inet returnpath {\n"
            "  chain output {\n"
            "    type filter hook output priority 0; policy accept;\n"
            "    udp sport 1637 drop\n"
            "  }\n"
            "}\n"
            "EOF"
        )
        storage.wait_until_succeeds(
            metrics + " | grep -qx 'qbtvpn_check_success{check=\"return_path\"} 0.0'", timeout=120
        )
        storage.wait_until_succeeds(metrics + " | grep -qx 'qbtvpn_torrents_held_stopped 1.0'", timeout=60)
        for t in torrents():
            assert "watchdog-stopped" in t["tags"], t
            assert t["state"] in ("pausedDL", "stoppedDL"), t

    with subtest("heal: the watchdog resumes what it stopped"):
        airvpn.succeed("nft delete table inet returnpath")
        storage.wait_until_succeeds(metrics + " | grep -qx 'qbtvpn_healthy 1.0'", timeout=300)
        storage.wait_until_succeeds(metrics + " | grep -qx 'qbtvpn_torrents_held_stopped 0.0'", timeout=60)
        for t in torrents():
            assert "watchdog-stopped" not in t["tags"], t

    with subtest("criterion 12: everything comes back after a reboot"):
        storage.shutdown()
        storage.start()
        storage.wait_for_unit("qbittorrent-vpn.service")
        storage.wait_until_succeeds(metrics + " | grep -qx 'qbtvpn_healthy 1.0'", timeout=180)
  '';
}
