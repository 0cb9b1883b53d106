#!/usr/bin/env python3
# ruff: noqa: S311 - synthetic data
"""Soak: a simulated year of editions on PostgreSQL, to show the ledger stays small.

    .venv/bin/python benchmarks/soak.py                  # 20,000 subscribers, 365 days
    .venv/bin/python benchmarks/soak.py --quick          # 1,000, 60 days, 10-day retention

Each simulated day writes the day's editions (five breaking alerts and the
daily and weekly digests due that day, one edition per due moment) through the
real dispatch code: `edition_create_alert`, `digests_schedule(now=<simulated
moment>)`, `edition_dispatch`, run in this process with the broker kept out
(`enqueue.task_send` is replaced by a list). Then the day runs the hourly
`ledger_purge(now=<end of the simulated day>)` with production's chunk and time
budget, and a plain VACUUM ANALYZE of the two ledger tables, as autovacuum would.

Compressed time, the one shortcut: the day's deliveries are not sent one batch
at a time but marked sent in bulk, one UPDATE of their rows (status, claim,
claimed_at, sent_at, attempts, as the send path writes them) and one of their
editions (done, counters, started/finished at the simulated moment); digest
windows move with `digest_windows_advance`, as after a real send. Webhook
events (a bounce per 500 deliveries) are inserted directly, dated the simulated day.

On the first day of each period (30 simulated days) two alerts (--timed-sends)
to the same category go through the real send path instead (on day 1, after an
untimed warm-up): `deliveries_send` over each of their batch ranges, in this
process, into the outbox transport (--transport smtp: an SMTP sink), timed; the
fastest is the period's figure (the machine is shared). Their CPU in this
process per 1,000 messages is printed too.

Printed per period: rows in subscriptions_delivery, table, index and total
sizes of subscriptions_delivery and subscriptions_trackingevent, and the real
send's msg/s. The verdict: the last three periods' total sizes within ±20% of
the first period after the retention window (month 4 for 90 days), and the last
period's msg/s within ±25% of the first's (--speed-window N: the best of the
last N periods against the best of the first N; --speed-advisory, as .ci/run
runs it on a shared machine: printed, not failed on). Exit status 1 when either fails.
See benchmarks/README.md, "Soak: a year of editions".
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from array import array
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import harness as h
from benchmarks.harness import say

TABLES = ("subscriptions_delivery", "subscriptions_trackingevent")
ALERT_HOURS = (6, 9, 12, 15, 18, 21, 23)  # the day's alerts, in order (UTC)
SCHEDULE_EVERY = 3  # hours between digests_schedule runs (beat: minutes; lateness 6 h)
BOUNCE_EVERY = 500  # deliveries per simulated webhook event
SMALL_TABLE = 256 * 1024  # bytes: below this, page granularity is the noise


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--subscribers", type=int, default=20_000)
    p.add_argument("--days", type=int, default=365)
    p.add_argument("--alerts-per-day", type=int, default=5, choices=range(1, 8))
    p.add_argument("--retention-days", type=int,
                   help="NEWSROOM_DELIVERY_RETENTION_DAYS for the run (default: the "
                        "settings' default, 90)")
    p.add_argument("--period-days", type=int, default=30,
                   help="a reporting period (a 'month'): sizes measured and one real "
                        "send timed per period")
    p.add_argument("--quick", action="store_true",
                   help="for CI: 1,000 subscribers, 60 days, retention 10, periods of 5 days, "
                        "--few-slots, 3 timed sends, speed window 2")
    p.add_argument("--size-tolerance", type=float, default=0.20)
    p.add_argument("--speed-tolerance", type=float, default=0.25)
    p.add_argument("--few-slots", action="store_true",
                   help="readers in two time zones at three morning hours (four due moments "
                        "a day instead of ~30): fewer digest editions, the same rows")
    p.add_argument("--speed-window", type=int, default=1,
                   help="compare the best msg/s of the first N periods with the last N's")
    p.add_argument("--speed-advisory", action="store_true",
                   help="print the speed verdict but fail only on sizes and broken sends "
                        "(.ci/run: the machine is shared, and its load moves msg/s more "
                        "than ±25%%)")
    p.add_argument("--timed-sends", type=int, default=2,
                   help="real alerts timed per period; the fastest is the period's figure")
    p.add_argument("--transport", choices=["outbox", "smtp"], default="outbox",
                   help="where the timed sends go: the outbox (in this process: what is "
                        "timed is the engine and PostgreSQL) or an SMTP sink (aiosmtpd, "
                        "unless Postfix's smtp-sink is here: the sink's speed is timed too)")
    p.add_argument("--pg-name", default="newsroom_soak", help="PostgreSQL database to create")
    p.add_argument("--pg-admin", default=h.PG_ADMIN)
    p.add_argument("--data-dir", type=Path, help="default: a new /tmp/soak-* folder")
    p.add_argument("--keep", action="store_true", help="keep the data folder and database")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", type=Path, help="write every figure here")
    args = p.parse_args(argv)
    if args.quick:
        args.subscribers, args.days, args.period_days = 1_000, 60, 5
        args.few_slots, args.timed_sends, args.speed_window = True, 3, 2
        args.retention_days = 10 if args.retention_days is None else args.retention_days
    if not 1 <= args.timed_sends < args.alerts_per_day:
        p.error("--timed-sends must be at least 1 and below --alerts-per-day (day 1 adds a "
                "warm-up send)")
    return args


# --- The broker, kept out -------------------------------------------------------------------

class Tasks:
    """Stands in for `enqueue.task_send`: what would have gone to Celery, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, tuple]] = []

    def __call__(self, name: str, args: tuple, *, queue: str, countdown=None) -> None:
        self.sent.append((name, args))

    def drain(self) -> list[tuple[int, int, int]]:
        """Run the dispatches in process (they may enqueue more); return the batches."""
        from subscriptions.sending import dispatch, enqueue

        batches = []
        while self.sent:
            name, args = self.sent.pop(0)
            if name == enqueue.DISPATCH_TASK:
                dispatch.edition_dispatch(edition_id=args[0])
            elif name == enqueue.BATCH_TASK:
                batches.append(tuple(args))
        return batches


