"""A local fake of Mailgun's send API, for tests and benchmarks (stdlib only).

Point anymail's Mailgun backend at it with ``ANYMAIL["MAILGUN_API_URL"] = fake.url``.
It checks what matters to a sender (basic auth, the 1,000-recipient limit, the
form fields), personalises each recipient's copy as Mailgun does
(``%recipient.KEY%`` from ``recipient-variables``, in the subject, bodies,
``h:`` headers and ``v:`` custom data) and keeps it, and answers like Mailgun.
It can also misbehave on purpose: fail the next calls, fail a seeded fraction
of calls, or hang past the client's timeout (having accepted the message or
not), so the sender's handling of each can be tested.

It imports nothing from Django or the project, so benchmark scripts can use it.
"""

from __future__ import annotations

import base64
import json
import random
import re
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser
from email.utils import getaddresses
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlsplit

MAX_RECIPIENTS = 1000  # Mailgun's limit of recipients per call
_PATH = re.compile(r"^/v3/(?P<domain>[^/]+)/messages/?$")
_VARIABLE = re.compile(r"%recipient\.([^%\s]+)%")

Form = dict[str, list[str]]


@dataclass(frozen=True)
class Delivered:
    """One recipient's copy of an accepted message, as Mailgun would deliver it."""

    call: int  # the number of the API call that carried it (1-based)
    message_id: str  # the id the call answered with: one for the whole batch
    domain: str
    sender: str
    to: str  # the bare address
    subject: str
    text: str
    html: str
    headers: dict[str, str]  # from the h: fields, personalised
    variables: dict[str, str]  # custom data (v: fields), personalised: webhook user-variables


@dataclass(frozen=True)
class Call:
    """One authorised API call as the fake saw it, accepted or not (a 401 or 404 isn't kept)."""

    number: int
    domain: str
    status: int  # what the fake answered (or meant to, for a hung call)
    recipients: int
    accepted: bool  # its messages were stored, even if the answer never reached the client
    hung: bool
    content_type: str  # form-encoded, or multipart/form-data (with attachments)
    form: Form = field(repr=False)
    connection: int = 0  # the number of the TCP connection that carried it (1-based)


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def personalise(value: str, variables: dict[str, object]) -> str:
    """Mailgun's on-the-fly templating: unknown variables are left as written."""
    def fill(match: re.Match[str]) -> str:
        key = match.group(1)
        return str(variables[key]) if key in variables else match.group(0)

    return _VARIABLE.sub(fill, value)


def parse_form(content_type: str, body: bytes) -> Form:
    """Form fields of a form-encoded or multipart/form-data body, repeated keys kept."""
    form: Form = {}
    if content_type.lower().startswith("multipart/form-data"):
        head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
        message = BytesParser(policy=policy.HTTP).parsebytes(head + body)
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if not name or part.get_filename():  # attachments are not kept
                continue
            payload = part.get_payload(decode=True) or b""
            form.setdefault(str(name), []).append(
                payload.decode(part.get_content_charset() or "utf-8"))
    else:
        for key, value in parse_qsl(body.decode("utf-8"), keep_blank_values=True):
            form.setdefault(key, []).append(value)
    return form


