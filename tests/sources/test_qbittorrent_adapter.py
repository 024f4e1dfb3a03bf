"""The qBittorrent adapter against recorded answers served by a real loopback HTTP server.

The real qbittorrent-api and requests code runs; only qBittorrent is faked
(tests/support/fake_qbittorrent.py, answers recorded from qbittorrent-nox 4.5.2, or
5.1.0 with QBT_VERSION=5.1). The same adapter against the real qbittorrent-nox
of that version is at the end of this file.
"""

from __future__ import annotations

import logging
import socket
import threading

import pytest

from qbt_vpn_watchdog.sources import SourceError
from qbt_vpn_watchdog.sources import qbittorrent as qbittorrent_source
from qbt_vpn_watchdog.sources.qbittorrent import (
    BAN_SECONDS,
    NOT_ACTIVE_STATES,
    STOPPED_STATES,
    LoginGate,
    Qbittorrent,
    parse_tags,
    safe_url,
)
from tests.support.fake_qbittorrent import FakeQbittorrent, recorded, recorded_json

pytestmark = pytest.mark.qbittorrent  # CI runs this file on 4.5 and on 5.1

PASSWORD = "s3cret-Do-Not-Leak-7f2a"
TAG = "watchdog-stopped"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class PasswordFile:
    def __init__(self, value: str = PASSWORD) -> None:
        self.value = value

    def __call__(self) -> str:
        return self.value


@pytest.fixture(autouse=True)
def fresh_gates():
    # Login gates are per process (they survive a config reload); not across tests.
    qbittorrent_source._gates.clear()
    yield
    qbittorrent_source._gates.clear()


@pytest.fixture
def fake():
    with FakeQbittorrent(PASSWORD) as f:
        yield f


def adapter(url: str, password=None, clock=None, timeout: float = 2.0) -> Qbittorrent:
    return Qbittorrent(
        url,
        "admin",
        password or PasswordFile(),
        timeout,
        clock=clock or Clock(),
        verify_timeout=0.4,
        verify_settle=0.05,
        poll_interval=0.02,
    )


# --- reading the state ---------------------------------------------------------


def test_state_from_recorded_answers(fake):
    s = adapter(fake.url).state()
    prefs = recorded_json("app_preferences")
    assert s.version == recorded("app_version")["body"]
    assert s.api_version == recorded("app_webapiVersion")["body"]
    assert s.interface_name == "qvq-tun" == prefs["current_network_interface"]
    assert s.interface_address == ""
    assert s.listen_port == prefs["listen_port"] == 51413
    assert (s.webui_address, s.webui_port) == ("*", 8080)
    # Both without a peer: 4.5.2 says "firewalled", 5.1.0 "disconnected".
    assert s.connection_status == recorded_json("transfer_info")["connection_status"]
    assert s.dht_nodes == 0
    # the recorded link-local address carries a scope ("%3"), dropped here
    assert s.interface_addresses[0] == "10.77.0.2"
    assert all("%" not in a for a in s.interface_addresses)
    assert sorted(t.name for t in s.torrents) == ["alpha", "bravo", "charlie"]
    assert all(t.state == "stalledUP" and t.tags == () for t in s.torrents)


def test_unbound_qbittorrent_asks_for_no_address_list(fake):
    fake.prefs["current_network_interface"] = ""
    s = adapter(fake.url).state()
    assert s.interface_name == "" and s.interface_addresses == ()
    assert "app/networkInterfaceAddressList" not in fake.paths()


def test_session_is_reused_across_cycles(fake):
    a = adapter(fake.url)
    for _ in range(3):
        a.state()
    assert fake.logins() == 1


def test_expired_session_logs_in_again_once(fake):
    a = adapter(fake.url)
    a.state()
    fake.drop_sessions()
    assert a.state().version == recorded("app_version")["body"]
    assert fake.logins() == 2


# --- logins are never retried in a loop -------------------------------------------


