import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outbound.inbound import MediaRef, ParsedTemplateEvent
from outbound.models import InboundMessage
from tests.conftest import SERVED_PHONE_NUMBER_IDS, load, status_payload, text_payload
from webhooks.payloads import (
    ParsedWebhook,
    describe_message,
    load_payload,
    media_ref,
    parse_timestamp,
    parse_webhook,
    split_phone_number_ids,
)

MESSAGE_TYPES = load("message_types.json")

# wamid → (stored type, needs a reply, text a model can use)
EXPECTED_TYPES = {
    "wamid.reply-text": ("text", True, "replied text"),
    "wamid.image": (
        "image",
        True,
        "[The customer sent an image, which this service cannot open.] Caption: my receipt",
    ),
    "wamid.voice": ("audio", True, "[The customer sent a voice message, which this service cannot open.]"),
    "wamid.video": ("video", True, "[The customer sent a video, which this service cannot open.]"),
    "wamid.document": (
        "document",
        True,
        "[The customer sent a document (invoice.pdf), which this service cannot open.] Caption: invoice",
    ),
    "wamid.sticker": ("sticker", True, "[The customer sent a sticker, which this service cannot open.]"),
    "wamid.button-reply": ("interactive", True, "Change"),
    "wamid.list-reply": ("interactive", True, "Priority Mail Express (Next Day to 2 Days)"),
    "wamid.template-button": ("button", True, "title"),
    "wamid.reaction": ("reaction", False, "[reaction \U0001f62e]"),
    "wamid.location": (
        "location",
        True,
        "[The customer shared a location: Facebook HQ, 1 Hacker Way, Menlo Park, CA 94025 at 37.4611978,-122.2164385.]",
    ),
    "wamid.contacts": ("contacts", True, "[The customer shared contact cards: John Doe.]"),
    "wamid.unsupported": (
        "unsupported",
        True,
        "[The customer sent a message WhatsApp does not pass on to this service (pool).]",
    ),
    "wamid.system": ("system", False, "[system: User A changed from 972987654321 to 972912345678]"),
}


def _messages(payload: dict[str, Any]) -> list[dict[str, Any]]:
    return payload["entry"][0]["changes"][0]["value"]["messages"]


def _with_messages(*messages: Any) -> dict[str, Any]:
    payload = text_payload(wamid="wamid.unused", timestamp=1700000000)
    _messages(payload)[:] = list(messages)
    return payload


def _message(**overrides: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "from": "16505551234",
        "id": "wamid.M",
        "timestamp": "1700000000",
        "type": "text",
        "text": {"body": "hi"},
    }
    message.update(overrides)
    return {k: v for k, v in message.items() if v is not None}


# ---------------------------------------------------------------------------------------------- messages
def test_official_text_message():
    parsed = parse_webhook(load("message_text.json"), phone_number_ids=SERVED_PHONE_NUMBER_IDS)
    assert parsed.skipped == []
    assert parsed.statuses == []
    [message] = parsed.messages
    assert message.wamid == "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="
    assert message.wa_id == "16505551234"
    assert message.user_id is None
    assert message.profile_name == "Sheena Nelson"
    assert message.type == "text"
    assert message.text == "Does it come in another color?"
    assert message.needs_reply is True
    assert message.timestamp == datetime(2025, 6, 8, 20, 59, 43, tzinfo=UTC)
    assert message.raw == _messages(load("message_text.json"))[0]


def test_every_message_type_in_the_fixture():
    parsed = parse_webhook(MESSAGE_TYPES, phone_number_ids=SERVED_PHONE_NUMBER_IDS)
    assert parsed.skipped == []
    got = {m.wamid: (m.type, m.needs_reply, m.text) for m in parsed.messages}
    assert got == EXPECTED_TYPES


def test_fixture_types_are_model_choices():
    for message in parse_webhook(MESSAGE_TYPES, phone_number_ids=SERVED_PHONE_NUMBER_IDS).messages:
        assert message.type in [t.value for t in InboundMessage.Type]


