"""What `lab demo` says about a fault: "caught" only for the fault's own signature.

Pure logic (no lab): the sequence below is what the demo saw when breaking the
return path re-created the tunnel: the link checks failed at once
(return_path: no_tunnel), the 92-byte signature came 7.5 s later.
"""

from __future__ import annotations

from qbt_vpn_watchdog.checks import REGISTRY, load_all
from qbt_vpn_watchdog.lab import faults
from qbt_vpn_watchdog.lab.demo import Detection, failing_checks

EXPOSITION = """\
# HELP qbtvpn_check_reason Why each check last ended as it did: 1 for the current reason.
# TYPE qbtvpn_check_reason gauge
qbtvpn_check_reason{check="return_path",reason="ok"} 0.0
qbtvpn_check_reason{check="return_path",reason="handshake_only"} 1.0
qbtvpn_check_reason{check="dns",reason="ok"} 1.0
qbtvpn_check_reason{check="bind",reason="no_address"} 1.0
"""


def test_failing_checks_reads_the_reason_series():
    assert failing_checks(EXPOSITION) == {"return_path": "handshake_only", "bind": "no_address"}


def test_caught_is_the_signature_and_both_times_are_shown():
    d = Detection(faults.FAULTS["return-path"].signature)
    assert not d.see(0.0, {})
    assert not d.see(0.4, {"return_path": "no_tunnel", "handshake": "never"})
    assert not d.see(3.0, {"return_path": "no_tunnel"})
    assert d.see(7.9, {"return_path": "handshake_only", "dns": "timeout"})
    first, caught = d.report()
    assert first == "first failure seen after 0.4 s: return_path (no_tunnel), handshake (never)"
    assert caught == ("caught after 7.9 s: return_path (handshake_only), the fault's own signature")


def test_never_caught_is_said():
    d = Detection(faults.FAULTS["return-path"].signature)
    d.see(1.0, {"return_path": "no_tunnel"})
    assert d.report()[-1].startswith("NOT caught: return_path never reported handshake_only")


def test_signatures_name_reasons_their_check_returns():
    load_all()
    for fault in faults.FAULTS.values():
        if fault.signature is None:
            continue
        check, reasons = fault.signature
        assert set(reasons) <= set(REGISTRY[check].all_reasons), fault.name
