#!/usr/bin/env bash
# vpn-netns.sh: bring a WireGuard tunnel up inside a network namespace, with a
# kill switch and a LAN link for the WebUI. One script for the real host (kernel
# WireGuard, run by the NixOS module) and for the lab (wireguard-go), so the lab
# exercises the very steps the host runs.
#
# IPv6 is blocked inside the namespace: disabled on every interface there (so
# no address, no route, no router advertisement), the kill switch passes only
# IPv4 out, and IPv6 addresses and resolvers in the config are skipped. The
# watchdog's ipv6 check proves it stays that way (docs/nixos.md says why).
#
# Usage: vpn-netns.sh [options] up|down|tunnel-up|tunnel-down|restart-tunnel|status
#
#   up              namespace + kill switch + LAN veth + tunnel (idempotent)
#   down            removes exactly what `up` made (idempotent)
#   tunnel-up       only the WireGuard part (namespace must exist)
#   tunnel-down     only the WireGuard part
#   restart-tunnel  tunnel-down, the kill switch re-installed, tunnel-up (what
#                   remediation runs: it also repairs a kill switch that was
#                   removed or loosened, which the watchdog's killswitch check sees)
#   status          prints what exists; exit 0 when the tunnel is up
#
# Options (all --name value):
#   --netns NS             confined namespace (required)
#   --interface IF         WireGuard interface name (required)
#   --config FILE          wg-quick style config (AirVPN's). Address/DNS/MTU/Table/
#                          Pre*/Post*/SaveConfig are read here and stripped before
#                          `wg setconf`, which rejects them.
#   --private-key-file F   the private key, kept out of the config (optional when
#                          the config has PrivateKey)
#   --wan-netns NS         where the interface is created and its UDP socket lives
#                          ("" = the namespace this script runs in: the host's)
#   --userspace CMD        run CMD (e.g. wireguard-go) instead of the kernel module.
#                          The script starts `CMD -f IF` in the wan namespace in the
#                          background, records its PID in --pidfile and stops it by
#                          that PID on tunnel-down, so restart-tunnel works alike
#                          for both implementations.
#   --pidfile F            required with --userspace
#   --log F                userspace daemon output (default /dev/null)
#   --address A[,A]        override the config's Address (AirVPN gives a /32)
#   --dns A[,A]            override the config's DNS
#   --mtu N                override the config's MTU (default 1320, AirVPN's)
#   --lan-veth HOST:NS     veth pair names (root side : namespace side); optional
#   --lan-host-addr A/P    address of the root side (on-link with the next one)
#   --lan-ns-addr A/P      address of the namespace side
#   --lan-ranges C[,C]     sources allowed to reach the WebUI (LAN, Tailscale
#                          100.64.0.0/10); routed back through the veth. IPv4
#                          only: IPv6 ranges are skipped (IPv6 is blocked)
#   --webui-port N[,N]     default 8080; more ports for other confined units'
#                          web UIs (qbtVpn.ports), each opened like the WebUI
#   --forwarded-port N     port accepted inbound on the tunnel (AirVPN forwarding)
#   --nft-table NAME       kill switch table in the namespace (default vpn_killswitch)
set -euo pipefail

NETNS="" IFACE="" CONFIG="" KEYFILE="" WAN="" USERSPACE="" PIDFILE="" LOG=/dev/null
ADDRESS="" DNS="" MTU="" LAN_VETH="" LAN_HOST_ADDR="" LAN_NS_ADDR="" LAN_RANGES=""
WEBUI_PORT=8080 FWD_PORT="" NFT_TABLE=vpn_killswitch
CMD="" CONF_TMP=""
trap 'rm -f "$CONF_TMP"' EXIT