def test_wrong_password_is_not_retried_until_backoff(fake):
    clock, pw = Clock(), PasswordFile("wrong")
    a = adapter(fake.url, pw, clock)
    with pytest.raises(SourceError) as e:
        a.state()
    assert e.value.kind == "login" and "wrong username or password" in str(e.value)
    sent = len(fake.log)
    for _ in range(20):  # twenty cycles inside the back-off: not one request
        clock.t += 29
        with pytest.raises(SourceError) as e:
            a.state()
        assert e.value.kind == "login" and "not trying again" in str(e.value)
    assert len(fake.log) == sent and fake.failed_logins == 1
    clock.t = 1000.0 + 600  # the back-off passed: exactly one new attempt
    with pytest.raises(SourceError):
        a.state()
    assert fake.failed_logins == 2
    clock.t += 600  # the second back-off is 20 minutes
    with pytest.raises(SourceError):
        a.state()
    assert fake.failed_logins == 2
    clock.t += 600
    with pytest.raises(SourceError):
        a.state()
    assert fake.failed_logins == 3


def test_changed_password_file_is_tried_at_once(fake):
    clock, pw = Clock(), PasswordFile("wrong")
    a = adapter(fake.url, pw, clock)
    with pytest.raises(SourceError):
        a.state()
    pw.value = PASSWORD
    assert a.state().version == recorded("app_version")["body"]
    assert fake.failed_logins == 1 and a.gate.failures == 0


def test_failed_relogin_after_expiry_is_gated_too(fake):
    clock, pw = Clock(), PasswordFile()
    a = adapter(fake.url, pw, clock)
    a.state()
    fake.password = "rotated"  # the session expires and the password changed server-side
    fake.drop_sessions()
    with pytest.raises(SourceError) as e:
        a.state()  # qbittorrent-api's automatic re-login fails once
    assert e.value.kind == "login"
    sent = len(fake.log)
    with pytest.raises(SourceError):
        a.state()
    assert len(fake.log) == sent and fake.failed_logins == 1


def test_ban_answer_waits_at_least_the_ban(fake):
    fake.failed_logins = 5  # someone else got this address banned
    clock = Clock()
    a = adapter(fake.url, clock=clock)
    with pytest.raises(SourceError) as e:
        a.state()
    assert e.value.kind == "login" and "banned" in str(e.value)
    assert a.gate.wait_left(PASSWORD) == BAN_SECONDS
    clock.t += BAN_SECONDS - 1
    with pytest.raises(SourceError):
        a.state()
    assert fake.logins() == 1


def test_unreadable_password_file_is_its_own_kind_with_no_login_pause(fake):
    readable = False

    def reader():
        if not readable:
            raise OSError("cannot read /run/secrets/qbt: Permission denied")
        return PASSWORD

    a = adapter(fake.url, reader)
    with pytest.raises(SourceError) as e:
        a.state()
    assert e.value.kind == "password_file" and "/run/secrets/qbt" in str(e.value)
    assert "password file" in str(e.value)
    assert fake.log == [] and a.gate.failures == 0  # nothing sent, nothing to wait out
    readable = True  # fixed: the very next cycle logs in, no 600 s pause
    a.state()
    assert fake.logins() == 1


def test_password_file_out_of_descriptors_is_a_local_resource_error(fake):
    import errno

    def reader():
        raise OSError(errno.EMFILE, "Too many open files")

    with pytest.raises(SourceError) as e:
        adapter(fake.url, reader).state()
    assert e.value.kind == "local_resource" and "too many open files" in str(e.value)


def test_password_never_in_errors_or_logs(fake, caplog):
    caplog.set_level(logging.DEBUG)  # qbittorrent-api, requests and urllib3 included
    errors = []
    for a in (
        adapter(fake.url, PasswordFile(PASSWORD + "x")),  # wrong
        adapter("http://127.0.0.1:1", PasswordFile(PASSWORD)),  # refused
    ):
        with pytest.raises(SourceError) as e:
            a.state()
        errors.append(e.value)
    fake.failed_logins = 5
    with pytest.raises(SourceError) as e:
        adapter(fake.url, PasswordFile(PASSWORD)).state()
    errors.append(e.value)
    for err in errors:
        assert PASSWORD not in str(err) and PASSWORD not in repr(err)
        assert err.__cause__ is None and err.__suppress_context__
    assert PASSWORD not in caplog.text
    assert any("login" in r.getMessage() for r in caplog.records)


