#!/usr/bin/env python3
# ruff: noqa: S311
"""Benchmark the delivery engine end to end: real Celery workers, real Redis, the
project's database, into Postfix's smtp-sink and a fake Mailgun on loopback.

    .venv/bin/python benchmarks/run.py --subscribers 100000 --db sqlite \
        --transport both --scenario both --json out.json

Per scenario (a breaking alert; the daily digests due at one instant) and
transport (smtp, esp) it prints messages, wall time from the editor's confirm to
the edition done, messages per second, the ratio to Postfix's smtp-source
sending the same number of messages of the same size into the same sink (the
ceiling of this machine), time from the confirm to the first and the last
message accepted, each worker process's peak RSS, SQL queries per 1,000
messages, and duplicates and missing recipients. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import harness as h
from benchmarks.harness import say


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--subscribers", type=int, default=100_000)
    p.add_argument("--db", choices=["sqlite", "postgres", "both"], default="sqlite")
    p.add_argument("--transport", choices=["smtp", "esp", "both"], default="both")
    p.add_argument("--scenario", choices=["alert", "digest", "both"], default="both")
    p.add_argument("--json", type=Path, help="write every figure here")
    p.add_argument("--layout", default="2x2",
                   help="worker processes: <workers>x<concurrency> (default 2x2: two "
                        "workers of two pool processes each, both serving alerts and "
                        "digests; the best of 1x2, 2x1, 1x4, 2x2 measured here)")
    p.add_argument("--pool", default="prefork", choices=["prefork", "threads", "solo"])
    p.add_argument("--batch-size", type=int, default=1000, help="NEWSROOM_BATCH_SIZE")
    p.add_argument("--sink", choices=["smtp-sink", "aiosmtpd"], default="smtp-sink",
                   help="aiosmtpd counts copies per recipient (exact, but much slower)")
    p.add_argument("--pg-name", default="newsroom_bench", help="PostgreSQL database to create")
    p.add_argument("--pg-admin", default=h.PG_ADMIN, help="URL of a database to connect to "
                   "for CREATE/DROP DATABASE")
    p.add_argument("--redis-url", help="use this Redis (a DB number of your own!) instead "
                   "of starting one; it must not be shared with another run")
    p.add_argument("--data-dir", type=Path, help="default: a new /tmp/bench-* folder")
    p.add_argument("--keep", action="store_true", help="keep the data folder and database")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--alert-paragraphs", type=int, default=4,
                   help="length of the breaking story (sets the alert's message size)")
    p.add_argument("--no-ceiling", action="store_true", help="skip smtp-source")
    p.add_argument("--py-spy", metavar="BINARY",
                   help="profile every worker process with this py-spy (collapsed stacks "
                        "in <data folder>/profiles/, summarised by benchmarks/profile_summary.py)")
    return p.parse_args(argv)


class ExternalRedis:
    def __init__(self, url: str) -> None:
        self.url = url

    def client(self):
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=5)

    def stop(self) -> None:
        pass


# --- Scenarios ---------------------------------------------------------------------------------

def reset_state() -> None:
    """Forget every edition (so the same digest instant is due again for the next run)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM subscriptions_delivery")
        cursor.execute("DELETE FROM subscriptions_edition_stories")
        cursor.execute("DELETE FROM subscriptions_edition")
        cursor.execute("UPDATE subscriptions_subscriber SET last_digest_due_at = NULL "
                       "WHERE last_digest_due_at IS NOT NULL")
        if connection.vendor == "postgresql":
            cursor.execute("VACUUM ANALYZE subscriptions_delivery")
            cursor.execute("VACUUM ANALYZE subscriptions_subscriber")


def message_size(edition_ids: list[int], sample: int = 30) -> int:
    """Mean size in bytes of the messages actually sent (rendered again for a sample)."""
    from subscriptions.models import Delivery, Edition, Subscriber
    from subscriptions.sending.batches import edition_render_for

    ids = list(Delivery.objects.filter(edition_id__in=edition_ids, status="sent")
               .values_list("edition_id", "subscriber_id")[:5000])
    picked = random.Random(7).sample(ids, min(sample, len(ids)))
    sizes = []
    for edition_id, subscriber_id in picked:
        raw = edition_render_for(edition=Edition.objects.get(pk=edition_id),
                                 subscriber=Subscriber.objects.get(pk=subscriber_id))
        if raw:
            sizes.append(len(raw))
    return round(sum(sizes) / len(sizes)) if sizes else 0