class FakeMailgun:
    """Mailgun's ``POST /v3/<domain>/messages`` on 127.0.0.1, in a background thread.

    Knobs (each thread-safe, usable while it runs): ``fail_next``,
    ``fail_randomly``, ``hang_next``, ``reset``. Results: ``received`` (one
    Delivered per recipient accepted), ``calls`` (each with the TCP connection
    that carried it), ``call_count`` and ``connections_closed``.
    """

    def __init__(self, port: int = 0, *, api_key: str | None = "key",
                 max_recipients: int = MAX_RECIPIENTS) -> None:
        self.api_key = api_key  # None accepts any key
        self.max_recipients = max_recipients
        self.received: list[Delivered] = []
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._fail: list[tuple[int, str]] = []
        # Addresses Mailgun would call invalid: a call naming one fails whole (400).
        self.invalid_addresses: set[str] = set()
        self._random: tuple[float, int, random.Random] | None = None
        self._hang: list[tuple[float, bool]] = []
        self._connections = 0
        self._closed: set[int] = set()
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.fake = self
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """The value for ANYMAIL["MAILGUN_API_URL"]."""
        return f"http://127.0.0.1:{self.port}/v3"

    def start(self) -> FakeMailgun:
        self._thread = threading.Thread(  # a short poll: stop() returns at once
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
            name=f"fake-mailgun-{self.port}", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes hung calls
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeMailgun:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- knobs -------------------------------------------------------------------------

    def fail_next(self, count: int = 1, status: int = 503,
                  message: str = "Service Unavailable") -> None:
        """Answer the next `count` calls with `status`, accepting nothing."""
        with self._lock:
            self._fail += [(status, message)] * count

    def fail_randomly(self, fraction: float, *, status: int = 503, seed: int = 0) -> None:
        """Fail each call with probability `fraction` (reproducible for a seed); 0 stops it."""
        with self._lock:
            self._random = (fraction, status, random.Random(seed)) if fraction > 0 else None

    def hang_next(self, count: int = 1, *, seconds: float = 5.0, accept: bool = False) -> None:
        """Make the next `count` calls wait `seconds` before answering.

        With `accept`, their messages are stored first (the ESP took them, the
        answer is lost to a client timeout: a retry duplicates them); without,
        nothing is stored and the late answer is a 504.
        """
        with self._lock:
            self._hang += [(seconds, accept)] * count

    def reset(self) -> None:
        """Forget what was received and every pending fault."""
        with self._lock:
            self.received.clear()
            self.calls.clear()
            self._fail.clear()
            self._hang.clear()
            self._random = None

    # --- results -----------------------------------------------------------------------

    @property
    def call_count(self) -> int:
        with self._lock:
            return len(self.calls)

    @property
    def connections_closed(self) -> set[int]:
        """The numbers of the TCP connections the client has closed."""
        with self._lock:
            return set(self._closed)

    def to(self, address: str) -> list[Delivered]:
        """The copies received for one address."""
        with self._lock:
            return [d for d in self.received if d.to.lower() == address.lower()]

    # --- the API -----------------------------------------------------------------------

    def connection_opened(self) -> int:
        with self._lock:
            self._connections += 1
            return self._connections

    def connection_closed(self, number: int) -> None:
        with self._lock:
            self._closed.add(number)

    def handle(self, path: str, authorization: str, content_type: str,
               body: bytes, connection: int = 0) -> tuple[int, dict[str, str]]:
        """One API call: (HTTP status, JSON body)."""
        match = _PATH.match(urlsplit(path).path)
        if match is None:
            return 404, {"message": "Not found"}
        if not self._authorised(authorization):
            return 401, {"message": "Invalid private key"}
        domain = unquote(match["domain"])
        try:
            form = parse_form(content_type, body)
        except (ValueError, UnicodeDecodeError) as exc:
            return 400, {"message": f"malformed request: {exc}"}
        recipients = [addr for _name, addr in getaddresses(form.get("to", [])) if addr]

        message_id = ""
        with self._lock:
            number = len(self.calls) + 1
            hang = self._hang.pop(0) if self._hang else None
            fail = self._fail.pop(0) if self._fail and hang is None else None
            if fail is None and self.invalid_addresses.intersection(recipients):
                fail = (400, "'to' parameter is not a valid address. please check documentation")
            if fail is None and hang is None and self._random is not None:
                fraction, status, rng = self._random
                if rng.random() < fraction:
                    fail = (status, "Random failure")
            accepted = fail is None and (hang is None or hang[1])
            try:
                if accepted:
                    message_id = self._accept(number, domain, form, recipients)
            except ApiError as exc:
                accepted, fail = False, (exc.status, exc.message)
            status = 200 if accepted else (fail[0] if fail else 504)
            self.calls.append(Call(number, domain, status, len(recipients), accepted,
                                   hang is not None, content_type.split(";")[0], form,
                                   connection))
        if hang is not None:
            self._stopping.wait(hang[0])
        if status == 200:
            return 200, {"id": message_id, "message": "Queued. Thank you."}
        return status, {"message": fail[1] if fail else "Gateway Timeout"}

    def _authorised(self, authorization: str) -> bool:
        if self.api_key is None:
            return True
        scheme, _, encoded = authorization.partition(" ")
        try:
            credentials = base64.b64decode(encoded).decode()
        except ValueError:
            return False
        return scheme.lower() == "basic" and credentials == f"api:{self.api_key}"

    def _accept(self, number: int, domain: str, form: Form, recipients: list[str]) -> str:
        """Validate and store a call's messages, as Mailgun would; the caller holds the lock."""
        for name in ("from", "to"):
            if not form.get(name):
                raise ApiError(400, f"'{name}' parameter is missing")
        if len(recipients) > self.max_recipients:
            raise ApiError(400, f"'to' parameter can't have more than "
                                f"{self.max_recipients} recipients")
        if not form.get("text") and not form.get("html") and not form.get("template"):
            raise ApiError(400, "Need at least one of 'text' or 'html' parameters specified")
        try:
            variables = json.loads(form.get("recipient-variables", ["{}"])[-1])
        except ValueError as exc:
            raise ApiError(400, f"recipient-variables: {exc}") from exc
        if not isinstance(variables, dict):
            raise ApiError(400, "recipient-variables must be a JSON object")

        def one(name: str) -> str:
            return form.get(name, [""])[-1]

        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
        message_id = f"<{stamp}.{number}.{uuid.uuid4().hex[:12]}@{domain}>"
        for address in recipients:
            mine = variables.get(address, {})
            mine = mine if isinstance(mine, dict) else {}

            def fill(value: str, mine: dict[str, object] = mine) -> str:
                return personalise(value, mine)

            self.received.append(Delivered(
                call=number, message_id=message_id, domain=domain, sender=one("from"),
                to=address, subject=fill(one("subject")), text=fill(one("text")),
                html=fill(one("html")),
                headers={k[2:]: fill(v[-1]) for k, v in form.items() if k.startswith("h:")},
                variables={k[2:]: fill(v[-1]) for k, v in form.items() if k.startswith("v:")},
            ))
        return message_id


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeMailgun

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that gave up on a hung call closed its socket: not an error."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as requests' sessions use it
    server: _Server

    def setup(self) -> None:
        super().setup()
        # The answer goes out in one write, without Nagle's delay: on a kept-alive
        # connection, headers and body written apart wait ~40 ms for the client's
        # delayed ACK (as benchmarks/esp_fake.py explains).
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connection_number = self.server.fake.connection_opened()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake.connection_closed(self.connection_number)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        status, payload = self.server.fake.handle(
            self.path, self.headers.get("Authorization", ""),
            self.headers.get("Content-Type", ""), body, self.connection_number,
        )
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self._headers_buffer.append(b"\r\n" + data)  # end_headers() and the body at once
        self.flush_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: benchmarks make many thousands of calls."""


def send_editions_through(settings, fake: FakeMailgun) -> None:
    """Editions go out through anymail's real Mailgun backend, to `fake`, unthrottled."""
    settings.EMAIL_BACKEND = "anymail.backends.mailgun.EmailBackend"
    settings.ANYMAIL = {
        "MAILGUN_API_KEY": "key", "MAILGUN_SENDER_DOMAIN": "mg.example.com",
        "MAILGUN_API_URL": fake.url, "REQUESTS_TIMEOUT": 2,
    }
    settings.EMAIL_TRANSPORT = "mailgun"
    settings.NEWSROOM_SEND_RATE = 0