def test_contact_user_id_and_profile_name_come_from_value_contacts():
    for message in parse_webhook(MESSAGE_TYPES, phone_number_ids=SERVED_PHONE_NUMBER_IDS).messages:
        assert message.wa_id == "972987654321"
        assert message.user_id == "US.13491208655302741918"
        assert message.profile_name == "Sheena Nelson"


def test_sender_known_only_by_business_scoped_user_id():
    payload = _with_messages(_message(**{"from": None, "from_user_id": "US.42"}))
    payload["entry"][0]["changes"][0]["value"]["contacts"] = [
        {"profile": {"name": "Kim"}, "user_id": "US.42"}
    ]
    [message] = parse_webhook(payload, phone_number_ids=SERVED_PHONE_NUMBER_IDS).messages
    assert (message.wa_id, message.user_id, message.profile_name) == (None, "US.42", "Kim")


@pytest.mark.parametrize("kind", ["poll", "event", "some_future_type"])
def test_unknown_future_type_is_kept_but_not_answered(kind):
    [message] = parse_webhook(
        _with_messages(_message(type=kind, **{kind: {"x": 1}})), phone_number_ids=SERVED_PHONE_NUMBER_IDS
    ).messages
    assert message.type == "unknown"
    assert message.needs_reply is False
    assert kind in message.text


@pytest.mark.parametrize("kind", [None, 5, ["text"], {"a": 1}])
def test_type_missing_or_not_a_string_is_unknown(kind):
    [message] = parse_webhook(
        _with_messages(_message(type=kind)), phone_number_ids=SERVED_PHONE_NUMBER_IDS
    ).messages
    assert message.type == "unknown"
    assert message.needs_reply is False


@pytest.mark.parametrize(
    ("message_type", "raw", "expected"),
    [
        ("reaction", {"reaction": {"message_id": "wamid.x", "emoji": ""}}, "[reaction (removed)]"),
        ("reaction", {"reaction": {"message_id": "wamid.x"}}, "[reaction (removed)]"),
        (
            "audio",
            {"audio": {"voice": False}},
            "[The customer sent an audio message, which this service cannot open.]",
        ),
        (
            "location",
            {"location": {"latitude": 1.5, "longitude": 2}},
            "[The customer shared a location: a map pin at 1.5,2.]",
        ),
        ("revoke", {"revoke": {}}, "[The customer deleted a message.]"),
        ("order", {"order": {"text": "two please"}}, "[The customer sent an order: two please.]"),
        (
            "interactive",
            {"interactive": {"type": "nfm_reply", "nfm_reply": {"response_json": '{"a": 1}'}}},
            '[The customer submitted a form: {"a": 1}]',
        ),
        ("button", {"button": {"payload": "STOP"}}, "STOP"),
        ("text", {"text": {"body": "  padded  "}}, "padded"),
    ],
)
def test_describe_message_variants(message_type, raw, expected):
    assert describe_message(message_type, raw) == expected


@pytest.mark.parametrize("message_type", [*[t.value for t in InboundMessage.Type], "nope"])
@pytest.mark.parametrize("body", [None, 5, True, "a string", [1, "x", None], {"deep": {"er": [1]}}])
def test_describe_message_never_raises_on_odd_shapes(message_type, body):
    raw = {"type": message_type, message_type: body, "contacts": body}
    assert isinstance(describe_message(message_type, raw), str)


def test_malformed_message_does_not_stop_the_good_ones_around_it():
    payload = _with_messages(
        _message(id="wamid.good1"),
        _message(id=None),
        _message(id="wamid.nofrom", **{"from": None}),
        _message(id="wamid.nots", timestamp=None),
        "not an object",
        _message(id="wamid.good2"),
    )
    parsed = parse_webhook(payload, phone_number_ids=SERVED_PHONE_NUMBER_IDS)
    assert [m.wamid for m in parsed.messages] == ["wamid.good1", "wamid.good2"]
    assert len(parsed.skipped) == 4
    assert any("wamid.nofrom" in reason for reason in parsed.skipped)
    assert any("wamid.nots" in reason for reason in parsed.skipped)


