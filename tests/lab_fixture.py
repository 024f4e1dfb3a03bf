"""The session-wide lab fixture (owned by the lab: see watchdog/lab/)."""