# --- A simulated day ------------------------------------------------------------------------

def make_story(category, at: datetime, rng: random.Random, *, breaking: bool):
    from newsroom.models import Story

    return Story.objects.create(
        headline=f"{'Breaking: ' if breaking else ''}{category.name}: "
                 f"{' '.join(rng.choice(h._WORDS) for _ in range(8))}",
        slug=f"soak-{category.slug}-{uuid.uuid4().hex[:10]}", category=category,
        dek=" ".join(rng.choice(h._WORDS) for _ in range(22)).capitalize(),
        body=h.story_body(rng, 4), status=Story.Status.PUBLISHED, breaking=breaking,
        published_at=at,
    )


def mark_sent(edition_moments: dict[int, datetime]) -> int:
    """The compressed-time shortcut: the editions' queued rows sent, the editions done
    at their simulated moments, digest windows moved as a real send moves them."""
    from django.db import connection

    from subscriptions.models import Delivery, Edition
    from subscriptions.sending.scheduling import digest_windows_advance

    ids = list(edition_moments)
    with connection.cursor() as cur:
        for edition_id, moment in edition_moments.items():
            cur.execute("UPDATE subscriptions_edition SET scheduled_at = %s "
                        "WHERE id = %s AND kind = 'alert'", [moment, edition_id])
        cur.execute(
            "UPDATE subscriptions_delivery d SET status = 'sent', attempts = 1, "
            "claim = gen_random_uuid(), claimed_at = e.scheduled_at + interval '1 minute', "
            "sent_at = e.scheduled_at + interval '2 minutes' FROM subscriptions_edition e "
            "WHERE d.edition_id = e.id AND e.id = ANY(%s) AND d.status = 'queued'", [ids])
        marked = cur.rowcount
        cur.execute(
            "UPDATE subscriptions_edition e SET status = 'done', "
            "sent = COALESCE(c.n, 0), targeted = COALESCE(c.n, 0), "
            "created_at = e.scheduled_at, started_at = e.scheduled_at, "
            "dispatched_at = e.scheduled_at, last_progress_at = e.scheduled_at + "
            "interval '10 minutes', finished_at = e.scheduled_at + interval '10 minutes' "
            "FROM subscriptions_edition e2 LEFT JOIN (SELECT edition_id, count(*) AS n "
            "FROM subscriptions_delivery WHERE edition_id = ANY(%s) AND status = 'sent' "
            "GROUP BY edition_id) c ON c.edition_id = e2.id "
            "WHERE e.id = e2.id AND e.id = ANY(%s)", [ids, ids])
    for edition in Edition.objects.filter(pk__in=ids, kind=Edition.Kind.DIGEST):
        digest_windows_advance(edition=edition, subscriber_ids=list(
            Delivery.objects.filter(edition=edition).values_list("subscriber_id", flat=True)))
    return marked


