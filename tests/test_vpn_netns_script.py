"""The shared bring-up script's own contract; the lab tests run its up/down/restart for real."""

from __future__ import annotations

import subprocess

import pytest

from watchdog.lab.topology import script_path


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script_path()), *args], capture_output=True, text=True)


def test_ships_as_package_data_and_parses():
    assert script_path().is_file()
    assert subprocess.run(["bash", "-n", str(script_path())]).returncode == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["up"], "--netns is required"),
        (["--netns", "x", "up"], "--interface is required"),
        (["--netns", "x", "--interface", "a-name-longer-than-15", "up"], "at most 15"),
        (["--netns", "x", "--interface", "wg0", "--userspace", "wireguard-go", "up"], "--pidfile"),
        (["--netns", "x", "--interface", "wg0", "--bogus", "1", "up"], "unknown argument"),
        (["--netns", "x", "--interface", "wg0"], "no command"),
    ],
)
def test_bad_arguments_are_refused_before_anything_runs(args, message):
    p = run(*args)
    assert p.returncode == 1 and message in p.stderr


def test_help_describes_every_command():
    out = run("--help").stdout
    for word in (
        "up",
        "down",
        "tunnel-up",
        "tunnel-down",
        "restart-tunnel",
        "status",
        "--userspace",
    ):
        assert word in out


@pytest.mark.root
def test_down_of_nothing_is_fine_and_touches_nothing():
    args = ["--netns", "qvl-none", "--interface", "qvlnone0", "--lan-veth", "qvlnone1:qvlnone2"]
    for _ in range(2):
        p = run(*args, "down")
        assert p.returncode == 0, p.stderr
    assert (
        "qvl-none"
        not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    )
    st = run(*args, "status")
    assert st.returncode == 1 and "absent" in st.stdout


@pytest.mark.root
def test_tunnel_up_without_the_namespace_says_so(tmp_path):
    conf = tmp_path / "wg.conf"
    conf.write_text("[Interface]\nAddress = 10.0.0.2/32\n")
    p = run("--netns", "qvl-none", "--interface", "qvlnone0", "--config", str(conf), "tunnel-up")
    assert p.returncode == 1 and "does not exist" in p.stderr
