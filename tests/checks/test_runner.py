import threading
import time

from qbt_vpn_watchdog.checks import CheckSpec, Runner, degraded
from qbt_vpn_watchdog.results import Outcome
from tests.support.fakes import FakeWireguard, context


def spec(name, fn, reasons=("broken",)):
    return CheckSpec(name, fn, tuple(degraded(r) for r in reasons), name)


def test_hung_check_times_out_others_still_report_and_it_is_not_restarted_while_hung():
    release = threading.Event()

    def hung(ctx):
        release.wait(10)
        return Outcome.passed()

    runner = Runner(
        {"hung": spec("hung", hung), "fine": spec("fine", lambda c: Outcome.passed("yes"))}
    )
    t0 = time.monotonic()
    r = runner.run_cycle(context(), {"hung": 0.2, "fine": 1.0}, {})
    assert time.monotonic() - t0 < 1.0
    assert (r["hung"].ok, r["hung"].reason) == (False, "timeout")
    assert r["fine"].ok and r["fine"].detail == "yes"
    # Next cycle: still hung -> reported, but no second thread is started.
    before = threading.active_count()
    r2 = runner.run_cycle(context(), {"hung": 0.2}, {})
    assert r2["hung"].reason == "timeout" and "still running" in r2["hung"].detail
    assert threading.active_count() == before
    release.set()


def test_exception_becomes_error_result():
    def boom(ctx):
        raise KeyError("ip")

    r = Runner({"x": spec("x", boom)}).run_cycle(context(), {"x": 1.0}, {})
    assert (r["x"].ok, r["x"].reason) == (False, "error") and "KeyError" in r["x"].detail


def test_reason_outside_the_fixed_set_is_an_error():
    r = Runner({"x": spec("x", lambda c: Outcome.failed("made_up", "?"))}).run_cycle(
        context(), {"x": 1}, {}
    )
    assert r["x"].reason == "error" and "made_up" in r["x"].detail


def test_readers_are_called_once_per_cycle_across_checks():
    wg = FakeWireguard(device="dev")

    def use(ctx):
        assert ctx.wireguard() == "dev"
        return Outcome.passed()

    ctx = context(wireguard=wg)
    Runner({"a": spec("a", use), "b": spec("b", use)}).run_cycle(ctx, {"a": 1, "b": 1}, {})
    assert wg.read.calls == 1
    assert ctx.readings() == {"wireguard": "dev"}


def test_history_is_handed_to_the_check():
    seen = []

    def h(ctx):
        seen.append(tuple(ctx.history))
        return Outcome.passed()

    Runner({"a": spec("a", h)}).run_cycle(context(), {"a": 1}, {"a": ["r1", "r2"]})
    assert seen == [("r1", "r2")]