@pytest.mark.parametrize("timestamp", ["abc", "", 1.5, "1.5", True, None, [], {}, "-5", 0, "0", "1e9"])
def test_timestamp_not_unix_seconds_is_skipped(timestamp):
    parsed = parse_webhook(
        _with_messages({**_message(), "timestamp": timestamp}), phone_number_ids=SERVED_PHONE_NUMBER_IDS
    )
    assert parsed.messages == []
    assert len(parsed.skipped) == 1


@pytest.mark.parametrize("timestamp", [10**12, 10**18, 10**20, str(2**64), "9" * 400])
def test_timestamp_out_of_range_is_skipped_not_raised(timestamp):
    parsed = parse_webhook(
        _with_messages(_message(id="wamid.far", timestamp=timestamp), _message(id="wamid.ok")),
        phone_number_ids=SERVED_PHONE_NUMBER_IDS,
    )
    assert [m.wamid for m in parsed.messages] == ["wamid.ok"]
    assert "wamid.far" in parsed.skipped[0]


def test_timestamp_as_json_number_is_accepted():
    assert parse_timestamp(1700000000) == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert parse_timestamp("1700000000") == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


def test_sender_longer_than_a_phone_number_is_not_a_wa_id():
    # Contact.wa_id holds 32 characters: anything longer would fail the whole POST's insert on PostgreSQL.
    parsed = parse_webhook(
        _with_messages(_message(id="wamid.long", **{"from": "1" * 40}), _message(id="wamid.ok")),
        phone_number_ids=SERVED_PHONE_NUMBER_IDS,
    )
    assert [m.wamid for m in parsed.messages] == ["wamid.ok"]
    assert "wamid.long" in parsed.skipped[0]


def test_overlong_ids_are_skipped():
    parsed = parse_webhook(
        _with_messages(_message(id="w" * 257), _message(id="wamid.ok")),
        phone_number_ids=SERVED_PHONE_NUMBER_IDS,
    )
    assert [m.wamid for m in parsed.messages] == ["wamid.ok"]


def test_long_profile_name_is_truncated_to_the_column():
    payload = text_payload(wamid="wamid.N", timestamp=1700000000, name="n" * 1000)
    [message] = parse_webhook(payload, phone_number_ids=SERVED_PHONE_NUMBER_IDS).messages
    assert message.profile_name == "n" * 256


def test_nul_characters_are_replaced_when_loading():
    # PostgreSQL text and jsonb cannot store U+0000; a 503 would make Meta redeliver the POST for 7 days.
    payload = text_payload(wamid="wamid.N\x00", timestamp=1700000000, body="a\x00b", name="x\x00y")
    [message] = parse_webhook(
        load_payload(json.dumps(payload).encode()), phone_number_ids=SERVED_PHONE_NUMBER_IDS
    ).messages
    assert message.wamid == "wamid.N\ufffd"
    assert message.text == "a\ufffdb"
    assert message.profile_name == "x\ufffdy"
    assert message.raw["text"]["body"] == "a\ufffdb"
    assert "\x00" not in repr(message.raw)


@pytest.mark.parametrize(
    "body", [b"", b"{", b'{"a": 1', b"nope", b"\xff\xfe", b"[" * 100_000 + b"]" * 100_000]
)
def test_load_payload_rejects_what_is_not_json(body):
    with pytest.raises(ValueError):  # noqa: PT011 -- JSONDecodeError, UnicodeDecodeError and depth all are
        load_payload(body)


def test_load_payload_keeps_ordinary_payloads_as_they_are():
    body = json.dumps(MESSAGE_TYPES, ensure_ascii=False).encode()
    assert load_payload(body) == MESSAGE_TYPES
    assert load_payload(b"[1, 2]") == [1, 2]


