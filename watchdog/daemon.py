"""The daemon: the poll loop, sd_notify, SIGHUP/SIGTERM, and the /metrics and /healthz endpoints.

One thread (the caller's, normally the main thread) owns every side effect:
it runs the due checks through the ``Runner`` (each check in its own thread,
cut off at its timeout), keeps a bounded history per check, swaps in a new
immutable ``Snapshot`` with one attribute assignment, calls the remediator,
then tells systemd ``WATCHDOG=1`` and a one-line ``STATUS=``.

``WATCHDOG=1`` is sent only from this loop after a completed cycle, never from
a timer thread: a hung *check* is cut off by the runner and the loop keeps
pinging, but a hung *loop* (a remediation action that never returns, a
deadlock) stops pinging and systemd restarts the service (``WatchdogSec=``).

The HTTP server runs in its own daemon threads and only reads the last
snapshot: a scrape never reaches a source, so it answers at once even while a
probe is stuck.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from watchdog.checks import CheckSpec, Context, Runner, ordered
from watchdog.config import Config, ConfigError
from watchdog.config import load as load_config
from watchdog.metrics import Snapshot, SnapshotCollector
from watchdog.results import CheckResult, RemediationView
from watchdog.sources import Sources
from watchdog.systemd import Notifier

log = logging.getLogger("watchdog.daemon")

SourcesFactory = Callable[[Config], Sources]

# A link event (the tunnel deleted, down, an address gone) runs the checks that
# read the link (``register(..., on_link_event=True)``) at once, instead of
# waiting up to an interval. At most one such cycle a second, however many
# events arrive.
EVENT_CYCLE_GAP = 1.0
RemediatorFactory = Callable[[Config, Sources], Any]  # -> object with .step(...)


# --- logging -------------------------------------------------------------------

# sd-daemon(3) priority prefixes: journald reads "<N>" at the start of a line on
# a service's stdout/stderr as the syslog priority (SyslogLevelPrefix=yes).
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3}


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prio = _PRIORITY.get(record.levelno, 2 if record.levelno > logging.ERROR else 6)
        text = super().format(record)
        # A traceback spans lines: prefix each so journald keeps the priority.
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines() or [""])


def _stderr_is_journal(stream: Any) -> bool:
    """True when ``stream`` is the journal stream systemd gave us ($JOURNAL_STREAM=dev:ino)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in value.split(":"))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def setup_logging(stream: Any = None, level: int | str | None = None) -> None:
    """Journald-friendly logging: no timestamps unless on a TTY (journald adds its own).

    The level comes from ``$QBTVPN_LOG_LEVEL`` (e.g. DEBUG) when not given.
    Does nothing when the root logger already has handlers (tests, embedding).
    """
    root = logging.getLogger()
    if root.handlers:
        return
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    if _stderr_is_journal(stream):
        handler.setFormatter(_JournalFormatter("%(message)s"))
    elif getattr(stream, "isatty", lambda: False)():
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root.addHandler(handler)
    level = level or os.environ.get("QBTVPN_LOG_LEVEL", "INFO")
    try:
        root.setLevel(level.upper() if isinstance(level, str) else level)
    except ValueError:
        root.setLevel(logging.INFO)


# --- waking the loop -------------------------------------------------------------


class _Waker:
    """An interruptible sleep that a signal handler may end.

    A ``threading.Event`` cannot be set safely from a signal handler (the
    handler may run while the same thread holds the event's lock), so this is
    the classic self-pipe: the handler writes a byte, ``select`` wakes up.

    The write end is also the interpreter's ``signal.set_wakeup_fd``: the
    kernel may deliver SIGTERM to any thread (an HTTP thread, a check), and
    then the main thread's ``select`` is not interrupted and the Python-level
    handler would wait for the sleep to end (up to a whole interval). The C
    handler writes to the wakeup fd from whichever thread got the signal.
    """

    def __init__(self) -> None:
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    @property
    def write_fd(self) -> int:
        return self._w

    def wake(self) -> None:
        try:
            os.write(self._w, b"x")
        except OSError:
            pass  # already awake (the pipe is full), or closed after run() returned

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            select.select([self._r], [], [], seconds)
        try:
            while os.read(self._r, 512):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass


