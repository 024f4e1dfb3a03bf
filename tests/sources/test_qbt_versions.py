"""QBT_VERSION: which qBittorrent the lab and the tests run, and the test client's manners
(unique names, removing only what it made, nothing left mounted)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from qbt_vpn_watchdog.lab import qbt_versions
from qbt_vpn_watchdog.lab.qbt_versions import VersionError


@pytest.mark.parametrize(
    "value, want", [(None, "4.5"), ("", "4.5"), ("4.5", "4.5"), ("5.1", "5.1")]
)
def test_selected_version(monkeypatch, value, want):
    if value is None:
        monkeypatch.delenv("QBT_VERSION", raising=False)
    else:
        monkeypatch.setenv("QBT_VERSION", value)
    assert qbt_versions.selected() == want


@pytest.mark.parametrize("value", ["5", "5.0", "4.6", "latest", "v5.1"])
def test_an_unsupported_version_is_named_with_the_supported_ones(monkeypatch, value):
    monkeypatch.setenv("QBT_VERSION", value)
    with pytest.raises(VersionError) as e:
        qbt_versions.selected()
    assert f"QBT_VERSION={value!r}" in str(e.value) and "4.5, 5.1" in str(e.value)


def test_matches_compares_the_reported_version():
    assert qbt_versions.matches("v5.1.0", "5.1") and qbt_versions.matches("4.5.2", "4.5")
    assert not qbt_versions.matches("v5.10.0", "5.1") and not qbt_versions.matches("v4.5.2", "5.1")


def test_4_5_runs_the_installed_binary_as_it_is():
    argv = ["qbittorrent-nox", "--profile=/x"]
    assert qbt_versions.command(argv, binds=["/nonexistent"], version="4.5") == argv


def test_5_1_missing_says_what_to_run(monkeypatch, tmp_path):
    monkeypatch.setenv("QBT51_ROOT", str(tmp_path / "no-tree"))
    with pytest.raises(VersionError) as e:
        qbt_versions.command(["qbittorrent-nox"], version="5.1")
    assert str(tmp_path / "no-tree") in str(e.value) and "scripts/setup.sh" in str(e.value)


def test_lab_up_with_a_bad_version_fails_before_touching_anything(monkeypatch, capsys):
    from qbt_vpn_watchdog.lab import cli, control

    monkeypatch.setattr(cli.os, "geteuid", lambda: 0)
    monkeypatch.setenv("QBT_VERSION", "9.9")

    def no(*a, **k):
        raise AssertionError("the lab lock was taken")

    monkeypatch.setattr(control, "exclusive", no)
    assert cli.main(["up"]) == 1
    assert "QBT_VERSION='9.9' is not a supported qBittorrent version" in capsys.readouterr().err


# --- the test client (tests/support/qbt_nox.py) ------------------------------------------------


def _mounts_under(root: Path) -> list[str]:
    return [
        line.split()[1]
        for line in Path("/proc/self/mounts").read_text().splitlines()
        if line.split()[1].startswith(str(root))
    ]


@pytest.mark.root
@pytest.mark.qbittorrent
def test_the_test_client_runs_the_selected_version_and_leaves_nothing():
    from tests.support.qbt_nox import QbtNox

    a, b = QbtNox("uniq", root_link=True), QbtNox("uniq", root_link=True)
    assert a.netns != b.netns and a.root_if != b.root_if  # two sessions never collide
    a.start()
    try:
        r = subprocess.run(
            ["ip", "netns", "exec", a.netns, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
             "http://127.0.0.1:8080/api/v2/app/version"],
            capture_output=True, text=True,
        )  # fmt: skip
        assert r.stdout == "403"  # it answers, and wants a login
        from qbt_vpn_watchdog.sources.qbittorrent import Qbittorrent
        from tests.support.qbt_nox import PASSWORD, USERNAME

        s = Qbittorrent(a.url, USERNAME, lambda: PASSWORD, 5.0).state()
        assert qbt_versions.matches(s.version, a.version), (s.version, a.version)
        ns, link = a.netns, a.root_if
    finally:
        a.stop()
    assert ns not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert subprocess.run(["ip", "link", "show", link], capture_output=True).returncode != 0
    # 5.1's mounts live in the client's own mount namespace: none is left here.
    assert _mounts_under(qbt_versions.chroot_root()) == []


@pytest.mark.root
def test_the_test_client_never_removes_a_namespace_it_did_not_create(monkeypatch):
    from tests.support import qbt_nox

    token = "feed01"
    theirs = f"qvq-theirs-{token}"
    subprocess.run(["ip", "netns", "add", theirs], check=True)  # another session's
    try:
        monkeypatch.setattr(qbt_nox.secrets, "token_hex", lambda n: token)
        q = qbt_nox.QbtNox("theirs")
        assert q.netns == theirs
        with pytest.raises(subprocess.CalledProcessError):
            q.start()  # `ip netns add` fails: the name is taken
        ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert theirs in ns
    finally:
        subprocess.run(["ip", "netns", "del", theirs], check=False)
