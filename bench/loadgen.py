"""A small threaded HTTP load generator (stdlib `http.client`) and Meta-shaped webhook bodies.

Each sender thread opens a connection per request (gunicorn's sync workers close it after each response
anyway), sends one prepared request, reads the whole answer and records the latency at the client.
Bodies are built and signed before the clock starts, so the generator's own HMAC cost is not measured.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from webhooks.envelopes import messages_webhook, text_message
from webhooks.signatures import sign


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class LoadResult:
    requests: int
    seconds: float
    statuses: Counter[int]
    latencies: list[float]
    errors: list[str]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        """Latency percentile in seconds (nearest rank)."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
        return ordered[index]

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    def summary(self) -> str:
        return (
            f"{self.requests} requests in {self.seconds:.2f}s = {self.rps:.0f} req/s, "
            f"p50 {self.percentile(50) * 1000:.1f} ms, p99 {self.percentile(99) * 1000:.1f} ms, "
            f"statuses {dict(self.statuses)}"
        )


def run_load(
    *, host: str, port: int, requests: list[Request], concurrency: int, timeout: float = 30
) -> LoadResult:
    """Send every request once, `concurrency` at a time; return throughput and latencies."""
    lock = threading.Lock()
    position = 0
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    errors: list[str] = []

    def sender() -> None:
        nonlocal position
        while True:
            with lock:
                if position >= len(requests):
                    return
                request = requests[position]
                position += 1
            started = time.perf_counter()
            try:
                conn = http.client.HTTPConnection(host, port, timeout=timeout)
                try:
                    conn.request(request.method, request.path, body=request.body, headers=request.headers)
                    response = conn.getresponse()
                    response.read()
                    status = response.status
                finally:
                    conn.close()
            except OSError as exc:
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                continue
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
                statuses[status] += 1

    threads = [threading.Thread(target=sender, daemon=True) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    return LoadResult(len(requests), seconds, statuses, latencies, errors)


# ---------------------------------------------------------------------------------------------- payloads
def text_messages(*, prefix: str, start: int, count: int, timestamp: int) -> dict[str, Any]:
    """One payload with `count` text messages, each from its own contact, with distinct wamids."""
    messages, contacts = [], []
    for i in range(start, start + count):
        wa_id = f"1{zlib.crc32(prefix.encode()) % 10_000:04d}{i:07d}"
        contacts.append({"profile": {"name": f"Load {i}"}, "wa_id": wa_id})
        messages.append(
            text_message(
                wa_id=wa_id,
                wamid=f"wamid.{prefix}-{i}",
                text=f"Does it come in colour number {i}?",
                timestamp=timestamp,
            )
        )
    return messages_webhook(messages=messages, contacts=contacts)


def signed_post(path: str, payload: dict[str, Any], *, app_secret: str) -> Request:
    body = json.dumps(payload).encode()
    return Request(
        "POST",
        path,
        body,
        {"Content-Type": "application/json", "X-Hub-Signature-256": sign(body=body, app_secret=app_secret)},
    )