# --- HTTP ----------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], owner: Daemon) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.owner = owner
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10  # a client that never finishes its request does not hold a thread forever
    server_version = "qbt-vpn-watchdog"
    # Keep-alive: Prometheus keeps its connection, so a scrape is one request,
    # not a TCP handshake and a new thread.
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; on a kept connection Nagle
        # and the client's delayed ACK would add 40 ms to every scrape.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = urlsplit(self.path).path
        owner = self.server.owner
        if path == "/metrics":
            self._send(200, owner.render_metrics(), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            code, text = owner.health()
            self._send(code, (text + "\n").encode(), "text/plain; charset=utf-8")
        else:
            self._send(404, b"not found: try /metrics or /healthz\n", "text/plain; charset=utf-8")

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # one line per scrape would drown the state changes


# --- the daemon ------------------------------------------------------------------


class Daemon:
    """The watchdog service. ``run()`` blocks until SIGTERM/SIGINT or ``stop()``.

    ``specs`` (the check registry) is for tests; by default every registered
    check is loaded. Raises ``ConfigError`` when the config is invalid at start.
    """

    def __init__(
        self,
        config_path: str | os.PathLike,
        sources_factory: SourcesFactory,
        remediator_factory: RemediatorFactory | None = None,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.time,
        *,
        specs: Mapping[str, CheckSpec] | None = None,
    ) -> None:
        self.config_path = str(config_path)
        self.sources_factory = sources_factory
        self.remediator_factory = remediator_factory
        self.notifier = notifier if notifier is not None else Notifier.from_env()
        self.clock = clock
        if specs is None:
            from watchdog.checks import load_all

            specs = load_all()
        self.specs: dict[str, CheckSpec] = dict(specs)
        self.config: Config = load_config(self.config_path)
        self.sources: Sources = sources_factory(self.config)
        self.remediator = (
            remediator_factory(self.config, self.sources) if remediator_factory else None
        )
        self.runner = Runner(self.specs, clock=clock)

        # Read by the HTTP threads; replaced (never mutated) by the loop.
        self.snapshot: Snapshot | None = None
        self.status_line = "starting"

        self.cycles = 0
        self.reload_failures = 0
        self._histories: dict[str, deque[CheckResult]] = {}
        self._latest: dict[str, CheckResult] = {}
        self._last_run: dict[str, float] = {}
        self._readings: dict[str, Any] = {}
        self._reading_errors: dict[str, str] = {}
        self._view = self._idle_view()
        self._ready = False
        self._stop = False
        self._reload = False
        self._events_pending = False
        self._waker = _Waker()
        self._server: _Server | None = None
        self._server_thread: threading.Thread | None = None
        self._registry = CollectorRegistry(auto_describe=True)
        self._registry.register(SnapshotCollector(lambda: self.snapshot))
        self._rendered: tuple[Snapshot | None, bytes] | None = None
        self._logged_bugs: set[str] = set()
        self.check_names = self._check_names(self.config)

    # --- public controls ---------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to stop after the current cycle (safe from any thread or a signal)."""
        self._stop = True
        self._waker.wake()

    def link_event(self) -> None:
        """The tunnel may have just gone (any thread): run the link checks now."""
        self._events_pending = True
        self._waker.wake()

    def request_reload(self) -> None:
        """Ask the loop to reload the config before its next cycle (SIGHUP)."""
        self._reload = True
        self._waker.wake()

    @property
    def http_address(self) -> tuple[str, int] | None:
        return self._server.server_address[:2] if self._server else None

    def run(self) -> int:
        old_wakeup_fd = None
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: self.stop())
            signal.signal(signal.SIGINT, lambda *_: self.stop())
            signal.signal(signal.SIGHUP, lambda *_: self.request_reload())
            old_wakeup_fd = signal.set_wakeup_fd(self._waker.write_fd, warn_on_full_buffer=False)
        try:
            self._start_http(self.config)
        except OSError as e:
            log.error("cannot listen on %s: %s", self._listen(self.config), e)
            return 1
        self._warn_watchdog_interval()
        host, port = self.http_address or ("?", 0)
        host = f"[{host}]" if ":" in host else host
        log.info(
            "started: checks %s every %g s, serving http://%s:%d/metrics",
            ", ".join(self.check_names) or "(none)",
            self.config.watchdog.interval,
            host,
            port,
        )
        self._start_events(self.sources)
        try:
            next_cycle = time.monotonic()
            last_event_cycle = -EVENT_CYCLE_GAP
            while not self._stop:
                if self._reload:
                    self._reload = False
                    try:
                        self.reload()
                    except Exception as e:  # noqa: BLE001 - keep running on the old config
                        self._log_bug("reload", e)
                    next_cycle = time.monotonic()
                now = time.monotonic()
                if now >= next_cycle:
                    self._events_pending = False  # this cycle runs every check anyway
                    self._guarded_cycle()
                    # Fixed rate: the next cycle starts one interval after this one started.
                    next_cycle = now + self.config.watchdog.interval
                elif self._events_pending and now - last_event_cycle >= EVENT_CYCLE_GAP:
                    self._events_pending = False
                    last_event_cycle = now
                    only = [n for n in self.check_names if self.specs[n].on_link_event]
                    log.debug("link event in the namespace: running %s now", ", ".join(only))
                    self._guarded_cycle(only=only)
                if self._stop:
                    break
                wake = next_cycle
                if self._events_pending:
                    wake = min(wake, last_event_cycle + EVENT_CYCLE_GAP)
                self._waker.sleep(wake - time.monotonic())
        finally:
            self._close_events(self.sources)
            self.notifier.stopping("stopping")
            log.info("stopping")
            self._stop_http()
            self.notifier.close()
            if old_wakeup_fd is not None:
                signal.set_wakeup_fd(old_wakeup_fd)
            self._waker.close()
        return 0

    # --- one cycle -------------------------------------------------------------------

    def _guarded_cycle(self, only: Sequence[str] | None = None) -> None:
        try:
            self.run_cycle(only)
        except Exception as e:  # noqa: BLE001 - a bug must not end the watchdog...
            # ...but no WATCHDOG=1 is sent for this cycle: if it keeps failing,
            # systemd's watchdog restarts us, which is the right escalation.
            self._log_bug("cycle", e)

    def due_checks(self, now: float) -> dict[str, float]:
        """The checks to run this cycle, name -> timeout."""
        cfg = self.config
        # Cycles start on a fixed schedule but not to the microsecond: a slack
        # of a quarter interval keeps a 60 s check on a 10 s loop at 60 s, not 70.
        slack = cfg.watchdog.interval / 4
        due = {}
        for name in self.check_names:
            c = cfg.check(name)
            last = self._last_run.get(name)
            if c.interval <= 0 or last is None or now - last >= c.interval - slack:
                due[name] = c.timeout
        return due

    def run_cycle(self, only: Sequence[str] | None = None) -> Snapshot:
        """One cycle: the due checks, or ``only`` these (a link event's cycle)."""
        cfg = self.config
        now = self.clock()
        if only is None:
            due = self.due_checks(now)
        else:
            due = {n: cfg.check(n).timeout for n in self.check_names if n in only}
        ctx = Context(cfg, self.sources, now=self.clock)
        histories = {n: tuple(self._history(n)) for n in due}
        results = self.runner.run_cycle(ctx, due, histories)
        for name, r in results.items():
            self._history(name).append(r)
            self._last_run[name] = now
            self._log_change(self._latest.get(name), r)
            self._latest[name] = r
        self._merge_readings(ctx)
        self.cycles += 1
        snap = self._snapshot(self.clock())
        self.snapshot = snap  # the atomic swap the HTTP threads see

        view = self._remediate(snap.last_cycle)
        if view != snap.remediation:
            snap = dataclasses.replace(snap, remediation=view)
            self.snapshot = snap

        self.status_line = self.summarize(snap)
        # Rendered here, once, so no scrape ever renders: its latency does not
        # depend on the number of torrents (or anything else in the snapshot).
        self.render_metrics()
        if not self._ready:
            self._ready = True
            self.notifier.ready(self.status_line)
            log.info("first cycle done: %s", self.status_line)
        self.notifier.watchdog(self.status_line)
        return snap

    def _history(self, name: str) -> deque[CheckResult]:
        h = self._histories.get(name)
        if h is None:
            h = self._histories[name] = deque(maxlen=self.config.watchdog.history)
        return h

    def _merge_readings(self, ctx: Context) -> None:
        # Keep the last good reading of a source no check needed this cycle;
        # drop it (and say why) when this cycle's read failed.
        for key, value in ctx.readings().items():
            self._readings[key] = value
            self._reading_errors.pop(key, None)
        for key, why in ctx.reading_errors().items():
            self._readings.pop(key, None)
            self._reading_errors[key] = why

    def _snapshot(self, finished: float) -> Snapshot:
        names = self.check_names
        return Snapshot(
            results={n: self._latest[n] for n in names if n in self._latest},
            readings=dict(self._readings),
            remediation=self._view,
            last_cycle=finished,
            cycles=self.cycles,
            reload_failures=self.reload_failures,
            checks=tuple(names),
            reasons={n: self.specs[n].all_reasons for n in names},
            interface=self.config.wireguard.interface,
            reading_errors=dict(self._reading_errors),
        )

    def _remediate(self, now: float) -> RemediationView:
        if self.remediator is None:
            self._view = self._idle_view()
            return self._view
        results = {n: self._latest[n] for n in self.check_names if n in self._latest}
        histories = {n: tuple(self._history(n)) for n in self.check_names}
        try:
            view = self.remediator.step(results, histories, now)
        except Exception as e:  # noqa: BLE001 - keep the last view: fail closed, keep looping
            self._log_bug("remediation", e)
            return self._view
        if view.state != self._view.state:
            line = f"remediation: {self._view.state} -> {view.state}"
            if view.summary:
                line += f": {view.summary}"
            (log.info if view.state == "ok" else log.warning)(line)
        self._view = view
        return view

    def _idle_view(self) -> RemediationView:
        return RemediationView("ok", observe_only=self.config.watchdog.mode == "observe")

    # --- words for humans --------------------------------------------------------------

    def summarize(self, snap: Snapshot) -> str:
        """The STATUS= / healthz one-liner, e.g. ``ok: 6/6 checks passed``."""
        names = snap.checks
        ran = [snap.results[n] for n in names if n in snap.results]
        failing = [r for r in ran if not r.ok]
        view = snap.remediation
        if not failing:
            line = f"ok: {len(ran)}/{len(names)} checks passed"
        else:
            word = "UNSAFE" if view.state != "ok" else "FAILING"
            parts = []
            for r in failing:
                n = self._failing_for(r.check)
                unit = "cycle" if self.config.check(r.check).interval <= 0 else "run"
                parts.append(f"{r.check} ({r.reason}) for {n} {unit}{'s' if n != 1 else ''}")
            line = f"{word} {', '.join(parts)}"
        if view.summary:
            line += f"; {view.summary}"
        elif view.held_stopped:
            line += f"; holding {view.held_stopped} torrents"
        if view.observe_only:
            line += " [observe only]"
        return line

    def _failing_for(self, name: str) -> int:
        n = 0
        for r in reversed(self._history(name)):
            if r.ok:
                break
            n += 1
        return n

    def _log_change(self, prev: CheckResult | None, r: CheckResult) -> None:
        # One line per state change, never one per cycle.
        if prev is None or prev.ok:
            if not r.ok:
                log.warning("%s failed: %s: %s", r.check, r.reason, r.detail)
        elif r.ok:
            log.info("%s recovered (was %s)", r.check, prev.reason)
        elif r.reason != prev.reason:
            log.warning("%s still failing, now %s: %s", r.check, r.reason, r.detail)

    def _log_bug(self, where: str, e: BaseException) -> None:
        key = f"{where}:{type(e).__name__}:{e}"
        if key not in self._logged_bugs:
            self._logged_bugs.add(key)
            log.error(
                "%s raised (a bug; logged once): %s: %s", where, type(e).__name__, e, exc_info=e
            )

    # --- health and metrics ------------------------------------------------------------

    def stale_after(self) -> float:
        """Seconds after which a silent loop counts as stalled."""
        cfg = self.config
        longest = max((cfg.check(n).timeout for n in self.check_names), default=0.0)
        return 3 * cfg.watchdog.interval + longest

    def health(self) -> tuple[int, str]:
        """Liveness: is the loop alive? The VPN's state is in the text, not the code.

        A liveness probe that failed whenever the VPN was broken would get the
        watchdog restarted exactly when it is needed most; whether the VPN is
        safe is ``qbtvpn_healthy`` and the body's summary.
        """
        snap = self.snapshot
        if snap is None:
            return 503, "starting: no cycle finished yet"
        age = self.clock() - snap.last_cycle
        limit = self.stale_after()
        if age > limit:
            return 503, f"stalled: the last cycle finished {age:.0f} s ago (limit {limit:.0f} s)"
        return 200, f"alive; {self.status_line}"

    def render_metrics(self) -> bytes:
        """The exposition of the current snapshot, rendered once per snapshot.

        The loop renders it at the end of each cycle; scrapes between two
        cycles get those bytes. (A snapshot replaced outside a cycle, by a
        rejected reload, is rendered by the first scrape that sees it.)
        """
        snap = self.snapshot
        cached = self._rendered
        if cached is not None and cached[0] is snap and snap is not None:
            return cached[1]
        body = generate_latest(self._registry)
        self._rendered = (snap, body)
        return body

    # --- reload ------------------------------------------------------------------------

    def reload(self) -> bool:
        """Re-read the config file; an invalid one is logged in full and the old one kept."""
        # Before the first cycle systemd still waits for READY=1: no RELOADING then.
        if self._ready:
            self.notifier.reloading("reloading configuration")
        log.info("reloading %s", self.config_path)
        try:
            new = load_config(self.config_path)
            sources = self.sources_factory(new)
        except ConfigError as e:
            return self._reject_reload(
                f"{e.source} has {len(e.errors)} error(s)", [f"  {x}" for x in e.errors]
            )
        except Exception as e:  # noqa: BLE001 - a bad adapter setting must not kill the loop
            return self._reject_reload(f"cannot build the sources: {type(e).__name__}: {e}", [])
        old = self.config
        if self._listen(new) != self._listen(old):
            try:
                self._restart_http(new)
            except OSError as e:
                return self._reject_reload(f"cannot listen on {self._listen(new)}: {e}", [])
        if self.remediator is not None and hasattr(self.remediator, "reconfigure"):
            self.remediator.reconfigure(new, sources)
        elif self.remediator_factory is not None:
            # A new remediator re-reads what it holds from qBittorrent's tags.
            self.remediator = self.remediator_factory(new, sources)
        self.sources.close()  # the old event thread too
        self.config, self.sources = new, sources
        self._start_events(sources)
        self.check_names = self._check_names(new)
        for name in list(self._histories):
            if name not in self.check_names:
                del self._histories[name]
                self._latest.pop(name, None)
                self._last_run.pop(name, None)
            elif self._histories[name].maxlen != new.watchdog.history:
                self._histories[name] = deque(self._histories[name], maxlen=new.watchdog.history)
        if self._view.observe_only != (new.watchdog.mode == "observe") and self.remediator is None:
            self._view = self._idle_view()
        log.info(
            "configuration reloaded: checks %s every %g s",
            ", ".join(self.check_names),
            new.watchdog.interval,
        )
        self._warn_watchdog_interval()
        if self._ready:
            self.notifier.ready(self.status_line)
        return True

    def _reject_reload(self, headline: str, lines: Sequence[str]) -> bool:
        self.reload_failures += 1
        log.error("reload rejected, keeping the running configuration: %s", headline)
        for line in lines:
            log.error("%s", line)
        if self.snapshot is not None:
            self.snapshot = dataclasses.replace(self.snapshot, reload_failures=self.reload_failures)
        if self._ready:
            self.notifier.ready(self.status_line)
        return False

    def _start_events(self, sources: Sources) -> None:
        if sources.events is not None:
            sources.events.start(self.link_event)

    @staticmethod
    def _close_events(sources: Sources) -> None:
        if sources.events is not None:
            try:
                sources.events.close()
            except Exception:  # noqa: BLE001 - best effort on the way out
                log.debug("closing %r failed", sources.events, exc_info=True)

    # --- helpers -----------------------------------------------------------------------

    def _check_names(self, cfg: Config) -> list[str]:
        enabled = cfg.enabled_checks()
        missing = [n for n in enabled if n not in self.specs]
        if missing:
            log.warning("enabled in the config but not implemented: %s", ", ".join(missing))
        return ordered(self.specs, enabled)

    def _warn_watchdog_interval(self) -> None:
        wd = self.notifier.watchdog_interval
        if wd is None:
            return
        cfg = self.config
        longest = max((cfg.check(n).timeout for n in self.check_names), default=0.0)
        worst = cfg.watchdog.interval + longest
        if wd < 2 * worst:
            log.warning(
                "WatchdogSec=%g s is less than twice the worst cycle (interval %g s + longest "
                "check timeout %g s): a slow but healthy cycle may get the service killed; "
                "use WatchdogSec=%d or more",
                wd, cfg.watchdog.interval, longest, int(2 * worst + 0.999),
            )  # fmt: skip

    @staticmethod
    def _listen(cfg: Config) -> tuple[str, int]:
        return (cfg.watchdog.listen_address, cfg.watchdog.listen_port)

    def _start_http(self, cfg: Config) -> None:
        self._server = _Server(self._listen(cfg), self)
        self._server_thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.5}, name="http",
            daemon=True,
        )  # fmt: skip
        self._server_thread.start()

    def _restart_http(self, cfg: Config) -> None:
        old, old_thread = self._server, self._server_thread
        self._start_http(cfg)  # bind the new one first: on failure the old one keeps serving
        if old is not None:
            old.shutdown()
            old.server_close()
        if old_thread is not None:
            old_thread.join(2)

    def _stop_http(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def main(config_path: str) -> int:
    """``qbt-vpn-watchdog run``: 0 after SIGTERM, 1 cannot start, 2 invalid config."""
    setup_logging()
    from watchdog.sources.build import build_sources

    remediator_factory: RemediatorFactory | None
    try:
        from watchdog.actions import Remediator
    except ImportError as e:
        log.warning("remediation is not available (%s): observing only", e)
        remediator_factory = None
    else:

        def remediator_factory(cfg: Config, sources: Sources) -> Any:
            return Remediator(cfg, sources)

    try:
        daemon = Daemon(config_path, build_sources, remediator_factory)
    except ConfigError as e:
        print(f"qbt-vpn-watchdog: invalid config {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - an operator message, not a traceback
        log.error("cannot start: %s: %s", type(e).__name__, e)
        log.debug("cannot start", exc_info=True)
        return 1
    return daemon.run()


def run(config_path: str) -> int:
    """Alias of ``main`` (the name the design notes use)."""
    return main(config_path)
