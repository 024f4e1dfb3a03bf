"""/readyz: is the tunnel safe right now? The status code an uptime monitor reads.

``/healthz`` is liveness: 200 while the poll loop runs, whatever the VPN does
(a liveness probe that failed on a broken tunnel would get the watchdog
restarted exactly when it is needed). ``/readyz`` is the VPN's state as a
status code, for uptime monitors and container health checks (what gluetun's
users point at):

* 200 ``ready; <status>``: the loop is alive, no enabled check's latest result
  is unsafe, and remediation is ``ok`` (no torrent held, no restart under way);
* 503 ``not ready: <why>``: the loop is starting or stalled, a check's latest
  result is unsafe (a single unsafe result is enough: readiness does not wait
  for ``fail_after``), or remediation is holding, restarting or gave up.

In observe mode too: readiness is about the tunnel, not about what the
watchdog does, so the state it *would* be in counts. Unknown and degraded
results (qBittorrent unreachable, the exit-IP endpoint down) do not make it
unready: they say nothing about a leak; ``qbtvpn_healthy`` and the alerts do.
"""

from __future__ import annotations

from qbt_vpn_watchdog.checks.registry import classify
from qbt_vpn_watchdog.results import UNSAFE, Snapshot


def readiness(health: tuple[int, str], snap: Snapshot | None) -> tuple[int, str]:
    """(HTTP status, one line) from the loop's liveness and the last snapshot."""
    code, text = health
    if code != 200 or snap is None:
        return 503, f"not ready: {text}"
    unsafe = [
        f"{name} {r.reason}"
        for name in snap.checks
        if (r := snap.results.get(name)) is not None and classify(name, r.reason) == UNSAFE
    ]
    why = []
    if unsafe:
        why.append("unsafe: " + ", ".join(unsafe))
    view = snap.remediation
    if view.state != "ok" or view.held_stopped:
        held = f"{view.state}" + (f", {view.held_stopped} torrents held" if view.held_stopped else "")
        why.append(("would be " if view.observe_only else "") + f"remediation {held}")
    if why:
        return 503, "not ready: " + "; ".join(why)
    status = text.partition("; ")[2]  # healthz's "alive; <status>"
    return 200, f"ready; {status}" if status else "ready"
