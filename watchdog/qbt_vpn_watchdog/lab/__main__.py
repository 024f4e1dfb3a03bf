import sys

from qbt_vpn_watchdog.lab.cli import main

raise SystemExit(main(sys.argv[1:]))
