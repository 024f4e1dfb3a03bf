"""The side effects of remediation, and the ``Remediator`` the daemon calls.

``qbt_vpn_watchdog.policy.decide`` says what to do; this module does it:

* ``stop_torrents``: ``Qbittorrent.stop_active(tag)`` stops every active
  torrent and tags exactly those (the tag is the persistent memory: a restart
  of the watchdog reads it back with ``held(tag)`` and resumes them later).
* ``resume_torrents``: ``start_tagged(tag)`` starts only tagged torrents and
  removes the tag. Torrents the user stopped never carry it.
* ``restart_tunnel`` tier 1: re-set the peer's endpoint through the WireGuard
  interface (UAPI or kernel), re-resolving ``remediation.endpoint`` through the
  host's resolver (the tunnel's resolver is what may be broken); tier 2:
  ``systemctl restart UNIT`` or ``remediation.restart_command``, as argv,
  never through a shell, killed (with its process group) at the timeout;
  tier 3: set the next of ``remediation.alternative_endpoints``.
* ``rebind``: ``rebind()`` below: qBittorrent bound to ``wireguard.interface``
  on ``qbittorrent.forwarded_port`` (or its own port) with *new* sockets,
  verified in the namespace's socket table, then every torrent re-announced.

Every action runs within ``remediation.action_timeout``, is logged once with
its reason, and is counted in ``RemediationView.actions_total`` (every
attempt) / ``failures_total`` (the failed ones), exported as
``qbtvpn_remediations_total{action}`` / ``qbtvpn_remediation_failures_total{action}``
(Prometheus's own evaluations/evaluation_failures pattern). A qBittorrent login failure is
never retried: qBittorrent actions pause for ``LOGIN_PAUSE`` seconds (the
adapter has its own gate as well; five failures ban the address for an hour).
In ``mode = "observe"`` nothing is done: the log and the view say what would
have been done.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
)

from qbt_vpn_watchdog import policy
from qbt_vpn_watchdog.backoff import Backoff
from qbt_vpn_watchdog.config import Config
from qbt_vpn_watchdog.results import CheckResult, RemediationView
from qbt_vpn_watchdog.sources import LinkReader, QbittorrentClient, SourceError, Sources
from qbt_vpn_watchdog.sources.qbittorrent import is_active
from qbt_vpn_watchdog.sources.tunnel import on_tunnel, tunnel_peer
from qbt_vpn_watchdog.workers import Busy, Workers

log = logging.getLogger(__name__)

ACTIONS = ("stop_torrents", "resume_torrents", "restart_tunnel", "rebind")
LOGIN_PAUSE = 600.0  # seconds without qBittorrent actions after a login failure
_QBT_ACTIONS = frozenset({"stop_torrents", "resume_torrents", "rebind"})


class ActionError(Exception):
    """An action failed; ``str()`` is a one-line operator message (no secrets)."""


class ActionTimedOut(ActionError):
    """The call gave no result within its timeout (or is still running from before)."""


class CommandFailed(ActionError):
    """The command ran and exited non-zero: worth one more try (a restart racing another)."""


# The restart command: run again once after this wait when it exits non-zero;
# never after a timeout (the budget is spent) or when it cannot be run at all.
COMMAND_ATTEMPTS = 2
COMMAND_RETRY_WAIT = Backoff(1.0, 1.0)


# --- small building blocks (module functions so tests can call them directly) ----


def run_command(argv: Sequence[str], timeout: float) -> str:
    """Run ``argv`` (no shell) and return its output; ActionError on failure.

    The command gets its own session so that on timeout the whole process
    group is killed (a restart script that hangs in a child must not linger).
    A non-zero exit is a failure naming the status and the last output line.
    """
    argv = list(argv)
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    except OSError as e:
        raise ActionError(f"cannot run {argv[0]}: {e.strerror or e}") from None
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise ActionError(f"{argv[0]} did not finish within {timeout:g} s; killed") from None
    text = out.decode("utf-8", "replace").strip()
    if proc.returncode != 0:
        last = text.splitlines()[-1][:200] if text else "no output"
        raise CommandFailed(f"{argv[0]} exited with status {proc.returncode}: {last}")
    return text


def run_retrying(
    run: Callable[[Sequence[str], float], str],
    argv: Sequence[str],
    budget: float,
    *,
    attempts: int = COMMAND_ATTEMPTS,
    wait: Backoff = COMMAND_RETRY_WAIT,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """``run(argv, timeout)``, tried again (tenacity) when it exits non-zero, all within ``budget``."""
    deadline = time.monotonic() + budget

    def once() -> str:
        return run(argv, max(1.0, deadline - time.monotonic()))

    def again(rs: RetryCallState) -> None:
        log.warning("remediation: %s; running it again", rs.outcome.exception())

    return Retrying(
        stop=stop_after_attempt(attempts) | stop_before_delay(budget - 1.0),
        wait=wait,
        retry=retry_if_exception_type(CommandFailed),
        before_sleep=again,
        sleep=sleep,
        reraise=True,
    )(once)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    try:
        proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover - a process that survives SIGKILL
        pass


def resolve_endpoint(endpoint: str, resolver: Callable[..., list] = socket.getaddrinfo) -> str:
    """``"host:port"`` -> ``"ip:port"`` through the host's resolver (IPv4 first).

    The watchdog runs in the root namespace, so getaddrinfo uses the host's
    resolver, not the tunnel's: the tunnel is what may be broken.
    """
    host, sep, port = endpoint.rpartition(":")
    if not sep or not port.isdigit():
        raise ActionError(f"endpoint {endpoint!r} is not host:port")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
    try:
        infos = resolver(host, int(port), type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError) as e:
        raise ActionError(f"cannot resolve {host}: {e}") from None
    addrs = [i[4][0] for i in infos]
    if not addrs:
        raise ActionError(f"{host} resolved to no address")
    addrs.sort(key=lambda a: ":" in a)  # IPv4 first: the usual AirVPN endpoint
    a = addrs[0]
    return f"[{a}]:{port}" if ":" in a else f"{a}:{port}"


def rebind(
    qbt: QbittorrentClient,
    links: LinkReader,
    interface: str,
    port: int | None,
    timeout: float,
    poll: float = 0.1,
) -> str:
    """Bind qBittorrent to ``interface`` on ``port`` (``None``: the port it has) with new
    sockets, and re-announce.

    Setting the same interface and port again is a no-op in libtorrent 2.0 (it
    compares device names), which leaves a socket bound to a re-created
    tunnel's old index in place: the ``bind`` check's ``stale_listener``. So
    the port goes to a neighbour first and then back. The neighbour is never
    the port qBittorrent has now: one left there by an interrupted rebind (the
    daemon restarted between the two steps) would make that step a no-op too
    (measured in the lab: "no socket on port 47124" every time); nor, where it
    can choose, a port another program listens on. Each step
    waits until the namespace's socket table (sock_diag) shows a socket on that
    port bound to the tunnel as it is now (qBittorrent applies preferences
    deferred, and two quick changes would merge into none). Then every torrent
    is re-announced, so peers that failed meanwhile are tried again at once.
    """
    link = links.link(interface)
    if link is None:
        raise ActionError(f"{interface} does not exist in the namespace: nothing to bind to")
    deadline = time.monotonic() + timeout
    try:
        current: int | None = qbt.state().listen_port
    except SourceError:
        if not port:
            raise
        current = None  # unknown: the forwarded port is the target all the same
    target = port or current
    if not target:
        raise ActionError(
            "qBittorrent listens on no port (0) and qbittorrent.forwarded_port is not set: "
            "nothing to bind to"
        )
    near = [p for p in (target + 1, target - 1, target + 2, target - 2) if 1 <= p <= 65535]
    near.sort(key=lambda p: p < 1024)  # an unprivileged port first, where there is one
    # Not the port it has, and one nothing else in the namespace listens on
    # (libtorrent would fail to listen there, and the step would wait in vain).
    free = [p for p in near if p != current and not links.tcp_listeners(p)]
    neighbour = (free or [p for p in near if p != current])[0]
    for p in (neighbour, target):
        qbt.set_binding(interface, p)
        while not on_tunnel(links.tcp_listeners(p), link):
            if time.monotonic() >= deadline:
                raise ActionError(
                    f"qBittorrent opened no socket on {interface} port {p} within {timeout:g} s"
                )
            time.sleep(poll)
    qbt.reannounce()
    return f"bound to {interface}, port {target}, new sockets; torrents re-announced"


def _bounded(workers: Workers, name: str, fn: Callable[[], Any], timeout: float) -> Any:
    """``fn()`` in a worker thread within ``timeout`` (``workers.Workers``): an action that
    overran is left to finish on its own and refused until it has, so a hung call never
    piles up threads (the Runner does the same for checks)."""
    try:
        return workers.call(name, fn, timeout)
    except Busy:
        raise ActionTimedOut(f"{name}: the previous attempt is still running (hung?)") from None
    except TimeoutError:
        raise ActionTimedOut(f"{name}: no result within {timeout:g} s") from None


# --- the remediator ---------------------------------------------------------------


class Remediator:
    """Policy + actions, one ``step`` per cycle (called by the daemon after the checks).

    It uses ``sources.qbittorrent``, ``sources.links`` and ``sources.wireguard``
    (the seams in ``qbt_vpn_watchdog.sources``). ``specs`` are the checks whose
    reasons the policy reads (``policy.Settings.from_config``; without them every
    failure counts as unsafe). ``run_command`` and ``resolve`` are injectable for tests.
    """

    def __init__(
        self,
        config: Config,
        sources: Sources,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        *,
        specs: Mapping[str, policy.DeclaresReasons] | None = None,
        run_command: Callable[[Sequence[str], float], str] = run_command,
        resolve: Callable[[str], str] = resolve_endpoint,
    ) -> None:
        self.clock = clock
        self.specs = dict(specs or {})
        self.rng = rng or random.Random()
        self.run_command = run_command
        self.resolve = resolve
        self.memory = policy.Memory()
        self.actions_total = dict.fromkeys(ACTIONS, 0)
        self.failures_total = dict.fromkeys(ACTIONS, 0)
        self.held: list[str] = []
        self._held_known = False
        self._workers = Workers("action")
        self._qbt_paused_until = 0.0
        self._qbt_silent = ""
        self._last_error: dict[str, str] = {}
        self._observed: set[str] = set()  # "would" lines already logged this incident
        self._view = RemediationView()
        self.reconfigure(config, sources)

    def reconfigure(self, config: Config, sources: Sources) -> None:
        """New config (SIGHUP): keep the memory and counters, take the new settings."""
        self.config = config
        self.sources = sources
        self.settings = policy.Settings.from_config(config, self.specs)
        self.observe = config.watchdog.mode == "observe"
        self.tag = config.remediation.tag
        self.timeout = config.remediation.action_timeout

    # --- the cycle -------------------------------------------------------------

    def step(self, histories: Mapping[str, Sequence[CheckResult]], now: float) -> RemediationView:
        """One cycle: decide from the checks' histories (newest last), act, report."""
        hist = histories
        self._qbt_silent = ""  # set when a qBittorrent action got no answer this cycle
        self._load_held(now)
        settings = self.settings
        if hist:
            # Only checks the daemon runs can vouch for a cycle (one missing from
            # the registry would otherwise block every resume forever).
            settings = replace(settings, checks=tuple(c for c in settings.checks if c in hist))
        prev = self.memory
        d = policy.decide(hist, prev, settings, now, self.rng)
        mem = d.memory
        # Kept before anything is done, and before each action as if it failed: an
        # action that raises what no handler expects must not take the decision with
        # it (a restart already sent would drop out of the back-off and the hourly
        # cap; a resume that did not happen would end the incident).
        self.memory = mem
        would: list[str] = []
        for action in d.actions:
            if self.observe:
                line = self._would(action)
                if line:
                    would.append(line)
                continue
            failed = _memory_if_failed(action, mem, prev)
            self.memory = failed
            if not self._perform(action, now):
                mem = failed  # fed back so the policy retries or stays closed
            self.memory = mem
        if not mem.holding:
            self._observed.clear()
        state = d.state
        if mem.holding and state == "ok":  # a failed resume keeps holding
            state = "holding"
        self._view = RemediationView(
            state=state,
            observe_only=self.observe,
            held_stopped=len(self.held),
            actions_total=dict(self.actions_total),
            failures_total=dict(self.failures_total),
            summary=_summary(
                state, d, mem, would, self.observe, len(self.held), self.settings.stop_torrents
            ),
        )
        return self._view

    @property
    def view(self) -> RemediationView:
        return self._view

    def _load_held(self, now: float) -> None:
        """Read what qBittorrent holds for us, until it answers once.

        The tag is the memory across restarts of the watchdog: torrents
        tagged by an earlier run stay stopped and are resumed by this one.
        """
        if self._held_known or self.observe or now < self._qbt_paused_until:
            return
        try:
            held = _bounded(
                self._workers, "held", lambda: self.sources.qbittorrent.held(self.tag), self.timeout
            )
        except (SourceError, ActionError) as e:
            self._note_failure("held", e, now, count=False)
            return
        self._held_known = True
        self.held = list(held)
        if held and not self.memory.holding:
            log.warning(
                "%d torrent(s) carry the tag %r from an earlier run: "
                "holding them until the checks are good",
                len(held),
                self.tag,
            )
            self.memory = replace(
                self.memory, holding=True, stopped=True, since=now, culprits=frozenset()
            )

    # --- performing ------------------------------------------------------------

    def _perform(self, action: policy.Action, now: float) -> bool:
        kind = action.kind
        if kind in _QBT_ACTIONS and now < self._qbt_paused_until:
            return False  # login failed recently: never retried before the pause ends
        if kind in _QBT_ACTIONS and self._qbt_silent:
            # A hung qBittorrent would make every further call of this cycle
            # run into its timeout too: the cycle keeps its pace, and the
            # action is tried again next cycle (the stop comes first anyway).
            e = ActionError(f"skipped: qBittorrent did not answer {self._qbt_silent} this cycle")
            self._note_failure(kind, e, now, count=False)
            return False
        try:
            done = _bounded(self._workers, kind, lambda: self._do(action), self.timeout)
        except (SourceError, ActionError, ValueError, OSError) as e:
            self._note_failure(kind, e, now)
            if kind in _QBT_ACTIONS and _no_answer(e):
                self._qbt_silent = kind
            return False
        self._last_error.pop(kind, None)
        if action.sweep and not done:
            return True  # nothing new to stop: not an attempt worth counting or a line
        self.actions_total[kind] += 1
        log.warning("remediation: %s: %s [%s]", _title(action), done, action.reason)
        return True

    def _do(self, action: policy.Action) -> str:
        qbt = self.sources.qbittorrent
        if action.kind == "stop_torrents":
            stopped = qbt.stop_active(self.tag)
            self.held = sorted(set(self.held) | set(stopped))
            if action.sweep:
                return (
                    f"stopped {len(stopped)} more torrent(s) added while holding" if stopped else ""
                )
            return f"stopped {len(stopped)} torrent(s), holding {len(self.held)}"
        if action.kind == "resume_torrents":
            started = qbt.start_tagged(self.tag)
            self.held = []
            return f"started {len(started)} torrent(s)"
        if action.kind == "rebind":
            # The steps get a little less than the action's budget, so a slow
            # qBittorrent fails here with a message, not in the timeout wrapper.
            return rebind(
                qbt,
                self.sources.links,
                self.config.wireguard.interface,
                self.config.qbittorrent.forwarded_port or None,
                max(1.0, self.timeout - 2.0),
            )
        if action.kind == "restart_tunnel":
            return self._restart(action)
        raise ActionError(f"unknown action {action.kind!r}")  # pragma: no cover

    def _restart(self, action: policy.Action) -> str:
        r = self.config.remediation
        if action.tier == 2:
            argv = list(r.restart_command) or ["systemctl", "restart", r.restart_unit]
            # The command gets a little less than the action's budget, so it is
            # killed by us rather than abandoned by the timeout wrapper.
            run_retrying(self.run_command, argv, max(1.0, self.timeout - 1.0))
            return "ran " + " ".join(argv)
        wg = self.sources.wireguard
        peer = tunnel_peer(wg.read())
        if peer is None:
            raise ActionError(f"{self.config.wireguard.interface} has no peer to re-set")
        if action.tier == 3:
            wanted = r.alternative_endpoints[action.endpoint_index % len(r.alternative_endpoints)]
        else:
            wanted = r.endpoint or peer.endpoint or ""
            if not wanted:
                raise ActionError("the peer has no endpoint and remediation.endpoint is not set")
        endpoint = self.resolve(wanted)
        wg.set_endpoint(peer.public_key, endpoint)
        return f"endpoint set to {endpoint}" + (f" ({wanted})" if wanted != endpoint else "")

    def _note_failure(self, kind: str, e: BaseException, now: float, count: bool = True) -> None:
        if count and kind in self.failures_total:
            self.failures_total[kind] += 1
            self.actions_total[kind] += 1  # an attempt, too
        msg = str(e) or type(e).__name__
        if isinstance(e, SourceError) and e.kind == "login":
            self._qbt_paused_until = now + LOGIN_PAUSE
            msg += (
                f" (no qBittorrent action for {LOGIN_PAUSE:g} s: a login failure is never retried)"
            )
        # Logged once per distinct error, not once per cycle of a retry.
        if self._last_error.get(kind) != msg:
            self._last_error[kind] = msg
            log.error("remediation: %s failed: %s", kind, msg)

    # --- observe mode ----------------------------------------------------------

    def _would(self, action: policy.Action) -> str:
        if action.sweep:
            return ""
        if action.kind == "stop_torrents":
            what = _would_stop(self._active_names())
        elif action.kind == "resume_torrents":
            what = "would resume the torrents it stopped"
        else:
            what = f"would {_title(action)}"
        key = f"{action.kind}:{action.tier}:{what}"
        if key not in self._observed:
            self._observed.add(key)
            log.warning("observe mode: %s (%s)", what, action.reason)
        return what

    def _active_names(self) -> list[str] | None:
        try:
            st = _bounded(self._workers, "state", self.sources.qbittorrent.state, self.timeout)
        except (SourceError, ActionError):
            return None
        return [t.name for t in st.torrents if is_active(t)]


