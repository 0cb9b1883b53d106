#!/usr/bin/env python3
"""Load test of the sign-up page and the one-click unsubscribe behind gunicorn, with wrk.

    .venv/bin/python benchmarks/web_load.py [--duration 15] [--db sqlite|postgres] \
        [--gunicorn auto|sync:5|gthread:2x4] [--json out.json]
    .venv/bin/python benchmarks/web_load.py --quick     # what CI runs (~1 minute)

Builds its own stack on loopback (a data folder, a redis-server, a fresh SQLite or
PostgreSQL database with N active subscribers), starts gunicorn as production would
(`newsroom.wsgi`, DEBUG off, a random SECRET_KEY, https SITE_URL behind a TLS proxy),
and runs Debian's wrk with 100 connections (100 clients) against three scenarios:

  signup-get    GET /subscribe/
  signup-post   POST /subscribe/ with a new address per request (one CSRF pair reused)
  unsubscribe   RFC 8058 one-click POST (List-Unsubscribe=One-Click), a distinct
                subscriber per request

It prints, per scenario, requests, rps, p50/p90/p99/max latency and errors (socket
errors, timeouts, any status other than the expected one), checks in the database
that the sign-ups and unsubscribes happened (and that each sign-up enqueued its
confirmation task), and marks the target (p99 < 100 ms, no errors) met or missed.
wrk is a closed loop: with 100 connections, latency ~ 100 / throughput, so its rps
is the saturation point, and when a scenario misses the target it is also run
*paced* at lower rates (25%, 50%, 80% of saturation and 100/s): 100 clients each
sending at random moments (benchmarks/web_pacer.py), the latency at that pace.

`--gunicorn auto` (the default) first compares worker configurations
(--candidates, all started at once, closed loops interleaved over three rounds) and
keeps the one with the lowest p99; --quick uses DEFAULT_GUNICORN, the
configuration those measurements chose on this machine.

Exit status: 1 on errors or a database mismatch, 0 otherwise (a missed latency target
alone is not a failure: the machine is shared). See benchmarks/README.md, "Web load".
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import re
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import harness as h
from benchmarks import web_pacer
from benchmarks.harness import say

WRK = "/usr/bin/wrk"
LUA = Path(__file__).resolve().with_name("web_load.lua")
SITE = "https://news.example.com"
HOST = "news.example.com"
# What the TLS-terminating proxy in front of gunicorn adds (DJANGO_BEHIND_TLS_PROXY=1).
PROXY_HEADERS = {"Host": HOST, "X-Forwarded-Proto": "https",
                 "User-Agent": "newsroom-web-load/1 (wrk)"}
SCENARIOS = ("signup-get", "signup-post", "unsubscribe")
EXPECTED_STATUS = {"signup-get": 200, "signup-post": 302, "unsubscribe": 200}
# 2 x cores + 1 sync workers (gunicorn's advice), runall's 2 sync workers, and threads.
DEFAULT_CANDIDATES = "sync:5,sync:2,gthread:2x4,gthread:5x4"
DEFAULT_GUNICORN = "sync:2"  # chosen in 3 of the 4 final comparisons here (README, "Web load")
# Paced rates by default: shares of the saturation throughput, and 100/s (each client 1/s).
AUTO_PACED = "25%,50%,80%,100"
HUGE = str(10**9)
# wrk's own --timeout: latencies are recorded up to it. (Its timeout *counter* also counts
# a connection idle longer than this, e.g. a paced client thinking, so slow answers are
# counted from the histogram instead: web_load.lua, count_slower.)
WRK_TIMEOUT = 30
# The files whose speed this measures: hashed into the JSON, and compared at the end
# (other engineers change the tree during a run).
WEB_FILES = ("subscriptions/views.py", "subscriptions/forms.py", "subscriptions/ratelimit.py",
             "subscriptions/tokens.py", "subscriptions/services/subscribers.py",
             "subscriptions/models.py", "newsroom/settings.py", "newsroom/urls.py")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=15.0, help="seconds per wrk run")
    p.add_argument("--quick", action="store_true",
                   help="CI: 3 s per run, 5,000 subscribers, no gunicorn comparison "
                        f"({DEFAULT_GUNICORN}), one paced run per scenario at 50%% of "
                        "saturation, 10 s timeout")
    p.add_argument("--subscribers", type=int, help="active subscribers (default 20,000)")
    p.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--pg-name", default="newsroom_webload", help="PostgreSQL database to create")
    p.add_argument("--pg-admin", default=h.PG_ADMIN,
                   help="URL of a database to connect to for CREATE/DROP DATABASE")
    p.add_argument("--scenario", default=",".join(SCENARIOS),
                   help=f"comma-separated, from {', '.join(SCENARIOS)}")
    p.add_argument("--connections", type=int, default=100, help="wrk -c: concurrent clients")
    p.add_argument("--threads", type=int, default=2, help="wrk -t")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds: a slower answer counts as an error (default 5; 10 with "
                        f"--quick; wrk itself waits up to {WRK_TIMEOUT} s, so latencies up to "
                        "that are measured)")
    p.add_argument("--gunicorn", default="auto",
                   help="'auto' (measure --candidates, keep the lowest p99), or one config: "
                        "sync:<workers> or gthread:<workers>x<threads>")
    p.add_argument("--candidates", default=DEFAULT_CANDIDATES,
                   help="configs 'auto' compares (default %(default)s)")
    p.add_argument("--candidate-duration", type=float, default=5.0,
                   help="seconds per scenario for each candidate and round")
    p.add_argument("--candidate-rounds", type=int, default=3)
    p.add_argument("--paced", default="auto",
                   help="paced runs after each closed loop: 'auto' (only when the closed "
                        f"loop misses the target: {AUTO_PACED.replace('%', '%%')} below "
                        "saturation), 'always', 'off', or a comma-separated list of total "
                        "rates: requests per second, or N%% of the closed loop's throughput")
    p.add_argument("--pacer", choices=["python", "wrk"], default="python",
                   help="paced clients: benchmarks/web_pacer.py (default: connects when it "
                        "sends), or wrk's delay() (thinks on an open connection; see there)")
    p.add_argument("--target-p99-ms", type=float, default=100.0)
    p.add_argument("--access-log", action="store_true",
                   help="gunicorn writes an access log line per request (to a file)")
    p.add_argument("--py-spy", metavar="BINARY",
                   help="profile the gunicorn workers during the final closed-loop runs")
    p.add_argument("--json", type=Path, help="write every figure here")
    p.add_argument("--data-dir", type=Path, help="default: a new /tmp/webload-* folder")
    p.add_argument("--keep", action="store_true", help="keep the data folder and database")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    if args.quick:
        args.duration = 3.0 if args.duration == 15.0 else args.duration
        args.subscribers = args.subscribers or 5000
        if args.gunicorn == "auto":
            args.gunicorn = DEFAULT_GUNICORN
        if args.paced == "auto":
            args.paced = "50%"
        # CI shares the machine: a closed loop of 100 clients on a busy machine can take
        # seconds per answer without anything being wrong.
        args.timeout = args.timeout or 10.0
    args.timeout = args.timeout or 5.0
    args.subscribers = args.subscribers or 20_000
    args.scenarios = [s.strip() for s in args.scenario.split(",") if s.strip()]
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    for spec in ([args.gunicorn] if args.gunicorn != "auto" else args.candidates.split(",")):
        try:
            GunicornConfig.parse(spec)
        except ValueError as exc:
            p.error(str(exc))
    return args


# --- gunicorn --------------------------------------------------------------------------------

class GunicornConfig:
    def __init__(self, kind: str, workers: int, threads: int = 1) -> None:
        self.kind, self.workers, self.threads = kind, workers, threads

    @classmethod
    def parse(cls, spec: str) -> GunicornConfig:
        m = re.fullmatch(r"\s*(sync):(\d+)\s*|\s*(gthread):(\d+)x(\d+)\s*", spec)
        if not m:
            raise ValueError(f"gunicorn config {spec!r}: use sync:<workers> or "
                             "gthread:<workers>x<threads>")
        if m.group(1):
            return cls("sync", int(m.group(2)))
        return cls("gthread", int(m.group(4)), int(m.group(5)))

    @property
    def name(self) -> str:
        return f"sync:{self.workers}" if self.kind == "sync" else \
            f"gthread:{self.workers}x{self.threads}"

    def argv(self) -> list[str]:
        out = [f"--workers={self.workers}", f"--worker-class={self.kind}"]
        if self.kind == "gthread":
            out.append(f"--threads={self.threads}")
        return out


class Gunicorn:
    """`gunicorn newsroom.wsgi` in its own session, on a free loopback port."""

    def __init__(self, config: GunicornConfig, env: dict[str, str], log_dir: Path, *,
                 access_log: bool = False) -> None:
        self.config = config
        self.port = h.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log_dir / f"gunicorn-{config.name.replace(':', '-')}.log"
        argv = [h.PYTHON, "-m", "gunicorn", "newsroom.wsgi", f"--bind=127.0.0.1:{self.port}",
                *config.argv(), "--graceful-timeout=10", "--timeout=30", "--backlog=2048"]
        if access_log:
            argv.append(f"--access-logfile={log_dir / 'access.log'}")
        self.proc = h.Proc(argv, log=self.log, env=env)
        deadline = time.monotonic() + 60
        while True:
            try:
                status, _headers, _body = http("GET", f"{self.url}/healthz", timeout=2)
                if status == 200:
                    break
            except OSError:
                pass
            if not self.proc.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not start; see {self.log}")
            time.sleep(0.1)
        # Every worker must have booted (they import Django after the master answers).
        deadline = time.monotonic() + 30
        while len(self.worker_pids()) < config.workers and time.monotonic() < deadline:
            time.sleep(0.1)

    def worker_pids(self) -> list[int]:
        return h.children(self.proc.pid)

    def cpu_seconds(self) -> float:
        return sum(h.cpu_seconds(pid) for pid in [self.proc.pid, *self.worker_pids()])

    def wait_idle(self, *, quiet: float = 0.02, limit: float = 120) -> float:
        """Wait until the workers stop using CPU; the seconds that took."""
        started = time.monotonic()
        last = self.cpu_seconds()
        calm = 0
        while calm < 2 and time.monotonic() - started < limit:
            time.sleep(0.25)
            now = self.cpu_seconds()
            calm = calm + 1 if now - last < quiet else 0
            last = now
        return round(time.monotonic() - started - 0.5, 2)

    def stop(self) -> None:
        self.proc.stop(timeout=20)


def http(method: str, url: str, *, body: bytes | None = None, headers: dict | None = None,
         timeout: float = 10) -> tuple[int, dict[str, list[str]], str]:
    """One request without following redirects: (status, headers, body)."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    request = urllib.request.Request(url, data=body, method=method,  # noqa: S310 - loopback
                                     headers={**PROXY_HEADERS, **(headers or {})})
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=timeout) as response:
            status, raw_headers, text = response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        status, raw_headers, text = exc.code, exc.headers, exc.read()
    out: dict[str, list[str]] = {}
    for key, value in raw_headers.items():
        out.setdefault(key.lower(), []).append(value)
    return status, out, text.decode("utf-8", "replace")