def sent_at_span(edition_ids: list[int]) -> tuple[float | None, float | None]:
    from django.db.models import Max, Min

    from subscriptions.models import Delivery

    span = Delivery.objects.filter(edition_id__in=edition_ids, status="sent").aggregate(
        first=Min("sent_at"), last=Max("sent_at"))
    return (span["first"].timestamp() if span["first"] else None,
            span["last"].timestamp() if span["last"] else None)


def run_scenario(ctx: dict, transport: str, kind: str) -> dict:
    from subscriptions.sending import dispatch, scheduling

    args, env, pop = ctx["args"], ctx["env"], ctx["pop"]
    sink, fake = ctx["sink"], ctx.get("fake")
    overrides: dict[str, str] = {}
    if transport == "smtp":
        overrides["EMAIL_URL"] = f"smtp://127.0.0.1:{sink.port}"
    else:
        overrides.update(fake.env())
    worker_env = env.env(**overrides)

    if kind == "alert":
        story = h.breaking_story(ctx["alert_category"], paragraphs=args.alert_paragraphs)
        expected = h.alert_expected(pop, 0)
    else:
        expected = ctx["digest_expected"]
    say(f"{transport}/{kind}: starting workers ({args.layout}, {args.pool}); "
        f"{len(expected):,} recipients expected")
    workers = h.start_workers(worker_env, args.layout,
                              queues=f"{env.alerts_queue},{env.digests_queue}",
                              log_dir=ctx["logs"], pool=args.pool, prefix=f"{transport}-{kind}-",
                              count_queries=True)
    profilers = []
    if args.py_spy:
        folder = ctx["logs"].parent / "profiles"
        folder.mkdir(exist_ok=True)
        for worker in workers:
            out = folder / f"{args.db}-{transport}-{kind}-{worker.name.split('@')[0]}.txt"
            profilers.append(subprocess.Popen(
                [args.py_spy, "record", "--subprocesses", "--nonblocking", "--format", "raw",
                 "--rate", "100", "-o", str(out), "-p", str(worker.proc.pid)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1.0)
    h.querycount_reset(ctx["redis"])
    if transport == "esp":
        fake.reset()
    else:
        sink.mark(len(expected))
    load_before = os.getloadavg()
    pg_before = h.pg_writes()
    helper = fake.proc.pid if transport == "esp" else sink.proc.pid
    helper_cpu0 = h.cpu_seconds(helper)
    worker_cpu0 = sum(w.cpu_seconds() for w in workers)

    t0 = time.time()
    if kind == "alert":
        edition_ids = [dispatch.edition_create_alert(story=story, by=None).pk]
    else:
        edition_ids = [e.pk for e in scheduling.digests_schedule(now=ctx["digest_now"])]
    timeout = max(300.0, len(expected) / 100)
    finished = h.wait_editions(edition_ids, timeout=timeout, every=0.1)
    t_done = time.time()
    if not finished:
        say(f"  TIMED OUT after {timeout:.0f} s")

    # The sink's counter can trail the ledger by a few ms.
    deadline = time.monotonic() + 5
    while True:
        stats = fake.stats() if transport == "esp" else sink.stats()
        got = stats.get("recipients", stats.get("messages", 0))
        if got >= len(expected) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    rss = {w.name: w.peak_rss_mb() for w in workers}
    worker_cpu = sum(w.cpu_seconds() for w in workers) - worker_cpu0
    helper_cpu = h.cpu_seconds(helper) - helper_cpu0
    queries = h.querycount_read(ctx["redis"])
    for profiler in profilers:
        profiler.send_signal(signal.SIGINT)
    for profiler in profilers:
        try:
            profiler.wait(timeout=30)
        except subprocess.TimeoutExpired:
            profiler.kill()
    for worker in workers:
        worker.stop()

    led = h.ledger(edition_ids)
    sent_set = led.pop("sent_subscribers")
    messages = len(sent_set)
    pg = h.pg_writes_per_message(pg_before, h.pg_writes(), messages)
    wall = t_done - t0
    first_sent_at, last_sent_at = sent_at_span(edition_ids)
    result = {
        "scenario": kind, "transport": transport, "db": args.db,
        "subscribers": args.subscribers, "editions": len(edition_ids),
        "expected": len(expected), "messages": messages, "finished": finished,
        "wall_s": round(wall, 3), "msg_per_s": round(messages / wall, 1) if wall else None,
        "load_before": load_before, "load_after": os.getloadavg(),
        "worker_cpu_s": round(worker_cpu, 2),
        "worker_cpu_ms_per_1000": round(worker_cpu * 1e6 / messages, 1) if messages else None,
        "sink_or_fake_cpu_s": round(helper_cpu, 2),
        "ledger": led, "worker_peak_rss_mb": rss,
        "queries": queries,
        "queries_per_1000": round(queries.get("queries", 0) * 1000 / messages, 1)
        if messages else None,
        "pg_per_message": pg,
        "sent_at_first_s": round(first_sent_at - t0, 3) if first_sent_at else None,
        "sent_at_last_s": round(last_sent_at - t0, 3) if last_sent_at else None,
    }
    if transport == "esp":
        result["esp"] = stats
        first, last = stats.get("first"), stats.get("last")
        counts = fake.counts()
        result["check"] = h.exactness(expected, counts)
        result["check"]["method"] = "fake ESP per-recipient counts"
        result["first_s_method"] = "fake ESP: time its first call was accepted"
    else:
        first, last = stats.get("first"), stats.get("last")
        result["sink"] = {"kind": sink.kind, **stats}
        if sink.exact:
            result["check"] = h.exactness(expected, sink.counts())
            result["check"]["method"] = "aiosmtpd sink per-recipient counts"
        else:
            extra = stats["messages"] - len(expected)
            missing_ledger = len(expected - sent_set)
            result["check"] = {
                "targeted": len(expected), "delivered_once": len(expected & sent_set),
                "missing": max(missing_ledger, max(0, -extra)),
                "duplicates": max(0, extra), "unexpected": len(sent_set - expected),
                "sink_messages": stats["messages"],
                "method": "ledger (one sent row per expected subscriber, unique per edition) "
                          "+ smtp-sink's message counter (== expected)",
            }
        result["first_s_method"] = ("smtp-sink counter (-c), first '.' after the confirm"
                                    if not sink.exact else "aiosmtpd sink, first message")
    result["first_s"] = round(first - t0, 3) if first else None
    result["last_s"] = round(last - t0, 3) if last else None
    if first and last and last > first:
        result["send_rate"] = round(messages / (last - first), 1)

    result["message_bytes"] = message_size(edition_ids)
    if not args.no_ceiling and messages:
        say(f"  smtp-source: {messages:,} messages of {result['message_bytes']:,} bytes, "
            "4 sessions")
        ceiling = h.smtp_source(sink.port, messages, result["message_bytes"] or 8000)
        result["ceiling"] = ceiling
        if ceiling.get("available") and ceiling.get("rate") and result["msg_per_s"]:
            result["ratio"] = round(result["msg_per_s"] / ceiling["rate"], 3)
    if pg:
        say(f"  PostgreSQL per delivered message: {pg['row_writes']} row writes (inserted "
            f"{pg['inserted']}, updated {pg['updated']}, deleted {pg['deleted']}), "
            f"{pg['wal_bytes']:,} WAL bytes")
    say(f"  {transport}/{kind}: {messages:,} messages in {wall:.2f} s = "
        f"{result['msg_per_s']:,.0f} msg/s; first {result['first_s']} s, last "
        f"{result['last_s']} s; missing {result['check']['missing']}, duplicates "
        f"{result['check']['duplicates']}")
    return result


# --- Output ----------------------------------------------------------------------------------

def table(results: list[dict]) -> str:
    head = ("scenario", "transport", "db", "msgs", "wall s", "msg/s", "ceiling/s", "ratio",
            "first s", "last s", "peak RSS MB, max (procs)", "q/1k", "cpu ms/1k", "pg rows/msg",
            "dup", "miss")
    rows = []
    for r in results:
        peaks = [v for w in r["worker_peak_rss_mb"].values() for v in w.values()]
        rss = f"{max(peaks):.0f} ({len(peaks)})" if peaks else "-"
        ceiling = r.get("ceiling", {}).get("rate")
        rows.append((
            r["scenario"], r["transport"], r["db"], f"{r['messages']:,}", f"{r['wall_s']:.2f}",
            f"{r['msg_per_s']:,.0f}", f"{ceiling:,.0f}" if ceiling else "-",
            f"{r['ratio']:.2f}" if r.get("ratio") else "-",
            f"{r['first_s']:.3f}" if r.get("first_s") is not None else "-",
            f"{r['last_s']:.2f}" if r.get("last_s") is not None else "-",
            rss, f"{r['queries_per_1000']:.1f}" if r["queries_per_1000"] is not None else "-",
            f"{r['worker_cpu_ms_per_1000']:.0f}" if r.get("worker_cpu_ms_per_1000") else "-",
            f"{r['pg_per_message']['row_writes']:.2f}" if r.get("pg_per_message") else "-",
            str(r["check"]["duplicates"]), str(r["check"]["missing"]),
        ))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=False)]
    line = lambda cells: " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=False))  # noqa: E731
    return "\n".join([line(head), "-+-".join("-" * w for w in widths), *map(line, rows)])


