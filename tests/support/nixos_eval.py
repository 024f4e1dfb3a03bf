"""Evaluate nix/ as whole NixOS systems against real NixOS modules.

The harness is ../shared/nixos-eval/eval.nix (its README says what it proves):
NixOS 20.09's complete module tree under today's nixpkgs lib, offline, or a
real nixpkgs checkout when NIXPKGS=/path/to/nixpkgs names one. Where the
harness lives: $QVN_NIXOS_EVAL, else ../shared/nixos-eval beside this
repository. The frozen tree gets tests/nix/stand-ins.nix (options newer than
2020, each with the release that has it) and tests/nix/packages-2020.nix
(stand-in packages); a real checkout gets neither.

    python -m tests.support.nixos_eval        # every system: result and seconds
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NIX = shutil.which("nix-instantiate")
NIX_DIR = ROOT / "nix"
STAND_INS = ROOT / "tests" / "nix" / "stand-ins.nix"
PACKAGES_2020 = ROOT / "tests" / "nix" / "packages-2020.nix"
PROBE = ROOT / "tests" / "nix" / "probe.nix"
# The harness's copy, for NIXPKGS=/path on a machine without ../shared/nixos-eval.
HARNESS_COPY = ROOT / "tests" / "nix" / "nixos-eval.nix"
PROBE_UNIT = "qvn-eval-probe"

# The units each module brings.
WATCHDOG_UNITS = ("qbt-vpn-watchdog",)
CONFINEMENT_UNITS = ("qbittorrent-vpn-tunnel", "qbittorrent-vpn", "qbt-vpn-watchdog")


def harness() -> Path:
    """The folder holding eval.nix and the frozen tree."""
    return Path(os.environ.get("QVN_NIXOS_EVAL") or ROOT.parent / "shared" / "nixos-eval")


def harness_file() -> Path:
    """eval.nix: the harness's own, else (for a nixpkgs checkout only) the repository's copy."""
    own = harness() / "eval.nix"
    if own.is_file() or nixpkgs_checkout() is None:
        return own
    return HARNESS_COPY


def nixpkgs_checkout() -> Path | None:
    path = os.environ.get("NIXPKGS")
    return Path(path) if path else None


def unavailable() -> str | None:
    """Why these evaluations cannot run here, or None when they can."""
    if NIX is None:
        return "needs nix-instantiate (Debian: nix-bin; scripts/setup.sh installs it)"
    checkout = nixpkgs_checkout()
    if checkout is not None:
        if not (checkout / "nixos" / "lib" / "eval-config.nix").is_file():
            return f"NIXPKGS={checkout} is not a nixpkgs checkout (no nixos/lib/eval-config.nix)"
        return None
    if not (harness() / "eval.nix").is_file():
        return (
            f"no NixOS to evaluate against: neither the frozen tree at {harness()} "
            "(set QVN_NIXOS_EVAL) nor a nixpkgs checkout (set NIXPKGS=/path/to/nixpkgs)"
        )
    return None


def frozen() -> bool:
    return nixpkgs_checkout() is None


def modules_path() -> Path:
    """nixos/modules of the tree being evaluated against."""
    checkout = nixpkgs_checkout()
    return (checkout if checkout else harness() / "nixpkgs") / "nixos" / "modules"


@dataclass(frozen=True)
class System:
    """One NixOS system: its modules (Nix expressions) and the units it must have."""

    name: str
    modules: tuple[str, ...]
    units: tuple[str, ...]
    vm_node: bool = False

    def with_module(self, expr: str, name: str | None = None) -> System:
        return System(name or self.name, (*self.modules, expr), self.units, self.vm_node)


def vm_node(node: str, units: tuple[str, ...]) -> System:
    """A node of nix/tests/vm-test.nix, with the modules the NixOS test driver adds."""
    return System(
        f"vm-test {node}",
        (
            f"(import {NIX_DIR}/tests/vm-test.nix).nodes.{node}",
            f'{{ networking.hostName = "{node}"; }}',
        ),
        units,
        vm_node=True,
    )


EXAMPLE = System("example host", (str(NIX_DIR / "example-host.nix"),), CONFINEMENT_UNITS)
CONFINEMENT = System(
    "confinement module alone",
    (
        str(NIX_DIR / "module-confinement.nix"),
        '{ services.qbittorrent-vpn = { enable = true; wireguard.configFile = "/run/secrets/wg0.conf"; }; }',
    ),
    CONFINEMENT_UNITS,
)
WATCHDOG = System(
    "watchdog module alone",
    (
        str(NIX_DIR / "module-watchdog.nix"),
        '{ services.qbt-vpn-watchdog = { enable = true; settings.namespace.name = "vpn"; }; }',
    ),
    WATCHDOG_UNITS,
)


def example_with_nftables() -> System:
    # NixOS before 23.05 refuses nftables beside its iptables firewall ("You can
    # not use nftables with services.networking.firewall") and has no default
    # ruleset; since 23.05 the firewall runs on nftables. So the frozen 20.09
    # tree gets the firewall off. The host's own table is one a user would write.
    extra = "networking.firewall.enable = false;" if frozen() else ""
    return EXAMPLE.with_module(
        "{ networking.nftables.enable = true; "
        "networking.nftables.ruleset = ''\n"
        "  table inet host_filter {\n"
        "    chain input {\n"
        "      type filter hook input priority 0; policy accept;\n"
        "    }\n"
        "  }\n"
        "''; "
        f"{extra} }}",
        "example host, networking.nftables",
    )


def systems() -> list[System]:
    """Every system the issue lists, in the order of the report's table."""
    return [
        EXAMPLE,
        WATCHDOG,
        CONFINEMENT,
        vm_node("storage", CONFINEMENT_UNITS),
        vm_node("airvpn", ("whatismyip", "seeder")),
        vm_node("lan", ()),
        example_with_nftables(),
        EXAMPLE.with_module(
            "{ networking.firewall.enable = false; }", "example host, firewall off"
        ),
        EXAMPLE.with_module(
            "{ services.qbittorrent-vpn.webui.forwardFromHost = true; }",
            "example host, WebUI host forward on",
        ),
        EXAMPLE.with_module(
            "{ services.qbittorrent-vpn.webui.forwardFromHost = false; }",
            "example host, WebUI host forward off",
        ),
    ]


