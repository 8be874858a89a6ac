"""Meta's `X-Hub-Signature-256` check (pure: no Django)."""

import hashlib
import hmac

SIGNATURE_PREFIX = "sha256="


def verify_signature(*, body: bytes, header: str | None, app_secret: str) -> bool:
    """Return whether `header` is `sha256=<hex HMAC-SHA256 of the raw body keyed by the app secret>`."""
    if not header or not app_secret or not header.startswith(SIGNATURE_PREFIX):
        return False
    expected = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    # compare_digest on str demands ASCII; a non-ASCII header is simply wrong.
    received = header.removeprefix(SIGNATURE_PREFIX).strip().encode("ascii", "replace")
    return hmac.compare_digest(expected.encode("ascii"), received)


def sign(*, body: bytes, app_secret: str) -> str:
    """Return the header value Meta would send for `body` (for tests and `simulate_inbound`)."""
    return SIGNATURE_PREFIX + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
