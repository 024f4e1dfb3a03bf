"""``Qbittorrent``: the adapter the watchdog uses, one read a cycle and the torrent actions."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

import qbittorrentapi

from qbt_vpn_watchdog.sources import HttpResponse, QbtState, SourceError, TorrentBrief
from qbt_vpn_watchdog.sources.qbittorrent.client import _sort, _WebSession, safe_url, webui_probe
from qbt_vpn_watchdog.sources.qbittorrent.login import LoginGate
from qbt_vpn_watchdog.sources.qbittorrent.maindata import MainData, _get, _Shape, _torrents
from qbt_vpn_watchdog.sources.qbittorrent.torrents import (
    DEFAULT_TAG,
    STOPPED_STATES,
    UNCONFIRMABLE_STATES,
    is_active,
    poll_until_empty,
    send_until_shown,
)


def _strip_scope(addr: str) -> str:
    # qBittorrent lists IPv6 link-local addresses with a scope: "fe80::1%3".
    return addr.split("%", 1)[0]


class Qbittorrent:
    """qBittorrent Web API adapter; thread-safe.

    Two locks, so that stopping torrents never waits behind a state read: the
    checks' ``state()`` (one at a time: it keeps sync/maindata's increments)
    and the actions (one at a time: stop, start, bind). Every request ends by
    its timeout however qBittorrent behaves (``BoundedAdapter``), so neither
    lock is held for longer than a few timeouts, and a hung qBittorrent only
    makes each call fail within its timeout.
    """

    def __init__(
        self,
        url: str,
        username: str,
        password_reader: Callable[[], str],
        timeout: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        verify_timeout: float = 5.0,
        verify_settle: float = 0.5,
        poll_interval: float = 0.2,
    ) -> None:
        self.url = url.rstrip("/")
        self.where = safe_url(self.url)
        self.timeout = timeout
        self.verify_timeout = verify_timeout
        self.verify_settle = verify_settle
        self.poll_interval = poll_interval
        self._lock = threading.RLock()  # the actions
        self._read_lock = threading.Lock()  # state(): self._main
        self._main = MainData()
        self._web = _WebSession(self.url, username, password_reader, timeout, clock)
        self._call = self._web.call
        self._session = self._web.logged_in

    @property
    def gate(self) -> LoginGate:
        return self._web.gate

    @property
    def logins(self) -> int:
        """Login attempts sent (for tests and the curious)."""
        return self._web.logins

    @property
    def _client(self) -> qbittorrentapi.Client:
        return self._web.client

    def _sort(self, exc: BaseException, during: str) -> SourceError:
        return _sort(exc, during, self.where)

    # --- reading ---------------------------------------------------------------

    def state(self) -> QbtState:
        """Versions, binding, transfer info, the bound interface's addresses, torrents.

        Three requests a cycle (the versions are kept, see ``_Client``):
        preferences, the sync/maindata increment, the interface's addresses.
        """
        with self._read_lock:
            c = self._session()
            version = self._call("app/version", c.app_version)
            api_version = self._call("app/webapiVersion", c.app_web_api_version)
            prefs = self._call("app/preferences", c.app_preferences)
            main = self._call("sync/maindata", lambda: c.sync_maindata(rid=self._main.rid))
            try:
                self._main.apply(main)
                info = self._main.server
                p = "app/preferences"
                iface = _get(prefs, "current_network_interface", str, p)
                if not isinstance(version, str) or not version.strip():
                    raise _Shape("app/version is empty")
                state = dict(
                    version=version.strip(),
                    api_version=str(api_version).strip(),
                    interface_name=iface,
                    interface_address=_get(prefs, "current_interface_address", str, p),
                    listen_port=_get(prefs, "listen_port", int, p),
                    webui_address=_get(prefs, "web_ui_address", str, p),
                    webui_port=_get(prefs, "web_ui_port", int, p),
                    connection_status=info["connection_status"],
                    dht_nodes=info["dht_nodes"],
                    dl_speed=info["dl_info_speed"],
                    up_speed=info["up_info_speed"],
                    dl_total=info["dl_info_data"],
                    up_total=info["up_info_data"],
                )
            except _Shape as e:
                raise self._sort(e, "reading the state") from None
            addrs: tuple[str, ...] = ()
            if iface:
                raw = self._call(
                    "app/networkInterfaceAddressList",
                    lambda: c.app_network_interface_address_list(iface),
                )
                if not isinstance(raw, list) or not all(isinstance(a, str) for a in raw):
                    raise self._sort(
                        _Shape("not a list of strings"), "app/networkInterfaceAddressList"
                    )
                addrs = tuple(_strip_scope(a) for a in raw)
            torrents = tuple(self._main.torrents.values())
            return QbtState(**state, interface_addresses=addrs, torrents=torrents)

    def _torrents(self, hashes: Iterable[str] | None = None) -> tuple[TorrentBrief, ...]:
        c = self._session()
        if hashes is None:
            raw = self._call("torrents/info", c.torrents_info)
        else:
            hs = list(hashes)
            raw = self._call("torrents/info", lambda: c.torrents_info(torrent_hashes=hs))
        try:
            return _torrents(raw)
        except _Shape as e:
            raise self._sort(e, "torrents/info") from None

    def webui_probe(self, url: str | None = None, timeout: float | None = None) -> HttpResponse:
        """``webui_probe`` at ``url`` (default: this adapter's), no login."""
        return webui_probe(url or self.url, timeout or self.timeout)

    # --- remediation -------------------------------------------------------------

    def held(self, tag: str = DEFAULT_TAG) -> list[str]:
        """Hashes of the torrents carrying our tag (the ones we stopped and hold)."""
        with self._lock:
            return [t.hash for t in self._torrents() if tag in t.tags]

    def stop_active(self, tag: str = DEFAULT_TAG) -> list[str]:
        """Stop every active torrent and tag exactly those; return their hashes.

        Torrents already stopped (by the user, or earlier by us) are not
        touched. The tag goes on first, so that a crash between the two calls
        leaves a tagged running torrent (stopped by the next call) rather than
        an untagged stopped one (never resumed). The state is then verified and
        the stop re-sent once (a pause sent about 1 s after a resume was seen
        lost); ``SourceError(kind="not_stopped")`` if some still run.
        """
        with self._lock:
            c = self._session()
            targets = [t.hash for t in self._torrents() if is_active(t)]
            if not targets:
                return []
            self._call(
                "torrents/addTags", lambda: c.torrents_add_tags(tags=tag, torrent_hashes=targets)
            )

            def stopped(t: TorrentBrief) -> bool:
                return t.state in STOPPED_STATES or t.state in UNCONFIRMABLE_STATES

            # torrents_stop sends torrents/pause before Web API 2.11.0 (qBittorrent 4.x),
            # torrents/stop from 2.11.0 (5.x).
            left = send_until_shown(
                "stop",
                targets,
                lambda h: self._call("torrents/stop", lambda: c.torrents_stop(torrent_hashes=h)),
                lambda h: self._wait(h, stopped),
            )
            if left:
                raise SourceError(
                    f"qBittorrent: {len(left)} torrent(s) still running after stop was sent twice: "
                    + ", ".join(h[:12] for h in left),
                    kind="not_stopped",
                )
            return targets

    def start_tagged(self, tag: str = DEFAULT_TAG) -> list[str]:
        """Start the torrents carrying ``tag``, then remove the tag; return their hashes.

        Only tagged torrents are started: a torrent the user stopped never got
        the tag. One the user stopped while we held it still carries the tag
        and is started (we cannot tell the two stops apart; a user who wants it
        to stay stopped removes the tag). The tag is removed only after the
        start is verified (re-sent once), so a failure leaves it for the next
        call: ``SourceError(kind="not_started")``.
        """
        with self._lock:
            c = self._session()
            targets = [t.hash for t in self._torrents() if tag in t.tags]
            if not targets:
                return []

            def started(t: TorrentBrief) -> bool:
                return t.state not in STOPPED_STATES

            left = send_until_shown(
                "start",
                targets,
                lambda h: self._call("torrents/start", lambda: c.torrents_start(torrent_hashes=h)),
                lambda h: self._wait(h, started),
            )
            if left:
                raise SourceError(
                    f"qBittorrent: {len(left)} torrent(s) still stopped after start was sent "
                    "twice: " + ", ".join(h[:12] for h in left),
                    kind="not_started",
                )
            self._call(
                "torrents/removeTags",
                lambda: c.torrents_remove_tags(tags=tag, torrent_hashes=targets),
            )
            return targets

    def _wait(self, hashes: list[str], good: Callable[[TorrentBrief], bool]) -> list[str]:
        """Poll until every torrent is ``good`` and still is ``verify_settle`` s later;
        the ones that are not by ``verify_timeout``."""

        def not_yet() -> list[str]:
            now = {t.hash: t for t in self._torrents(hashes)}
            # A torrent that vanished (deleted meanwhile) needs nothing more.
            left = [h for h in hashes if h in now and not good(now[h])]
            if not left and self.verify_settle > 0:
                time.sleep(self.verify_settle)  # still so a moment later?
                now = {t.hash: t for t in self._torrents(hashes)}
                left = [h for h in hashes if h in now and not good(now[h])]
            return left

        return poll_until_empty(not_yet, self.verify_timeout, self.poll_interval)

    def set_binding(self, interface: str, listen_port: int | None = None) -> None:
        """Bind qBittorrent to ``interface`` (and ``listen_port`` when given); verified."""
        prefs: dict[str, object] = {"current_network_interface": interface}
        if listen_port:
            prefs["listen_port"] = int(listen_port)
        with self._lock:
            c = self._session()
            self._call("app/setPreferences", lambda: c.app_set_preferences(prefs=prefs))
            now = self._call("app/preferences", c.app_preferences)
            try:
                got = {k: _get(now, k, type(v), "app/preferences") for k, v in prefs.items()}
            except _Shape as e:
                raise self._sort(e, "app/preferences") from None
            if got != prefs:
                raise SourceError(
                    f"qBittorrent did not apply the binding: asked {prefs}, has {got}",
                    kind="not_applied",
                )

    def reannounce(self) -> None:
        """Ask every torrent's trackers for peers now.

        After a stall (sockets on a vanished interface) libtorrent has given up
        on the peers it failed to reach and waits for the next announce, which
        the lab's tracker, like many, schedules 30 minutes out; the stall would
        outlive its cause by that long.
        """
        with self._lock:
            c = self._session()
            self._call("torrents/reannounce", lambda: c.torrents_reannounce(torrent_hashes="all"))
