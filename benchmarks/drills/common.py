"""What every fault drill shares: an isolated real stack, an alert to everyone, the
reconcile loop (as beat would run it, but every second), and the final check.

Each drill prints targeted / delivered once / duplicates / missing and exits
non-zero when the README's guarantee does not hold: every targeted subscriber
gets the edition, and the only duplicates are messages handed over by a batch
run that died before recording them, at most one batch per killed worker process
(the edition counts them as `requeued`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from benchmarks import harness as h
from benchmarks.drills.rabbitmq import PrivateRabbitMQ, SharedVhost
from benchmarks.harness import say

# Short timeouts so a drill recovers in seconds, not the production minutes.
DRILL_SETTINGS = {
    "CELERY_TASK_TIME_LIMIT": "15",
    "NEWSROOM_CLAIM_TIMEOUT": "20",
    "NEWSROOM_STALL_AFTER": "6",
    "ANYMAIL_REQUESTS_TIMEOUT": "5",
}


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--subscribers", type=int, default=100_000)
    p.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--layout", default="2x1", help="<workers>x<concurrency>")
    p.add_argument("--batch-size", type=int,
                   help="NEWSROOM_BATCH_SIZE (default 1000; N/40 for small runs)")
    p.add_argument("--sink-delay", type=float,
                   help="seconds the SMTP sink takes per message (default 0; 2 ms for "
                        "small runs, so a fault lands mid-edition)")
    p.add_argument("--broker", choices=["redis", "rabbitmq"], default="redis",
                   help="Celery broker: the drill's own Redis (default), or RabbitMQ: a vhost "
                        "of the drill's own on this machine's (127.0.0.1:5672), or a private "
                        "node for the drill that restarts the broker. Redis stays the cache.")
    p.add_argument("--pg-name", default="newsroom_drill")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--timeout", type=float, default=900)
    return p


class Drill:
    def __init__(self, name: str, args: argparse.Namespace, *, transport: str = "smtp",
                 private_pg: bool = False, listen: str = "127.0.0.1",
                 trust_net: str | None = None, private_rabbitmq: bool = False) -> None:
        """`listen` and `trust_net`: where Redis, the private PostgreSQL and the SMTP
        sink listen, and which network PostgreSQL trusts (the fleet drill's hosts).
        `private_rabbitmq`: with --broker rabbitmq, a node of the drill's own (one it
        may restart) rather than a vhost on the machine's RabbitMQ."""
        self.name, self.args, self.transport = name, args, transport
        self.data_dir = Path(tempfile.mkdtemp(prefix=f"drill-{name}-", dir="/tmp"))
        self.logs = self.data_dir / "logs"
        self.logs.mkdir()
        self.cleanup: list = []
        self.workers: list[h.Worker] = []
        n = args.subscribers
        self.batch_size = args.batch_size or (1000 if n >= 40_000 else max(25, n // 40))
        self.sink_delay = args.sink_delay if args.sink_delay is not None else (
            0.002 if n < 20_000 else 0.0)
        self.private_pg = None
        self.listen = listen
        self.redis = h.RedisServer(self.data_dir / "redis", tcp=True, persist=False,
                                   bind=listen).start()
        self.cleanup.append(self.redis.stop)
        if private_pg:
            self.private_pg = h.PrivatePostgres(self.data_dir / "pg", listen=listen,
                                                trust_net=trust_net).start()
            self.cleanup.append(self.private_pg.stop)
            self.database = h.Database("postgres", self.data_dir, pg_name=args.pg_name,
                                       pg_admin=self.private_pg.admin_url)
        else:
            self.database = h.Database(args.db, self.data_dir, pg_name=args.pg_name)
        self.database.create()
        if not args.keep:
            self.cleanup.append(self.database.drop)
        self.settings = {**DRILL_SETTINGS, "NEWSROOM_BATCH_SIZE": str(self.batch_size)}
        self.rabbitmq: PrivateRabbitMQ | None = None
        self.broker_url = self.redis.url
        if args.broker == "rabbitmq":
            if listen != "127.0.0.1":
                raise SystemExit("--broker rabbitmq: only for drills on this host")
            if private_rabbitmq:
                self.rabbitmq = PrivateRabbitMQ(self.data_dir / "rabbitmq").start()
                self.cleanup.append(self.rabbitmq.stop)
                self.broker_url = self.rabbitmq.url
            else:
                vhost = SharedVhost(f"drill-{name}-{os.getpid()}")
                self.cleanup.append(vhost.delete)
                self.broker_url = vhost.url
            self.settings["CELERY_BROKER_URL"] = self.broker_url
        self.env = h.Environment(self.data_dir, self.database, self.redis, extra=self.settings)

    def setup(self) -> None:
        args = self.args
        broker = ("" if args.broker == "redis" else
                  f", broker RabbitMQ {self.broker_url.split('@')[-1]}"
                  + (f" (node {self.rabbitmq.node} of our own)" if self.rabbitmq else ""))
        say(f"drill {self.name}: {args.subscribers:,} subscribers, {self.database.kind}, "
            f"redis {self.redis.url} (no persistence){broker}, data {self.data_dir}")
        say("drill settings: " + ", ".join(f"{k}={v}" for k, v in self.settings.items())
            + "; reconcile run by the driver every 1 s (beat: every 60 s)")
        self.env.migrate()
        self.env.activate()
        categories = h.create_categories()
        pop = h.generate(args.subscribers, category_ids=[c.pk for c in categories],
                         everyone_follows=0, alert_share=1.0)
        from django.utils import timezone

        h.insert_population(pop, confirmed_at=timezone.now() - timedelta(days=30))
        self.category, self.categories, self.population = categories[0], categories, pop
        self.expected = set(pop.ids())
        if self.transport == "smtp":
            self.sink = h.CountingSink(self.logs, delay=self.sink_delay, host=self.listen)
            self.cleanup.append(self.sink.stop)
            self.worker_env = self.env.env(EMAIL_URL=f"smtp://127.0.0.1:{self.sink.port}")
            say(f"SMTP sink: aiosmtpd counting sink (per-recipient counts), "
                f"{self.sink_delay * 1000:.0f} ms per message")
        else:
            self.fake = h.FakeESP(self.logs)
            self.cleanup.append(self.fake.stop)
            self.worker_env = self.env.env(**self.fake.env())
            say(f"fake Mailgun on {self.fake.api_url}")

    def start_workers(self, layout: str | None = None, prefix: str = "w") -> list[h.Worker]:
        started = h.start_workers(self.worker_env, layout or self.args.layout,
                                  queues=f"{self.env.alerts_queue},{self.env.digests_queue}",
                                  log_dir=self.logs, prefix=prefix)
        self.workers += started
        return started

    def pool_processes(self, layout: str | None = None) -> int:
        count, concurrency = (int(x) for x in (layout or self.args.layout).split("x"))
        return count * concurrency

    def alert(self):
        from subscriptions.sending import dispatch

        story = h.breaking_story(self.category)
        self.t0 = time.time()
        self.edition = dispatch.edition_create_alert(story=story, by=None)
        say(f"alert edition #{self.edition.pk} confirmed for {len(self.expected):,} subscribers")
        return self.edition

    def progress(self) -> int:
        from subscriptions.models import Edition

        return Edition.objects.filter(pk=self.edition.pk).values_list("sent", flat=True)[0]

    def wait_progress(self, share: float, timeout: float = 300) -> int:
        target = int(share * len(self.expected))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sent = self.progress()
            if sent >= target:
                share = 100 * sent / len(self.expected)
                say(f"progress {sent:,}/{len(self.expected):,} ({share:.0f}%)")
                return sent
            time.sleep(0.05)
        raise RuntimeError(f"no {share:.0%} progress within {timeout} s")

    def reconcile(self) -> None:
        """editions_reconcile, as beat runs it; errors (broker or database down) are
        printed and the next round tries again, as beat would."""
        from subscriptions.sending.reconcile import editions_reconcile

        try:
            report = editions_reconcile()
        except Exception as exc:
            from django.db import connection

            connection.close()
            say(f"  reconcile failed this round: {type(exc).__name__}: {str(exc)[:120]}")
            return
        if report.acted:
            say(f"  reconcile: released {report.released}, batches re-enqueued for "
                f"{report.requeued_editions}, redispatched {report.redispatched}, "
                f"finished {report.finished}")

    def wait_done(self) -> bool:
        last = [0.0]

        def tick():
            if time.monotonic() - last[0] >= 1.0:
                last[0] = time.monotonic()
                self.reconcile()

        done = h.wait_editions([self.edition.pk], timeout=self.args.timeout, tick=tick,
                               every=0.2)
        self.t_done = time.time()
        return done

    def check(self, *, bound: int, bound_reason: str) -> bool:
        """Print the verdict; True when the guarantee holds."""
        from subscriptions.models import Edition

        edition = Edition.objects.get(pk=self.edition.pk)
        counts = self.sink.counts() if self.transport == "smtp" else self.fake.counts()
        result = h.exactness(self.expected, counts)
        led = h.ledger([edition.pk])
        led.pop("sent_subscribers")
        ok = (edition.status == "done" and result["missing"] == 0 and result["unexpected"] == 0
              and result["duplicates"] <= bound
              and (result["duplicates"] <= edition.requeued or self.transport == "esp"))
        print()
        print(f"drill {self.name}: {'PASS' if ok else 'FAIL'}")
        print(f"  targeted         {result['targeted']:>9,}")
        print(f"  delivered once   {result['delivered_once']:>9,}")
        print(f"  duplicates       {result['duplicates']:>9,}  (extra copies; "
              f"{result['recipients_with_duplicates']:,} recipients)")
        print(f"  missing          {result['missing']:>9,}")
        print(f"  unexpected       {result['unexpected']:>9,}")
        print(f"  edition          status {edition.status}, sent {edition.sent:,}, "
              f"failed {edition.failed}, requeued (possible duplicates) {edition.requeued:,}")
        print(f"  ledger           {led['by_status']}")
        print(f"  bound            duplicates <= requeued and <= {bound:,} ({bound_reason})")
        print(f"  wall             {self.t_done - self.t0:.1f} s from confirm to done")
        return ok

    def finish(self) -> None:
        for worker in self.workers:
            worker.kill()
        for stop in reversed(self.cleanup):
            try:
                stop()
            except Exception as exc:
                say(f"cleanup: {exc}")
        h.postfix_stop()
        if not self.args.keep:
            shutil.rmtree(self.data_dir, ignore_errors=True)