@pytest.mark.parametrize(
    ("escape", "stored"),
    [
        (b"\\ud800", "\ufffd"),
        (b"\\uDBFF", "\ufffd"),
        (b"\\udc00", "\ufffd"),
        (b"\\uDFFF", "\ufffd"),
        (b"\\udc00\\ud800", "\ufffd\ufffd"),  # low before high: two lone halves
        (b"\\ud83d\\ude00", "\U0001f600"),  # a pair is one character
        (b"\xed\xa0\x80", "\ufffd"),  # a surrogate encoded in UTF-8
        (b"\\u0000", "\ufffd"),
    ],
)
def test_unstorable_characters_become_replacement_characters_in_keys_and_values(escape, stored):
    body = b'{"a@@b": ["x@@y", {"k": "@@"}], "n": 1}'.replace(b"@@", escape)
    assert load_payload(body) == {f"a{stored}b": [f"x{stored}y", {"k": stored}], "n": 1}


def test_lone_surrogates_are_replaced_in_a_utf16_body():
    body = json.dumps({"t": "a\ud800b"}, ensure_ascii=False).encode("utf-16", "surrogatepass")
    assert load_payload(body) == {"t": "a\ufffdb"}


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b"1E400"])
def test_non_finite_numbers_become_null(number):
    assert load_payload(b'{"a": [@@, 1.5, 2, 1e308], "b": @@}'.replace(b"@@", number)) == {
        "a": [None, 1.5, 2, 1e308],
        "b": None,
    }


def test_a_non_finite_timestamp_is_a_malformed_message():
    body = json.dumps(_with_messages(_message(id="wamid.nan"), _message(id="wamid.ok"))).encode()
    body = body.replace(b'"1700000000"', b"NaN", 1)
    parsed = parse_webhook(load_payload(body), phone_number_ids=SERVED_PHONE_NUMBER_IDS)
    assert [m.wamid for m in parsed.messages] == ["wamid.ok"]
    assert "malformed message id='wamid.nan'" in parsed.skipped[0]