def test_a_reloaded_adapter_inherits_the_login_backoff(fake):
    clock = Clock()
    with pytest.raises(SourceError):
        adapter(fake.url, PasswordFile("wrong"), clock).state()
    again = adapter(fake.url, PasswordFile("wrong"), clock)  # as after SIGHUP
    with pytest.raises(SourceError) as e:
        again.state()
    assert "not trying again" in str(e.value) and fake.failed_logins == 1


def test_login_gate_backoff_doubles_to_an_hour():
    clock = Clock()
    g = LoginGate(clock)
    fp = g.fingerprint("pw")
    waits = []
    for _ in range(5):
        g.failed(fp, "refused")
        waits.append(g.wait_left("pw"))
    assert waits == [600, 1200, 2400, 3600, 3600]
    assert g.wait_left("other") == 0
    g.succeeded()
    assert g.wait_left("pw") == 0


# --- connection problems and junk --------------------------------------------------


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_refused_connection_is_unreachable():
    with pytest.raises(SourceError) as e:
        adapter(f"http://127.0.0.1:{_free_port()}").state()
    assert e.value.kind == "unreachable" and "connection refused" in str(e.value)


def test_silent_server_times_out_as_unreachable():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)  # accepts (backlog) and never answers
    try:
        import time

        t0 = time.monotonic()
        with pytest.raises(SourceError) as e:
            adapter(f"http://127.0.0.1:{srv.getsockname()[1]}", timeout=0.3).state()
        assert e.value.kind == "unreachable" and "timed out" in str(e.value)
        assert time.monotonic() - t0 < 2.0  # one retry by qbittorrent-api at most
    finally:
        srv.close()


SERVER_STATE = (
    '"server_state": {"connection_status": "connected", "dht_nodes": 0, "dl_info_speed": 0,'
    ' "up_info_speed": 0, "dl_info_data": 0, "up_info_data": 0}'
)
MAINDATA_JUNK_TORRENT = (
    '{"rid": 1, "full_update": true, ' + SERVER_STATE + ","
    ' "torrents": {"abc": {"name": 3, "state": "uploading", "tags": ""}}}'
)


@pytest.mark.parametrize(
    "path, answer, words",
    [
        ("app/preferences", (200, "text/html", "<html>captive portal</html>"), "not valid JSON"),
        (
            "app/preferences",
            (200, "application/json", '{"listen_port": 1}'),
            "current_network_interface",
        ),
        ("sync/maindata", (200, "application/json", "[]"), "not a JSON object"),
        (
            "sync/maindata",
            (200, "application/json", '{"rid": 1, "full_update": true, "server_state": {}}'),
            "server_state has no connection_status",
        ),
        (
            "sync/maindata",
            (200, "application/json", MAINDATA_JUNK_TORRENT),
            "'name'",
        ),
        ("sync/maindata", (200, "application/json", '{"full_update": true}'), "no 'rid'"),
        (
            "app/networkInterfaceAddressList",
            (200, "application/json", '"10.0.0.1"'),
            "list of strings",
        ),
        ("sync/maindata", (500, "text/plain", "oops"), "HTTP 500"),
        ("app/webapiVersion", (404, "text/plain", "Not Found"), "HTTP 404"),
    ],
)
def test_junk_answers_are_bad_response(fake, path, answer, words):
    fake.override[path] = answer
    with pytest.raises(SourceError) as e:
        adapter(fake.url).state()
    assert e.value.kind == "bad_response"
    assert words in str(e.value) and path.split("/")[0] in str(e.value)


def test_maindata_increments_are_applied_and_asked_with_the_last_rid(fake):
    a = adapter(fake.url)
    first = a.state()
    assert {t.name for t in first.torrents} == {"alpha", "bravo", "charlie"}
    fake.set_state("bravo", fake.stopped_state())
    fake.transfer["dl_info_speed"] = 4242
    gone = fake.by_name("charlie")["hash"]
    del fake.torrents[gone]
    second = a.state()
    rids = [f.get("rid") for m, p, f in fake.log if p == "sync/maindata"]
    assert rids[0] == "0" and rids[1] != "0"  # the second one asked for an increment
    by_name = {t.name: t for t in second.torrents}
    assert set(by_name) == {"alpha", "bravo"} and by_name["bravo"].state == fake.stopped_state()
    assert second.dl_speed == 4242
    # Unchanged torrents are the very same objects: nothing rebuilt.
    assert by_name["alpha"] is next(t for t in first.torrents if t.name == "alpha")


