"""Fake Meta Graph and OpenAI HTTP servers on loopback, shared by the benchmarks and the fault tests.

Both are real HTTP servers (ThreadingHTTPServer) with configurable latency and error rates, so the worker
under test goes through its real clients: `requests` for Graph, the OpenAI SDK for the model. Given a
certificate (`self_signed_certificate`), a fake speaks HTTPS instead: a client that does not trust the
certificate fails the TLS handshake, as it would behind an intercepting proxy.

    python -m bench.fakes --graph-port 8701 --openai-port 8702 --graph-latency 0.05 --openai-latency 0.2

The fake Graph also serves Meta's media API (`add_media`, then `GET /{version}/{media-id}` and the download URL,
bearer token checked; `--media-bytes-per-second` paces downloads), and the fake OpenAI `/audio/transcriptions`
(multipart uploads; the transcript is the audio's bytes read as UTF-8 unless `transcript` is set).
"""

from __future__ import annotations

import argparse
import contextlib
import email.parser
import email.policy
import hashlib
import json
import os
import random
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self


@dataclass
class FaultPlan:
    """What a fake answers: a latency, a random error rate, and scripted errors served first, in order."""

    latency: float = 0.0
    error_rate: float = 0.0
    error_status: int = 500
    error_body: dict[str, Any] | None = None
    # (status, body) or (status, body, headers), e.g. a 429 with {"retry-after": "7"}.
    scripted: list[tuple[Any, ...]] = field(default_factory=list)
    # Close the connection without answering (a lost response) for this many requests, after handling them.
    drop_responses: int = 0
    # HTTPS fakes only: answer with a broken TLS record (the request arrived, TLS broke on the way back) for
    # this many requests, after handling them.
    corrupt_responses: int = 0


@dataclass(frozen=True)
class Reply:
    """An answer other than a 200 JSON body: any status, any bytes (a media download, an HTML 404)."""

    status: int
    body: bytes | dict[str, Any]
    content_type: str = "application/json"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client killed mid-request (the crash tests do it on purpose), or one refusing our certificate, is
        # not the fake's error.
        if isinstance(sys.exc_info()[1], ConnectionError | ssl.SSLError):
            return
        super().handle_error(request, client_address)


