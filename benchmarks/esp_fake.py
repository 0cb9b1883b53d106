# ruff: noqa: S311
"""A fast fake of Mailgun's messages API that only counts, for benchmarks and drills.

tests/fake_esp.py keeps every personalised copy (subject, bodies, headers) in
memory, which is what a test wants and what a million-recipient benchmark
cannot afford (gigabytes, and a regex pass over each body per recipient). This
one answers the same API the same way (basic auth, at most 1,000 recipients per
call, `recipient-variables` must be a JSON object) but keeps only, per
recipient address, how many copies were accepted, and whether each recipient
had its own variables (the personalisation reached the ESP).

Run it as its own process, so it never shares a GIL with what it measures:

    python benchmarks/esp_fake.py --port 0 --port-file /tmp/x/port

Control endpoints (JSON):
    GET  /_bench/stats   calls, recipients, first/last accept time (time.time())
    GET  /_bench/counts  {address: copies accepted}
    POST /_bench/reset   forget everything, faults included
    POST /_bench/faults  {"fail_fraction": 0.2, "fail_status": 503,
                          "hang_fraction": 0.05, "hang_seconds": 8,
                          "hang_accepts": false, "seed": 1}

A hung call waits `hang_seconds` before answering (longer than the client's
timeout, so the client gives up); with `hang_accepts` its recipients are
counted first (the ESP took them, the answer was lost), otherwise nothing is
kept and the late answer is a 504, like tests/fake_esp.py's `hang_next`.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import re
import socket
import sys
import threading
import time
import uuid
from collections import Counter
from email.utils import getaddresses
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, unquote

MAX_RECIPIENTS = 1000
_PATH = re.compile(r"^/v3/(?P<domain>[^/]+)/messages/?$")


class State:
    def __init__(self, api_key: str | None) -> None:
        self.api_key = api_key
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.reset()

    def reset(self) -> None:
        with getattr(self, "lock", threading.Lock()):
            self.counts: Counter[str] = Counter()
            self.calls = 0
            self.accepted_calls = 0
            self.failed_calls = 0
            self.hung_calls = 0
            self.hung_accepted_recipients = 0
            self.recipients = 0
            self.unpersonalised = 0
            self.first: float | None = None
            self.last: float | None = None
            self.busy = 0.0  # seconds spent handling calls (all threads)
            self.fail_fraction = 0.0
            self.fail_status = 503
            self.hang_fraction = 0.0
            self.hang_seconds = 5.0
            self.hang_accepts = False
            self.rng = random.Random(0)

    def stats(self) -> dict:
        with self.lock:
            return {
                "calls": self.calls, "accepted_calls": self.accepted_calls,
                "failed_calls": self.failed_calls, "hung_calls": self.hung_calls,
                "hung_accepted_recipients": self.hung_accepted_recipients,
                "recipients": self.recipients, "distinct": len(self.counts),
                "unpersonalised": self.unpersonalised, "first": self.first,
                "last": self.last, "busy_seconds": round(self.busy, 3),
            }


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    state: State

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def setup(self) -> None:
        super().setup()
        # The answer goes out in one write, and without Nagle's delay: headers and body
        # written separately on a kept-alive connection wait ~40 ms for the client's
        # delayed ACK (BaseHTTPRequestHandler's default, and tests/fake_esp.py's).
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format, *args) -> None:
        pass

    def _reply(self, status: int, payload) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self._headers_buffer.append(b"\r\n" + data)  # end_headers() and the body at once
        self.flush_headers()

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self) -> None:
        state = self.server.state
        if self.path == "/_bench/stats":
            return self._reply(200, state.stats())
        if self.path == "/_bench/counts":
            with state.lock:
                counts = dict(state.counts)
            return self._reply(200, counts)
        return self._reply(404, {"message": "Not found"})

    def do_POST(self) -> None:
        state = self.server.state
        body = self._body()
        if self.path == "/_bench/reset":
            state.reset()
            return self._reply(200, {"ok": True})
        if self.path == "/_bench/faults":
            knobs = json.loads(body or b"{}")
            with state.lock:
                state.fail_fraction = float(knobs.get("fail_fraction", 0))
                state.fail_status = int(knobs.get("fail_status", 503))
                state.hang_fraction = float(knobs.get("hang_fraction", 0))
                state.hang_seconds = float(knobs.get("hang_seconds", 5))
                state.hang_accepts = bool(knobs.get("hang_accepts", False))
                state.rng = random.Random(int(knobs.get("seed", 0)))
            return self._reply(200, {"ok": True})
        started = time.perf_counter()
        status, payload, hang = self._messages(state, body)
        with state.lock:
            state.busy += time.perf_counter() - started
        if hang:
            state.stopping.wait(hang)
        return self._reply(status, payload)

    def _messages(self, state: State, body: bytes) -> tuple[int, dict, float]:
        match = _PATH.match(self.path.split("?", 1)[0])
        if match is None:
            return 404, {"message": "Not found"}, 0
        if state.api_key is not None:
            scheme, _, encoded = self.headers.get("Authorization", "").partition(" ")
            try:
                credentials = base64.b64decode(encoded).decode()
            except ValueError:
                credentials = ""
            if scheme.lower() != "basic" or credentials != f"api:{state.api_key}":
                return 401, {"message": "Invalid private key"}, 0
        if not self.headers.get("Content-Type", "").startswith(
                "application/x-www-form-urlencoded"):
            return 400, {"message": "this fake takes form-encoded calls only"}, 0
        form: dict[str, list[str]] = {}
        for key, value in parse_qsl(body.decode("utf-8"), keep_blank_values=True):
            form.setdefault(key, []).append(value)
        recipients = [addr.lower() for _n, addr in getaddresses(form.get("to", [])) if addr]
        if not form.get("from") or not recipients:
            return 400, {"message": "'from' and 'to' are required"}, 0
        if len(recipients) > MAX_RECIPIENTS:
            return 400, {"message": f"'to' parameter can't have more than "
                                    f"{MAX_RECIPIENTS} recipients"}, 0
        if not form.get("text") and not form.get("html"):
            return 400, {"message": "Need at least one of 'text' or 'html' parameters"}, 0
        try:
            variables = json.loads(form.get("recipient-variables", ["{}"])[-1])
        except ValueError as exc:
            return 400, {"message": f"recipient-variables: {exc}"}, 0
        if not isinstance(variables, dict):
            return 400, {"message": "recipient-variables must be a JSON object"}, 0
        lowered = {k.lower() for k in variables}
        with state.lock:
            state.calls += 1
            number = state.calls
            if state.fail_fraction and state.rng.random() < state.fail_fraction:
                state.failed_calls += 1
                return state.fail_status, {"message": "Random failure"}, 0
            hang = state.hang_fraction and state.rng.random() < state.hang_fraction
            if hang:
                state.hung_calls += 1
                if not state.hang_accepts:
                    return 504, {"message": "Gateway Timeout"}, state.hang_seconds
                state.hung_accepted_recipients += len(recipients)
            state.accepted_calls += 1
            state.recipients += len(recipients)
            state.counts.update(recipients)
            state.unpersonalised += sum(1 for r in recipients if r not in lowered)
            now = time.time()
            state.first = state.first or now
            state.last = now
        domain = unquote(match["domain"])
        message_id = f"<{time.strftime('%Y%m%d%H%M%S')}.{number}.{uuid.uuid4().hex[:12]}@{domain}>"
        return 200, {"id": message_id, "message": "Queued. Thank you."}, (
            state.hang_seconds if hang else 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", type=Path)
    parser.add_argument("--api-key", default="key")
    args = parser.parse_args()
    server = Server(("127.0.0.1", args.port), Handler)
    server.state = State(args.api_key)
    if args.port_file:
        args.port_file.write_text(str(server.server_address[1]))
    print(f"fake Mailgun on http://127.0.0.1:{server.server_address[1]}/v3", flush=True)
    try:
        server.serve_forever(poll_interval=0.05)
    except KeyboardInterrupt:
        pass
    finally:
        server.state.stopping.set()
        server.server_close()


if __name__ == "__main__":
    main()
