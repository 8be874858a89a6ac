"""Secret redaction (outbound.redaction)."""

from __future__ import annotations

from outbound.redaction import redact


def test_redact():
    assert redact("token EAAabc123 and sk-live-abcdefgh", ["EAAabc123"]) == "token [redacted] and [redacted]"
