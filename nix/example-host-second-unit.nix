# The example host with a second unit in the same namespace: Jackett (an
# indexer proxy, whose searches should leave through the tunnel too) beside
# nixpkgs' qBittorrent. Any unit works the same way: Prowlarr
# (systemd.services.prowlarr, port 9696), SABnzbd (its port from its ini).
#
# qbtVpn.enable puts the unit into the namespace (NetworkNamespacePath, the
# namespace's resolv.conf, bound to and restarted with the tunnel unit);
# qbtVpn.ports opens its web UI on the veth for webui.allowedRanges and
# forwards it from the host like the qBittorrent WebUI.
{ ... }:
{
  imports = [ ./example-host.nix ];

  services.jackett.enable = true;
  systemd.services.jackett.qbtVpn = {
    enable = true;
    ports = [ 9117 ];
  };
  # Jackett listens on localhost only until "AllowExternal" is set in its
  # ServerConfig.json (Jackett's own setting): set it once, then its UI is at
  # http://<host>:9117 for the allowed ranges.
}