def test_maindata_that_does_not_fit_starts_over_from_rid_0(fake):
    a = adapter(fake.url)
    a.state()
    fake.override["sync/maindata"] = (200, "application/json", '{"rid": 9, "torrents": []}')
    with pytest.raises(SourceError) as e:
        a.state()
    assert e.value.kind == "bad_response" and "torrents is not a JSON object" in str(e.value)
    del fake.override["sync/maindata"]
    assert len(a.state().torrents) == 3
    rids = [f.get("rid") for m, p, f in fake.log if p == "sync/maindata"]
    assert rids[-1] == "0"


def test_maindata_merge_rules():
    from qbt_vpn_watchdog.sources.qbittorrent import MainData

    m = MainData()
    full = {
        "rid": 1,
        "full_update": True,
        "server_state": dict.fromkeys(
            ["dht_nodes", "dl_info_speed", "up_info_speed", "dl_info_data", "up_info_data"], 0
        )
        | {"connection_status": "connected"},
        "torrents": {"h1": {"name": "one", "state": "downloading", "tags": "a, b", "dlspeed": 5}},
    }
    m.apply(full)
    assert m.rid == 1 and m.torrents["h1"].tags == ("a", "b")
    m.apply({"rid": 2, "torrents": {"h1": {"dlspeed": 9, "time_active": 3}}})  # nothing we keep
    assert m.rid == 2 and m.torrents["h1"].state == "downloading"
    stopped = min(STOPPED_STATES)  # any one: MainData keeps the string as it is
    m.apply(
        {
            "rid": 3,
            "torrents": {
                "h1": {"state": stopped},
                "h2": {"name": "two", "state": "x", "tags": ""},
            },
        }
    )
    assert m.torrents["h1"] == m.torrents["h1"].__class__("h1", "one", stopped, ("a", "b"))
    assert m.torrents["h2"].name == "two"
    m.apply({"rid": 4, "torrents_removed": ["h1"], "server_state": {"dht_nodes": 7}})
    assert list(m.torrents) == ["h2"] and m.server["dht_nodes"] == 7
    with pytest.raises(ValueError, match="new but lacks"):
        m.apply({"rid": 5, "torrents": {"h3": {"state": "x"}}})
    assert m.rid == 0 and m.torrents == {}  # reset: the next call asks for everything


def test_prefs_with_wrong_type_names_the_key(fake):
    fake.prefs["listen_port"] = "51413"
    with pytest.raises(SourceError) as e:
        adapter(fake.url).state()
    assert (
        e.value.kind == "bad_response" and "listen_port" in str(e.value) and "int" in str(e.value)
    )


