"""Command line: `check` (one pass, exit 0/1/2), `run` (the daemon), `lab`, `example-config`.

Exit status: 0 every check passed, 1 something failed, 2 bad config or usage,
or not the privileges the command needs (root, or CAP_SYS_ADMIN + CAP_NET_ADMIN).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence

from qbt_vpn_watchdog import __version__, privileges
from qbt_vpn_watchdog.config import Config, ConfigError, load, render_example
from qbt_vpn_watchdog.results import CheckResult

DEFAULT_CONFIG = os.environ.get("QBT_VPN_WATCHDOG_CONFIG", "/etc/qbt-vpn-watchdog/config.toml")
EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="qbt-vpn-watchdog",
        description="Watch a WireGuard-confined qBittorrent: checks, Prometheus metrics, remediation.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    c = sub.add_parser(
        "check", help="run every check once, print the results, exit 0 ok / 1 failed / 2 bad config"
    )
    c.add_argument(
        "--config", default=DEFAULT_CONFIG, help=f"TOML config (default {DEFAULT_CONFIG})"
    )
    c.add_argument("--json", action="store_true", help="print JSON instead of a table")
    c.add_argument(
        "--only", action="append", metavar="CHECK", help="run only this check (repeatable)"
    )

    r = sub.add_parser("run", help="the daemon: poll loop, /metrics, sd_notify, remediation")
    r.add_argument(
        "--config", default=DEFAULT_CONFIG, help=f"TOML config (default {DEFAULT_CONFIG})"
    )

    sub.add_parser("example-config", help="print the commented example config")
    sub.add_parser(
        "lab",
        help="the lab: `lab up|down|status|break FAULT|heal [FAULT]|demo` (root)",
        add_help=False,
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "lab":
        from qbt_vpn_watchdog.lab.cli import main as lab_main

        return lab_main(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "example-config":
        sys.stdout.write(render_example())
        return EXIT_OK
    if args.command == "run":
        # The daemon re-reads the file itself; this only refuses, before
        # anything starts, what would make it fail later (no privileges, a
        # missing password file), with the same exit status as `check`.
        if not privileged("run") or load_or_report(args.config) is None:
            return EXIT_CONFIG
        from qbt_vpn_watchdog.daemon import main as daemon_main

        return daemon_main(args.config)
    if args.command == "check":
        return check_command(args.config, as_json=args.json, only=args.only)
    _parser().print_help()
    return EXIT_CONFIG


def load_or_report(path: str, *, as_json: bool = False) -> Config | None:
    """The config with its secret files readable, or None after saying what is wrong.

    With ``as_json`` the errors are also a JSON object on stdout, so a script
    reading ``check --json`` gets JSON whatever happens.
    """
    try:
        return load(path, secrets=True)
    except ConfigError as e:
        print(f"qbt-vpn-watchdog: invalid config {e}", file=sys.stderr)
        if as_json:
            _json_error("config", e.source, e.errors)
        return None


def privileged(command: str, *, as_json: bool = False, config: str = "") -> bool:
    """True when the process has what ``command`` needs; otherwise says what is missing."""
    message = privileges.refusal(command)
    if message is None:
        return True
    print(message, file=sys.stderr)
    if as_json:
        _json_error("privileges", config, [message])
    return False


def _json_error(kind: str, config: str, errors: Sequence[str]) -> None:
    json.dump({"ok": False, "error": kind, "config": config, "errors": list(errors)}, sys.stdout)
    sys.stdout.write("\n")


def run_once(cfg: Config, only: Sequence[str] | None = None) -> list[CheckResult]:
    """Every enabled check once, ignoring per-check intervals.

    A one-shot run has no history, so when ``return_path`` has no verdict yet
    (its probe went unanswered and the counters need a window), it is run a
    second time after that window instead of passing on no evidence.
    """
    from qbt_vpn_watchdog.checks import Context, Runner, load_all
    from qbt_vpn_watchdog.checks.return_path import MIN_WINDOW_SECONDS, pending
    from qbt_vpn_watchdog.sources.build import build_sources

    specs = load_all()
    names = [n for n in specs if n in cfg.enabled_checks() and (not only or n in only)]
    unknown = [n for n in (only or []) if n not in specs]
    if unknown:
        raise ConfigError(
            "--only", [f"--only {n}: no such check (known: {', '.join(specs)})" for n in unknown]
        )
    sources = build_sources(cfg)
    runner = Runner(specs)
    timeouts = {n: cfg.check(n).timeout for n in names}
    # port_forward targets the exit address exit_ip sees: run it after that one.
    later = {"port_forward"} if "exit_ip" in names else set()
    first = {n: s for n, s in timeouts.items() if n not in later}
    results = runner.run_cycle(Context(cfg, sources), first, {})
    if later & set(names):
        seen = results["exit_ip"].facts.get("ip", "")
        ctx = Context(cfg, sources, exit_ip=seen)
        results.update(runner.run_cycle(ctx, {n: timeouts[n] for n in later & set(names)}, {}))
    rp = results.get("return_path")
    if pending(rp):
        if sys.stderr.isatty():
            print(
                f"return_path: probe unanswered, watching the counters for {MIN_WINDOW_SECONDS:g} s ...",
                file=sys.stderr,
            )
        time.sleep(MIN_WINDOW_SECONDS)
        again = runner.run_cycle(
            Context(cfg, sources), {"return_path": timeouts["return_path"]}, {"return_path": [rp]}
        )
        results["return_path"] = again["return_path"]
    # Any other provisional verdict (path_mtu's first failed measurement) is
    # settled by running that check once more, at once, with its one result as history.
    unsettled = [n for n, r in results.items() if r.provisional and n != "return_path"]
    if unsettled:
        again = runner.run_cycle(
            Context(cfg, sources),
            {n: timeouts[n] for n in unsettled},
            {n: [results[n]] for n in unsettled},
        )
        results.update(again)
    return [results[n] for n in names]


def check_command(path: str, *, as_json: bool = False, only: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Privileges first: without them the password file is usually unreadable
    # too, and "cannot read" would hide the cause.
    if not privileged("check", as_json=as_json, config=path):
        return EXIT_CONFIG
    cfg = load_or_report(path, as_json=as_json)
    if cfg is None:
        return EXIT_CONFIG
    try:
        results = run_once(cfg, only)
    except ConfigError as e:
        print(f"qbt-vpn-watchdog: {e}", file=sys.stderr)
        if as_json:
            _json_error("config", e.source, e.errors)
        return EXIT_CONFIG
    ok = all(r.ok for r in results)
    if as_json:
        json.dump(
            {"ok": ok, "config": cfg.source, "checks": [_as_dict(r) for r in results]},
            sys.stdout,
            indent=2,
        )
        sys.stdout.write("\n")
    else:
        sys.stdout.write(
            render_table(results, colour=sys.stdout.isatty() and "NO_COLOR" not in os.environ)
        )
    return EXIT_OK if ok else EXIT_FAILED


def _as_dict(r: CheckResult) -> dict:
    return {
        "check": r.check,
        "ok": r.ok,
        "reason": r.reason,
        "detail": r.detail,
        "duration_seconds": round(r.duration, 4),
        "observations": dict(r.observations),
        "facts": dict(r.facts),
    }


def render_table(results: Sequence[CheckResult], colour: bool = False) -> str:
    green, red, dim, reset = (
        ("\033[32m", "\033[31;1m", "\033[2m", "\033[0m") if colour else ("",) * 4
    )
    width = max([len(r.check) for r in results] + [5])
    lines = [f"{'CHECK':<{width}}  STATUS  {'REASON':<18} {'TIME':>7}  DETAIL"]
    for r in results:
        status = f"{green}ok    {reset}" if r.ok else f"{red}FAILED{reset}"
        lines.append(
            f"{r.check:<{width}}  {status}  {r.reason:<18} {dim}{r.duration * 1000:5.0f}ms{reset}  {r.detail}"
        )
    failed = [r.check for r in results if not r.ok]
    lines.append("")
    lines.append(
        f"{red}FAILED: {', '.join(failed)}{reset}"
        if failed
        else f"{green}all {len(results)} checks passed{reset}"
    )
    return "\n".join(lines) + "\n"