# --- The data --------------------------------------------------------------------------------

def populate(args: argparse.Namespace, data_dir: Path) -> tuple[list[int], Path]:
    """Categories, N active subscribers, and their one-click unsubscribe paths in a file."""
    from subscriptions.sending.mime import unsubscribe_url

    categories = h.create_categories()
    category_ids = [c.pk for c in categories]
    pop = h.generate(args.subscribers, seed=args.seed, category_ids=category_ids)
    h.insert_population(pop, confirmed_at=datetime.now(UTC) - timedelta(days=30))
    tokens = data_dir / "unsubscribe-paths.txt"
    with tokens.open("w") as f:
        for i in range(1, args.subscribers + 1):
            url = unsubscribe_url(subscriber_id=i, email=h.email_for(i))
            f.write(url.removeprefix(SITE) + "\n")
    return category_ids, tokens


def reset_state(redis_server: h.RedisServer) -> None:
    """Undo the previous run: everyone active again, no web sign-ups, no queued emails."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM subscriptions_consentrecord")
        cursor.execute("DELETE FROM subscriptions_subscriber_categories WHERE subscriber_id IN "
                       "(SELECT id FROM subscriptions_subscriber WHERE email LIKE 'wl-%')")
        cursor.execute("DELETE FROM subscriptions_subscriber WHERE email LIKE 'wl-%'")
        cursor.execute("UPDATE subscriptions_subscriber SET status = 'active', "
                       "unsubscribed_at = NULL, suppression_reason = '' "
                       "WHERE status <> 'active'")
        if connection.vendor == "postgresql":
            cursor.execute("VACUUM ANALYZE subscriptions_subscriber")
            cursor.execute("VACUUM ANALYZE subscriptions_consentrecord")
    connection.close()
    client = redis_server.client()
    for key in client.scan_iter(match="priority*"):
        client.delete(key)


def queued_emails(redis_server: h.RedisServer) -> int:
    """Celery messages waiting in the `priority` queue (the confirmation emails)."""
    client = redis_server.client()
    return sum(client.llen(key) for key in client.scan_iter(match="priority*")
               if client.type(key) == b"list")


def csrf_pair(server: Gunicorn) -> tuple[str, str]:
    """One GET of the sign-up page: the CSRF cookie and the form's token."""
    status, headers, body = http("GET", f"{server.url}/subscribe/")
    if status != 200:
        raise RuntimeError(f"GET /subscribe/ answered {status}, not 200")
    cookie = next((c.split(";", 1)[0] for c in headers.get("set-cookie", [])
                   if c.startswith("csrftoken=")), None)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', body)
    if not cookie or not token:
        raise RuntimeError("the sign-up page set no CSRF cookie or has no CSRF token")
    return cookie, token.group(1)


