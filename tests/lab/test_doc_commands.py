"""Every shell command README.md and docs/runbook.md give, and how each is verified (issue #22).

``VERIFIED`` names, for each command line of their ```sh blocks, how it is
verified: ``LAB`` (run here against the lab, with the lab's names put in for
the documented ones: ``SUBSTITUTIONS``), ``LOCAL`` (run here, no lab needed),
or where else it is proved or why it cannot run here. A command added to
either document without a line here fails the first test, so the list stays
whole; `python -m tests.lab.test_doc_commands` prints it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

from qbt_vpn_watchdog.cli import CONFIG_ENV
from qbt_vpn_watchdog.config import load

ROOT = Path(__file__).resolve().parents[2]
DOCS = (ROOT / "README.md", ROOT / "docs" / "runbook.md")
BIN = Path(sys.executable).parent

LAB = "run against the lab (tests/lab/test_doc_commands.py)"
LOCAL = "run here (tests/lab/test_doc_commands.py)"
CI = "what CI runs (.ci/run; tests/artefacts/test_readme.py keeps the two equal)"
DEMO = (
    "not run as such: its sequence (daemon, fault, caught, repaired) is tests/lab/test_lab_daemon.py,"
    " its verdict logic tests/lab/test_lab_demo.py"
)
INSTALL = "performed by tests/artefacts/test_install.py (tests/support/installed.py)"
SYSTEMD = "not here: needs systemd as PID 1 and the installed unit (the units run in the systemd VM test, tests/vm/test_systemd_vm.py, which does not run this line)"
YOURS = "not here: names a file or host of yours"
APT = "not here: a Debian package install (the tests use pip's build)"
NO_TOOL = "not here: the tool is not installed by scripts/setup.sh"

# Ordered: the first pattern that matches a command line says how it is verified.
VERIFIED: list[tuple[str, str]] = [
    (r"^scripts/setup\.sh && \.venv/bin/qbt-vpn-watchdog lab demo$", DEMO),
    (r"^scripts/setup\.sh && \.venv/bin/pytest", CI),
    (r"^apt install ", APT),
    (
        r"^python3 -m (build|venv) |^python3 -m build$|^/opt/qbt-vpn-watchdog/bin/pip |^ln -sf /opt/",
        INSTALL,
    ),
    (r"^qbt-vpn-watchdog check --help$", INSTALL),
    (
        r"^(mkdir -p /etc/qbt-vpn-watchdog|cat > /etc/qbt-vpn-watchdog/config\.toml|printf .* > /etc/qbt-vpn-watchdog/webui-password|chmod 600 /etc/qbt-vpn-watchdog/webui-password)",
        LOCAL,
    ),
    (r"^python3 alerts/render\.py |^qbt-vpn-watchdog-mixin |^promtool (check|test) rules ", LOCAL),
    (r"^qbt-vpn-watchdog (check|run)\b", LAB),
    (r"^ip netns list$|^ip netns exec vpn |^ip -n vpn |^cat /etc/netns/vpn/resolv\.conf$", LAB),
    (r"^curl -s .*(http://)?127\.0\.0\.1:(9879|8080)", LAB),
    (r"^ss -ltnp \| grep 9879$|^grep -E 'Session", LAB),
    (r"^(systemctl|journalctl) ", SYSTEMD),
    (r"^py-spy ", NO_TOOL + " (py-spy), and needs the unit's MainPID"),
    (r"^grep -i mtu /path/|PROMETHEUS:9090|^promtool check config /etc/prometheus/", YOURS),
]
# Commands a pattern above would run in the lab, but which cannot run there (none now:
# the runbook's ping and nslookup lines run since setup.sh installs iputils-ping and
# bind9-dnsutils).
NOT_HERE_IN_LAB: dict[str, str] = {}


# The documented names -> the lab's (ordered; each a plain text replacement).
def substitutions(lab, config: Path) -> list[tuple[str, str]]:
    t = lab.t
    settings = tomllib.loads(Path(lab.config_path).read_text())
    from qbt_vpn_watchdog.lab import services

    return [
        ("https://airvpn.org/api/whatismyip/", settings["checks"]["exit_ip"]["url"]),
        ("nslookup airvpn.org ", f"nslookup {settings['checks']['dns']['names'][0]} "),
        ("http://127.0.0.1:8080/", settings["qbittorrent"]["url"] + "/"),
        ("/var/lib/qbittorrent/qBittorrent/config/qBittorrent.conf",
         str(services.CLIENT_PROFILE / "qBittorrent" / "config" / "qBittorrent.conf")),
        ("ip netns exec vpn ", f"ip netns exec {t.NS_VPN} "),
        ("ip -n vpn ", f"ip -n {t.NS_VPN} "),
        ("/etc/netns/vpn/", f"/etc/netns/{t.NS_VPN}/"),
        (" wg0", f" {t.WG_CLIENT}"),
        ("10.128.0.1", t.SERVER_TUN_IP),
        ("9879", str(t.METRICS_PORT)),
        ("--config /etc/qbt-vpn-watchdog/config.toml", f"--config {config}"),
        ("--only CHECK", "--only handshake"),
    ]  # fmt: skip


def commands(doc: Path) -> list[str]:
    """The command lines of a document's ```sh blocks: no comments, no `sudo`, no heredoc body."""
    out = []
    for block in re.findall(r"```sh\n(.*?)```", doc.read_text(), re.S):
        heredoc = None
        # A line ending in a backslash goes on on the next: one command.
        for line in re.sub(r"\\\n\s*", "", block).splitlines():
            if heredoc is not None:
                if line.strip() == heredoc:
                    heredoc = None
                continue
            line = re.split(r"\s+# ", line)[0].strip()
            if not line or line.startswith("#"):
                continue
            m = re.search(r"<<'?(\w+)'?$", line)
            if m:
                heredoc = m.group(1)
            out.append(re.sub(r"(^|&& )sudo ", r"\1", line))
    return out


