import sys

from watchdog.lab.cli import main

raise SystemExit(main(sys.argv[1:]))