def webhook_events(day_end: datetime, count: int) -> None:
    """Bounces as the webhook records them (TrackingEvent rows), dated the simulated day."""
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute(
            "INSERT INTO subscriptions_trackingevent (esp, event_id, event_type, recipient, "
            "subscriber_id, message_id, reason, outcome, occurred_at, received_at) "
            "SELECT 'mailgun', md5(random()::text), 'bounced', email, id, "
            "'<' || md5(random()::text) || '@news.example.com>', "
            "'550 5.1.1 mailbox unavailable (simulated)', 'soft bounce counted', %s, %s "
            "FROM subscriptions_subscriber ORDER BY random() LIMIT %s",
            [day_end - timedelta(hours=1), day_end - timedelta(hours=1), count])


def vacuum() -> None:
    from django.db import connection

    with connection.cursor() as cur:
        for table in TABLES:
            cur.execute(f"VACUUM ANALYZE {table}")


def sizes() -> dict:
    from django.db import connection

    out: dict = {}
    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM subscriptions_delivery")
        out["delivery_rows"] = cur.fetchone()[0]
        cur.execute("SELECT count(*) FROM subscriptions_trackingevent")
        out["trackingevent_rows"] = cur.fetchone()[0]
        for table in TABLES:
            cur.execute("SELECT pg_total_relation_size(%s), pg_relation_size(%s), "
                        "pg_indexes_size(%s)", [table, table, table])
            total, heap, indexes = cur.fetchone()
            out[table] = {"total": total, "table": heap, "indexes": indexes}
    return out


def real_send(tasks: Tasks, story, sink, moment: datetime) -> dict:
    """One alert through the real path in this process: dispatch, then deliveries_send
    over its batch ranges into the sink; timed."""
    from subscriptions.models import Edition
    from subscriptions.sending import batches, dispatch

    t0 = time.perf_counter()
    edition = dispatch.edition_create_alert(story=story)
    ranges = tasks.drain()
    t1 = time.perf_counter()
    if sink is not None:
        sink.mark()
    sent = failed = 0
    cpu0 = time.process_time()
    for edition_id, first, last in ranges:
        report = batches.deliveries_send(edition_id=edition_id, first_id=first, last_id=last)
        sent += report.sent
        failed += report.failed
    cpu = time.process_time() - cpu0
    t2 = time.perf_counter()
    edition.refresh_from_db()
    if sink is not None:
        received = sink.stats().get("messages")
    else:  # the outbox: one file per message, removed once counted
        from django.conf import settings

        received = sum(1 for _ in Path(settings.OUTBOX_DIR).glob("*.eml"))
        shutil.rmtree(settings.OUTBOX_DIR, ignore_errors=True)
    result = {"edition": edition.pk, "status": edition.status, "batches": len(ranges),
              "sent": sent, "failed": failed, "sink_messages": received,
              "dispatch_ms": round((t1 - t0) * 1000, 1), "send_s": round(t2 - t1, 3),
              "msg_per_s": round(sent / (t2 - t1), 1) if t2 > t1 and sent else None,
              "cpu_ms_per_1000": round(cpu * 1e6 / sent, 1) if sent else None}
    if edition.status != Edition.Status.DONE or failed or (
            received is not None and received != sent):
        result["problem"] = True
    return result


# --- The run --------------------------------------------------------------------------------

def fmt_mb(n: int) -> str:
    return f"{n / 1024 / 1024:8.2f}"


def period_line(p: dict) -> str:
    d, t = p["sizes"]["subscriptions_delivery"], p["sizes"]["subscriptions_trackingevent"]
    speed = p["send"]["msg_per_s"] if p.get("send") else None
    cpu = p["send"]["cpu_ms_per_1000"] if p.get("send") else None
    return (f"{p['period']:>6} | {p['last_day']:>4} | {p['sizes']['delivery_rows']:>11,} | "
            f"{fmt_mb(d['table'])} | {fmt_mb(d['indexes'])} | {fmt_mb(d['total'])} | "
            f"{p['sizes']['trackingevent_rows']:>8,} | {fmt_mb(t['table'])} | "
            f"{fmt_mb(t['indexes'])} | {fmt_mb(t['total'])} | "
            f"{speed if speed is not None else '-':>8} | {cpu if cpu is not None else '-':>9} | "
            f"{p['purged']:>10,} | {p['wall_s']:>6.1f}")


HEADER = ("period | day  |  delivery rows | tbl MB   | idx MB   | total MB | te rows  | "
          "te tbl MB| te idx MB| te tot MB| msg/s    | cpu ms/1k |  purged    | wall s")