def how(command: str) -> str:
    if command in NOT_HERE_IN_LAB:
        return NOT_HERE_IN_LAB[command]
    for pattern, verified in VERIFIED:
        if re.search(pattern, command):
            return verified
    raise LookupError(command)


def every_command() -> list[tuple[str, str]]:
    return [(doc.relative_to(ROOT).as_posix(), c) for doc in DOCS for c in commands(doc)]


def test_every_documented_command_says_how_it_is_verified():
    unlisted = []
    for doc, command in every_command():
        try:
            how(command)
        except LookupError:
            unlisted.append(f"{doc}: {command}")
    assert not unlisted, "add these to VERIFIED:\n" + "\n".join(unlisted)
    used = {v for _, c in every_command() for v in [how(c)]}
    assert LAB in used and LOCAL in used


def _bash(
    command: str, env: dict, cwd: Path = ROOT, timeout: float = 90
) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", command],  # as typed at a prompt: a pipeline's status is its last command's
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_the_readme_config_block_and_rules_commands_run(tmp_path):
    """README "Configure" (to a stand-in for /etc) and "Prometheus" (rules to a temporary file)."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Configure\n.*?```sh\n(.*?)```", readme, re.S).group(1)
    etc = tmp_path / "etc"
    script = block.replace("/etc/", f"{etc}/")
    p = _bash(script, dict(os.environ))
    assert p.returncode == 0, p.stderr
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    cfg_path = etc / "qbt-vpn-watchdog" / "config.toml"
    old = os.environ.pop("CREDENTIALS_DIRECTORY", None)
    try:
        cfg = load(cfg_path, secrets=True)
    finally:
        if old is not None:
            os.environ["CREDENTIALS_DIRECTORY"] = old
    assert (cfg.namespace.name, cfg.qbittorrent.forwarded_port) == ("vpn", 47123)
    assert (etc / "qbt-vpn-watchdog" / "webui-password").stat().st_mode & 0o777 == 0o600
    if not shutil.which("promtool"):
        pytest.skip("promtool not installed (scripts/setup.sh installs prometheus)")
    rules = [
        c
        for _, c in every_command()
        if re.search(r"alerts/render\.py|^qbt-vpn-watchdog-mixin |^promtool (check|test) rules", c)
    ]
    assert len(rules) == 3  # render for your selector, then promtool's check and test
    env["PATH"] = f"{BIN}:{env['PATH']}"
    for command in rules:
        command = command.replace("/etc/prometheus/", f"{tmp_path}/")
        p = _bash(command, env)
        assert p.returncode == 0, (command, p.stdout[-2000:], p.stderr[-2000:])


@pytest.fixture
def daemon(lab, tmp_path):
    """`run --config ...` as README "Run" gives it, on the lab's config in observe mode."""
    config = tmp_path / "watchdog.toml"
    config.write_text(
        Path(lab.config_path).read_text().replace('mode = "enforce"', 'mode = "observe"')
    )
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    env["PATH"] = f"{BIN}:{env['PATH']}"
    env[CONFIG_ENV] = str(config)
    (run,) = [c for _, c in every_command() if c.startswith("qbt-vpn-watchdog run ")]
    for old, new in substitutions(lab, config):
        run = run.replace(old, new)
    proc = subprocess.Popen(["bash", "-c", f"exec {run}"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{lab.t.METRICS_PORT}/healthz"
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the daemon never became healthy"
            time.sleep(0.5)
        yield env, config
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.lab
@pytest.mark.root
def test_every_lab_command_of_the_docs_runs_against_the_lab(healed_lab, daemon):
    env, config = daemon
    subs = substitutions(healed_lab, config)
    failed, ran = [], 0
    for doc, command in every_command():
        if how(command) != LAB or command.startswith("qbt-vpn-watchdog run "):
            continue
        for old, new in subs:
            command = command.replace(old, new)
        p = _bash(command, env)
        ran += 1
        if p.returncode != 0:
            failed.append(
                f"{doc}: {command}: exit {p.returncode}\n{p.stdout[-500:]}{p.stderr[-500:]}"
            )
        elif "--json" in command:
            json.loads(p.stdout)
    assert not failed, "\n".join(failed)
    assert ran >= 30


def main() -> int:
    for doc, command in every_command():
        shown = command.replace("|", "\\|")
        print(f"| `{doc}` | `{shown}` | {how(command)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