def _no_answer(e: BaseException) -> bool:
    """qBittorrent did not answer at all (as opposed to answering no)."""
    if isinstance(e, SourceError):
        return e.kind in ("unreachable", "timeout")
    return isinstance(e, ActionTimedOut)


def _memory_if_failed(
    action: policy.Action, mem: policy.Memory, prev: policy.Memory
) -> policy.Memory:
    """The memory to keep when ``action`` failed (or raised): the policy retries it or
    stays closed."""
    if action.kind == "stop_torrents":
        return replace(mem, stopped=False)
    if action.kind == "resume_torrents":
        # The tagged torrents are still stopped: the incident goes on (prev's),
        # tried again next cycle if the checks are still good. What outlives an
        # incident is this cycle's: the restarts in the last hour, the back-off,
        # and a rebind done this very cycle.
        return replace(
            prev,
            good_cycles=prev.good_cycles + 1,
            restarts=mem.restarts,
            next_restart=mem.next_restart,
            last_rebind=mem.last_rebind,
        )
    return mem  # a failed restart or rebind still counts as one


# --- words ---------------------------------------------------------------------------


def _would_stop(names: list[str] | None) -> str:
    if names is None:
        return "would stop every active torrent (qBittorrent unreachable)"
    more = " ..." if len(names) > 5 else ""
    return f"would stop {len(names)} torrent(s): {', '.join(names[:5])}{more}"


def _summary(
    state: str, d: policy.Decision, m: policy.Memory, would: list[str], observe: bool,
    held: int, stop: bool,
) -> str:  # fmt: skip
    """The one line for STATUS= and /healthz: the state, why, and what is (or would be) done."""
    if observe:
        head = "observe mode" if state == "ok" else f"observe mode, would be {state}"
        return head + f": {d.reason}" + "".join(f"; {w}" for w in would)
    if state == "ok":
        return d.reason
    parts = [f"holding {held} torrent(s)" if stop else "not stopping torrents", d.reason]
    if state == "restarting" and m.attempts:
        parts.append(f"{m.attempts} restart(s) this incident, {len(m.restarts)} in the last hour")
    if d.needed:
        parts.append(f"resume after {d.needed} good cycles ({m.good_cycles}/{d.needed})")
    return "; ".join(parts)


def _title(action: policy.Action) -> str:
    if action.kind == "restart_tunnel":
        what = {1: "re-set the endpoint", 2: "restart the tunnel", 3: "rotate the endpoint"}
        return f"restart_tunnel tier {action.tier} ({what.get(action.tier, '?')})"
    return action.kind
