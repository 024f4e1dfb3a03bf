from qbt_vpn_watchdog.cli import main

raise SystemExit(main())
