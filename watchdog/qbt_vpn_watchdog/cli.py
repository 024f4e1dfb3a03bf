"""Command line: `check` (one pass, exit 0/1/2), `run` (the daemon), `lab`, `example-config`.

Exit status: 0 every check passed, 1 something failed, 2 bad config or usage,
or not the privileges the command needs (root, or CAP_SYS_ADMIN + CAP_NET_ADMIN).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Sequence

from qbt_vpn_watchdog import __version__, privileges
from qbt_vpn_watchdog.config import (
    LOG_FORMATS,
    LOG_LEVELS,
    Config,
    ConfigError,
    listen_flag,
    load,
    render_example,
    set_flags,
)
from qbt_vpn_watchdog.logs import FORMAT_ENV, LEVEL_ENV, env_log_level, setup_logging
from qbt_vpn_watchdog.results import CheckResult

# The config both commands read unless --config says otherwise; on NixOS the
# module's `qbt-vpn-watchdog` wrapper sets the variable to the service's own file.
CONFIG_ENV = "QBT_VPN_WATCHDOG_CONFIG"
DEFAULT_CONFIG = os.environ.get(CONFIG_ENV, "/etc/qbt-vpn-watchdog/config.toml")
EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def _checks_epilog() -> str:
    from qbt_vpn_watchdog.checks import load_all

    specs = load_all()
    width = max(len(n) for n in specs)
    lines = [f"  {n:<{width}}  {s.summary}" for n, s in specs.items()]
    return (
        "checks (in this order; every one is enabled unless checks.NAME.enabled = false):\n"
        + "\n".join(lines)
    )


def _parser(checks: bool = True) -> argparse.ArgumentParser:
    """The parser; ``checks``: list them under `check --help` (imports every check)."""
    p = argparse.ArgumentParser(
        prog="qbt-vpn-watchdog",
        description="Watch a WireGuard-confined qBittorrent: checks, Prometheus metrics, remediation.",
        epilog=f"The config is {DEFAULT_CONFIG} unless --config (or ${CONFIG_ENV}) says otherwise.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument(
        "--config",
        default=DEFAULT_CONFIG,
        help=f"TOML config (default {DEFAULT_CONFIG}; ${CONFIG_ENV})",
    )
    logs = argparse.ArgumentParser(add_help=False)
    logs.add_argument(
        "--log.level", dest="log_level", choices=LOG_LEVELS, metavar="LEVEL", type=str.lower,
        help=f"{'|'.join(LOG_LEVELS)}; overrides watchdog.log_level and ${LEVEL_ENV}",
    )  # fmt: skip
    logs.add_argument(
        "--log.format", dest="log_format", choices=LOG_FORMATS, metavar="FORMAT",
        help=f"{'|'.join(LOG_FORMATS)}; overrides watchdog.log_format and ${FORMAT_ENV}"
        " (under journald each line keeps its priority prefix)",
    )  # fmt: skip

    c = sub.add_parser(
        "check",
        parents=[config, logs],
        help="run every check once, print the results, exit 0 ok / 1 failed / 2 bad config",
        epilog=_checks_epilog() if checks else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument("--json", action="store_true", help="print JSON instead of a table")
    c.add_argument(
        "--only",
        action="append",
        metavar="CHECK",
        help="run only this check (repeatable); an unknown or disabled one is a usage error (exit 2)",
    )

    r = sub.add_parser(
        "run",
        parents=[config, logs],
        help="the daemon: poll loop, /metrics, sd_notify, remediation",
    )
    r.add_argument(
        "--web.listen-address",
        dest="web_listen_address",
        metavar="HOST:PORT",
        help="where /metrics listens, e.g. 127.0.0.1:9879 or [::]:9879;"
        " overrides watchdog.listen_address and listen_port (also on reload)",
    )
    r.add_argument(
        "--web.disable-exporter-metrics", dest="no_process_metrics", action="store_true",
        help="leave out the process_* series, as node_exporter's flag of that name;"
        " overrides watchdog.process_metrics (also on reload)",
    )  # fmt: skip
    r.add_argument(
        "--web.config.file", dest="web_config_file", default="", metavar="FILE",
        help="exporter-toolkit web-config.yml (TLS, bcrypt users), as node_exporter takes;"
        " wins over web.config_file",
    )  # fmt: skip

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
    # Only `check` imports every check to list them: --version and run start lighter.
    args = _parser(checks=argv[:1] == ["check"]).parse_args(argv)
    if args.command == "example-config":
        sys.stdout.write(render_example())
        return EXIT_OK
    if args.command == "run":
        flags: dict[str, object] = {}
        if args.web_listen_address is not None:
            try:
                flags.update(listen_flag(args.web_listen_address))
            except ValueError as e:
                print(f"qbt-vpn-watchdog: --web.listen-address: {e}", file=sys.stderr)
                return EXIT_CONFIG
        if args.no_process_metrics:
            flags["process_metrics"] = False
        set_flags({"watchdog": flags} if flags else {})
        # The daemon re-reads the file itself; this only refuses, before
        # anything starts, what would make it fail later (no privileges, a
        # missing password file), with the same exit status as `check`.
        if not privileged("run"):
            return EXIT_CONFIG
        _setup_logging(None, args)  # loading may warn already (a readable password file)
        cfg = load_or_report(args.config)
        if cfg is None:
            return EXIT_CONFIG
        if args.web_config_file and not _web_config_usable(args.config, args.web_config_file):
            return EXIT_CONFIG
        _setup_logging(cfg, args)
        from qbt_vpn_watchdog.daemon import main as daemon_main

        return daemon_main(args.config, args.web_config_file)
    if args.command == "check":
        return check_command(
            args.config, as_json=args.json, only=args.only, log=(args.log_level, args.log_format)
        )
    _parser(checks=False).print_help()
    return EXIT_CONFIG


def _web_config_usable(path: str, web_config_file: str) -> bool:
    """``run --web.config.file``: the file must be usable before anything starts (else exit 2)."""
    from qbt_vpn_watchdog.web_security import load_web_security, with_config_file

    try:
        load_web_security(with_config_file(load(path), web_config_file).web)
    except ConfigError as e:
        print(f"qbt-vpn-watchdog: invalid web config: {e}", file=sys.stderr)
        return False
    return True


def _setup_logging(cfg: Config | None, args: argparse.Namespace) -> None:
    """Level and format: the flag, else the environment, else the config (None: not
    read yet, a provisional set-up that the call with the config replaces)."""
    level, warning = env_log_level()
    setup_logging(
        level=args.log_level or level or (cfg.watchdog.log_level if cfg else None),
        fmt=args.log_format or os.environ.get(FORMAT_ENV) or (cfg.watchdog.log_format if cfg else None),
        replace=cfg is not None,
    )
    if warning and cfg is not None:
        logging.getLogger("qbt_vpn_watchdog").warning("%s", warning)


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

    A one-shot run has no history, so a provisional verdict (return_path's
    probe went unanswered and its counters need a window; path_mtu's first
    failed measurement) is settled by running that check once more, with its
    one result as history, after the wait its ``register(settle_after=)`` asks
    for, instead of passing on no evidence.
    """
    from qbt_vpn_watchdog.checks import Context, Runner, load_all
    from qbt_vpn_watchdog.sources.build import build_sources

    specs = load_all()
    names = [n for n in specs if n in cfg.enabled_checks() and (not only or n in only)]
    errors = [
        f"--only {n}: no such check (known: {', '.join(specs)})"
        for n in only or []
        if n not in specs
    ]
    errors += [
        f"--only {n}: disabled in {cfg.source} (checks.{n}.enabled = false); enable it to run it"
        for n in only or []
        if n in specs and n not in cfg.enabled_checks()
    ]
    if errors:
        raise ConfigError("--only", errors)
    sources = build_sources(cfg)
    runner = Runner(specs)
    timeouts = {n: cfg.check(n).timeout for n in names}
    # port_forward targets the exit address exit_ip sees: run it after that one,
    # and run exit_ip for it (not reported) when only port_forward was asked for
    # and no address is configured: `check --only port_forward` must be usable.
    later = {"port_forward"} & set(names)
    helper = (
        later
        and "exit_ip" not in names
        and "exit_ip" in cfg.enabled_checks()
        and not cfg.checks.port_forward.exit_ip
    )
    first = {n: s for n, s in timeouts.items() if n not in later}
    if helper:
        first["exit_ip"] = cfg.check("exit_ip").timeout
    results = runner.run_cycle(Context(cfg, sources), first, {})
    if later:
        seen = results["exit_ip"].facts.get("ip", "") if "exit_ip" in results else ""
        ctx = Context(cfg, sources, exit_ip=seen)
        results.update(runner.run_cycle(ctx, {n: timeouts[n] for n in later}, {}))
    unsettled = [n for n in names if results[n].provisional]
    waited = 0.0
    for wait in sorted({specs[n].settle_after for n in unsettled}, reverse=True):
        group = [n for n in unsettled if specs[n].settle_after == wait]
        if wait > waited:
            if sys.stderr.isatty():
                print(
                    f"{', '.join(group)}: no verdict yet, watching for {wait - waited:g} s ...",
                    file=sys.stderr,
                )
            time.sleep(wait - waited)
            waited = wait
        again = runner.run_cycle(
            Context(cfg, sources),
            {n: timeouts[n] for n in group},
            {n: [results[n]] for n in group},
        )
        results.update(again)
    return [results[n] for n in names]


def check_command(
    path: str,
    *,
    as_json: bool = False,
    only: Sequence[str] | None = None,
    log: tuple[str | None, str | None] = (None, None),
) -> int:
    # Privileges first: without them the password file is usually unreadable
    # too, and "cannot read" would hide the cause.
    if not privileged("check", as_json=as_json, config=path):
        return EXIT_CONFIG
    level, fmt = log
    _setup_logging(None, argparse.Namespace(log_level=level, log_format=fmt))
    cfg = load_or_report(path, as_json=as_json)
    if cfg is None:
        return EXIT_CONFIG
    # A one-shot check logs warnings and worse unless asked for more.
    _setup_logging(
        dataclasses.replace(cfg, watchdog=dataclasses.replace(cfg.watchdog, log_level="warning")),
        argparse.Namespace(log_level=level, log_format=fmt),
    )
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
