"""`qbt-vpn-watchdog lab up|down|status|break FAULT|heal [FAULT]|restart-tunnel|demo`."""

from __future__ import annotations

import json
import os
import sys
import time

USAGE = """usage: qbt-vpn-watchdog lab COMMAND

  up [--shape S]   build the lab and print the path of the watchdog config for it;
                   QBT_VERSION=4.5 (default) or 5.1 picks the confined qBittorrent;
                   --shape own (default: this project's namespace) or
                   vpn-confinement (the namespace VPN-Confinement builds)
  down             remove everything of the lab (idempotent)
  status           what is running, which faults are applied, the confined
                   qBittorrent's version as it reports it (JSON)
  break FAULT      inject a fault
  heal [FAULT]     undo one fault, or all of them
  restart-tunnel   restart the confined tunnel (what remediation runs)
  demo             up, watchdog, break return-path, watch it caught, heal, down

All need root. Faults: {faults}
"""


def _usage() -> str:
    from qbt_vpn_watchdog.lab.faults import FAULTS

    return USAGE.format(faults=", ".join(FAULTS))


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage(), end="")
        return 0 if argv else 2
    if os.geteuid() != 0:
        print(
            "qbt-vpn-watchdog lab: needs root (it creates network namespaces and nftables rules)",
            file=sys.stderr,
        )
        return 2
    from qbt_vpn_watchdog.lab import control, faults, qbt_versions, services
    from qbt_vpn_watchdog.lab import topology as t
    from qbt_vpn_watchdog.lab.topology import LabError

    cmd, args = argv[0], argv[1:]
    shape = "own"
    if cmd == "up" and len(args) == 2 and args[0] == "--shape":
        shape, args = args[1], []
    try:
        if cmd == "up" and not args:
            if shape not in t.SHAPES:
                raise LabError(f"unknown --shape {shape!r} (known: {', '.join(t.SHAPES)})")
            qbt_versions.check_installed(qbt_versions.selected())  # before touching anything
            with control.exclusive():
                if control.is_up():
                    if t.SHAPE.name != shape:
                        raise LabError(
                            f"the lab is up with shape {t.SHAPE.name}, not {shape}: "
                            "run `lab down` first"
                        )
                    running = services.client_version()
                    if running != qbt_versions.selected():
                        raise LabError(
                            f"the lab is up with qBittorrent {running}, not "
                            f"QBT_VERSION={qbt_versions.selected()}: run `lab down` first"
                        )
                    print(control.write_watchdog_config())
                    return 0
                if control.stale():
                    control.down()
                t0 = time.monotonic()
                path = control.up(shape)
            print(f"lab up in {time.monotonic() - t0:.1f} s; watchdog config:", file=sys.stderr)
            print(path)
            return 0
        if cmd == "down" and not args:
            with control.exclusive():
                t0 = time.monotonic()
                control.down()
            print(f"lab down in {time.monotonic() - t0:.1f} s", file=sys.stderr)
            return 0
        if cmd == "status" and not args:
            print(json.dumps(control.status(), indent=2))
            return 0
        if cmd == "break" and len(args) == 1:
            if args[0] not in faults.FAULTS:
                raise faults.UnknownFault(args[0])
            _require_up(control)
            faults.break_fault(args[0])
            return 0
        if cmd == "heal" and len(args) <= 1:
            healed = faults.heal_fault(args[0] if args else None)
            print("healed: " + (", ".join(healed) or "nothing was broken"), file=sys.stderr)
            return 0
        if cmd == "restart-tunnel" and not args:
            _require_up(control)
            control.restart_tunnel()
            return 0
        if cmd == "demo" and not args:
            from qbt_vpn_watchdog.lab.demo import demo

            with control.exclusive():
                return demo()
    except faults.UnknownFault as e:
        print(f"qbt-vpn-watchdog lab: {e}", file=sys.stderr)
        return 2
    except LabError as e:
        print(f"qbt-vpn-watchdog lab: {e}", file=sys.stderr)
        return 1
    print(_usage(), end="", file=sys.stderr)
    return 2


def _require_up(control) -> None:
    from qbt_vpn_watchdog.lab.topology import LabError

    if not control.is_up():
        raise LabError("the lab is not up (run `qbt-vpn-watchdog lab up`)")
