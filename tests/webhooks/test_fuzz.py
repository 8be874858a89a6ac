"""Bad input, generated: every real payload in tests/data mutated anywhere (several times over), through the
parser and through the signed view into the database.

Properties: the parser never raises and never yields a message without a valid id, sender and timestamp; the
view answers 200 (or 400 for what is not JSON), never 5xx; every well-formed message is stored; no job exists
without a valid stored message that needs a reply, and no message gets two jobs. The values include what no
database column can hold as it is: lone UTF-16 surrogates, NaN, Infinity and numbers beyond a float (1e999).
"""

from __future__ import annotations

import copy
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outbound.inbound import ParsedWebhook
from outbound.models import Contact, EchoMessage, InboundMessage, OutboundJob
from tests.conftest import DATA, SERVED_PHONE_NUMBER_IDS, post_signed
from webhooks.payloads import load_payload, parse_webhook

PAYLOADS = {path.name: json.loads(path.read_text()) for path in sorted(Path(DATA).glob("*.json"))}

# Values that sit on the edges the parser has to judge: ids, numbers as strings, overlong text, NUL, digits
# from other scripts, huge and negative timestamps.
EDGE_VALUES: st.SearchStrategy[Any] = st.sampled_from(
    [
        "",
        "0",
        "-1",
        "1700000000",
        "1e9",
        " 1700000000 ",
        "99999999999999999999999",
        "wamid.EDGE",
        "x" * 257,
        "1" * 33,
        "\x00",
        "\u0661\u0667\u0660\u0660\u0660\u0660\u0660\u0660\u0660\u0660",  # Arabic-Indic digits
        10**18,
        -(2**63),
        2**31,
        True,
        1.5,
        "\ud800",
        "a\udfffb",
        "\udc00\ud83d",  # a low surrogate before a high one: two lone halves, not a pair
        math.nan,
        math.inf,
        -math.inf,
        1e308,
        [],
        {},
        None,
    ]
)
# Any character, lone surrogates included (st.characters leaves category Cs out unless asked for it).
CHARACTERS = st.characters(codec=None) | st.characters(codec=None, categories=["Cs"])
TEXT = st.text(CHARACTERS, max_size=20)
JSON_LEAVES = st.none() | st.booleans() | st.integers() | st.floats() | TEXT
JSON_VALUES = st.recursive(
    JSON_LEAVES | EDGE_VALUES,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(CHARACTERS, max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every location inside a JSON document (the root excluded)."""
    found: list[tuple[Any, ...]] = []
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, child in children:
        found.append((*prefix, key))
        found.extend(paths(child, (*prefix, key)))
    return found


@st.composite
def mutated_payloads(draw: st.DrawFn) -> dict[str, Any]:
    """A real payload with 1-4 mutations: a value replaced, a key removed, a node duplicated into a list."""
    payload = copy.deepcopy(PAYLOADS[draw(st.sampled_from(sorted(PAYLOADS)))])
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        locations = paths(payload)
        if not locations:
            break
        path = draw(st.sampled_from(locations))
        parent: Any = payload
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        action = draw(st.sampled_from(["replace", "edge", "delete", "listify", "copy-sibling", "surrogate"]))
        if action == "surrogate" and isinstance(parent[key], str):
            # A lone surrogate inside a real value (a text, a name, an id): the message stays well-formed.
            text = parent[key]
            at = draw(st.integers(min_value=0, max_value=len(text)))
            parent[key] = text[:at] + draw(st.characters(codec=None, categories=["Cs"])) + text[at:]
        elif action == "replace":
            parent[key] = draw(JSON_VALUES)
        elif action == "edge":
            parent[key] = draw(EDGE_VALUES)
        elif action == "delete":
            del parent[key]
        elif action == "listify":
            parent[key] = [parent[key], copy.deepcopy(parent[key])]
        elif isinstance(parent, list) and parent:
            # Duplicate a sibling: the same message (same wamid) twice in one POST.
            parent.append(copy.deepcopy(parent[draw(st.integers(min_value=0, max_value=len(parent) - 1))]))
    return payload


def assert_valid(parsed: ParsedWebhook) -> None:
    for message in parsed.messages:
        assert isinstance(message.wamid, str)
        assert 0 < len(message.wamid) <= 256
        assert message.wa_id or message.user_id
        assert message.wa_id is None or (isinstance(message.wa_id, str) and 0 < len(message.wa_id) <= 32)
        assert message.user_id is None or (
            isinstance(message.user_id, str) and 0 < len(message.user_id) <= 160
        )
        assert message.timestamp.tzinfo is not None
        assert datetime(1970, 1, 1, tzinfo=UTC) < message.timestamp <= datetime.max.replace(tzinfo=UTC)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_payloads())
def test_mutated_real_payloads_parse_without_raising_into_valid_messages(payload):
    assert_valid(parse_webhook(payload, phone_number_ids=SERVED_PHONE_NUMBER_IDS))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON_VALUES)
def test_arbitrary_json_parses_without_raising(payload):
    assert_valid(parse_webhook(payload, phone_number_ids=SERVED_PHONE_NUMBER_IDS))


@pytest.mark.django_db
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(st.tuples(mutated_payloads(), st.booleans()), min_size=1, max_size=2))
def test_mutated_payloads_through_the_view_never_create_a_job_without_a_valid_message(posts):
    OutboundJob.objects.all().delete()
    InboundMessage.objects.all().delete()
    EchoMessage.objects.all().delete()
    Contact.objects.all().delete()
    client = Client()
    bodies = [_body(payload, huge=huge) for payload, huge in posts]
    for body in bodies:
        response = post_signed(client, body)
        # Well-signed JSON is always acknowledged, so Meta never redelivers a poison payload for 7 days.
        assert response.status_code == 200, response.content

    # What should be stored: every well-formed message of what the view reads (surrogates and non-finite numbers
    # cleaned); within a POST the last copy of a wamid wins; a wamid already stored is left alone.
    first_stored: dict[str, bool] = {}
    for body in bodies:
        parsed = parse_webhook(load_payload(body), phone_number_ids=SERVED_PHONE_NUMBER_IDS)
        for wamid, message in {m.wamid: m for m in parsed.messages}.items():
            first_stored.setdefault(wamid, message.needs_reply)
    assert set(InboundMessage.objects.values_list("wamid", flat=True)) == set(first_stored)
    expected = [wamid for wamid, needs_reply in first_stored.items() if needs_reply]
    jobs = list(OutboundJob.objects.select_related("inbound_message", "contact"))
    # The owner answering from the Business app (an echo, tests/data/smb_message_echoes.json) hands the
    # contact's open job to a person; nothing else moves a job here.
    echoed = set(EchoMessage.objects.values_list("contact_id", flat=True))
    for job in jobs:
        message = job.inbound_message
        assert message.needs_reply
        assert 0 < len(message.wamid) <= 256
        assert message.contact_id == job.contact_id
        assert job.contact.wa_id or job.contact.user_id
        assert message.timestamp.year >= 1970
        if job.status == OutboundJob.Status.HANDED_OFF:
            assert job.contact_id in echoed
            assert job.contact.bot_pause_reason == Contact.PauseReason.BUSINESS_APP
        else:
            assert job.status == OutboundJob.Status.PENDING
    # One job per message that needs a reply: none missing, none doubled (a duplicate in the POST included).
    assert sorted(job.inbound_message.wamid for job in jobs) == sorted(expected)
    assert InboundMessage.objects.filter(needs_reply=True).count() == len(jobs)


def _body(payload: Any, *, huge: bool) -> bytes:
    """The JSON Meta would send; `huge`: Infinity written as a number beyond a float's range instead."""
    body = json.dumps(payload).encode()  # lone surrogates become \\udXXX escapes, NaN and Infinity literals
    return body.replace(b"Infinity", b"1e999") if huge else body


POISON = st.text(CHARACTERS, max_size=6).map(lambda text: f"{text}\ud800{text}") | st.sampled_from(
    [math.nan, math.inf, -math.inf]
)


@pytest.mark.django_db
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    st.lists(POISON, min_size=14, max_size=14),
    st.text(CHARACTERS, max_size=10),
    st.booleans(),
)
def test_unstorable_values_in_every_message_never_cost_a_message(poisons, name, huge):
    OutboundJob.objects.all().delete()
    InboundMessage.objects.all().delete()
    Contact.objects.all().delete()
    payload = copy.deepcopy(PAYLOADS["message_types.json"])
    value = payload["entry"][0]["changes"][0]["value"]
    value["contacts"][0]["profile"]["name"] = name
    for message, poison in zip(value["messages"], poisons, strict=True):
        message["extra"] = {"value": poison, "list": [poison, 1]}
    response = post_signed(Client(), _body(payload, huge=huge))
    assert response.status_code == 200, response.content
    # All 14 messages of the fixture, 12 of which need a reply, whatever their raw fields carry.
    assert InboundMessage.objects.count() == 14
    assert OutboundJob.objects.count() == 12
    stored = InboundMessage.objects.get(wamid="wamid.reply-text").raw["extra"]["value"]
    assert stored is None or "\ufffd" in stored
