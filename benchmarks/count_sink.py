"""An SMTP sink (aiosmtpd) that counts copies per recipient, for exact checks.

Postfix's smtp-sink is far faster but only counts messages; this one knows
who got how many copies, which a fault drill needs. It advertises PIPELINING
(aiosmtpd reads pipelined commands in order), keeps no message bodies, and runs
as its own process:

    python benchmarks/count_sink.py --port-file /tmp/x/ports

which writes "<smtp port> <control port>". Control endpoints (JSON, HTTP):
    GET  /stats    messages, distinct, first/last accept time (time.time())
    GET  /counts   {address: copies}
    POST /reset
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from aiosmtpd.controller import Controller


class CountingHandler:
    def __init__(self, delay: float = 0.0) -> None:
        self.lock = threading.Lock()
        self.delay = delay
        self.reset()

    def reset(self) -> None:
        with getattr(self, "lock", threading.Lock()):
            self.counts: Counter[str] = Counter()
            self.messages = 0
            self.first: float | None = None
            self.last: float | None = None

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            await asyncio.sleep(self.delay)
        now = time.time()
        with self.lock:
            self.counts.update(r.lower() for r in envelope.rcpt_tos)
            self.messages += 1
            self.first = self.first or now
            self.last = now
        return "250 2.0.0 Ok: queued"

    def stats(self) -> dict:
        with self.lock:
            return {"messages": self.messages, "distinct": len(self.counts),
                    "first": self.first, "last": self.last}


def control_server(handler: CountingHandler) -> ThreadingHTTPServer:
    class Control(BaseHTTPRequestHandler):
        def log_message(self, format, *args) -> None:
            pass

        def _reply(self, payload) -> None:
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/counts":
                with handler.lock:
                    return self._reply(dict(handler.counts))
            return self._reply(handler.stats())

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            handler.reset()
            self._reply({"ok": True})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Control)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", type=Path, required=True)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds per message")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (0.0.0.0 inside a drill's own namespace)")
    args = parser.parse_args()
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    handler = CountingHandler(args.delay)
    port = args.port
    if not port:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
    controller = Controller(handler, hostname=args.host, port=port,
                            data_size_limit=10_000_000)
    controller.start()
    control = control_server(handler)
    args.port_file.write_text(f"{port} {control.server_address[1]}")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