def verdict(periods: list[dict], *, retention: int, period_days: int, size_tol: float,
            speed_tol: float, speed_window: int = 1, speed_advisory: bool = False
            ) -> tuple[bool, list[str]]:
    """Sizes flat after the retention window; the last real send as fast as the first."""
    lines, ok = [], True
    reference = math.ceil(retention / period_days) + 1  # first period wholly past the window
    tail = periods[-3:]
    if len(periods) < reference + 3:
        lines.append(f"sizes: too short a run to judge ({len(periods)} periods; the "
                     f"reference is period {reference}, then 3 more are needed)")
        ok = False
    else:
        ref = periods[reference - 1]["sizes"]
        for table in TABLES:
            base = ref[table]["total"]
            for p in tail:
                now = p["sizes"][table]["total"]
                change = (now - base) / base if base else 0.0
                flat = abs(change) <= size_tol or abs(now - base) <= SMALL_TABLE
                ok &= flat
                lines.append(f"sizes: {table} total in period {p['period']} "
                             f"{now / 1048576:.2f} MB vs period {reference}'s "
                             f"{base / 1048576:.2f} MB: {change:+.1%} "
                             f"{'ok' if flat else f'OVER ±{size_tol:.0%}'}")
    if any(r.get("problem") for p in periods for r in p["sends"]):
        ok = False
        lines.append("real send: a timed edition did not finish cleanly (see the JSON)")
    timed = [p for p in periods if p.get("send") and p["send"]["msg_per_s"]]
    if len(timed) >= 2 * speed_window:
        first = max((p["send"] for p in timed[:speed_window]), key=lambda r: r["msg_per_s"])
        last = max((p["send"] for p in timed[-speed_window:]), key=lambda r: r["msg_per_s"])
        change = (last["msg_per_s"] - first["msg_per_s"]) / first["msg_per_s"]
        fast = abs(change) <= speed_tol
        ok &= fast or speed_advisory
        which = ("last period vs first" if speed_window == 1 else
                 f"best of the last {speed_window} periods vs of the first {speed_window}")
        lines.append(f"speed, {which}: {last['msg_per_s']:,.0f} msg/s vs "
                     f"{first['msg_per_s']:,.0f} msg/s: {change:+.1%} "
                     f"{'ok' if fast else f'OVER ±{speed_tol:.0%}'}"
                     f"{' (advisory)' if speed_advisory and not fast else ''} (CPU of this process "
                     f"per 1,000 messages: {first['cpu_ms_per_1000']} ms, then "
                     f"{last['cpu_ms_per_1000']} ms)")
    else:
        ok &= speed_advisory
        lines.append(f"speed: too few timed periods ({len(timed)}) to compare")
    return ok, lines