class EvalError(Exception):
    """NixOS rejected the system; the message is NixOS's own."""


@dataclass
class Evaluation:
    system: System
    seconds: float
    data: dict
    traces: list[str] = field(default_factory=list)

    @property
    def probe(self) -> dict:
        """The values tests/nix/probe.nix publishes, decoded."""
        raw = self.data["serviceConfig"][PROBE_UNIT]
        return {k.removeprefix("X-"): json.loads(v) for k, v in raw.items() if k.startswith("X-")}


def _added_modules(system: System) -> list[str]:
    added = [str(PROBE)]
    if frozen():
        added += [str(STAND_INS), str(PACKAGES_2020)]
    if system.vm_node:
        mp = modules_path()
        added += [
            str(mp / "virtualisation" / "qemu-vm.nix"),
            str(mp / "testing" / "test-instrumentation.nix"),
        ]
    return added


def evaluate(system: System, toplevel: bool = True) -> Evaluation:
    """Evaluate one system (toplevel forced unless asked not to)."""
    modules = "[ " + " ".join(f"({m})" for m in (*system.modules, *_added_modules(system))) + " ]"
    units = "[ " + " ".join(f'"{u}"' for u in (*system.units, PROBE_UNIT)) + " ]"
    argv = [NIX, "--eval", "--strict", "--json", "--readonly-mode", str(harness_file()),
            "--arg", "modules", modules, "--arg", "units", units,
            "--arg", "toplevel", "true" if toplevel else "false"]  # fmt: skip
    checkout = nixpkgs_checkout()
    if checkout is not None:
        argv += ["--arg", "nixpkgs", str(checkout)]
    start = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=ROOT)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        err = proc.stderr
        raise EvalError(f"{system.name}: {err[err.find('error:') :].strip() or err.strip()}")
    traces = [line for line in proc.stderr.splitlines() if line.startswith("trace:")]
    return Evaluation(system, seconds, json.loads(proc.stdout), traces)


_BASELINES: dict[bool, Evaluation] = {}


