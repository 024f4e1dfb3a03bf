"""The daemon: the poll loop, sd_notify, SIGHUP/SIGTERM and reload.

One thread (the caller's, normally the main thread) owns every side effect:
it runs the due checks through the ``Runner`` (each check in its own thread,
cut off at its timeout), records them in the ``ResultStore`` (bounded
histories, an immutable ``Snapshot`` swapped in with one assignment), calls
the remediator, then tells systemd ``WATCHDOG=1`` and a one-line ``STATUS=``.

``WATCHDOG=1`` is sent only from this loop after a completed cycle, never from
a timer thread: a hung *check* is cut off by the runner and the loop keeps
pinging, but a hung *loop* (a remediation action that never returns, a
deadlock) stops pinging and systemd restarts the service (``WatchdogSec=``).

The HTTP endpoints (http_server/) run in their own threads and read only
the last snapshot.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Protocol

from qbt_vpn_watchdog import libc
from qbt_vpn_watchdog.checks import CheckSpec, Context, Runner, load_all, ordered
from qbt_vpn_watchdog.config import Config, ConfigError
from qbt_vpn_watchdog.config import load as load_config
from qbt_vpn_watchdog.health import health, status_line
from qbt_vpn_watchdog.http_server import HttpServer, Limits
from qbt_vpn_watchdog.logs import setup_logging
from qbt_vpn_watchdog.metrics import Exposition
from qbt_vpn_watchdog.readiness import readiness
from qbt_vpn_watchdog.results import CheckResult, RemediationView, Snapshot
from qbt_vpn_watchdog.schedule import Schedule, checks_due, unsettled
from qbt_vpn_watchdog.sources import Sources
from qbt_vpn_watchdog.store import ResultStore
from qbt_vpn_watchdog.systemd import Notifier
from qbt_vpn_watchdog.web_security import load_web_security, with_config_file

log = logging.getLogger("qbt_vpn_watchdog.daemon")

SourcesFactory = Callable[[Config], Sources]


class Remediator(Protocol):
    """What the loop calls after each cycle (``qbt_vpn_watchdog.actions.Remediator``)."""

    def step(
        self, histories: Mapping[str, Sequence[CheckResult]], now: float
    ) -> RemediationView: ...

    def reconfigure(self, config: Config, sources: Sources) -> None: ...


RemediatorFactory = Callable[[Config, Sources], Remediator]


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


# --- the daemon ------------------------------------------------------------------


class Daemon:
    """The watchdog service. ``run()`` blocks until SIGTERM/SIGINT or ``stop()``.

    ``specs`` (the check registry) is for tests; by default every registered
    check is loaded. Without a ``remediator_factory`` nothing is remediated
    (the state stays ``ok``). Raises ``ConfigError`` when the config is invalid.
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
        web_config_file: str = "",
    ) -> None:
        self.config_path = str(config_path)
        self.web_config_file = web_config_file  # run --web.config.file: wins over the file's key
        self.sources_factory = sources_factory
        self.notifier = notifier if notifier is not None else Notifier.from_env()
        self.clock = clock
        self.specs: dict[str, CheckSpec] = dict(specs if specs is not None else load_all())
        self.config: Config = _load(self)
        self.sources: Sources = sources_factory(self.config)
        self.remediator = (
            remediator_factory(self.config, self.sources) if remediator_factory else None
        )
        self.runner = Runner(self.specs, clock=clock)
        self.store = ResultStore(self.config.watchdog.history, loaded_at=clock())
        self.http, self.exposition = _serving(self)
        self.status_line = "starting"  # read by the HTTP threads
        self._view = self._idle_view()
        self._ready = False
        self._stop = False
        self._reload = False
        self._events_pending = False
        self._waker = _Waker()
        self._log_bug = _BugLog()
        self.check_names = ordered(self.specs, self.config.enabled_checks())

    @property
    def snapshot(self) -> Snapshot | None:
        return self.store.snapshot

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

    def run(self) -> int:
        old_wakeup_fd = _install_signals(self)
        try:
            self.http.start(_listen(self.config))
        except OSError as e:
            log.error("cannot listen on %s: %s", _listen(self.config), e)
            return 1
        self._warn_watchdog_interval()
        log.info(
            "started in %s mode: checks %s every %g s, serving %s/metrics",
            _mode_words(self.config), ", ".join(self.check_names) or "(none)",
            self.config.watchdog.interval, _base_url(self.http.address, self.http.security.scheme),
        )  # fmt: skip
        self._start_events(self.sources)
        try:
            self._loop()
        finally:
            self.sources.close()  # the event thread too
            self.notifier.stopping("stopping")
            log.info("stopping")
            self.http.stop()
            self.notifier.close()
            if old_wakeup_fd is not None:
                signal.set_wakeup_fd(old_wakeup_fd)
            self._waker.close()
        return 0

    def _loop(self) -> None:
        plan = Schedule(self.config.watchdog.interval)
        while not self._stop:
            if self._reload:
                self._reload = False
                try:
                    self.reload()
                except Exception as e:  # noqa: BLE001 - keep running on the old config
                    self._log_bug("reload", e)
                plan = Schedule(self.config.watchdog.interval)
            kind = plan.due(time.monotonic(), self._events_pending)
            if kind == "cycle":
                self._events_pending = False  # this cycle runs every check anyway
                self._guarded_cycle()
            elif kind == "event":
                self._events_pending = False
                only = [n for n in self.check_names if self.specs[n].on_link_event]
                log.debug("link event in the namespace: running %s now", ", ".join(only))
                self._guarded_cycle(only=only)
            elif kind == "confirm":
                log.debug("confirming %s now", ", ".join(plan.confirm))
                self._guarded_cycle(only=plan.confirm)
            if kind:
                histories = self.store.histories(self.check_names)
                plan.ran(unsettled(self.config, histories, self.specs))
                release_free_memory()
            if self._stop:
                break
            self._waker.sleep(plan.wake(self._events_pending) - time.monotonic())

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
        return checks_due(self.config, self.check_names, self.store.last_runs, now)

    def run_cycle(self, only: Sequence[str] | None = None) -> Snapshot:
        """One cycle: the due checks, or ``only`` these (a link event's cycle)."""
        cfg, store = self.config, self.store
        now = self.clock()
        if only is None:
            due = self.due_checks(now)
        else:
            due = {n: cfg.check(n).timeout for n in self.check_names if n in only}
        ctx = Context(cfg, self.sources, now=self.clock, exit_ip=_last_exit_ip(store))
        store.record(self.runner.run_cycle(ctx, due, store.histories(due)), now)
        store.merge_readings(ctx)
        store.cycles += 1
        finished = self.clock()
        # Published before remediation runs: a hung action leaves the checks' news out.
        snap = store.publish(self._snapshot(finished))
        view = self._remediate(finished)
        if view != snap.remediation:
            snap = store.publish(dataclasses.replace(snap, remediation=view))
        self.status_line = status_line(snap, cfg, store.histories(self.check_names))
        self.exposition.prerender()  # here, once: no scrape between two cycles renders
        if not self._ready:
            self._ready = True
            self.notifier.ready(self.status_line)
            log.info("first cycle done: %s", self.status_line)
        self.notifier.watchdog(self.status_line)
        return snap

    def _snapshot(self, finished: float) -> Snapshot:
        return _snapshot(self.store, self.config, self.check_names, self.specs, self._view, finished)

    def _remediate(self, now: float) -> RemediationView:
        if self.remediator is None:
            self._view = self._idle_view()
            return self._view
        try:
            view = self.remediator.step(self.store.histories(self.check_names), now)
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

    def health(self) -> tuple[int, str]:
        """Liveness for /healthz: is the loop alive? (``health.health``)"""
        return health(self.store.snapshot, self.config, self.check_names, self.clock(), self.status_line)

    # --- reload ------------------------------------------------------------------------

    def reload(self) -> bool:
        """Re-read the config file; an invalid one is logged in full and the old one kept."""
        # Before the first cycle systemd still waits for READY=1: no RELOADING then.
        if self._ready:
            self.notifier.reloading("reloading configuration")
        log.info("reloading %s", self.config_path)
        try:
            new = _load(self)
            security, sources = load_web_security(new.web), self.sources_factory(new)
        except ConfigError as e:
            return self._reject_reload(
                f"{e.source} has {len(e.errors)} error(s)", [f"  {x}" for x in e.errors]
            )
        except Exception as e:  # noqa: BLE001 - a bad adapter setting must not kill the loop
            return self._reject_reload(f"cannot build the sources: {type(e).__name__}: {e}", [])
        if _listen(new) != _listen(self.config):
            try:
                self.http.move(_listen(new))
            except OSError as e:
                sources.close()
                return self._reject_reload(f"cannot listen on {_listen(new)}: {e}", [])
        if self.remediator is not None:
            self.remediator.reconfigure(new, sources)
        self.sources.close()  # the old event thread too
        self.config, self.sources, self.http.security = new, sources, security
        self.http.limits = _limits(new)
        self.exposition.process_metrics(new.watchdog.process_metrics)
        self._start_events(sources)
        self.check_names = ordered(self.specs, new.enabled_checks())
        self.store.keep_only(self.check_names, new.watchdog.history)
        if self.remediator is None:
            self._view = self._idle_view()
        self.store.reload_succeeded(self.clock())
        log.info(
            "configuration reloaded, %s mode: checks %s every %g s",
            _mode_words(new), ", ".join(self.check_names), new.watchdog.interval,
        )  # fmt: skip
        self._warn_watchdog_interval()
        if self._ready:
            self.notifier.ready(self.status_line)
        return True

    def _reject_reload(self, headline: str, lines: Sequence[str]) -> bool:
        log.error("reload rejected, keeping the running configuration: %s", headline)
        for line in lines:
            log.error("%s", line)
        self.store.reload_failed()
        if self._ready:
            self.notifier.ready(self.status_line)
        return False

    def _start_events(self, sources: Sources) -> None:
        if sources.events is not None:
            sources.events.start(self.link_event)

    def _warn_watchdog_interval(self) -> None:
        self.notifier.warn_if_too_short(self.config, self.check_names)


