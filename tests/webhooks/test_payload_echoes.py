"""The parser's side of `smb_message_echoes` (the owner answering from the WhatsApp Business app, §12.3):
`ParsedEcho`s, and what it skips. Storing them and pausing the bot: tests/outbound/test_echoes.py."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.conftest import SERVED_PHONE_NUMBER_IDS, load
from webhooks.payloads import parse_webhook


def test_echoes_are_parsed():
    parsed = parse_webhook(load("smb_message_echoes.json"), phone_number_ids=SERVED_PHONE_NUMBER_IDS)
    assert (parsed.messages, parsed.statuses, parsed.skipped) == ([], [], [])
    first, second = parsed.echoes
    assert (first.wamid, first.wa_id, first.type) == (
        "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBJECHO1",
        "16505551234",
        "text",
    )
    assert first.text == "Hi Sheena, this is Maria from the shop. Your order ships today."
    assert first.timestamp == datetime.fromtimestamp(1750000100, tz=UTC)
    assert (second.wa_id, second.type) == ("16505559999", "image")
    assert second.text == "[image sent from the WhatsApp Business app]"


def test_echoes_for_another_number_are_ignored():
    parsed = parse_webhook(load("smb_message_echoes.json"), phone_number_ids=("999",))
    assert parsed.echoes == []
    assert "is not a number this service serves" in parsed.skipped[0]


@pytest.mark.parametrize(
    "broken",
    [
        {"to": None},
        {"to": "1" * 40},
        {"id": None},
        {"timestamp": "yesterday"},
    ],
)
def test_a_malformed_echo_is_skipped_not_raised(broken):
    payload = load("smb_message_echoes.json")
    payload["entry"][0]["changes"][0]["value"]["message_echoes"][0].update(broken)
    parsed = parse_webhook(payload, phone_number_ids=SERVED_PHONE_NUMBER_IDS)
    assert [e.wa_id for e in parsed.echoes] == ["16505559999"]
    assert parsed.skipped[0].startswith("malformed echo")