def test_concurrent_callers_share_one_session(fake):
    a = adapter(fake.url)
    errs = []

    def run():
        try:
            a.state()
        except Exception as e:  # noqa: BLE001
            errs.append(e)

    ts = [threading.Thread(target=run) for _ in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert errs == [] and fake.logins() == 1


# --- stopping and starting torrents ---------------------------------------------------


def test_state_sets_are_named_and_disjoint_from_running():
    assert {"pausedDL", "pausedUP", "stoppedDL", "stoppedUP"} == STOPPED_STATES
    for running in ("downloading", "stalledDL", "uploading", "stalledUP", "queuedDL", "checkingUP",
                    "forcedDL", "metaDL", "error", "moving"):  # fmt: skip
        assert running not in NOT_ACTIVE_STATES


@pytest.mark.parametrize(
    "api, verb, other", [("2.8.19", "pause", "stop"), ("2.11.2", "stop", "pause")]
)
def test_stop_active_stops_and_tags_only_running_torrents(api, verb, other):
    with FakeQbittorrent(PASSWORD, api_version=api) as fake:
        user_state = fake.stopped_state()
        fake.set_state("alpha", user_state)  # stopped by the user
        fake.set_state("bravo", "downloading")
        fake.set_state("charlie", "queuedUP")
        a = adapter(fake.url)
        stopped = a.stop_active(TAG)
        assert sorted(stopped) == sorted(fake.by_name(n)["hash"] for n in ("bravo", "charlie"))
        st = fake.states()
        assert st["alpha"] == (user_state, "")
        assert st["bravo"][1] == TAG and st["charlie"][1] == TAG
        assert st["bravo"][0] in STOPPED_STATES and st["charlie"][0] in STOPPED_STATES
        assert f"torrents/{verb}" in fake.paths() and f"torrents/{other}" not in fake.paths()
        # the tag went on before the stop
        assert fake.paths().index("torrents/addTags") < fake.paths().index(f"torrents/{verb}")
        assert sorted(a.held(TAG)) == sorted(stopped)
        assert a.stop_active(TAG) == []  # nothing left to stop: idempotent


def test_stop_is_resent_once_when_lost(fake):
    fake.ignore["pause"] = 1
    a = adapter(fake.url)
    assert len(a.stop_active(TAG)) == 3
    assert fake.paths().count(fake.stop_path) == 2
    assert all(s in STOPPED_STATES for s, _ in fake.states().values())


def test_stop_lost_twice_is_an_error_and_keeps_the_tags(fake):
    fake.ignore["pause"] = 2
    with pytest.raises(SourceError) as e:
        adapter(fake.url).stop_active(TAG)
    assert e.value.kind == "not_stopped" and "3 torrent(s)" in str(e.value)
    assert all(tags == TAG for _, tags in fake.states().values())


def test_start_tagged_starts_only_ours_and_removes_the_tag(fake):
    a = adapter(fake.url)
    fake.set_state("alpha", fake.stopped_state())  # the user's
    ours = a.stop_active(TAG)
    fake.log.clear()
    started = a.start_tagged(TAG)
    assert sorted(started) == sorted(ours)
    st = fake.states()
    assert st["alpha"] == (fake.stopped_state(), "")
    assert st["bravo"] == ("stalledUP", "") and st["charlie"] == ("stalledUP", "")
    assert fake.log[-1][1] == "torrents/removeTags"  # only after the start was verified
    assert "alpha" not in fake.log[fake.paths().index(fake.start_path)][2]["hashes"]
    assert a.held(TAG) == [] and a.start_tagged(TAG) == []


def test_start_lost_is_resent_and_tag_kept_when_it_fails(fake):
    a = adapter(fake.url)
    a.stop_active(TAG)
    fake.ignore["resume"] = 1
    assert len(a.start_tagged(TAG)) == 3
    assert fake.paths().count(fake.start_path) == 2
    a.stop_active(TAG)
    fake.ignore["resume"] = 2
    with pytest.raises(SourceError) as e:
        a.start_tagged(TAG)
    assert e.value.kind == "not_started"
    assert len(a.held(TAG)) == 3  # the tag stays: the next call retries


def test_user_stopping_one_of_ours_while_held_still_gets_it_started(fake):
    # Documented choice: we start what carries our tag; the user removes the tag to keep it.
    a = adapter(fake.url)
    a.stop_active(TAG)
    fake.by_name("bravo")["tags"] = ""
    a.start_tagged(TAG)
    assert fake.states()["bravo"][0] in STOPPED_STATES
    assert fake.states()["alpha"][0] == "stalledUP"


def test_set_binding_sets_and_verifies(fake):
    a = adapter(fake.url)
    a.set_binding("wg0", 47000)
    assert fake.prefs["current_network_interface"] == "wg0"
    assert fake.prefs["listen_port"] == 47000
    a.set_binding("wg1", None)
    assert fake.prefs["listen_port"] == 47000 and fake.prefs["current_network_interface"] == "wg1"
    fake.ignore_set_prefs = True
    with pytest.raises(SourceError) as e:
        a.set_binding("wg2", 1)
    assert e.value.kind == "not_applied"


def test_webui_probe_needs_no_login(fake):
    r = adapter(fake.url).webui_probe()
    assert (r.status, r.body) == (403, b"Forbidden")
    assert fake.logins() == 0
    with pytest.raises(SourceError) as e:
        adapter(fake.url).webui_probe(f"http://127.0.0.1:{_free_port()}")
    assert e.value.kind == "unreachable"


def test_proxy_from_the_environment_never_sees_the_login(fake, monkeypatch):
    # A proxy in the environment would receive the login form, password included.
    proxy = socket.socket()
    proxy.bind(("127.0.0.1", 0))
    proxy.listen(8)
    proxy.settimeout(0.2)
    try:
        for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
            monkeypatch.setenv(var, f"http://127.0.0.1:{proxy.getsockname()[1]}")
        a = adapter(fake.url)
        assert a.state().version == recorded("app_version")["body"]
        assert a.webui_probe().status == 403
        with pytest.raises(TimeoutError):
            proxy.accept()
    finally:
        proxy.close()


def test_helpers():
    assert parse_tags("a, watchdog-stopped,b") == ("a", "watchdog-stopped", "b")
    assert parse_tags("") == ()
    assert safe_url("http://admin:pw@[::1]:8080/x") == "http://[::1]:8080/x"


# --- against a real qbittorrent-nox (QBT_VERSION: 4.5.2 or 5.1.0) ------------------------------


@pytest.fixture
def live():
    from tests.support.qbt_nox import QbtNox

    # The root end of the veth is on an on-link /30: nothing leaves the machine.
    q = QbtNox("live", root_link=True)
    q.start()
    try:
        yield q
    finally:
        q.stop()


def _wait_settled(a: Qbittorrent, n: int, timeout: float = 10.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ts = a.state().torrents
        if len(ts) == n and not any(t.state.startswith(("checking", "meta")) for t in ts):
            return {t.name: t for t in ts}
        time.sleep(0.2)
    raise AssertionError(f"torrents did not settle: {ts}")


@pytest.mark.root
def test_live_stop_start_and_binding(live):
    from tests.support.qbt_nox import PASSWORD, USERNAME

    a = Qbittorrent(live.url, USERNAME, lambda: PASSWORD, 5.0)
    assert a.state().torrents == ()  # logs in
    c = a._client  # adding torrents is the test's business, not the adapter's
    for name, with_data in (("alpha", True), ("bravo", True), ("charlie", False)):
        c.torrents_add(
            torrent_files=live.make_torrent(name, with_data=with_data),
            save_path=str(live.save_path),
            is_skip_checking=with_data,
        )
    ts = _wait_settled(a, 3)
    assert ts["charlie"].state not in NOT_ACTIVE_STATES  # no data: it downloads
    import time

    for attempt in range(50):  # "the user" stops alpha (and, like us, checks it took)
        if attempt % 10 == 0:
            c.torrents_stop(torrent_hashes=ts["alpha"].hash)
        time.sleep(0.1)
        ts = _wait_settled(a, 3)
        if ts["alpha"].state in STOPPED_STATES:
            break
    assert ts["alpha"].state in STOPPED_STATES, f"stop sent {attempt // 10 + 1} times, not taken"
    user_stopped = ts["alpha"].state

    stopped = a.stop_active(TAG)
    assert sorted(stopped) == sorted([ts["bravo"].hash, ts["charlie"].hash])
    ts = {t.name: t for t in a.state().torrents}
    assert ts["alpha"].tags == () and ts["bravo"].tags == (TAG,) and ts["charlie"].tags == (TAG,)
    assert {t.state for t in ts.values()} <= STOPPED_STATES
    assert sorted(a.held(TAG)) == sorted(stopped)

    started = a.start_tagged(TAG)
    assert sorted(started) == sorted(stopped)
    ts = {t.name: t for t in a.state().torrents}
    assert ts["alpha"].state == user_stopped  # the user's stays stopped
    assert ts["bravo"].state not in STOPPED_STATES and ts["charlie"].state not in STOPPED_STATES
    assert all(t.tags == () for t in ts.values())

    a.set_binding("lo", 51999)
    s = a.state()
    assert (s.interface_name, s.listen_port) == (
        "lo",
        51999,
    ) and "127.0.0.1" in s.interface_addresses
    a.set_binding("qvq-tun", None)
    s = a.state()
    assert (s.interface_name, s.listen_port, s.interface_addresses[0]) == (
        "qvq-tun",
        51999,
        "10.77.0.2",
    )

    r = a.webui_probe()
    assert (r.status, r.body) == (403, b"Forbidden")
    assert a.logins == 1