def _last_exit_ip(store: ResultStore) -> str:
    """port_forward's target: the last exit address exit_ip saw, also while it cannot see
    one (a dead tunnel: the port is then reported closed, not unknown)."""
    seen = (r.facts.get("ip", "") for r in reversed(store.history("exit_ip")))
    return next(filter(None, seen), "")


def _snapshot(
    store: ResultStore,
    cfg: Config,
    names: Sequence[str],
    specs: Mapping[str, CheckSpec],
    view: RemediationView,
    finished: float,
) -> Snapshot:
    """What the loop knows after a cycle, as the one immutable value the scrape reads."""
    return Snapshot(
        results={n: r for n in names if (r := store.latest(n)) is not None},
        readings=store.readings(),
        remediation=view,
        last_cycle=finished,
        cycles=store.cycles,
        reload_failures=store.reload_failures,
        reload_ok=store.reload_ok,
        reload_success_time=store.reload_success_time,
        mode=cfg.watchdog.mode,
        checks=tuple(names),
        reasons={n: specs[n].all_reasons for n in names},
        interface=cfg.wireguard.interface,
        reading_errors=store.reading_errors(),
    )


def release_free_memory() -> None:
    """Hand the C heap's free pages back to the kernel, once per cycle.

    Each check runs in a thread of its own, and glibc gives threads their own
    heaps (arenas): what a cycle frees there stays in the process's RSS until
    trimmed. Measured on the lab (3 daemons each, median): see
    docs/performance.md. Costs about 0.3 ms. Python's own small-object arenas
    are not affected (CPython returns those itself when they empty).
    """
    libc.malloc_trim()