class FakeServer:
    """Base: starts on 127.0.0.1 (port 0 picks a free one), records requests, runs until `stop()`."""

    def __init__(
        self,
        port: int = 0,
        plan: FaultPlan | None = None,
        seed: int = 1,
        *,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.plan = plan or FaultPlan()
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        # Headers of the scripted answer being written, by handler thread.
        self.extra_headers: dict[int, dict[str, str]] = {}
        # Requests that arrived, including those still waiting out the latency (`requests` has finished ones).
        self.arrived = 0
        self.rng = random.Random(seed)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes; without TCP_NODELAY, Nagle's algorithm and the client's
            # delayed ACK hold the body back by up to 40 ms, a latency no real API adds.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                content_type = self.headers.get("Content-Type") or ""
                body: dict[str, Any]
                if content_type.startswith("multipart/form-data"):
                    body = parse_multipart(content_type, raw)
                else:
                    try:
                        body = json.loads(raw or b"{}")
                    except ValueError:
                        body = {}
                self._answer(*outer.handle(self.path, dict(self.headers), body, method="POST"))

            def do_GET(self) -> None:
                self._answer(*outer.handle(self.path, dict(self.headers), {}, method="GET"))

            def _answer(self, status: int, answer: Any, fate: str) -> None:
                if fate != "answer":
                    self.close_connection = True
                    if fate == "corrupt":
                        self._write_broken_tls_record()
                    return
                content_type = "application/json"
                if isinstance(answer, Reply):
                    content_type = answer.content_type
                    answer = answer.body
                data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
                self.send_response(status)
                for name, value in outer.extra_headers.pop(threading.get_ident(), {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                outer.write_body(self.wfile, data)

            def _write_broken_tls_record(self) -> None:
                # An application-data record whose MAC cannot check out, written past the TLS layer.
                with socket.socket(fileno=os.dup(self.connection.fileno())) as raw:
                    raw.sendall(b"\x17\x03\x03\x00\x20" + bytes(32))

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = _Server(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certfile=tls[0], keyfile=tls[1])
            # The handshake happens on the handler's first read, in its own thread, not in the accept loop.
            self.server.socket = context.wrap_socket(
                self.server.socket, server_side=True, do_handshake_on_connect=False
            )
            self.url = f"https://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def reset(self, plan: FaultPlan | None = None) -> None:
        """Forget every recorded request and answer by `plan` from now on (between benchmark cases)."""
        with self.lock:
            self.requests.clear()
            self.arrived = 0
            self.plan = plan or FaultPlan()

    def timeline(self) -> tuple[float, float] | None:
        """When the first request arrived and when the last answer went out (arrival + latency)."""
        with self.lock:
            times = [r["arrived"] for r in self.requests]
        if not times:
            return None
        return min(times), max(times) + self.plan.latency

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def write_body(self, stream: Any, data: bytes) -> None:
        """Write an answer's body (subclasses may pace it)."""
        stream.write(data)

    def handle(
        self, path: str, headers: dict[str, str], body: dict[str, Any], *, method: str = "POST"
    ) -> tuple[int, Any, str]:
        """Record the request and decide the answer: (status, body, "answer" | "drop" | "corrupt")."""
        arrived = time.time()
        with self.lock:
            self.arrived += 1
        if self.plan.latency:
            time.sleep(self.plan.latency)
        with self.lock:
            scripted = self.plan.scripted.pop(0) if self.plan.scripted else None
            random_error = scripted is None and self.rng.random() < self.plan.error_rate
            fate = "answer"
            if scripted is None and not random_error and self.plan.drop_responses > 0:
                self.plan.drop_responses -= 1
                fate = "drop"
            elif scripted is None and not random_error and self.plan.corrupt_responses > 0:
                self.plan.corrupt_responses -= 1
                fate = "corrupt"
        if scripted is not None:
            status, answer = scripted[0], scripted[1]
            if len(scripted) > 2:
                self.extra_headers[threading.get_ident()] = dict(scripted[2])
        elif random_error:
            status, answer = self.plan.error_status, self.plan.error_body or self.default_error()
        else:
            status, answer = 200, self.route(method, path, headers, body)
            if isinstance(answer, Reply) and answer.content_type == "application/json":
                status, answer = answer.status, answer.body
            elif isinstance(answer, Reply):
                status = answer.status
        with self.lock:
            self.requests.append(
                {
                    "method": method,
                    "path": path,
                    "headers": headers,
                    "body": body,
                    "arrived": arrived,
                    "status": status,
                    "dropped": fate == "drop",
                    "corrupted": fate == "corrupt",
                    "answer": answer,
                }
            )
        return status, answer, fate

    def route(self, method: str, path: str, headers: dict[str, str], body: dict[str, Any]) -> Any:
        """The answer when no fault is planned: `success(body)`, unless a subclass serves more endpoints."""
        return self.success(body)

    def success(self, body: dict[str, Any]) -> Any:
        raise NotImplementedError

    def default_error(self) -> dict[str, Any]:
        raise NotImplementedError


def parse_multipart(content_type: str, raw: bytes) -> dict[str, Any]:
    """A multipart/form-data body as {field: text} plus, for file fields, {field: {"filename", "content_type",
    "data"}} (bytes): what OpenAI's SDK uploads to `/audio/transcriptions`."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + raw
    )
    fields: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        decoded = part.get_payload(decode=True)
        payload = decoded if isinstance(decoded, bytes) else b""
        filename = part.get_filename()
        if filename is not None:
            fields[str(name)] = {
                "filename": filename,
                "content_type": part.get_content_type(),
                "data": payload,
            }
        else:
            fields[str(name)] = payload.decode("utf-8", "replace")
    return fields


@dataclass
class FakeMedia:
    """One media file the fake Graph holds, as Meta would for an inbound voice note or image."""

    data: bytes
    mime_type: str
    # What the metadata answer claims (tests set them wrong on purpose); None: the true values.
    sha256: str | None = None
    file_size: int | None = None
    # The download URL answers 404, as Meta's does once its ~5 minutes are up.
    url_expired: bool = False


class FakeGraph(FakeServer):
    """`POST /{version}/{phone-number-id}/messages` answering like Meta's Cloud API, and the media API:
    `GET /{version}/{media-id}` (metadata with a download URL) and `GET` of that URL (the bytes), both with the
    bearer token checked. `download_bytes_per_second` paces downloads like a real network (0: as fast as
    loopback goes). Read receipts with the typing indicator (`{"status": "read", ...}`) answer
    `{"success": true}`; `GET /{version}/{waba-id}/message_templates?name=…` lists `templates` (set it to
    script a status).
    """

    def __init__(self, *args: Any, access_token: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # None accepts any bearer token; a value requires exactly that one (as Meta checks ours).
        self.access_token = access_token
        self.media: dict[str, FakeMedia] = {}
        self.download_bytes_per_second = 0.0
        self.templates: list[dict[str, Any]] = [
            {
                "name": "reply_follow_up",
                "language": "en_US",
                "status": "APPROVED",
                "category": "UTILITY",
                "id": "1",
            }
        ]

    def add_media(self, data: bytes, mime_type: str, *, media_id: str | None = None, **options: Any) -> str:
        """Hold a media file under `media_id` (a fresh numeric one by default); returns the id."""
        media_id = media_id or str(self.rng.randrange(10**14, 10**15))
        with self.lock:
            self.media[media_id] = FakeMedia(data=data, mime_type=mime_type, **options)
        return media_id

    def route(self, method: str, path: str, headers: dict[str, str], body: dict[str, Any]) -> Any:
        if method != "GET":
            return self.success(body)
        bearer = headers.get("Authorization") or headers.get("authorization") or ""
        token = bearer.removeprefix("Bearer ")
        if (
            not bearer.startswith("Bearer ")
            or not token
            or (self.access_token and token != self.access_token)
        ):
            status, error = graph_error(
                190, "Invalid OAuth access token - Cannot parse access token", http_status=401
            )
            return Reply(status, error)
        url = urllib.parse.urlsplit(path)
        if url.path.endswith("/message_templates"):
            name = urllib.parse.parse_qs(url.query).get("name", [""])[0]
            return {"data": [t for t in self.templates if t.get("name", "").startswith(name)], "paging": {}}
        parts = path.split("?")[0].strip("/").split("/")
        if len(parts) == 2 and parts[0] == "media-download":
            return self._download(parts[1])
        if len(parts) == 2:
            return self._metadata(parts[1])
        return Reply(*graph_error(100, "Unknown path components", http_status=400))

    def _metadata(self, media_id: str) -> Any:
        with self.lock:
            media = self.media.get(media_id)
        if media is None:
            # What Meta answers for an unknown or expired media id.
            return Reply(
                *graph_error(
                    100,
                    f"Unsupported get request. Object with ID '{media_id}' does not exist, cannot be loaded due "
                    "to missing permissions, or does not support this operation.",
                    http_status=400,
                )
            )
        return {
            "messaging_product": "whatsapp",
            "url": f"{self.url}/media-download/{media_id}?ext=1&hash=fake",
            "mime_type": media.mime_type,
            "sha256": media.sha256 if media.sha256 is not None else hashlib.sha256(media.data).hexdigest(),
            "file_size": str(media.file_size if media.file_size is not None else len(media.data)),
            "id": media_id,
        }

    def _download(self, media_id: str) -> Reply:
        with self.lock:
            media = self.media.get(media_id)
        if media is None or media.url_expired:
            return Reply(404, b"<html><body>Not Found</body></html>", "text/html")
        return Reply(200, media.data, media.mime_type)

    def write_body(self, stream: Any, data: bytes) -> None:
        rate = self.download_bytes_per_second
        if rate <= 0 or len(data) < 4096:
            stream.write(data)
            return
        chunk = max(4096, int(rate / 20))
        for start in range(0, len(data), chunk):
            stream.write(data[start : start + chunk])
            time.sleep(chunk / rate)

    def media_requests(self) -> list[dict[str, Any]]:
        """The media API's requests (metadata and downloads), in arrival order."""
        with self.lock:
            return [r for r in self.requests if r["method"] == "GET"]

    def success(self, body: dict[str, Any]) -> Any:
        if body.get("status") == "read":
            return {"success": True}
        message: dict[str, Any] = {"id": f"wamid.fake-{uuid.uuid4().hex}"}
        if body.get("type") == "template":
            message["message_status"] = "accepted"
        to = str(body.get("to", "")).lstrip("+")
        return {
            "messaging_product": "whatsapp",
            "contacts": [{"input": body.get("to"), "wa_id": to}],
            "messages": [message],
        }

    def default_error(self) -> dict[str, Any]:
        return graph_error(131000, "Something went wrong", http_status=500)[1]

    # What the tests and benchmarks count
    def accepted(self) -> list[dict[str, Any]]:
        """Sends that Meta accepted (status 200), dropped or corrupted answers included: they reached Meta.
        Read receipts, media and template requests are not sends (`read_receipts`, `media_requests`)."""
        with self.lock:
            return [r for r in self.requests if r["status"] == 200 and _is_send(r)]

    def read_receipts(self) -> list[dict[str, Any]]:
        """Every read receipt / typing indicator request, whatever the answer."""
        with self.lock:
            return [r for r in self.requests if r["method"] == "POST" and r["body"].get("status") == "read"]

    def sends_per_job(self) -> Counter[str]:
        """How many accepted sends each job (its biz_opaque_callback_data key) got."""
        return Counter(
            str(r["body"].get("biz_opaque_callback_data", "")).split(":")[0] for r in self.accepted()
        )

    def max_in_any_window(self, seconds: float = 1.0) -> int:
        """The most sends that arrived within any `seconds`-long window (read receipts are not messages)."""
        with self.lock:
            times = sorted(r["arrived"] for r in self.requests if _is_send(r))
        best, start = 0, 0
        for end, t in enumerate(times):
            while t - times[start] >= seconds:
                start += 1
            best = max(best, end - start + 1)
        return best


def _is_send(request: dict[str, Any]) -> bool:
    return request["method"] == "POST" and request["body"].get("status") != "read"


def graph_error(
    code: int, message: str, *, http_status: int = 400, details: str = ""
) -> tuple[int, dict[str, Any]]:
    """Meta's error body (Graph API error reference)."""
    return http_status, {
        "error": {
            "message": f"(#{code}) {message}",
            "type": "OAuthException",
            "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": details or message},
            "fbtrace_id": f"A{uuid.uuid4().hex[:20]}",
        }
    }


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 (no CA signed it) and its key, made with the openssl CLI."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def openai_error(
    status: int, message: str, *, kind: str = "invalid_request_error", code: str | None = None
) -> tuple[int, dict[str, Any]]:
    """OpenAI's error body, e.g. 401 invalid_api_key, 403 unsupported_country_region_territory, 404
    model_not_found (a `scripted` answer)."""
    return status, {"error": {"message": message, "type": kind, "param": None, "code": code}}


class FakeOpenAI(FakeServer):
    """`POST /v1/chat/completions` answering like an OpenAI-compatible server.

    Asked for structured outputs (`response_format` of type `json_schema`), it answers in that shape, as the
    real API does: `{"reply": reply, "action": action, "knowledge_used": knowledge_used}` as the message's
    content. `refusal` answers with a refusal instead, `finish_reason` marks a cut-off answer, and `content`
    (when set) is sent as the content verbatim, to break the contract on purpose.
    """

    reply = "Thanks for writing! Yes, it also comes in blue and green."
    action = "reply"
    knowledge_used: list[int] = []
    refusal: str | None = None
    finish_reason = "stop"
    content: str | None = None
    # OpenAI's `usage` of every answer: prompt tokens (of which `cached_tokens` came from the prompt cache).
    prompt_tokens = 250
    cached_tokens = 0
    completion_tokens = 40

    # `/audio/transcriptions`: this text, or (None) the uploaded audio's bytes read as UTF-8, so that a test's
    # fake voice note says what the test wants.
    transcript: str | None = None

    def route(self, method: str, path: str, headers: dict[str, str], body: dict[str, Any]) -> Any:
        if path.split("?")[0].endswith("/audio/transcriptions"):
            upload = body.get("file")
            if not isinstance(upload, dict) or not body.get("model"):
                return Reply(*openai_error(400, "'file' and 'model' are required"))
            if self.transcript is not None:
                return {"text": self.transcript}
            return {"text": upload["data"].decode("utf-8", "replace")}
        return self.success(body)

    def transcription_requests(self) -> list[dict[str, Any]]:
        """The requests to `/audio/transcriptions`, in arrival order."""
        with self.lock:
            return [r for r in self.requests if r["path"].endswith("/audio/transcriptions")]

    def chat_requests(self) -> list[dict[str, Any]]:
        """The requests to `/chat/completions`, in arrival order."""
        with self.lock:
            return [r for r in self.requests if r["path"].endswith("/chat/completions")]

    def success(self, body: dict[str, Any]) -> Any:
        message: dict[str, Any] = {"role": "assistant", "content": self._content(body), "refusal": None}
        if self.refusal is not None:
            message = {"role": "assistant", "content": None, "refusal": self.refusal}
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [{"index": 0, "finish_reason": self.finish_reason, "message": message}],
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens,
                "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
            },
        }

    def _content(self, body: dict[str, Any]) -> str:
        if self.content is not None:
            return self.content
        response_format = body.get("response_format")
        if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
            return json.dumps(
                {"reply": self.reply, "action": self.action, "knowledge_used": list(self.knowledge_used)}
            )
        return self.reply

    def default_error(self) -> dict[str, Any]:
        return {"error": {"message": "The server had an error", "type": "server_error", "code": None}}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--graph-port", type=int, default=8701)
    parser.add_argument("--openai-port", type=int, default=8702)
    parser.add_argument("--graph-latency", type=float, default=0.05)
    parser.add_argument("--openai-latency", type=float, default=0.2)
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument(
        "--media-bytes-per-second", type=float, default=0.0, help="pace media downloads (0: unpaced)"
    )
    args = parser.parse_args()
    graph = FakeGraph(
        args.graph_port, FaultPlan(latency=args.graph_latency, error_rate=args.error_rate)
    ).start()
    graph.download_bytes_per_second = args.media_bytes_per_second
    openai = FakeOpenAI(
        args.openai_port, FaultPlan(latency=args.openai_latency, error_rate=args.error_rate)
    ).start()
    print(f"fake Graph at {graph.url}, fake OpenAI at {openai.url}/v1 (Ctrl-C stops)", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()


if __name__ == "__main__":
    main()
