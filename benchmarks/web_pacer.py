"""Paced clients for benchmarks/web_load.py: the latency of N clients at a set pace.

Each of N clients sends requests at random moments (a Poisson process of rate
rate / N): when one is due it opens a connection, sends the request, reads the
answer and closes. Latency counts from the moment a request was due (if the
client was still waiting for its previous answer, that wait is included, as
wrk2 does). A request due before the end of the run is finished.
A client connects only when it has something to send, as a browser, a mail
provider's one-click POST or a buffering proxy in front of gunicorn does.

Why not wrk's delay(): wrk opens every connection first and waits the think time
on the open connection. gunicorn's sync workers, and its gthread workers for a new
connection, dedicate a worker (thread) to a connection until its request arrives,
so 100 clients thinking on open connections stall the server (GET /healthz at
30 requests/s: p50 1.9 s). That is the slow-client problem a buffering proxy solves,
not the latency at a pace. (`web_load.py --pacer wrk` still runs it that way.)

asyncio and the standard library only: at the paced rates (tens to a few hundred
requests per second) it costs a few percent of a core, reported as client CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import resource
import time
from collections.abc import Callable

RequestMaker = Callable[[], bytes | None]  # the next request's bytes; None: nothing left


async def _exchange(host: str, port: int, data: bytes, timeout: float
                    ) -> tuple[int | None, float, str | None, int]:
    """One request on a new connection: (status, seconds, error kind, bytes read)."""
    started = time.perf_counter()
    writer = None
    size = 0
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(data)
            status_line = await reader.readline()
            size += len(status_line)
            status = int(status_line.split(b" ", 2)[1])
            length = None
            while True:
                line = await reader.readline()
                size += len(line)
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            body = await (reader.readexactly(length) if length is not None else reader.read())
            size += len(body)
    except TimeoutError:
        return None, time.perf_counter() - started, "timeout", size
    except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
        return None, time.perf_counter() - started, "read", size
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
    return status, time.perf_counter() - started, None, size


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))]


def run(*, host: str, port: int, clients: int, rate: float, duration: float, timeout: float,
        make_request: RequestMaker, seed: int = 1) -> dict:
    """Run the paced clients; the figures in the shape of web_load.wrk_figures()."""
    think = clients / rate
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors = {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}
    counts = {"sent": 0, "bytes": 0, "exhausted": 0, "late": 0}

    async def client(index: int, started: float, deadline: float) -> None:
        rng = random.Random(seed * 100_003 + index)  # noqa: S311 - think times
        due = previous_answered = started
        while True:
            # The next request is due a random interval after the previous one was due
            # (a Poisson process per client), whatever the answers took: the offered
            # rate does not drop when the server slows down.
            due += rng.expovariate(1 / think)
            if due >= deadline:
                return
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            data = make_request()
            if data is None:
                counts["exhausted"] = 1
                return
            counts["sent"] += 1
            # The previous answer came after this request was due: the client waited.
            held = max(0.0, previous_answered - due)
            counts["late"] += held > 0
            status, seconds, error, size = await _exchange(host, port, data, timeout)
            previous_answered = time.monotonic()
            counts["bytes"] += size
            if error:
                errors[error] += 1
                continue
            # From when it was due, as wrk2 measures: a client held up by a slow answer
            # waits for its next request too (no coordinated omission).
            latencies.append(seconds + held)
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            if status > 399:
                errors["status"] += 1

    async def main() -> float:
        started = time.monotonic()
        deadline = started + duration
        await asyncio.gather(*(client(i, started, deadline) for i in range(clients)))
        return time.monotonic() - started

    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    elapsed = asyncio.run(main())
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    latencies.sort()
    ms = lambda s: None if s is None else round(s * 1000, 2)  # noqa: E731
    answered = len(latencies)
    return {
        "requests": answered, "seconds": round(elapsed, 2),
        # Requests answered per second of the run (its last requests may end after it).
        "rps": round(answered / duration, 1),
        "p50_ms": ms(percentile(latencies, 0.50)), "p75_ms": ms(percentile(latencies, 0.75)),
        "p90_ms": ms(percentile(latencies, 0.90)), "p99_ms": ms(percentile(latencies, 0.99)),
        "p999_ms": ms(percentile(latencies, 0.999)),
        "max_ms": ms(latencies[-1] if latencies else None),
        "mean_ms": ms(sum(latencies) / answered if answered else None),
        "min_ms": ms(latencies[0] if latencies else None),
        "statuses": statuses, "sent": counts["sent"], "list_exhausted": bool(counts["exhausted"]),
        "socket_error_detail": errors, "bytes": counts["bytes"], "late_sends": counts["late"],
        "client_cpu_s": round((usage1.ru_utime + usage1.ru_stime)
                              - (usage0.ru_utime + usage0.ru_stime), 2),
        "client": "benchmarks/web_pacer.py (asyncio, a new connection per request)",
    }