def _install_signals(d: Daemon) -> int | None:
    """SIGTERM/SIGINT stop the loop, SIGHUP reloads; the old wakeup fd (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    signal.signal(signal.SIGTERM, lambda *_: d.stop())
    signal.signal(signal.SIGINT, lambda *_: d.stop())
    signal.signal(signal.SIGHUP, lambda *_: d.request_reload())
    return signal.set_wakeup_fd(d._waker.write_fd, warn_on_full_buffer=False)


class _BugLog:
    """Log an unexpected exception once per place and message, with its traceback."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def __call__(self, where: str, e: BaseException) -> None:
        key = f"{where}:{type(e).__name__}:{e}"
        if key not in self._seen:
            self._seen.add(key)
            log.error(
                "%s raised (a bug; logged once): %s: %s", where, type(e).__name__, e, exc_info=e
            )


def _load(d: Daemon) -> Config:
    """The config file, with ``run --web.config.file`` applied (at start and on reload)."""
    return with_config_file(load_config(d.config_path), d.web_config_file)


def _serving(d: Daemon) -> tuple[HttpServer, Exposition]:
    """The HTTP server and the exposition it serves (with its counters and process_*)."""
    http = HttpServer(
        lambda accept, gz: d.exposition.render(accept, gz), d.health,
        load_web_security(d.config.web), limits=_limits(d.config),
        # /readyz: 200 only while the tunnel is safe and nothing is held (readiness.py).
        ready=lambda: readiness(d.health(), d.store.snapshot),
    )  # fmt: skip
    exposition = Exposition(
        lambda: d.store.snapshot, d.specs, http_stats=http.stats,
        process_metrics=d.config.watchdog.process_metrics,
    )  # fmt: skip
    return http, exposition


def _limits(cfg: Config) -> Limits:
    return Limits(max_connections=cfg.web.max_connections)


def _listen(cfg: Config) -> tuple[str, int]:
    return (cfg.watchdog.listen_address, cfg.watchdog.listen_port)


def main(config_path: str, web_config_file: str = "") -> int:
    """``qbt-vpn-watchdog run``: 0 after SIGTERM, 1 cannot start, 2 invalid config."""
    setup_logging()
    from qbt_vpn_watchdog.sources.build import build_sources

    try:
        from qbt_vpn_watchdog.actions import Remediator as Actions
    except ImportError as e:
        # A broken install must not run on protecting nothing (observe mode
        # needs the module too: it says what would be done).
        log.error("cannot start: remediation (qbt_vpn_watchdog.actions) cannot be loaded: %s", e)
        return 1

    specs = load_all()
    try:
        # The policy is handed the checks' reasons; it reads no registry itself.
        daemon = Daemon(
            config_path,
            build_sources,
            partial(Actions, specs=specs),
            specs=specs,
            web_config_file=web_config_file,
        )
    except ConfigError as e:
        print(f"qbt-vpn-watchdog: invalid config {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - an operator message, not a traceback
        log.error("cannot start: %s: %s", type(e).__name__, e)
        log.debug("cannot start", exc_info=True)
        return 1
    return daemon.run()


def _mode_words(cfg: Config) -> str:
    """The mode as a log line says it: observe mode must never be mistaken for protection."""
    if cfg.watchdog.mode == "observe":
        return "observe (reports what it would do, never stops or restarts anything)"
    return cfg.watchdog.mode


def _base_url(address: tuple[str, int] | None, scheme: str = "http") -> str:
    host, port = address or ("?", 0)
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"