die() { echo "vpn-netns: $*" >&2; exit 1; }
say() { echo "vpn-netns: $*" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --netns) NETNS=$2; shift 2 ;;
    --interface) IFACE=$2; shift 2 ;;
    --config) CONFIG=$2; shift 2 ;;
    --private-key-file) KEYFILE=$2; shift 2 ;;
    --wan-netns) WAN=$2; shift 2 ;;
    --userspace) USERSPACE=$2; shift 2 ;;
    --pidfile) PIDFILE=$2; shift 2 ;;
    --log) LOG=$2; shift 2 ;;
    --address) ADDRESS=$2; shift 2 ;;
    --dns) DNS=$2; shift 2 ;;
    --mtu) MTU=$2; shift 2 ;;
    --lan-veth) LAN_VETH=$2; shift 2 ;;
    --lan-host-addr) LAN_HOST_ADDR=$2; shift 2 ;;
    --lan-ns-addr) LAN_NS_ADDR=$2; shift 2 ;;
    --lan-ranges) LAN_RANGES=$2; shift 2 ;;
    --webui-port) WEBUI_PORT=$2; shift 2 ;;
    --forwarded-port) FWD_PORT=$2; shift 2 ;;
    --nft-table) NFT_TABLE=$2; shift 2 ;;
    up|down|tunnel-up|tunnel-down|restart-tunnel|status) CMD=$1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

