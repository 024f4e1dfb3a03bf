"""A loopback HTTP server that answers like qBittorrent, from recorded JSON.

The fake is the HTTP layer, not the client: tests point the real adapter (and
so the real qbittorrent-api and requests code) at it. Static answers (version
strings, login answers, the ban text, preferences, transfer info, torrent
objects) are the ones recorded by tests/fixtures/qbittorrent/record.py from
the qBittorrent that QBT_VERSION picks (4.5.2, or 5.1.0 with QBT_VERSION=5.1);
the server keeps the state that actions change (sessions, failed logins,
torrent states and tags, preferences).

Faults a test can set: ``override[path] = (status, content_type, body)``
answers a path with junk; ``ignore["pause"] = n`` drops the next n
pause/stop requests (qBittorrent was seen to lose one); ``hang`` makes every
request wait before answering; ``drop_sessions()`` expires every session;
``raw[path] = write(wfile)`` answers a path with whatever bytes ``write``
sends, as slowly as it likes (a dripping or endless answer).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from copy import deepcopy
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from qbt_vpn_watchdog.lab import qbt_versions
from qbt_vpn_watchdog.sources.qbittorrent import STOPPED_STATES

# The recorded set for each QBT_VERSION.
RECORDED = {"4.5": "4.5.2", "5.1": "5.1.0"}
FIXTURES = (
    Path(__file__).resolve().parents[1]
    / "fixtures"
    / "qbittorrent"
    / RECORDED[qbt_versions.selected()]
)


def recorded(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def recorded_json(name: str):
    return json.loads(recorded(name)["body"])


def _v(s: str) -> tuple[int, ...]:
    return tuple(int(x) for x in s.split("."))


class FakeQbittorrent:
    def __init__(self, password: str, api_version: str | None = None) -> None:
        self.password = password
        self.username = "admin"
        self.version = recorded("app_version")["body"]
        self.api_version = api_version or recorded("app_webapiVersion")["body"]
        self.prefs = recorded_json("app_preferences")
        self.transfer = recorded_json("transfer_info")
        self.addresses = {"qvq-tun": recorded_json("app_networkInterfaceAddressList_tun")}
        # The three recorded seeding torrents: alpha, bravo, charlie.
        self.torrents = {t["hash"]: t for t in recorded_json("torrents_info_seeding")}
        self.sessions: set[str] = set()
        self.failed_logins = 0
        self.max_failures = 5
        self._sync: dict[str, tuple[int, dict]] = {}  # session -> (rid, what it was sent)
        self.override: dict[str, tuple[int, str, str]] = {}
        self.ignore: dict[str, int] = {}
        self.ignore_set_prefs = False
        self.hang = 0.0
        self.raw: dict[str, object] = {}
        self.log: list[tuple[str, str, dict]] = []  # (method, api path, form)
        self._lock = threading.Lock()
        self._n = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # --- lifecycle
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeQbittorrent:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- helpers for tests
    @property
    def v5(self) -> bool:
        return _v(self.api_version) >= (2, 11, 0)

    @property
    def stop_path(self) -> str:
        """The stop request this Web API knows (5.x renamed pause/resume to stop/start)."""
        return "torrents/stop" if self.v5 else "torrents/pause"

    @property
    def start_path(self) -> str:
        return "torrents/start" if self.v5 else "torrents/resume"

    def stopped_state(self, complete: bool = True) -> str:
        """What this qBittorrent shows for a stopped torrent: one of the adapter's STOPPED_STATES."""
        return self._stopped({"progress": 1 if complete else 0})

    def paths(self) -> list[str]:
        return [p for _, p, _ in self.log]

    def drop_sessions(self) -> None:
        self.sessions.clear()

    def by_name(self, name: str) -> dict:
        return next(t for t in self.torrents.values() if t["name"] == name)

    def set_state(self, name: str, state: str) -> None:
        self.by_name(name)["state"] = state

    def states(self) -> dict[str, tuple[str, str]]:
        return {t["name"]: (t["state"], t["tags"]) for t in self.torrents.values()}

    def logins(self) -> int:
        return self.paths().count("auth/login")

    # --- the API
    def _maindata(self, sid: str, rid: str) -> dict:
        """sync/maindata as qBittorrent answers it: everything for an unknown rid,
        then per session only what changed since the rid it handed out."""
        now = {
            "torrents": {h: {k: v for k, v in t.items() if k != "hash"} for h, t in self.torrents.items()},
            "server_state": dict(self.transfer),
        }  # fmt: skip
        last_rid, last = self._sync.get(sid, (None, None))
        self._n += 1
        self._sync[sid] = (self._n, deepcopy(now))
        if last is None or str(last_rid) != rid:
            return {"rid": self._n, "full_update": True, "categories": {}, "tags": [], **now}
        out: dict = {"rid": self._n}
        changed = {}
        for h, t in now["torrents"].items():
            old = last["torrents"].get(h)
            diff = t if old is None else {k: v for k, v in t.items() if old.get(k) != v}
            if diff:
                changed[h] = diff
        if changed:
            out["torrents"] = changed
        removed = [h for h in last["torrents"] if h not in now["torrents"]]
        if removed:
            out["torrents_removed"] = removed
        server = {k: v for k, v in now["server_state"].items() if last["server_state"].get(k) != v}
        if server:
            out["server_state"] = server
        return out

    def _stopped(self, t: dict) -> str:
        word = "stopped" if self.v5 else "paused"
        (state,) = [
            s
            for s in STOPPED_STATES
            if s.startswith(word) and s.endswith("UP" if t.get("progress", 0) >= 1 else "DL")
        ]
        return state

    def handle(self, method: str, path: str, form: dict, cookie: str | None):
        """-> (status, content type, body, set-cookie or None)"""
        text = "text/plain; charset=UTF-8"
        js = "application/json"
        with self._lock:
            self.log.append((method, path, form))
            if path in self.override:
                status, ctype, body = self.override[path]
                return status, ctype, body, None
            if path == "auth/login":
                if self.failed_logins >= self.max_failures:
                    r = recorded("auth_login_banned")
                    return r["status"], text, r["body"], None
                if form.get("username") == self.username and form.get("password") == self.password:
                    self._n += 1
                    sid = f"sid{self._n}"
                    self.sessions.add(sid)
                    return 200, text, recorded("auth_login_ok")["body"], sid
                self.failed_logins += 1
                return 200, text, recorded("auth_login_fails")["body"], None
            if cookie not in self.sessions:
                return 403, text, recorded("app_version_forbidden")["body"], None
            if path == "app/version":
                return 200, text, self.version, None
            if path == "app/webapiVersion":
                return 200, text, self.api_version, None
            if path == "app/preferences":
                return 200, js, json.dumps(self.prefs), None
            if path == "app/setPreferences":
                if not self.ignore_set_prefs:
                    self.prefs.update(json.loads(form["json"]))
                return 200, text, "", None
            if path == "transfer/info":
                return 200, js, json.dumps(self.transfer), None
            if path == "sync/maindata":
                return 200, js, json.dumps(self._maindata(cookie, form.get("rid", "0"))), None
            if path == "app/networkInterfaceAddressList":
                return 200, js, json.dumps(self.addresses.get(form.get("iface", ""), [])), None
            if path == "torrents/info":
                want = form.get("hashes")
                ts = list(self.torrents.values())
                if want:
                    ts = [t for t in ts if t["hash"] in want.split("|")]
                return 200, js, json.dumps(ts), None
            action = path.split("/", 1)[1] if path.startswith("torrents/") else ""
            # qBittorrent 5 renamed pause/resume to stop/start; the old names are gone.
            stop_name, start_name = ("stop", "start") if self.v5 else ("pause", "resume")
            hashes = [h for h in form.get("hashes", "").split("|") if h in self.torrents]
            if action in (stop_name, start_name):
                kind = "pause" if action == stop_name else "resume"
                if self.ignore.get(kind, 0) > 0:
                    self.ignore[kind] -= 1
                    return 200, text, "", None
                for h in hashes:
                    t = self.torrents[h]
                    if kind == "pause":
                        t["state"] = self._stopped(t)
                    elif t["state"] in STOPPED_STATES:
                        t["state"] = "stalledUP" if t["state"].endswith("UP") else "stalledDL"
                return 200, text, "", None
            if action in ("addTags", "removeTags"):
                tag = form["tags"]
                for h in hashes:
                    tags = [x.strip() for x in self.torrents[h]["tags"].split(",") if x.strip()]
                    if action == "addTags" and tag not in tags:
                        tags.append(tag)
                    if action == "removeTags" and tag in tags:
                        tags.remove(tag)
                    self.torrents[h]["tags"] = ", ".join(sorted(tags))
                return 200, text, "", None
            return 404, text, "Not Found", None

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                # Headers and body go out in two writes: without this, Nagle and
                # delayed ACKs add 40 ms to every answer.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *a):  # keep test output clean
                pass

            def _do(self, method: str) -> None:
                if fake.hang:
                    time.sleep(fake.hang)
                u = urlsplit(self.path)
                form = {k: v[0] for k, v in parse_qs(u.query).items()}
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    raw = self.rfile.read(n).decode()
                    form.update({k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()})
                c = SimpleCookie(self.headers.get("Cookie", ""))
                cookie = c["SID"].value if "SID" in c else None
                path = u.path.removeprefix("/api/v2/")
                if path in fake.raw:
                    self.close_connection = True
                    try:
                        fake.raw[path](self.wfile)
                    except OSError:
                        pass  # the client gave up
                    return
                status, ctype, body, sid = fake.handle(method, path, form, cookie)
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                if sid:
                    self.send_header("Set-Cookie", f"SID={sid}; HttpOnly; path=/; SameSite=Strict")
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._do("GET")

            def do_POST(self):
                self._do("POST")

        return Handler

    def snapshot(self) -> dict:
        return deepcopy(self.torrents)
