"""Keeping secrets out of what we store and log: the one place that blanks them out (pure)."""

from __future__ import annotations

import re
from collections.abc import Iterable

_KEY_LIKE = re.compile(r"\b(sk-[A-Za-z0-9_*\-]{6,}|EAA[A-Za-z0-9]{20,})")


def redact(text: str, secrets: Iterable[str]) -> str:
    """Remove our secrets, and anything shaped like an OpenAI key or a Meta token, from a message."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return _KEY_LIKE.sub("[redacted]", text)