[ -n "$CMD" ] || die "no command (up|down|tunnel-up|tunnel-down|restart-tunnel|status)"
[ -n "$NETNS" ] || die "--netns is required"
[ -n "$IFACE" ] || die "--interface is required"
[ ${#IFACE} -le 15 ] || die "--interface: at most 15 characters"
[ -z "$USERSPACE" ] || [ -n "$PIDFILE" ] || die "--userspace needs --pidfile"
HOST_VETH="${LAN_VETH%%:*}" NS_VETH="${LAN_VETH#*:}"
[ -z "$LAN_VETH" ] || [ "$HOST_VETH" != "$LAN_VETH" ] || die "--lan-veth: HOST:NS"

# `ip` in the wan namespace (or where we run when there is none).
wan_ip() { if [ -n "$WAN" ]; then ip -n "$WAN" "$@"; else ip "$@"; fi; }
ns_ip() { ip -n "$NETNS" "$@"; }
ns_exists() { [ -e "/run/netns/$NETNS" ]; }
link_in_ns() { ns_exists && ns_ip link show dev "$1" >/dev/null 2>&1; }
link_in_wan() { wan_ip link show dev "$1" >/dev/null 2>&1; }
split() { tr ',' '\n' <<<"$1" | sed 's/^[[:space:]]*//; s/[[:space:]]*$//' | sed '/^$/d'; }

# --- the wg-quick config: read the keys wg-quick handles, strip them for wg -----

conf_value() { # first value of KEY in [Interface], all lines joined with commas
  awk -v key="$1" '
    /^[[:space:]]*\[/ { sect = tolower($0); gsub(/[[:space:]]/, "", sect); next }
    sect == "[interface]" {
      line = $0; sub(/#.*/, "", line)
      n = index(line, "="); if (n == 0) next
      k = substr(line, 1, n - 1); gsub(/[[:space:]]/, "", k)
      if (tolower(k) == tolower(key)) {
        v = substr(line, n + 1); gsub(/[[:space:]]/, "", v)
        out = (out == "" ? v : out "," v)
      }
    }
    END { print out }' "$CONFIG"
}

strip_config() { # the config without wg-quick-only keys, on stdout
  # With --private-key-file the key goes into the same `wg setconf` input
  # (read by awk from the file, never through argv): setting it afterwards
  # lets the first handshake go out without it, and that one is lost (5 s).
  awk -v keyfile="$KEYFILE" '
    /^[[:space:]]*\[/ {
      sect = tolower($0); gsub(/[[:space:]]/, "", sect); print
      if (sect == "[interface]" && keyfile != "") {
        if ((getline key < keyfile) <= 0) { print "cannot read the private key file" > "/dev/stderr"; exit 1 }
        gsub(/[[:space:]]/, "", key); print "PrivateKey = " key
      }
      next
    }
    {
      line = $0; n = index(line, "=")
      if (sect == "[interface]" && n > 0) {
        k = substr(line, 1, n - 1); gsub(/[[:space:]]/, "", k); k = tolower(k)
        if (k ~ /^(address|dns|mtu|table|preup|postup|predown|postdown|saveconfig)$/) next
        if (keyfile != "" && k == "privatekey") next
      }
      print
    }' "$CONFIG"
}

# --- namespace, kill switch, LAN veth ----------------------------------------

ensure_netns() {
  ns_exists || ip netns add "$NETNS"
  ipv6_block
  ns_ip link set lo up
}

ns_write() { # /proc/sys path inside the namespace, value
  # $BASH: the shell running this script (a systemd unit's PATH may have no sh).
  ip netns exec "$NETNS" "$BASH" -c 'printf %s "$2" >"$1"' sh "$1" "$2"
}

ipv6_block() {
  # disable_ipv6 on `default` covers every link created in or moved into the
  # namespace later; on `all` and on each link it removes what is there now
  # (addresses, routes). Run at every `up` and `tunnel-up`, so the tunnel
  # unit's reload (the watchdog's remedy) also takes away an IPv6 path that
  # appeared meanwhile.
  local f
  # A kernel without IPv6 (ipv6.disable=1) has no such files: nothing to block.
  ip netns exec "$NETNS" "$BASH" -c '[ -d /proc/sys/net/ipv6/conf ]' || return 0
  ns_write /proc/sys/net/ipv6/conf/default/disable_ipv6 1
  ns_write /proc/sys/net/ipv6/conf/all/disable_ipv6 1
  for f in $(ip netns exec "$NETNS" "$BASH" -c 'echo /proc/sys/net/ipv6/conf/*/disable_ipv6'); do
    ns_write "$f" 1
  done
}

nft_set_elements() { # "a, b" of the IPv4 LAN ranges
  local out="" r
  while read -r r; do
    [ -n "$r" ] || continue
    case "$r" in *:*) ;; *) out="${out:+$out, }$r" ;; esac
  done < <(split "$LAN_RANGES")
  echo "$out"
}

killswitch_up() {
  # Inside the namespace only the tunnel, lo and (for the WebUI, from the LAN
  # ranges) the veth may carry packets. Installed before the tunnel exists, so
  # there is no window where something could leave another way.
  # IPv6 is blocked: only IPv4 passes, on every interface but lo.
  local lan4 fwd="" veth=""
  lan4=$(nft_set_elements)
  [ -z "$lan4" ] || lan4="elements = { $lan4 }"
  if [ -n "$FWD_PORT" ]; then
    fwd="iifname \"$IFACE\" meta l4proto { tcp, udp } th dport $FWD_PORT accept"
  fi
  local ports
  ports=$(split "$WEBUI_PORT" | paste -sd, - | sed 's/,/, /g')
  if [ -n "$LAN_VETH" ]; then
    veth="iifname \"$NS_VETH\" ip saddr @lan4 tcp dport { $ports } accept"
  fi
  local out_veth=""
  if [ -n "$LAN_VETH" ]; then
    out_veth="oifname \"$NS_VETH\" ip daddr @lan4 tcp sport { $ports } ct state established accept"
  fi
  ip netns exec "$NETNS" nft -f - <<EOF
table inet $NFT_TABLE
delete table inet $NFT_TABLE
table inet $NFT_TABLE {
  set lan4 {
    type ipv4_addr
    flags interval
    $lan4
  }
  chain input {
    type filter hook input priority filter; policy drop;
    iifname "lo" accept
    meta nfproto ipv6 drop
    iifname "$IFACE" ct state established,related accept
    $fwd
    $veth
  }
  chain forward {
    type filter hook forward priority filter; policy drop;
  }
  chain output {
    type filter hook output priority filter; policy drop;
    oifname "lo" accept
    meta nfproto ipv6 drop
    oifname "$IFACE" accept
    $out_veth
  }
}
EOF
}

veth_up() {
  [ -n "$LAN_VETH" ] || return 0
  [ -n "$LAN_HOST_ADDR" ] && [ -n "$LAN_NS_ADDR" ] || die "--lan-veth needs --lan-host-addr and --lan-ns-addr"
  if ! ip link show dev "$HOST_VETH" >/dev/null 2>&1; then
    link_in_ns "$NS_VETH" && ns_ip link del "$NS_VETH"
    ip link add "$HOST_VETH" type veth peer name "$NS_VETH" netns "$NETNS"
  fi
  ip addr replace "$LAN_HOST_ADDR" dev "$HOST_VETH"
  ip link set "$HOST_VETH" up
  ns_ip addr replace "$LAN_NS_ADDR" dev "$NS_VETH"
  ns_ip link set "$NS_VETH" up
  # Replies to the LAN and Tailscale go back through the veth; everything else
  # follows the default route, which is the tunnel.
  local gw=${LAN_HOST_ADDR%/*} r
  while read -r r; do
    [ -n "$r" ] || continue
    case "$r" in *:*) say "LAN range $r skipped: IPv6 is blocked in the namespace"; continue ;; esac
    # The veth's own subnet is already on-link: replacing its kernel route
    # with a gateway route would make the gateway itself unreachable.
    if ns_ip route show exact "$r" dev "$NS_VETH" 2>/dev/null | grep -q 'proto kernel'; then continue; fi
    ns_ip route replace "$r" via "$gw" dev "$NS_VETH"
  done < <(split "$LAN_RANGES")
}

veth_down() {
  [ -n "$LAN_VETH" ] || return 0
  if ip link show dev "$HOST_VETH" >/dev/null 2>&1; then ip link del "$HOST_VETH"; fi
  if link_in_ns "$NS_VETH"; then ns_ip link del "$NS_VETH"; fi
}

# --- the tunnel ----------------------------------------------------------------

pid_alive() { # pid -> true when it runs $USERSPACE (not a reused PID)
  local pid=$1
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  grep -q "$(basename "$USERSPACE")" "/proc/$pid/cmdline" 2>/dev/null &&
    ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null
}

userspace_start() {
  local pid=""
  [ -f "$PIDFILE" ] && pid=$(cat "$PIDFILE")
  if pid_alive "$pid"; then return 0; fi
  # Its stdout must not be ours: a caller capturing our output would wait for it.
  if [ -n "$WAN" ]; then
    WG_PROCESS_FOREGROUND=1 ip netns exec "$WAN" "$USERSPACE" -f "$IFACE" </dev/null >>"$LOG" 2>&1 &
  else
    WG_PROCESS_FOREGROUND=1 "$USERSPACE" -f "$IFACE" </dev/null >>"$LOG" 2>&1 &
  fi
  echo $! >"$PIDFILE"
}

userspace_stop() {
  [ -f "$PIDFILE" ] || return 0
  local pid i
  pid=$(cat "$PIDFILE")
  if pid_alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do pid_alive "$pid" || break; sleep 0.1; done
    if pid_alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$PIDFILE"
}

wait_for() { # tries, then a command
  local n=$1 i; shift
  for i in $(seq "$n"); do "$@" && return 0; sleep 0.1; done
  return 1
}

tunnel_up() {
  [ -n "$CONFIG" ] || die "--config is required"
  [ -r "$CONFIG" ] || die "cannot read --config $CONFIG"
  ns_exists || die "namespace $NETNS does not exist (run up)"
  local addrs dns mtu
  addrs=${ADDRESS:-$(conf_value Address)}
  dns=${DNS:-$(conf_value DNS)}
  mtu=${MTU:-$(conf_value MTU)}
  mtu=${mtu:-1320}
  [ -n "$addrs" ] || die "no Address in $CONFIG and no --address"

  if ! link_in_ns "$IFACE"; then
    if [ -n "$USERSPACE" ]; then
      userspace_start
      wait_for 50 link_in_wan "$IFACE" || die "$USERSPACE did not create $IFACE (see ${LOG})"
    elif ! link_in_wan "$IFACE"; then
      wan_ip link add "$IFACE" type wireguard
    fi
    # Created outside, moved in: the UDP socket stays in the wan namespace, so
    # the confined namespace can only reach the world through the tunnel.
    wan_ip link set "$IFACE" netns "$NETNS"
  fi

  # The stripped copy holds the private key when the config does: 0600, removed on exit.
  CONF_TMP=$(umask 077 && mktemp /run/vpn-netns.XXXXXX)
  strip_config >"$CONF_TMP"
  ip netns exec "$NETNS" wg setconf "$IFACE" "$CONF_TMP"
  rm -f "$CONF_TMP"

  # Again here, not only in `up`: restart-tunnel (the unit's reload) runs
  # this alone, and it is what removes an IPv6 path that appeared since.
  ipv6_block
  local a v4=""
  while read -r a; do
    case "$a" in
      *:*) say "address $a skipped: IPv6 is blocked in the namespace" ;;
      *) ns_ip addr replace "$a" dev "$IFACE"; v4=1 ;;
    esac
  done < <(split "$addrs")
  [ -n "$v4" ] || die "no IPv4 Address in $CONFIG or --address (IPv6 is blocked in the namespace)"
  ns_ip link set "$IFACE" mtu "$mtu" up
  # The only default route is the tunnel.
  ns_ip -4 route replace default dev "$IFACE"

  # AirVPN lists an IPv4 and an IPv6 resolver; the IPv6 one cannot be reached.
  local dns4
  dns4=$(split "$dns" | grep -v ':' || true)
  if [ -n "$dns4" ]; then
    mkdir -p "/etc/netns/$NETNS"
    { echo "# written by vpn-netns.sh from $CONFIG"
      sed 's/^/nameserver /' <<<"$dns4"; } >"/etc/netns/$NETNS/resolv.conf.tmp"
    mv "/etc/netns/$NETNS/resolv.conf.tmp" "/etc/netns/$NETNS/resolv.conf"
  fi
}

tunnel_down() {
  if [ -n "$USERSPACE" ]; then userspace_stop; fi
  # wireguard-go's link goes with its process; the kernel's must be deleted.
  if link_in_ns "$IFACE"; then ns_ip link del "$IFACE" 2>/dev/null || true; fi
  if link_in_wan "$IFACE"; then wan_ip link del "$IFACE" 2>/dev/null || true; fi
  if [ -n "$USERSPACE" ]; then rm -f "/var/run/wireguard/$IFACE.sock"; fi
}

cmd_up() {
  ensure_netns
  killswitch_up
  veth_up
  tunnel_up
}

cmd_down() {
  tunnel_down
  veth_down
  if ns_exists; then
    ip netns exec "$NETNS" nft delete table inet "$NFT_TABLE" 2>/dev/null || true
    ip netns del "$NETNS"
  fi
  rm -rf "/etc/netns/$NETNS"
}

cmd_status() {
  local rc=0
  if ns_exists; then echo "namespace $NETNS: present"; else echo "namespace $NETNS: absent"; rc=1; fi
  if link_in_ns "$IFACE"; then
    echo "interface $IFACE: in $NETNS"
    ip netns exec "$NETNS" wg show "$IFACE" latest-handshakes 2>/dev/null | sed 's/^[^[:space:]]*/  peer handshake:/' || true
  else
    echo "interface $IFACE: absent"; rc=1
  fi
  return $rc
}

case "$CMD" in
  up) cmd_up ;;
  down) cmd_down ;;
  tunnel-up) tunnel_up ;;
  tunnel-down) tunnel_down ;;
  restart-tunnel) tunnel_down; ns_exists && killswitch_up; tunnel_up ;;
  status) cmd_status ;;
esac