def signup_form(category_ids: list[int]) -> str:
    fields = [("categories", str(category_ids[0])), ("categories", str(category_ids[2])),
              ("frequency", "daily"), ("digest_hour", "7"), ("timezone", "Europe/Berlin"),
              ("wants_alerts", "yes")]
    return "&".join(f"{k}={urllib.request.quote(v, safe='')}" for k, v in fields)


def smoke(server: Gunicorn, cookie: str, csrf: str, form: str, token_file: Path) -> None:
    """One request of each kind through urllib first, so a broken set-up (a redirect to
    https, a CSRF failure, a bad token) is reported plainly instead of as wrk errors."""
    status, headers, _ = http("POST", f"{server.url}/subscribe/", body=(
        f"csrfmiddlewaretoken={csrf}&email=wl-smoke%40example.com&{form}").encode(),
        headers={"Cookie": cookie, "Origin": SITE, "Referer": f"{SITE}/subscribe/",
                 "Content-Type": "application/x-www-form-urlencoded"})
    where = headers.get("location", [""])[0]
    if status != 302 or not where.endswith("/subscribe/check-your-inbox/"):
        raise RuntimeError(f"sign-up POST answered {status} {where!r}, not a redirect to "
                           "the check-your-inbox page; see the gunicorn log")
    path = token_file.read_text().split("\n", 1)[0]
    status, _, body = http("GET", server.url + path)
    if status != 200 or "Unsubscribe" not in body:
        raise RuntimeError(f"GET of an unsubscribe link answered {status}")


# --- wrk -------------------------------------------------------------------------------------