# ---------------------------------------------------------------------------------------------- business numbers
def test_only_values_for_a_served_number_are_parsed():
    ours = text_payload(wamid="wamid.OURS", timestamp=1700000000)
    theirs = text_payload(wamid="wamid.THEIRS", timestamp=1700000000)
    theirs["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = "999"
    ours["entry"].append(theirs["entry"][0])
    parsed = parse_webhook(ours, phone_number_ids=SERVED_PHONE_NUMBER_IDS)
    assert [(m.wamid, m.phone_number_id) for m in parsed.messages] == [("wamid.OURS", "106540352242922")]
    assert parsed.skipped == [
        "phone_number_id='999' is not a number this service serves: 1 messages and 0 statuses ignored"
    ]
    assert parse_webhook(ours, phone_number_ids=["999"]).messages[0].wamid == "wamid.THEIRS"
    assert parse_webhook(ours, phone_number_ids=()).messages == []


def test_statuses_keep_their_business_number():
    [status] = parse_webhook(load("status_sent.json"), phone_number_ids=SERVED_PHONE_NUMBER_IDS).statuses
    assert status.phone_number_id == "106540352242922"
    assert parse_webhook(load("status_sent.json"), phone_number_ids={"1"}).statuses == []


@pytest.mark.parametrize(
    ("setting", "ids"),
    [
        ("106540352242922", ("106540352242922",)),
        (" 1, 2 ,,2, 3 ", ("1", "2", "3")),
        ("", ()),
        (" , ", ()),
        (["1", " 2,3 "], ("1", "2", "3")),
    ],
)
def test_split_phone_number_ids(setting, ids):
    assert split_phone_number_ids(setting) == ids


# ---------------------------------------------------------------------------------------------- statuses
def test_official_sent_status():
    parsed = parse_webhook(load("status_sent.json"), phone_number_ids=SERVED_PHONE_NUMBER_IDS)
    assert parsed.messages == []
    assert parsed.skipped == []
    [status] = parsed.statuses
    assert status.wamid == "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA="
    assert status.status == "sent"
    assert status.timestamp == datetime.fromtimestamp(1750030073, tz=UTC)
    assert status.callback_data == ""
    assert status.errors == ()


def test_official_failed_status_keeps_the_error():
    [status] = parse_webhook(load("status_failed.json"), phone_number_ids=SERVED_PHONE_NUMBER_IDS).statuses
    assert status.status == "failed"
    [error] = status.errors
    assert error.code == 131049
    assert error.title == "This message was not delivered to maintain healthy ecosystem engagement."
    assert (
        error.details
        == "In order to maintain a healthy ecosystem engagement, the message failed to be delivered."
    )


def test_played_counts_as_read_and_callback_data_is_kept():
    payload = status_payload(wamid="wamid.O", status="played", timestamp=1700000000, callback_data="k:text")
    [status] = parse_webhook(payload, phone_number_ids=SERVED_PHONE_NUMBER_IDS).statuses
    assert (status.status, status.callback_data) == ("read", "k:text")


@pytest.mark.parametrize("status", ["deleted", "warning", "", None, 3])
def test_unknown_status_is_skipped(status):
    payload = status_payload(wamid="wamid.O", status="sent", timestamp=1700000000)
    payload["entry"][0]["changes"][0]["value"]["statuses"][0]["status"] = status
    parsed = parse_webhook(payload, phone_number_ids=SERVED_PHONE_NUMBER_IDS)
    assert parsed.statuses == []
    assert len(parsed.skipped) == 1


@pytest.mark.parametrize("errors", [5, "oops", {"code": 1}, [None, "x"]])
def test_status_with_odd_errors_is_still_a_status(errors):
    payload = status_payload(wamid="wamid.O", status="failed", timestamp=1700000000)
    payload["entry"][0]["changes"][0]["value"]["statuses"][0]["errors"] = errors
    [status] = parse_webhook(payload, phone_number_ids=SERVED_PHONE_NUMBER_IDS).statuses
    assert status.status == "failed"
    assert status.errors == ()


@pytest.mark.parametrize("code", [True, 2**40, -(2**40), "131047", 1.5])
def test_error_code_that_does_not_fit_the_column_is_dropped(code):
    payload = status_payload(wamid="wamid.O", status="failed", timestamp=1700000000, error_code=131047)
    payload["entry"][0]["changes"][0]["value"]["statuses"][0]["errors"][0]["code"] = code
    [status] = parse_webhook(payload, phone_number_ids=SERVED_PHONE_NUMBER_IDS).statuses
    assert status.errors[0].code is None
    assert status.errors[0].title == "error title"


# ---------------------------------------------------------------------------------------------- other shapes
def test_value_level_errors_are_reported():
    parsed = parse_webhook(load("value_errors.json"), phone_number_ids=SERVED_PHONE_NUMBER_IDS)
    assert (parsed.messages, parsed.statuses) == ([], [])
    assert parsed.skipped == ["value error code=130429 title='Rate limit hit'"]


def test_other_fields_are_reported():
    parsed = parse_webhook(load("account_update.json"), phone_number_ids=SERVED_PHONE_NUMBER_IDS)
    assert (parsed.messages, parsed.statuses, parsed.templates) == ([], [], [])
    assert parsed.skipped == ["field='account_update'"]


def test_template_status_update_is_parsed():
    parsed = parse_webhook(load("template_status_update.json"), phone_number_ids=SERVED_PHONE_NUMBER_IDS)
    assert parsed.skipped == []
    assert parsed.templates == [
        ParsedTemplateEvent(
            name="reply_follow_up",
            language="en_US",
            template_id="1234567",
            status="APPROVED",
            reason="",  # Meta's "NONE" is no reason
            account_id="102290129340398",
        )
    ]


def test_template_paused_keeps_the_reason_and_description():
    payload = load("template_status_update.json")
    value = payload["entry"][0]["changes"][0]["value"]
    value.update(
        event="PAUSED",
        reason="LOW_QUALITY",
        other_info={"title": "FIRST_PAUSE", "description": "Paused for 3 hours: low quality"},
    )
    [event] = parse_webhook(payload, phone_number_ids=()).templates
    assert (event.status, event.reason) == ("PAUSED", "LOW_QUALITY; Paused for 3 hours: low quality")


def test_template_category_update_is_parsed():
    [event] = parse_webhook(
        load("template_category_update.json"), phone_number_ids=SERVED_PHONE_NUMBER_IDS
    ).templates
    assert (event.name, event.language, event.status, event.category) == (
        "reply_follow_up",
        "en_US",
        "",
        "MARKETING",
    )


def test_template_event_without_a_name_is_skipped():
    payload = load("template_status_update.json")
    del payload["entry"][0]["changes"][0]["value"]["message_template_name"]
    parsed = parse_webhook(payload, phone_number_ids=SERVED_PHONE_NUMBER_IDS)
    assert parsed.templates == []
    assert len(parsed.skipped) == 1
    assert "malformed template" in parsed.skipped[0]


def test_user_preferences_are_parsed():
    parsed = parse_webhook(load("user_preferences.json"), phone_number_ids=SERVED_PHONE_NUMBER_IDS)
    assert parsed.skipped == []
    [preference] = parsed.preferences
    assert (
        preference.wa_id,
        preference.category,
        preference.value,
        preference.timestamp,
        preference.phone_number_id,
    ) == (
        "16505551234",
        "marketing_messages",
        "stop",
        datetime.fromtimestamp(1731705721, tz=UTC),
        "106540352242922",
    )


def test_user_preferences_keep_their_business_number_and_other_numbers_are_dropped():
    payload = load("user_preferences.json")
    second = copy.deepcopy(payload["entry"][0])
    second["changes"][0]["value"]["metadata"]["phone_number_id"] = "111222333444555"
    other = copy.deepcopy(payload["entry"][0])
    other["changes"][0]["value"]["metadata"]["phone_number_id"] = "999"
    payload["entry"] += [second, other]
    parsed = parse_webhook(payload, phone_number_ids=("106540352242922", "111222333444555"))
    assert [(p.phone_number_id, p.wa_id) for p in parsed.preferences] == [
        ("106540352242922", "16505551234"),
        ("111222333444555", "16505551234"),
    ]
    assert parsed.skipped == [
        "phone_number_id='999' is not a number this service serves:"
        " 0 messages and 0 statuses and 1 preferences ignored"
    ]


def test_user_preferences_for_another_number_or_with_an_unknown_value_are_skipped():
    assert parse_webhook(load("user_preferences.json"), phone_number_ids=("999",)).preferences == []
    payload = load("user_preferences.json")
    payload["entry"][0]["changes"][0]["value"]["user_preferences"][0]["value"] = "maybe"
    parsed = parse_webhook(payload, phone_number_ids=SERVED_PHONE_NUMBER_IDS)
    assert parsed.preferences == []
    assert "unknown preference value 'maybe'" in parsed.skipped[0]


def test_object_other_than_whatsapp_is_ignored_whole():
    payload = text_payload(wamid="wamid.X", timestamp=1700000000)
    payload["object"] = "page"
    parsed = parse_webhook(payload, phone_number_ids=SERVED_PHONE_NUMBER_IDS)
    assert (parsed.messages, parsed.statuses) == ([], [])
    assert parsed.skipped == ["object='page'"]


@pytest.mark.parametrize("payload", [[], [1, 2], 5, 1.5, "text", None, True])
def test_top_level_not_an_object(payload):
    parsed = parse_webhook(payload, phone_number_ids=SERVED_PHONE_NUMBER_IDS)
    assert (parsed.messages, parsed.statuses) == ([], [])
    assert len(parsed.skipped) == 1


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        (("entry",), "a string"),
        (("entry",), {"id": "1"}),
        (("entry", 0, "changes"), "x"),
        (("entry", 0, "changes", 0, "value"), ["x"]),
        (("entry", 0, "changes", 0, "value", "messages"), {"id": "wamid.X"}),
        (("entry", 0, "changes", 0, "value", "contacts"), "x"),
    ],
)
def test_wrongly_typed_containers_are_reported_not_raised(path, bad):
    payload = text_payload(wamid="wamid.X", timestamp=1700000000)
    target = payload
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = bad
    parsed = parse_webhook(payload, phone_number_ids=SERVED_PHONE_NUMBER_IDS)
    if path[-1] == "contacts":
        # The message survives; it only loses the profile name.
        assert [(m.wamid, m.profile_name) for m in parsed.messages] == [("wamid.X", "")]
    else:
        assert parsed.messages == []
        assert parsed.skipped


