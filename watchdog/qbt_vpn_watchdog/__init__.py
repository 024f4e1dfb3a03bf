"""qbt-vpn-watchdog: notices a broken VPN tunnel under a confined qBittorrent, reports it, fixes it."""

__version__ = "0.1.0"