class WrkRun:
    """One wrk process (killed on interrupt); its parsed figures."""

    active: list[subprocess.Popen] = []

    @classmethod
    def kill_all(cls) -> None:
        for proc in cls.active:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)

    @staticmethod
    def run(url: str, *, mode: str, duration: float, connections: int, threads: int,
            slow_s: float, env_extra: dict[str, str], think_ms: float | None = None) -> dict:
        env = dict(os.environ)
        env.update({"WEBLOAD_MODE": mode, "WEBLOAD_THREADS": str(threads),
                    "WEBLOAD_SLOW_MS": f"{slow_s * 1000:.0f}",
                    "WEBLOAD_HEADERS": "\n".join(f"{k}: {v}" for k, v in PROXY_HEADERS.items()),
                    **env_extra})
        if think_ms:
            env["WEBLOAD_THINK_MS"] = f"{think_ms:.3f}"
        argv = [WRK, "-c", str(connections), "-t", str(threads), "-d", f"{duration:g}s",
                "--timeout", f"{WRK_TIMEOUT}s", "--latency", "-s", str(LUA), url]
        usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        WrkRun.active.append(proc)
        try:
            out, err = proc.communicate(timeout=duration + WRK_TIMEOUT + 60)
        finally:
            WrkRun.active.remove(proc)
        usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        line = next((x for x in out.splitlines() if x.startswith("WEBLOAD_JSON ")), None)
        if proc.returncode or line is None:
            raise RuntimeError(f"wrk failed (exit {proc.returncode}): {err.strip()}\n{out}")
        data = json.loads(line.removeprefix("WEBLOAD_JSON "))
        data["text"] = "\n".join(x for x in out.splitlines() if not x.startswith("WEBLOAD_JSON"))
        data["wrk_cpu_s"] = round((usage1.ru_utime + usage1.ru_stime)
                                  - (usage0.ru_utime + usage0.ru_stime), 2)
        data["argv"] = " ".join(argv)
        return data


def wrk_figures(raw: dict, *, paced: bool) -> dict:
    """wrk's figures in ms, with the statuses its threads saw."""
    lat = raw["latency_us"]
    statuses: dict[str, int] = {}
    sent = exhausted = 0
    for thread in raw["threads"].values():
        sent += int(thread["sent"])
        exhausted += int(thread.get("exhausted") or 0)
        for code, n in (thread["statuses"] or {}).items():
            statuses[code] = statuses.get(code, 0) + int(n)
    errors = {k: int(v) for k, v in raw["errors"].items()}
    if paced:  # wrk's timeout counter counts clients thinking on an open connection
        errors["timeout"] = 0
    seconds = raw["duration_us"] / 1e6
    ms = lambda us: round(us / 1000, 2) if us is not None else None  # noqa: E731
    return {
        "requests": int(raw["requests"]), "seconds": round(seconds, 2),
        "rps": round(raw["requests"] / seconds, 1) if seconds else 0.0,
        "p50_ms": ms(lat["p50"]), "p75_ms": ms(lat["p75"]), "p90_ms": ms(lat["p90"]),
        "p99_ms": ms(lat["p99"]), "p999_ms": ms(lat["p999"]), "max_ms": ms(lat["max"]),
        "mean_ms": ms(lat["mean"]), "min_ms": ms(lat["min"]),
        "statuses": statuses, "sent": sent, "list_exhausted": bool(exhausted),
        "socket_error_detail": errors, "slow_answers": int(raw["slow"]),
        "bytes": int(raw["bytes"]), "client_cpu_s": raw["wrk_cpu_s"], "client": raw["argv"],
    }


def with_errors(figures: dict, expected_status: int) -> dict:
    """The error count: socket errors, timeouts (answers slower than --timeout, or none
    within wrk's own timeout), and every answer other than the expected status (wrk's
    "non-2xx or 3xx" ones, and also a 3xx where a 200 belongs: a broken set-up)."""
    detail = figures["socket_error_detail"]
    socket_errors = detail["connect"] + detail["read"] + detail["write"]
    timeouts = detail["timeout"] + figures.get("slow_answers", 0)
    statuses = figures["statuses"]
    unexpected = sum(n for code, n in statuses.items() if code != str(expected_status))
    return {**figures, "socket_errors": socket_errors, "timeouts": timeouts,
            "non_2xx_3xx": detail["status"], "unexpected_status": unexpected,
            "errors": socket_errors + timeouts + max(detail["status"], unexpected),
            "expected_status": expected_status,
            "ok_responses": statuses.get(str(expected_status), 0)}


# --- Scenarios -------------------------------------------------------------------------------

def request_maker(ctx: dict, scenario: str, tag: str):
    """For the paced clients (web_pacer.py): the bytes of each next request."""
    base = {**PROXY_HEADERS, "Connection": "close"}

    def encode(method: str, path: str, headers: dict[str, str], body: str = "") -> bytes:
        lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
        if method == "POST":
            lines.append(f"Content-Length: {len(body.encode())}")
        return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()

    if scenario == "signup-get":
        data = encode("GET", "/subscribe/", base)
        return lambda: data
    if scenario == "signup-post":
        headers = {**base, "Origin": SITE, "Referer": f"{SITE}/subscribe/",
                   "Cookie": ctx["cookie"], "Content-Type": "application/x-www-form-urlencoded"}
        counter = iter(range(1, 10**9))

        def signup() -> bytes:
            email = urllib.request.quote(f"{tag}-p-{next(counter)}@example.com", safe="")
            body = f"csrfmiddlewaretoken={ctx['csrf']}&email={email}&{ctx['form']}"
            return encode("POST", "/subscribe/", headers, body)

        return signup
    paths = iter(ctx["tokens"].read_text().split())
    headers = {**base, "Content-Type": "application/x-www-form-urlencoded"}

    def unsubscribe() -> bytes | None:
        path = next(paths, None)
        return None if path is None else encode("POST", path, headers,
                                                "List-Unsubscribe=One-Click")

    return unsubscribe