def test_batch_over_several_entries_and_changes():
    first = text_payload(wamid="wamid.1", timestamp=1700000000)
    second = text_payload(wamid="wamid.2", wa_id="222", timestamp=1700000001)
    status = status_payload(wamid="wamid.S", status="delivered", timestamp=1700000002)
    first["entry"].append(second["entry"][0])
    first["entry"][0]["changes"].append(status["entry"][0]["changes"][0])
    parsed = parse_webhook(first, phone_number_ids=SERVED_PHONE_NUMBER_IDS)
    assert [m.wamid for m in parsed.messages] == ["wamid.1", "wamid.2"]
    assert [s.wamid for s in parsed.statuses] == ["wamid.S"]


# ---------------------------------------------------------------------------------------------- fuzzing
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


def _assert_well_formed(parsed: ParsedWebhook) -> None:
    for message in parsed.messages:
        assert message.wamid
        assert message.wa_id or message.user_id
        assert message.timestamp.tzinfo is not None
        assert message.type in [t.value for t in InboundMessage.Type]
        assert isinstance(message.text, str)
    for status in parsed.statuses:
        assert status.status in ("sent", "delivered", "read", "failed")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_any_json_parses_without_raising(payload):
    _assert_well_formed(parse_webhook(payload, phone_number_ids=SERVED_PHONE_NUMBER_IDS))