def main(argv=None) -> int:
    args = parse_args(argv)
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="soak-", dir="/tmp"))
    data_dir.mkdir(parents=True, exist_ok=True)
    logs = data_dir / "logs"
    logs.mkdir(exist_ok=True)
    say(f"data folder {data_dir}; machine {h.machine()}")
    cleanup = []
    status = 1
    try:
        redis = h.RedisServer(data_dir / "redis").start()
        cleanup.append(redis.stop)
        database = h.Database("postgres", data_dir, pg_name=args.pg_name,
                              pg_admin=args.pg_admin)
        database.create()
        if not args.keep:
            cleanup.append(database.drop)
        sink, overrides = None, {"EMAIL_URL": "outbox:"}
        if args.transport == "smtp":
            sink, note = h.start_sink(logs)
            cleanup.append(sink.stop)
            if note:
                say("NOTE:", note)
            overrides["EMAIL_URL"] = f"smtp://127.0.0.1:{sink.port}"
        extra = {"NEWSROOM_SEND_RATE": "0", "LOG_LEVEL": "ERROR"}
        if args.retention_days is not None:
            extra["NEWSROOM_DELIVERY_RETENTION_DAYS"] = str(args.retention_days)
        env = h.Environment(data_dir, database, redis, extra=extra)
        env.migrate()
        env.activate(**overrides)
        from django.conf import settings

        from subscriptions.sending import dispatch as dispatch_module
        from subscriptions.sending import enqueue, scheduling
        from subscriptions.sending.retention import (
            PURGE_CHUNK,
            PURGE_TIME_BUDGET,
            ledger_purge,
        )

        retention = settings.NEWSROOM_DELIVERY_RETENTION_DAYS
        tasks = Tasks()
        enqueue.task_send = tasks  # the broker kept out: dispatch runs in this process
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        start = today - timedelta(days=args.days + 2)  # every simulated moment is past
        rng = random.Random(args.seed)
        categories = h.create_categories()
        pop = h.generate(args.subscribers, seed=args.seed,
                         category_ids=[c.pk for c in categories])
        if args.few_slots:
            zones = [z for z, (name, _w) in enumerate(h.TIMEZONES)
                     if name in ("Europe/Berlin", "Europe/London")]
            pop.tz = array("B", (zones[i % 2] for i in range(pop.n)))
            pop.hour = array("B", rng.choices((6, 7, 8), (2, 5, 3), k=pop.n))
        h.insert_population(pop, confirmed_at=start - timedelta(days=30))
        say(f"{args.subscribers:,} subscribers; {args.days} simulated days from "
            f"{start:%Y-%m-%d}; retention {retention} days; periods of {args.period_days} "
            f"days; {args.alerts_per_day} alerts a day; purge chunk {PURGE_CHUNK:,}, "
            f"time budget {PURGE_TIME_BUDGET:.0f} s; real sends via {settings.EMAIL_TRANSPORT}"
            + (f" ({sink.kind})" if sink is not None else ""))
        print(HEADER, flush=True)
        periods: list[dict] = []
        period_started, purged, sends = time.perf_counter(), 0, []
        for day in range(args.days):
            day_start = start + timedelta(days=day)
            day_end = day_start + timedelta(days=1)
            for index, category in enumerate(categories):  # the day's news
                make_story(category, day_start + timedelta(hours=1 + 2.5 * index, minutes=7),
                           rng, breaking=False)
            moments: dict[int, datetime] = {}
            first_of_period = day % args.period_days == 0
            for k, hour in enumerate(ALERT_HOURS[:args.alerts_per_day]):
                moment = day_start + timedelta(hours=hour, minutes=13)
                # Timed: the first alerts of a period's first day (on day 0, after an
                # untimed warm-up); the period's figure is the fastest.
                real = first_of_period and k < args.timed_sends + (day == 0)
                category = categories[0] if real else categories[(day * 3 + k) % len(categories)]
                story = make_story(category, moment - timedelta(minutes=5), rng, breaking=True)
                if real:
                    result = real_send(tasks, story, sink, moment)
                    moments[result["edition"]] = moment
                    if day == 0 and k == 0:
                        say(f"warm-up send: {result['sent']:,} messages, "
                            f"{result['msg_per_s']} msg/s (not counted)")
                    else:
                        sends.append(result)
                    continue
                edition = dispatch_module.edition_create_alert(story=story)
                tasks.drain()
                moments[edition.pk] = moment
            for hour in range(0, 24, SCHEDULE_EVERY):
                for edition in scheduling.digests_schedule(
                        now=day_start + timedelta(hours=hour, minutes=5)):
                    moments[edition.pk] = edition.scheduled_at
                tasks.drain()
            marked = mark_sent(moments)
            webhook_events(day_end, max(1, marked // BOUNCE_EVERY))
            report = ledger_purge(now=day_end, chunk=PURGE_CHUNK, time_budget=PURGE_TIME_BUDGET)
            if not report.complete:
                say(f"day {day + 1}: the purge hit its time budget (continues next run)")
            purged += report.deliveries
            vacuum()
            if (day + 1) % args.period_days == 0 or day + 1 == args.days:
                period = {"period": len(periods) + 1, "last_day": day + 1, "sizes": sizes(),
                          "send": max(sends, key=lambda r: r["msg_per_s"] or 0, default=None),
                          "sends": sends, "purged": purged,
                          "wall_s": round(time.perf_counter() - period_started, 1)}
                periods.append(period)
                print(period_line(period), flush=True)
                period_started, purged, sends = time.perf_counter(), 0, []
        if args.days % args.period_days:
            say(f"the last period is {args.days % args.period_days} days long (partial)")
        ok, lines = verdict(periods, retention=retention, period_days=args.period_days,
                            size_tol=args.size_tolerance, speed_tol=args.speed_tolerance,
                            speed_window=args.speed_window,
                            speed_advisory=args.speed_advisory)
        print()
        for line in lines:
            print(" -", line)
        advisory = any("(advisory)" in line for line in lines)
        print("VERDICT:", "FAILED" if not ok else "ledger flat; send speed NOT steady "
              "(advisory only)" if advisory else "ledger flat and send speed steady")
        status = 0 if ok else 1
        if args.json:
            args.json.write_text(json.dumps({
                "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": h.machine(),
                "config": {k: str(v) for k, v in vars(args).items()},
                "retention_days": retention, "engine": h.engine_fingerprint(),
                "periods": periods, "verdict": lines, "ok": ok}, indent=2, default=str))
            say(f"figures written to {args.json}")
    finally:
        for stop in reversed(cleanup):
            try:
                stop()
            except Exception as exc:
                say(f"cleanup: {exc}")
        if not args.keep and not args.data_dir:
            shutil.rmtree(data_dir, ignore_errors=True)
    return status


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())