def run_both_dbs(args: argparse.Namespace) -> int:
    """--db both: one child run per database (Django is set up once per process)."""
    merged: dict = {"runs": []}
    status = 0
    for db in ("sqlite", "postgres"):
        out = Path(tempfile.mkstemp(prefix=f"bench-{db}-", suffix=".json")[1])
        argv = [a for a in sys.argv[1:]]
        i = argv.index("--db") if "--db" in argv else None
        if i is not None:
            argv[i + 1] = db
        else:
            argv += ["--db", db]
        if "--json" in argv:
            j = argv.index("--json")
            del argv[j:j + 2]
        status |= subprocess.run([sys.executable, __file__, *argv, "--json", str(out)],
                                 check=False).returncode
        merged["runs"].append(json.loads(out.read_text()))
        out.unlink()
    results = [r for run in merged["runs"] for r in run["results"]]
    merged["results"] = results
    print("\n" + table(results))
    if args.json:
        args.json.write_text(json.dumps(merged, indent=2, default=str))
    return status


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.db == "both":
        return run_both_dbs(args)
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="bench-", dir="/tmp"))
    data_dir.mkdir(parents=True, exist_ok=True)
    logs = data_dir / "logs"
    logs.mkdir(exist_ok=True)
    say(f"data folder {data_dir}; machine {h.machine()}")
    engine_at_start = h.engine_fingerprint()
    say(f"engine: git {engine_at_start['git_head']} (+ working tree; file hashes in the JSON)")
    transports = ["smtp", "esp"] if args.transport == "both" else [args.transport]
    scenarios = ["alert", "digest"] if args.scenario == "both" else [args.scenario]
    cleanup = []
    status = 0
    try:
        redis = (ExternalRedis(args.redis_url) if args.redis_url
                 else h.RedisServer(data_dir / "redis").start())
        cleanup.append(redis.stop)
        database = h.Database(args.db, data_dir, pg_name=args.pg_name, pg_admin=args.pg_admin)
        database.create()
        if not args.keep:
            cleanup.append(database.drop)
        digest_now = h.digest_instant()
        # Weekly digests fall on a weekday three days off: only daily ones are due.
        weekly_day = (digest_now.weekday() + 3) % 7
        env = h.Environment(data_dir, database, redis, extra={
            "NEWSROOM_BATCH_SIZE": str(args.batch_size),
            "NEWSROOM_WEEKLY_DIGEST_WEEKDAY": str(weekly_day),
        })
        say(f"database {args.db} ({database.url}), redis {redis.url}, queues "
            f"{env.alerts_queue}/{env.digests_queue}")
        env.migrate()
        env.activate()
        from django.conf import settings

        say(f"generating {args.subscribers:,} subscribers")
        started = time.perf_counter()
        categories = h.create_categories()
        pop = h.generate(args.subscribers, seed=args.seed,
                         category_ids=[c.pk for c in categories])
        h.insert_population(pop, confirmed_at=digest_now - timedelta(days=30))
        stories = h.create_stories(categories, end=digest_now)
        generation_s = time.perf_counter() - started
        say(f"  {args.subscribers:,} subscribers, "
            f"{sum(bin(m).count('1') for m in pop.cats):,} follows and {len(stories)} stories "
            f"in {generation_s:.1f} s")
        expected_digest, due = h.digest_expected(
            pop, stories, now=digest_now, lateness=settings.NEWSROOM_DIGEST_MAX_LATENESS)
        digest_note = (
            f"digest instant {digest_now.isoformat()} (digests_schedule(now=...)): "
            f"{due['due']:,} of {args.subscribers:,} subscribers "
            f"({100 * due['due'] / args.subscribers:.0f}%) have a daily slot due within "
            f"NEWSROOM_DIGEST_MAX_LATENESS={settings.NEWSROOM_DIGEST_MAX_LATENESS} s, in "
            f"{len(due['due_instants'])} due moments; {len(expected_digest):,} of them have "
            f"news. Weekly digests are not due (NEWSROOM_WEEKLY_DIGEST_WEEKDAY={weekly_day}).")
        say(digest_note)

        sink, sink_note = h.start_sink(logs, prefer=args.sink)
        cleanup.append(sink.stop)
        if sink_note:
            say("NOTE:", sink_note)
        say(f"SMTP sink: {sink.kind} on 127.0.0.1:{sink.port}")
        fake = None
        if "esp" in transports:
            fake = h.FakeESP(logs)
            cleanup.append(fake.stop)
            say(f"fake Mailgun on {fake.api_url}")
        ctx = {"args": args, "env": env, "pop": pop, "sink": sink, "fake": fake,
               "logs": logs, "redis": redis, "digest_now": digest_now,
               "digest_expected": expected_digest, "alert_category": categories[0]}
        results = []
        for n, transport in enumerate(transports):
            if n and "digest" in scenarios:
                say("resetting editions for the next transport")
                reset_state()
            for kind in scenarios:
                results.append(run_scenario(ctx, transport, kind))
        failed = [r for r in results if r["check"]["missing"] or r["check"]["duplicates"]
                  or not r["finished"]]
        status = 1 if failed else 0
        print()
        print(table(results))
        print()
        print("notes:")
        print(f" - {digest_note}")
        print(f" - SMTP sink: {sink.kind}" + (f" ({sink_note})" if sink_note else ""))
        print(f" - workers: {args.layout} ({args.pool}), NEWSROOM_BATCH_SIZE={args.batch_size};"
              " first/last s: from the confirm (edition_create_alert / digests_schedule call)"
              " to the first/last message accepted by the sink or fake ESP")
        print(" - msg/s = messages / wall (confirm to every edition done); ratio = msg/s / "
              "smtp-source rate for the same count and size")
        if h.engine_fingerprint()["files"] != engine_at_start["files"]:
            print(" - WARNING: the engine's source changed during this run (another engineer "
                  "committed); its figures mix two versions: run again")
        report = {
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": h.machine(),
            "config": {k: str(v) for k, v in vars(args).items()},
            "generation_s": round(generation_s, 2), "digest": {
                "instant": digest_now.isoformat(), **due,
                "expected": len(expected_digest), "note": digest_note},
            "sink": sink.kind, "sink_note": sink_note, "engine": engine_at_start,
            "engine_changed_during_run":
                h.engine_fingerprint()["files"] != engine_at_start["files"],
            "results": results,
        }
        if args.json:
            args.json.write_text(json.dumps(report, indent=2, default=str))
            say(f"figures written to {args.json}")
    finally:
        for stop in reversed(cleanup):
            try:
                stop()
            except Exception as exc:
                say(f"cleanup: {exc}")
        h.postfix_stop()
        if not args.keep and not args.data_dir:
            shutil.rmtree(data_dir, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
