#!/usr/bin/env python3
"""Drill: a fleet of worker machines, and one of them cut off mid-edition.

    sudo .venv/bin/python benchmarks/drills/fleet.py [--subscribers 100000]

Four network namespaces stand in for four machines, each joined to the first by
its own veth pair (a link of its own, as a host has its own cable):

    db      PostgreSQL (a private cluster), Redis, the SMTP sink and this driver
    host1   one worker, alerts only          10.231.1.2  <->  10.231.1.1  db
    host2   one worker, alerts and digests   10.231.2.2  <->  10.231.2.1  db
    host3   one worker, alerts and digests   10.231.3.2  <->  10.231.3.1  db

The workers reach the database, the broker and the SMTP sink over those links
only. A breaking alert goes to every subscriber; at --cut-at of it, host3's
link goes down (its worker is alive but unreachable, as when a machine drops
off the network), then --kill-after seconds later its processes are killed (as
when it is declared dead). The Operations page must show host3's worker as not
answering, the alert must finish on the other hosts with 0 missing and at most
one batch per host3 pool process duplicated; then the day's digests go out
through the two digest hosts, 0 missing, 0 duplicated.

The script needs root (ip netns). It creates only namespaces and addresses of
its own (names nrf<pid>-*, 10.231.N.0/24 inside them), sends nothing outside
them, and removes them (and anything still running in them) when it ends,
however it ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from benchmarks import harness as h
from benchmarks.drills.common import Drill, parser, say

HOSTS = {  # host -> queues its worker consumes ("alerts" / "digests" resolved per run)
    "host1": ("alerts",),
    "host2": ("alerts", "digests"),
    "host3": ("alerts", "digests"),
}
VICTIM = "host3"
NET = "10.231.{n}.{host}"  # .1 on the db side of link n, .2 on host n


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


class Network:
    """The namespaces and links; `remove()` takes them away with whatever runs there."""

    def __init__(self) -> None:
        self.prefix = f"nrf{os.getpid() % 100000}"
        self.db = f"{self.prefix}-db"
        self.hosts = {name: f"{self.prefix}-{name}" for name in HOSTS}

    def link(self, n: int) -> str:
        return f"{self.prefix}l{n}"  # the db side of link n (< 16 characters)

    def create(self) -> None:
        _ip("netns", "add", self.db)
        _ip("-n", self.db, "link", "set", "lo", "up")
        for n, (_, ns) in enumerate(self.hosts.items(), start=1):
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            here, there = self.link(n), f"{self.prefix}p{n}"
            _ip("link", "add", here, "netns", self.db, "type", "veth", "peer", "name", there,
                "netns", ns)
            _ip("-n", self.db, "addr", "add", NET.format(n=n, host=1) + "/24", "dev", here)
            _ip("-n", ns, "addr", "add", NET.format(n=n, host=2) + "/24", "dev", there)
            _ip("-n", self.db, "link", "set", here, "up")
            _ip("-n", ns, "link", "set", there, "up")

    def remove(self) -> None:
        for ns in [*self.hosts.values(), self.db]:
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True,
                                  text=True).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), 9)
            _ip("netns", "del", ns, check=False)


class HostWorker(h.Worker):
    """A worker started inside a host's namespace, named after the host."""

    def __init__(self, ns: str, host: str, env: dict[str, str], **kwargs) -> None:
        super().__init__(env, name=host, **kwargs)
        self.ns, self.name = ns, f"worker@{host}"

    def start(self) -> HostWorker:
        self.proc = h.Proc(
            ["ip", "netns", "exec", self.ns, h.PYTHON, "-m", "celery", "-A", "newsroom",
             "worker", "--loglevel=INFO", f"--queues={self.queues}",
             f"--concurrency={self.concurrency}", f"--pool={self.pool}",
             "--without-gossip", "--without-mingle", f"--hostname={self.name}"],
            log=self.log, env=self.env,
        )
        return self


def host_env(drill: Drill, n: int) -> dict[str, str]:
    """The worker environment, with every service address on host n's own link."""
    there = NET.format(n=n, host=1)
    return {key: value.replace("127.0.0.1", there) if key in (
        "DATABASE_URL", "REDIS_URL", "EMAIL_URL") else value
        for key, value in drill.worker_env.items()}


