"""``python -m qbt_vpn_watchdog.mixin``: the same as ``qbt-vpn-watchdog-mixin``."""

import sys

from qbt_vpn_watchdog.mixin.files import main

sys.exit(main())