def baseline(vm: bool) -> Evaluation:
    """The same host without our modules: whatever warns there is NixOS's own."""
    if vm not in _BASELINES:
        _BASELINES[vm] = evaluate(System("baseline", (), (), vm_node=vm), toplevel=False)
    return _BASELINES[vm]


def own_warnings(ev: Evaluation) -> list[str]:
    """Warnings (and trace warnings) that our modules add to NixOS's own."""
    base = baseline(ev.system.vm_node)
    new = [w for w in ev.data["warnings"] if w not in base.data["warnings"]]
    new += [t for t in ev.traces if t not in base.traces]
    return new


def problems(ev: Evaluation) -> list[str]:
    """Everything the issue calls a failure of an evaluated system."""
    out = [f"failed assertion: {a}" for a in ev.data["failedAssertions"]]
    out += [f"warning: {w}" for w in own_warnings(ev)]
    out += [f"missing unit: {u}" for u in ev.data["missingUnits"]]
    if "toplevelDrv" in ev.data and not ev.data["toplevelDrv"].endswith(".drv"):
        out.append(f"toplevel is not a derivation: {ev.data['toplevelDrv']}")
    return out


def to_toml(data: dict) -> str:
    """JSON-shaped data -> TOML, as nixpkgs' formats.toml writes it."""
    lines: list[str] = []

    def scalar(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        raise ValueError(f"cannot write {v!r} (TOML has no null)")

    def table(prefix: str, d: dict) -> None:
        plain = {k: v for k, v in d.items() if not isinstance(v, dict)}
        if prefix and (plain or not d):
            lines.append(f"[{prefix}]")
        lines.extend(f"{k} = {scalar(v)}" for k, v in plain.items())
        for k, v in d.items():
            if isinstance(v, dict):
                table(f"{prefix}.{k}" if prefix else k, v)

    table("", data)
    return "\n".join(lines) + "\n"


# --- unit files for systemd-analyze verify -------------------------------------

STORE_PATH = re.compile(r"/nix/store/[0-9a-z]{32}-[^\s\"'=:;]+")


def write_units(texts: dict[str, str], directory: Path) -> list[Path]:
    """Write unit texts with every store path moved under directory/store.

    Store paths do not exist here: each one an Exec line starts with becomes
    an executable stand-in (a shell script that exits 0), so systemd-analyze
    checks the units themselves, not this machine's store.
    """
    store = directory / "store"
    units_dir = directory / "units"
    units_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in texts.items():
        text = text.replace("/nix/store/", f"{store}/")
        for line in text.splitlines():
            key, _, value = line.partition("=")
            if not key.startswith("Exec") or not value:
                continue
            binary = Path(value.lstrip("-@:+!").split()[0])
            if binary.is_relative_to(store) and not binary.exists():
                binary.parent.mkdir(parents=True, exist_ok=True)
                binary.write_text("#!/bin/sh\nexit 0\n")
                binary.chmod(0o755)
        path = units_dir / f"{name}.service"
        path.write_text(text)
        written.append(path)
    return written


def systemd_analyze_verify(paths: list[Path]) -> subprocess.CompletedProcess:
    """Unknown keys are only warnings for systemd-analyze (exit 0): read stderr."""
    tool = shutil.which("systemd-analyze")
    assert tool, "needs systemd-analyze (Debian: systemd)"
    return subprocess.run(
        [tool, "verify", *map(str, sorted(paths))], capture_output=True, text=True, timeout=120
    )


def main() -> int:
    reason = unavailable()
    if reason:
        print(f"skipped: {reason}")
        return 0
    tree = f"nixpkgs checkout {nixpkgs_checkout()}" if not frozen() else f"frozen tree {harness()}"
    print(f"Evaluated against the {tree}\n")
    print(f"| {'system':42} | {'result':40} | seconds |")
    print(f"|{'-' * 44}|{'-' * 42}|---------|")
    failed = 0
    for system in systems():
        try:
            ev = evaluate(system)
            found = problems(ev)
            result = "ok" if not found else "; ".join(found)
            seconds = f"{ev.seconds:7.2f}"
        except EvalError as e:
            result, seconds = f"rejected: {str(e).splitlines()[0][:200]}", "      -"
            found = [result]
        failed += bool(found)
        print(f"| {system.name:42} | {result:40} | {seconds} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
