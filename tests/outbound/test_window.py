"""The 24-hour customer-service window (outbound.window)."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from outbound.window import is_window_open


def test_window_margin():
    now = timezone.now()
    assert is_window_open(last_inbound_at=now - timedelta(hours=23), now=now, margin_seconds=300)
    assert not is_window_open(
        last_inbound_at=now - timedelta(hours=23, minutes=56), now=now, margin_seconds=300
    )
    assert not is_window_open(last_inbound_at=None, now=now)
