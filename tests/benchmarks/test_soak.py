"""The soak benchmark's verdict (benchmarks/soak.py): what counts as flat and as steady.

The soak itself needs PostgreSQL and minutes (.ci/run runs `--quick`); its
pass/fail rule is a pure function of the per-period figures, checked here.
"""

from __future__ import annotations

from benchmarks.soak import TABLES, verdict

MB = 1024 * 1024


def period(n: int, *, delivery_mb: float, msg_per_s: float | None = None,
           problem: bool = False) -> dict:
    send = None if msg_per_s is None else {
        "msg_per_s": msg_per_s, "cpu_ms_per_1000": 400.0, **({"problem": True} if problem else {})}
    sizes = {TABLES[0]: {"total": int(delivery_mb * MB)}, TABLES[1]: {"total": 150_000}}
    return {"period": n, "sizes": sizes, "send": send, "sends": [send] if send else []}


def year(sizes_mb: list[float], speeds: list[float]) -> list[dict]:
    return [period(i + 1, delivery_mb=mb, msg_per_s=speed)
            for i, (mb, speed) in enumerate(zip(sizes_mb, speeds, strict=True))]


FLAT = [10, 20, 30, 40, 41, 39, 40, 42, 41, 40, 43, 44]
STEADY = [1000.0] * 12


def judge(periods: list[dict], **kwargs) -> bool:
    return verdict(periods, retention=90, period_days=30, size_tol=0.2, speed_tol=0.25,
                   **kwargs)[0]


def test_flat_sizes_and_steady_speed_pass():
    assert judge(year(FLAT, STEADY))


def test_sizes_growing_past_the_window_fail():
    # month 4 is the reference (90 days of 30): the last three months 25-50% above it
    assert not judge(year([10, 20, 30, 40, 44, 46, 48, 50, 52, 55, 57, 60], STEADY))


def test_a_slower_last_month_fails_and_a_window_compares_the_best():
    slower = [*STEADY[:-1], 700.0]
    assert not judge(year(FLAT, slower))
    # with a window of two, the last two months' best (1000) is what counts
    assert judge(year(FLAT, slower), speed_window=2)
    # advisory (.ci/run, a shared machine): printed, not failed on; sizes still count
    assert judge(year(FLAT, slower), speed_advisory=True)
    assert not judge(year([10, 20, 30, 40, 44, 46, 48, 50, 52, 55, 57, 60], slower),
                     speed_advisory=True)


def test_a_run_too_short_to_judge_fails():
    assert not judge(year(FLAT[:5], STEADY[:5]))


def test_a_timed_send_that_did_not_finish_cleanly_fails():
    periods = year(FLAT, STEADY)
    periods[5] = period(6, delivery_mb=39, msg_per_s=1000.0, problem=True)
    assert not judge(periods)


def test_a_tiny_table_within_page_granularity_is_flat():
    # A table of a few pages: within 256 kB of the reference counts as flat, whatever
    # the percentage (here +100%).
    periods = year([0.05, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.2, 0.2, 0.2], STEADY)
    assert judge(periods)