def run_scenario(ctx: dict, server: Gunicorn, scenario: str, *, duration: float,
                 rate: float | None = None, label: str = "", profile: Path | None = None
                 ) -> dict:
    """One run: closed loop with wrk, or paced at `rate` requests per second in total."""
    args = ctx["args"]
    reset_state(ctx["redis"])
    tag = f"wl-{secrets.token_hex(3)}"
    env_extra: dict[str, str] = {}
    url = f"{server.url}/subscribe/"
    mode = "get"
    if scenario == "signup-post":
        mode = "signup"
        # A browser's POST over https carries Origin (and Referer): Django's CSRF check
        # compares them with the site.
        headers = {**PROXY_HEADERS, "Origin": SITE, "Referer": f"{SITE}/subscribe/"}
        env_extra = {"WEBLOAD_COOKIE": ctx["cookie"], "WEBLOAD_CSRF": ctx["csrf"],
                     "WEBLOAD_EMAIL_PREFIX": tag, "WEBLOAD_FORM": ctx["form"],
                     "WEBLOAD_HEADERS": "\n".join(f"{k}: {v}" for k, v in headers.items())}
    elif scenario == "unsubscribe":
        mode = "unsubscribe"
        env_extra = {"WEBLOAD_TOKENS": str(ctx["tokens"])}
        url = server.url + "/"
    queued0 = queued_emails(ctx["redis"])
    cpu0 = server.cpu_seconds()
    redis_cpu0 = h.cpu_seconds(ctx["redis"].proc.proc.pid)
    load_before = os.getloadavg()
    profiler = None
    if profile is not None:
        profiler = subprocess.Popen(
            [args.py_spy, "record", "--subprocesses", "--nonblocking", "--format", "raw",
             "--rate", "200", "-o", str(profile), "-p", str(server.proc.pid)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ctx["profilers"].append(profiler)
        time.sleep(1.0)
    if rate and args.pacer == "python":
        figures = web_pacer.run(host="127.0.0.1", port=server.port, clients=args.connections,
                                rate=rate, duration=duration, timeout=args.timeout,
                                make_request=request_maker(ctx, scenario, tag),
                                seed=args.seed)
    else:
        think_ms = args.connections * 1000 / rate if rate else None
        raw = WrkRun.run(url, mode=mode, duration=duration, connections=args.connections,
                         threads=args.threads, slow_s=args.timeout, env_extra=env_extra,
                         think_ms=think_ms)
        figures = wrk_figures(raw, paced=bool(rate))
    drain_s = server.wait_idle()
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            profiler.wait(timeout=30)
    result = {"scenario": scenario, "gunicorn": server.config.name, "label": label,
              "mode": "paced" if rate else "closed", "connections": args.connections,
              "offered_rps": rate, "pacer": args.pacer if rate else None,
              **with_errors(figures, EXPECTED_STATUS[scenario]),
              "gunicorn_cpu_s": round(server.cpu_seconds() - cpu0, 2),
              # How long gunicorn kept working after the clients stopped: requests wrk
              # gave up on (queued in the listen backlog, or cut off) are still served.
              "drain_s": drain_s,
              "redis_cpu_s": round(h.cpu_seconds(ctx["redis"].proc.proc.pid) - redis_cpu0, 2),
              "load_before": load_before, "load_after": os.getloadavg()}
    if result["sent"]:
        result["gunicorn_cpu_ms_per_request"] = round(
            1000 * result["gunicorn_cpu_s"] / result["sent"], 2)
    result["check"] = verify(ctx, scenario, result, tag=tag, queued_before=queued0)
    result["met"] = (result["p99_ms"] is not None and result["p99_ms"] < args.target_p99_ms
                     and result["errors"] == 0)
    say(f"  {scenario:<12} {result['gunicorn']:<13} {result['mode']:<6}"
        f"{'' if not rate else f' {rate:,.0f}/s offered'} "
        f"{result['requests']:>7,} req {result['rps']:>8,.1f} rps  p50 {result['p50_ms']:>7.1f}"
        f"  p99 {result['p99_ms']:>7.1f}  max {result['max_ms']:>7.1f} ms  errors "
        f"{result['errors']}  db {'ok' if result['check']['ok'] else 'MISMATCH'}  "
        f"drain {drain_s:.1f} s")
    return result


def verify(ctx: dict, scenario: str, result: dict, *, tag: str, queued_before: int) -> dict:
    """What the database (and the broker) say happened, against what wrk saw.

    A request wrk counted as answered happened; one it sent but did not see answered
    (cut off at the end of the run, timed out) may or may not have: so the database
    count must lie between the expected answers and the requests sent.
    """
    from django.db import connection

    from subscriptions.models import ConsentRecord, Subscriber

    ok_answers, sent = result["ok_responses"], result["sent"]
    if scenario == "signup-get":
        return {"ok": ok_answers == result["requests"], "what": "every answer was a 200"}
    # Requests cut off by wrk at the end may still be running in gunicorn: wait until
    # the count stops moving.
    count = -1
    for _ in range(50):
        if scenario == "signup-post":
            now = Subscriber.objects.filter(email__startswith=f"{tag}-").count()
        else:
            now = Subscriber.objects.filter(status=Subscriber.Status.UNSUBSCRIBED).count()
        if now == count:
            break
        count = now
        time.sleep(0.3)
    if scenario == "signup-post":
        rows = Subscriber.objects.filter(email__startswith=f"{tag}-")
        pending = rows.filter(status=Subscriber.Status.PENDING).count()
        consents = ConsentRecord.objects.filter(
            subscriber__email__startswith=f"{tag}-", action=ConsentRecord.Action.SIGNUP).count()
        followed = rows.filter(categories__isnull=False).values("pk").distinct().count()
        queued = queued_emails(ctx["redis"]) - queued_before
        ok = (ok_answers <= count <= sent and pending == count and consents == count
              and followed == count and queued == count)
        out = {"ok": ok, "subscribers_created": count, "pending": pending,
               "consent_records": consents, "with_topics": followed,
               "confirmation_tasks_queued": queued, "ok_answers": ok_answers, "sent": sent,
               "what": "ok answers <= new pending subscribers (each with topics, a consent "
                       "record and a queued confirmation email) <= requests sent"}
    else:
        consents = ConsentRecord.objects.filter(action=ConsentRecord.Action.WITHDRAW,
                                                method="one-click").count()
        ok = ok_answers <= count <= sent and consents == count and not result["list_exhausted"]
        out = {"ok": ok, "unsubscribed": count, "one_click_consent_records": consents,
               "ok_answers": ok_answers, "sent": sent,
               "what": "ok answers <= subscribers unsubscribed (each with a one-click "
                       "withdrawal record) <= requests sent, each to a distinct subscriber"}
        if result["list_exhausted"]:
            out["problem"] = "ran out of distinct subscribers: raise --subscribers"
    connection.close()
    return out


def warm_up(ctx: dict, server: Gunicorn) -> None:
    """Every worker imports and renders once before anything is measured."""
    args = ctx["args"]
    first_token = ctx["tokens"].read_text().split("\n", 1)[0]
    for path in ("/subscribe/", first_token):
        WrkRun.run(server.url + path, mode="get", duration=2, connections=min(20, args.connections),
                   threads=1, slow_s=args.timeout, env_extra={})
    server.wait_idle()


def paced_rates(spec: str, closed: dict) -> list[float]:
    """Total request rates for the paced runs: numbers, or percentages of the closed
    loop's throughput (the saturation point); 'auto' only when the closed loop missed."""
    if spec == "off" or (spec == "auto" and closed["met"]):
        return []
    saturation = closed["rps"]
    rates = set()
    for item in (AUTO_PACED if spec in ("auto", "always") else spec).split(","):
        item = item.strip()
        if item.endswith("%"):
            rates.add(round(float(item[:-1]) / 100 * saturation))
        elif item:
            rates.add(float(item))
    if spec in ("auto", "always"):
        # At or above saturation a paced run only repeats the closed loop, with a queue.
        rates = {r for r in rates if r < saturation}
    return sorted(r for r in rates if r > 0)


def compare_configs(ctx: dict, serve, stop, candidates: list[dict]) -> str:
    """Every candidate config up at once; each scenario's closed loop run on each of them
    back to back, the order reversed every round (the machine's other load drifts).
    The winner has the lowest closed-loop p99 (geometric mean over the scenarios of
    the median p99): the brief's figure, which with 100 clients reflects both the
    throughput (Little's law) and how fairly the waiting is shared (threads of one
    process contend for the GIL, sync workers take the listen queue in order).
    A config with a socket error, a wrong status or a database mismatch is out."""
    args = ctx["args"]
    configs = [GunicornConfig.parse(spec) for spec in args.candidates.split(",")]
    say(f"comparing gunicorn configs {', '.join(c.name for c in configs)}: "
        f"{args.candidate_rounds} rounds of {args.candidate_duration:g} s per scenario")
    servers = [serve(config) for config in configs]  # idle ones cost no CPU
    runs: dict[str, list[dict]] = {config.name: [] for config in configs}
    for round_no in range(args.candidate_rounds):
        for scenario in args.scenarios:
            for server in servers if round_no % 2 == 0 else servers[::-1]:
                runs[server.config.name].append(run_scenario(
                    ctx, server, scenario, duration=args.candidate_duration,
                    label=f"candidate, round {round_no + 1}"))
    for server in servers:
        stop(server)
    best = None
    for config in configs:
        mine = runs[config.name]
        # Out: any socket error, unexpected status or database mismatch. (An answer
        # slower than --timeout under this overload is a matter of throughput, scored.)
        clean = all(r["socket_errors"] == 0 and r["unexpected_status"] == 0
                    and r["non_2xx_3xx"] == 0 and r["check"]["ok"] for r in mine)
        medians = {s: statistics.median(r["rps"] for r in mine if r["scenario"] == s)
                   for s in args.scenarios}
        # CPU per request barely depends on the machine's other load: the efficiency.
        cpu = {s: statistics.median(r.get("gunicorn_cpu_ms_per_request") or 0
                                    for r in mine if r["scenario"] == s)
               for s in args.scenarios}
        p99 = {s: statistics.median(r["p99_ms"] or math.inf for r in mine if r["scenario"] == s)
               for s in args.scenarios}
        score = geometric_mean(list(p99.values())) if clean else math.inf
        candidates.append({"gunicorn": config.name, "score_p99_ms_geomean": round(score, 1),
                           "score_rps_geomean": round(geometric_mean(list(medians.values())), 1),
                           "median_rps": medians, "median_p99_ms": p99,
                           "median_cpu_ms_per_request": cpu, "clean": clean, "runs": mine})
        say(f"  {config.name}: median rps / p99 ms / CPU ms per request: "
            + ", ".join(f"{s} {medians[s]:,.0f} / {p99[s]:,.0f} / {cpu[s]:.1f}"
                        for s in args.scenarios)
            + f"; p99 geometric mean {score:,.0f} ms"
            + ("" if clean else " (socket errors, wrong statuses or a database mismatch: "
               "out)"))
        if best is None or score < best[0]:
            best = (score, config.name)
    say(f"chosen: {best[1]} (lowest closed-loop p99 at {args.connections} clients)")
    return best[1]


# --- Profiles --------------------------------------------------------------------------------

def profile_summary(path: Path, top: int = 25) -> list[str]:
    """Where a request's time goes (py-spy's raw stacks of every worker): the share of the
    samples inside gunicorn's handle_request whose stack holds each function below it
    (inclusive), then the innermost frames (self)."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    if not path.exists():
        return []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        at = next((i for i, f in enumerate(frames) if "handle_request" in f), None)
        if not count.isdigit() or at is None:
            continue
        n = int(count)
        total += n
        for frame in set(frames[at + 1:]):
            inclusive[frame] = inclusive.get(frame, 0) + n
        own[frames[-1]] = own.get(frames[-1], 0) + n
    out = [f"{total} samples in requests; inclusive:"]
    for frame, n in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]:
        out.append(f"{100 * n / max(total, 1):5.1f}%  {frame[:130]}")
    out.append("self:")
    for frame, n in sorted(own.items(), key=lambda kv: -kv[1])[:12]:
        out.append(f"{100 * n / max(total, 1):5.1f}%  {frame[:130]}")
    return out


# --- Output ----------------------------------------------------------------------------------

def table(results: list[dict], target: float) -> str:
    head = ("scenario", "gunicorn", "mode", "requests", "rps", "p50 ms", "p90 ms", "p99 ms",
            "max ms", "errors", "db", f"p99<{target:g}ms & 0 errors")
    rows = []
    for r in results:
        mode = r["mode"] if not r["offered_rps"] else f"paced {r['offered_rps']:,.0f}/s"
        rows.append((r["scenario"], r["gunicorn"], mode, f"{r['requests']:,}", f"{r['rps']:,.1f}",
                     f"{r['p50_ms']:.1f}", f"{r['p90_ms']:.1f}", f"{r['p99_ms']:.1f}",
                     f"{r['max_ms']:.1f}", str(r["errors"]),
                     "ok" if r["check"]["ok"] else "MISMATCH", "met" if r["met"] else "missed"))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=False)]
    line = lambda cells: " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=False))  # noqa: E731
    return "\n".join([line(head), "-+-".join("-" * w for w in widths), *map(line, rows)])


def web_fingerprint() -> dict[str, str]:
    out = {}
    for name in WEB_FILES:
        with contextlib.suppress(OSError):
            out[name] = hashlib.sha256((h.ROOT / name).read_bytes()).hexdigest()[:12]
    return out


def geometric_mean(values: list[float]) -> float:
    values = [v for v in values if v > 0]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else 0.0


# --- Main ------------------------------------------------------------------------------------

def _interrupt(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None) -> int:
    args = parse_args(argv)
    if not os.access(WRK, os.X_OK):
        print(f"web_load: {WRK} is missing. Install Debian's wrk first: "
              "apt-get install -y wrk (.ci/run does)", file=sys.stderr)
        return 2
    # Ctrl-C, and SIGINT even when started from a shell that ignores it for background jobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="webload-", dir="/tmp"))
    data_dir.mkdir(parents=True, exist_ok=True)
    logs = data_dir / "logs"
    logs.mkdir(exist_ok=True)
    say(f"data folder {data_dir}; machine {h.machine()}")
    fingerprint = web_fingerprint()
    cleanup: list = []
    status = 0
    results: list[dict] = []
    candidates: list[dict] = []
    ctx: dict = {"args": args, "profilers": []}
    try:
        redis_server = h.RedisServer(data_dir / "redis").start()
        cleanup.append(redis_server.stop)
        ctx["redis"] = redis_server
        database = h.Database(args.db, data_dir, pg_name=args.pg_name, pg_admin=args.pg_admin)
        database.create()
        if not args.keep:
            cleanup.append(database.drop)
        env = h.Environment(data_dir, database, redis_server, extra={
            # Production: the real settings module, DEBUG off, a real random key, an
            # https site behind a TLS-terminating proxy.
            "DJANGO_SETTINGS_MODULE": "newsroom.settings",
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "SITE_URL": SITE,
            "DJANGO_BEHIND_TLS_PROXY": "1",
            # Every request comes from 127.0.0.1: the sign-up limits must not answer 429
            # (they are still counted in Redis on every sign-up, as in production).
            "NEWSROOM_SIGNUP_LIMIT_PER_IP": HUGE,
            "NEWSROOM_SIGNUP_LIMIT_PER_EMAIL": HUGE,
            "LOG_LEVEL": "WARNING",
        })
        say(f"database {args.db} ({database.url}), redis {redis_server.url}")
        env.migrate()
        collect = subprocess.run([h.PYTHON, "manage.py", "collectstatic", "--noinput", "-v", "0"],
                                 cwd=h.ROOT, env=env.env(), capture_output=True, text=True)
        if collect.returncode:
            raise RuntimeError(f"collectstatic failed:\n{collect.stderr}")
        env.activate()
        started = time.perf_counter()
        category_ids, tokens = populate(args, data_dir)
        say(f"{args.subscribers:,} active subscribers and their unsubscribe links in "
            f"{time.perf_counter() - started:.1f} s ({tokens})")
        ctx.update(tokens=tokens, form=signup_form(category_ids))

        def serve(config: GunicornConfig) -> Gunicorn:
            server = Gunicorn(config, env.env(), logs, access_log=args.access_log)
            cleanup.append(server.stop)
            ctx["cookie"], ctx["csrf"] = csrf_pair(server)
            smoke(server, ctx["cookie"], ctx["csrf"], ctx["form"], tokens)
            warm_up(ctx, server)
            return server

        def stop(server: Gunicorn) -> None:
            server.stop()
            cleanup.remove(server.stop)

        chosen_spec = args.gunicorn
        if args.gunicorn == "auto":
            chosen_spec = compare_configs(ctx, serve, stop, candidates)
        config = GunicornConfig.parse(chosen_spec)
        server = serve(config)
        say(f"measuring with gunicorn {config.name}, wrk -c {args.connections} -t {args.threads}"
            f" -d {args.duration:g}s --latency")
        profiles = {}
        for scenario in args.scenarios:
            profile = None
            if args.py_spy:
                (data_dir / "profiles").mkdir(exist_ok=True)
                profile = data_dir / "profiles" / f"{scenario}.txt"
                profiles[scenario] = profile
            closed = run_scenario(ctx, server, scenario, duration=args.duration,
                                  label="final", profile=profile)
            results.append(closed)
            for rate in paced_rates(args.paced, closed):
                results.append(run_scenario(ctx, server, scenario, duration=args.duration,
                                            rate=rate, label="paced"))
        stop(server)

        # Any error in the measurement; in the comparison, what rules a configuration
        # out (its slow answers are part of what is being compared).
        failed = [r for r in results if r["errors"] or not r["check"]["ok"]] + [
            r for c in candidates for r in c["runs"]
            if r["socket_errors"] or r["unexpected_status"] or r["non_2xx_3xx"]
            or not r["check"]["ok"]]
        status = 1 if failed else 0
        print()
        print(table(results, args.target_p99_ms))
        print()
        closed_runs = [r for r in results if r["mode"] == "closed"]
        print("notes:")
        how = "as given"
        if candidates:
            how = "chosen by measurement, closed-loop p99 (geometric mean over the " \
                "scenarios of the median of the rounds): " + ", ".join(
                    f"{c['gunicorn']} {c['score_p99_ms_geomean']:,.0f} ms" for c in candidates)
        print(f" - gunicorn {config.name} ({how}); {args.db}; {args.subscribers:,} subscribers; "
              f"wrk -c {args.connections} -t {args.threads}, {args.duration:g} s per run, "
              f"timeout {args.timeout:g} s")
        print(f" - closed (wrk): each of {args.connections} clients sends its next request as "
              f"soon as it has the answer, so latency ~ {args.connections} / rps: the rps is "
              "the saturation point")
        if args.pacer == "python":
            print(f" - paced (benchmarks/web_pacer.py): {args.connections} clients, each "
                  "sending at random moments (Poisson, rate / clients each) on a new "
                  "connection; latency from when a request was due")
        else:
            print(f" - paced (wrk delay()): {args.connections} clients, each thinking a random "
                  "time (exponential, mean clients / rate) on its open connection")
        print(" - errors: socket errors + timeouts + answers other than the expected status "
              "(200; 302 for the sign-up POST); db: the database agrees with the clients' "
              "counts")
        for r in closed_runs:
            print(f" - {r['scenario']}: gunicorn CPU {r.get('gunicorn_cpu_ms_per_request', 0)} "
                  f"ms/request, wrk {r['client_cpu_s']} s, redis {r['redis_cpu_s']} s of CPU; "
                  f"load {r['load_before'][0]:.2f} before")
        missed = [r["scenario"] for r in closed_runs if not r["met"]]
        if missed:
            print(f" - target missed in the closed loop: {', '.join(missed)} (not a failure "
                  "of this command: the machine is shared; see the paced rows)")
        for scenario, path in profiles.items():
            print(f"\nprofile of {scenario} (py-spy, closed loop):")
            for line in profile_summary(path):
                print(f"  {line}")
        changed = web_fingerprint() != fingerprint
        if changed:
            print(" - WARNING: the measured source files changed during the run: run again")
        if failed:
            print(f"\nFAILED: {len(failed)} run(s) with errors or a database mismatch:")
            for r in failed:
                print(f"  {r['scenario']} ({r['gunicorn']}, {r['mode']}): errors {r['errors']} "
                      f"(statuses {r['statuses']}, sockets {r['socket_error_detail']}), "
                      f"check {r['check']}")
        if args.json:
            report = {
                "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": h.machine(),
                "config": {k: str(v) for k, v in vars(args).items()},
                "gunicorn": config.name, "candidates": candidates, "results": results,
                "source_files": fingerprint, "source_changed_during_run": changed,
            }
            args.json.write_text(json.dumps(report, indent=2, default=str))
            say(f"figures written to {args.json}")
    except KeyboardInterrupt as exc:
        say(f"interrupted ({exc}): stopping everything")
        status = 130
    finally:
        WrkRun.kill_all()
        for profiler in ctx["profilers"]:
            if profiler.poll() is None:
                profiler.kill()
        for stop_one in reversed(cleanup):
            try:
                stop_one()
            except Exception as exc:
                say(f"cleanup: {exc}")
        if not args.keep and not args.data_dir:
            shutil.rmtree(data_dir, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