def ops_page_shows_gone(victim: str) -> bool:
    """Ask the workers as the sampler does, then read the Operations page as an operator."""
    from django.conf import settings
    from django.contrib import admin
    from django.contrib.auth import get_user_model
    from django.test import Client, override_settings
    from django.urls import reverse

    from newsroom.ops import workers

    for _ in range(3):
        snapshot = workers.snapshot_refresh(timeout=1.0)
    silent = [w.name for w in snapshot.workers if not snapshot.answered(w)]
    user, _ = get_user_model().objects.get_or_create(
        username="fleet-operator", defaults={"is_staff": True, "is_superuser": True})
    client = Client(HTTP_HOST=settings.ALLOWED_HOSTS[0])
    client.force_login(user)
    opts = next(m for m in admin.site._registry if m.__name__ == "Operations")._meta
    plain_static = {**settings.STORAGES, "staticfiles": {  # no collectstatic in a drill
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
    with override_settings(STORAGES=plain_static):
        response = client.get(
            reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"), secure=True)
    if response.status_code != 200:
        say(f"Operations page: HTTP {response.status_code} {response.get('Location', '')}")
    page = response.content.decode()
    row = page.split(victim, 1)[1].split("</tr>", 1)[0] if victim in page else ""
    say(f"Operations page: workers not answering {silent}; {victim!r} row says "
        f"{'not answering' if 'not answering' in row else row.strip()[:80]!r}")
    return victim in silent and "not answering" in row


def digest_round(drill: Drill) -> bool:
    """The day's digests, through the two digest hosts; every due reader once."""
    from django.conf import settings

    from subscriptions.models import Edition
    from subscriptions.sending.scheduling import digests_schedule

    instant = h.digest_instant()
    pop = drill.population
    stories = h.create_stories(drill.categories, end=instant)
    expected, _ = h.digest_expected(pop, stories, now=instant,
                                      lateness=settings.NEWSROOM_DIGEST_MAX_LATENESS)
    drill.sink.mark()
    made = digests_schedule(now=instant)
    say(f"digests: {len(made)} editions for {len(expected):,} readers with news")
    done = h.wait_editions([e.pk for e in made], timeout=drill.args.timeout,
                           tick=drill.reconcile, every=0.5)
    counts = drill.sink.counts()
    result = h.exactness(expected, counts)
    wanted = {h.email_for(i) for i in expected}
    for address in sorted(set(counts) - wanted)[:5]:
        from subscriptions.models import Subscriber

        reader = Subscriber.objects.filter(email=address).values(
            "id", "frequency", "timezone", "digest_hour", "wants_alerts").first()
        say(f"  unexpected: {address} {reader}")
    statuses = sorted(set(Edition.objects.filter(pk__in=[e.pk for e in made])
                          .values_list("status", flat=True)))
    ok = done and result["missing"] == 0 and result["duplicates"] == 0 \
        and result["unexpected"] == 0
    print(f"\ndigests: {'PASS' if ok else 'FAIL'}  targeted {result['targeted']:,}, "
          f"delivered once {result['delivered_once']:,}, duplicates {result['duplicates']}, "
          f"missing {result['missing']}, unexpected {result['unexpected']}, "
          f"editions {statuses}")
    return ok


def inside(args) -> int:
    """Runs in the db namespace: the services, the driver, the workers on their hosts."""
    net = Network.__new__(Network)
    net.prefix = args.prefix
    net.db, net.hosts = f"{net.prefix}-db", {name: f"{net.prefix}-{name}" for name in HOSTS}
    # All interfaces of the db namespace: its loopback and the three links made above.
    drill = Drill("fleet", args, private_pg=True, listen="0.0.0.0",  # noqa: S104
                  trust_net="10.231.0.0/16")
    # Weekly digests fall three days off (as in benchmarks/run.py): only daily ones are due.
    drill.env.extra["NEWSROOM_WEEKLY_DIGEST_WEEKDAY"] = str(
        (h.digest_instant().weekday() + 3) % 7)
    ok = False
    try:
        drill.setup()
        queue = {"alerts": drill.env.alerts_queue, "digests": drill.env.digests_queue}
        from newsroom.celery import app

        concurrency = int(args.layout.split("x")[1])
        for n, (host, ns) in enumerate(net.hosts.items(), start=1):
            worker = HostWorker(ns, host, host_env(drill, n),
                                queues=",".join(queue[q] for q in HOSTS[host]),
                                concurrency=concurrency, log_dir=drill.logs).start()
            drill.workers.append(worker)
        for worker in drill.workers:
            worker.wait_ready(app)
        say("workers answering: " + ", ".join(
            f"{w.name} ({'+'.join(HOSTS[w.name.split('@')[1]])})" for w in drill.workers))
        victim = next(w for w in drill.workers if w.name.endswith(VICTIM))
        from newsroom.ops import workers as ops_workers

        ops_workers.snapshot_refresh(timeout=1.0)  # the sampler's tick, as beat runs it
        drill.alert()
        drill.wait_progress(args.cut_at)
        link = net.link(list(HOSTS).index(VICTIM) + 1)
        _ip("link", "set", link, "down")
        say(f"{VICTIM}: link {link} down (its worker alive, unreachable)")
        time.sleep(args.kill_after)
        victim.kill()
        say(f"{VICTIM}: processes killed after {args.kill_after:.0f} s off the network")
        shown = ops_page_shows_gone(victim.name)
        drill.wait_done()
        alert_ok = drill.check(bound=concurrency * drill.batch_size,
                               bound_reason=f"{concurrency} pool process(es) on {VICTIM} x "
                                            f"batch of {drill.batch_size}")
        digests_ok = digest_round(drill)
        print(f"Operations page shows {VICTIM} gone: {'yes' if shown else 'NO'}")
        ok = alert_ok and digests_ok and shown
    finally:
        drill.finish()
    print(f"\ndrill fleet: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--cut-at", type=float, default=0.3, help="alert progress at the cut")
    p.add_argument("--kill-after", type=float, default=5.0,
                   help="seconds between the link going down and the host's processes dying")
    p.add_argument("--inside", action="store_true", help=argparse_hidden())
    p.add_argument("--prefix", help=argparse_hidden())
    p.set_defaults(layout="3x1", db="postgres", pg_name="newsroom_fleet")
    args = p.parse_args(argv)
    # SIGTERM (a CI timeout, Ctrl-C's cousin) ends in the `finally`s below, so the
    # namespaces and the processes in them go however the drill ends.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.inside:
        return inside(args)
    if os.geteuid() != 0:
        print("the fleet drill needs root, for its network namespaces (ip netns)")
        return 2
    net = Network()
    driver = None
    try:
        net.create()
        say(f"namespaces {net.db} and {', '.join(net.hosts.values())}, one link each")
        forward = list(argv if argv is not None else sys.argv[1:])
        driver = subprocess.Popen(["ip", "netns", "exec", net.db, h.PYTHON, __file__,
                                   "--inside", "--prefix", net.prefix, *forward])
        return driver.wait()
    finally:
        if driver is not None and driver.poll() is None:  # let it stop its own processes
            driver.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                driver.wait(timeout=60)
        net.remove()
        say("namespaces removed")


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    sys.exit(main())