MESSAGE_KEYS = [
    "id",
    "from",
    "timestamp",
    "type",
    "text",
    "image",
    "audio",
    "interactive",
    "location",
    "contacts",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=13), st.sampled_from(MESSAGE_KEYS), json_values)
def test_one_broken_message_never_loses_the_others(index, key, bad):
    payload = copy.deepcopy(MESSAGE_TYPES)
    messages = _messages(payload)
    others = {m["id"] for i, m in enumerate(messages) if i != index}
    messages[index][key] = bad
    parsed = parse_webhook(payload, phone_number_ids=SERVED_PHONE_NUMBER_IDS)
    _assert_well_formed(parsed)
    assert others <= {m.wamid for m in parsed.messages}


def test_media_messages_keep_their_media_reference():
    # What the worker fetches later (never inside the webhook request): Meta's media id, mime type, sha256
    # and the caption.
    parsed = parse_webhook(MESSAGE_TYPES, phone_number_ids=SERVED_PHONE_NUMBER_IDS)
    media = {m.wamid: m.media for m in parsed.messages if m.media is not None}
    assert media == {
        "wamid.image": MediaRef(
            id="65463453", mime_type="image/jpeg", sha256="4654+8g=", caption="my receipt"
        ),
        "wamid.voice": MediaRef(id="1234", mime_type="audio/ogg; codecs=opus", sha256="abc="),
        "wamid.video": MediaRef(id="1235", mime_type="video/mp4", sha256="abc="),
        "wamid.document": MediaRef(id="1236", mime_type="application/pdf", sha256="abc=", caption="invoice"),
        "wamid.sticker": MediaRef(id="1237", mime_type="image/webp", sha256="abc="),
    }


@pytest.mark.parametrize("media", [{}, {"id": None}, {"id": ""}, {"id": "x" * 300}, "not an object"])
def test_a_media_message_without_a_usable_id_has_no_reference(media):
    raw = {"from": "1", "id": "wamid.x", "timestamp": "1", "type": "audio", "audio": media}
    assert media_ref("audio", raw) is None
