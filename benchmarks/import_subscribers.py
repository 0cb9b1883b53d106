#!/usr/bin/env python3
"""Benchmark the subscriber import: N rows in Mailchimp's audience format (a zip of
subscribed, unsubscribed and cleaned members) imported, then imported again (the
idempotent re-run), on the database DATABASE_URL names.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/newsroom_import_bench \\
        .venv/bin/python benchmarks/import_subscribers.py --rows 1000000
    .venv/bin/python benchmarks/import_subscribers.py --quick   # CI: 10,000 rows, SQLite

A PostgreSQL database named in DATABASE_URL is created (dropped first if it
exists) and dropped at the end unless --keep; without DATABASE_URL the run uses
SQLite in a temporary folder. Prints wall and CPU seconds and rows per second of
each run, the peak RSS of this process (reading, deciding and writing all
happen in it) and the load average.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import random
import resource
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TAGS = ["Policy Watchers", "Morning Brief", "Sports Desk", "Unmapped Tag"]
LEFT_AT = "2024-06-01 12:00:00"
SHARES = {"subscribed": 0.90, "unsubscribed": 0.07, "cleaned": 0.03}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--quick", action="store_true", help="10,000 rows on SQLite (for CI)")
    p.add_argument("--keep", action="store_true", help="keep the PostgreSQL database")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--no-reimport", action="store_true", help="skip the idempotent re-run")
    args = p.parse_args(argv)
    if args.quick:
        args.rows = 10_000
    return args


def generate(path: Path, rows: int, seed: int) -> None:
    """A Mailchimp audience zip of `rows` members, ~1% of them bad lines."""
    from subscriptions.importing.formats import _MAILCHIMP_COMMON, _MAILCHIMP_TAIL, MAILCHIMP_FILES

    rng = random.Random(seed)  # noqa: S311 (test data)
    parts = {"subscribed": "active", "unsubscribed": "unsubscribed", "cleaned": "bounced"}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        start = 0
        for part, share in SHARES.items():
            name, extra = MAILCHIMP_FILES[parts[part]]
            count = rows - start if part == "cleaned" else int(rows * share)
            with archive.open(name, "w") as raw, io.TextIOWrapper(raw, "utf-8", newline="") as out:
                writer = csv.writer(out)
                writer.writerow([*_MAILCHIMP_COMMON, *extra, *_MAILCHIMP_TAIL])
                for i in range(start, start + count):
                    email = f"reader{i}@example.com" if i % 100 else f"reader{i}@localhost"
                    when = (f"20{rng.randint(15, 23)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)} "
                            f"0{rng.randint(0, 9)}:00:00")
                    tags = ",".join(f'"{t}"' for t in rng.sample(TAGS, rng.randint(0, 2)))
                    left = [LEFT_AT] if part != "subscribed" else []
                    left += [""] * (len(extra) - len(left))
                    writer.writerow([email, "Reader", str(i), "2", when, "", when, "",
                                     *[""] * 7, *left, "", "", "", tags])
            start += count


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="import-bench-"))
    url = "" if args.quick else os.environ.get("DATABASE_URL", "")
    if not url:
        url = f"sqlite:///{folder / 'bench.sqlite3'}"
    os.environ.update({
        "DATABASE_URL": url, "NEWSROOM_DATA_DIR": str(folder), "NEWSROOM_EMBEDDED": "1",
        "DJANGO_SETTINGS_MODULE": "benchmarks.settings",
        "DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY", "benchmark-only-secret-key"),
    })
    postgres = url.startswith("postgres")
    if postgres:
        import psycopg

        parts = urlsplit(url)
        name = parts.path.lstrip("/")
        admin_url = urlunsplit(parts._replace(path="/postgres"))
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
    try:
        return run(args, folder, url)
    finally:
        if postgres and not args.keep:
            from django.db import connections

            connections.close_all()
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run(args: argparse.Namespace, folder: Path, url: str) -> int:
    import django

    django.setup()
    from django.core.management import call_command

    from newsroom.models import Category
    from subscriptions.importing.formats import Source
    from subscriptions.importing.service import ImportOptions, subscribers_import
    from subscriptions.models import ConsentRecord, Subscriber

    call_command("migrate", verbosity=0)
    for order, slug in enumerate(["policy", "morning", "sport"]):
        Category.objects.create(slug=slug, name=slug.title(), order=order)
    path = folder / "audience.zip"
    started = time.perf_counter()
    generate(path, args.rows, args.seed)
    print(f"{args.rows:,} rows generated in {time.perf_counter() - started:.1f} s "
          f"({path.stat().st_size / 1e6:.0f} MB zip); database {urlsplit(url).scheme}")
    options = ImportOptions(format="mailchimp", mapping={
        "Policy Watchers": "policy", "Morning Brief": "morning", "Sports Desk": "sport"})
    for label in ("import",) if args.no_reimport else ("import", "re-import"):
        started, cpu = time.perf_counter(), time.process_time()
        report = subscribers_import(source=Source(path, "mailchimp"), options=options)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        # CPU seconds of this process too: on a shared machine wall time says little.
        print(f"{label}: {seconds:.1f} s ({cpu:.1f} s CPU here), "
              f"{report.rows / seconds:,.0f} rows/s — "
              f"new {report.new:,}, suppressed {report.suppressed:,}, "
              f"unchanged {report.unchanged:,}, bad {report.bad:,}")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"subscribers {Subscriber.objects.count():,}, consent records "
          f"{ConsentRecord.objects.count():,}; peak RSS {peak_mb:.0f} MB; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
