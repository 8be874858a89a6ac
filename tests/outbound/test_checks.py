"""System checks of the backends: the console sender and offline replies are refused with DEBUG off.

Missing secrets: tests/test_checks.py.
"""

from __future__ import annotations

import psycopg
import pytest

from outbound.checks import (
    check_backends,
    check_client_side_binding,
    check_required_settings,
    client_side_binding_errors,
)


def ids_and_messages(errors) -> list[tuple[str, str]]:
    return [(e.id, e.msg) for e in errors]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "OUTBOUND_SENDER",
            "console",
            "OUTBOUND_SENDER=console only logs messages and is refused with DEBUG off.",
        ),
        (
            "OUTBOUND_REPLY_GENERATOR",
            "offline",
            "OUTBOUND_REPLY_GENERATOR=offline sends canned demo replies and is refused with DEBUG off.",
        ),
    ],
)
def test_first_run_backends_are_refused_with_debug_off(settings, name, value, message):
    settings.DEBUG = False
    setattr(settings, name, value)
    assert ids_and_messages(check_backends()) == [("outbound.E003", message)]


def test_first_run_backends_are_allowed_with_debug_on(settings):
    settings.DEBUG = True
    settings.OUTBOUND_SENDER = "console"
    settings.OUTBOUND_REPLY_GENERATOR = "offline"
    assert check_backends() == []


def test_production_backends_pass(settings):
    settings.DEBUG = False
    assert check_backends() == []
    assert check_required_settings() == []


@pytest.mark.parametrize(
    "value",
    ["106540352242922", " 106540352242922 , ", "106540352242922,111222333444555", " 1 , 2 ,3"],
)
def test_one_or_several_business_numbers_pass(settings, value):
    settings.WHATSAPP_PHONE_NUMBER_ID = value
    assert check_backends() == []


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("106540352242922,+15550783881", "'+15550783881'"),
        ("106540352242922, 1555 078 3881", "'1555 078 3881'"),
        ("abc", "'abc'"),
        (
            "\uff11\uff12\uff13",
            "'\uff11\uff12\uff13'",
        ),  # full-width digits: str.isdigit() alone would let them through
    ],
)
def test_a_business_number_id_that_is_not_numeric_is_refused_and_named(settings, value, named):
    settings.WHATSAPP_PHONE_NUMBER_ID = value
    errors = check_backends()
    assert [e.id for e in errors] == ["outbound.E007"]
    assert named in errors[0].msg
    assert "Phone number ID" in errors[0].hint


def test_a_business_number_listed_twice_is_refused(settings):
    settings.WHATSAPP_PHONE_NUMBER_ID = "106540352242922, 111222333444555,106540352242922"
    errors = check_backends()
    assert [e.id for e in errors] == ["outbound.E007"]
    assert "106540352242922 more than once" in errors[0].msg


@pytest.mark.parametrize("value", ["english", "portuguese", "simple", "my_config2"])
def test_a_knowledge_language_name_passes(settings, value):
    settings.OUTBOUND_KNOWLEDGE_LANGUAGE = value
    assert check_backends() == []


@pytest.mark.parametrize("value", ["", "English", "english'); --", "pg_catalog.english"])
def test_a_knowledge_language_that_is_not_a_name_is_refused(settings, value):
    settings.OUTBOUND_KNOWLEDGE_LANGUAGE = value
    assert [e.id for e in check_backends()] == ["outbound.E008"]


def test_a_negative_knowledge_top_k_is_refused(settings):
    settings.OUTBOUND_KNOWLEDGE_TOP_K = -1
    assert ids_and_messages(check_backends()) == [
        ("outbound.E004", "OUTBOUND_KNOWLEDGE_TOP_K must not be negative.")
    ]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("OUTBOUND_HANDOFF_HOURS", -1, "OUTBOUND_HANDOFF_HOURS must not be negative."),
        (
            "OUTBOUND_HANDOFF_BUTTON",
            "Talk to a real human being",
            "OUTBOUND_HANDOFF_BUTTON is longer than 20",
        ),
        ("OUTBOUND_HANDOFF_MESSAGE", "x" * 4097, "OUTBOUND_HANDOFF_MESSAGE is longer than 4096"),
    ],
)
def test_handoff_settings_out_of_range_are_refused(settings, name, value, message):
    setattr(settings, name, value)
    [(error_id, text)] = ids_and_messages(check_backends())
    assert error_id == "outbound.E009"
    assert text.startswith(message)


def test_handoff_settings_in_range_pass(settings):
    settings.OUTBOUND_HANDOFF_HOURS = 0
    settings.OUTBOUND_HANDOFF_BUTTON = "Talk to a person"
    assert check_backends() == []


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("OUTBOUND_TYPING_INDICATOR_TIMEOUT", 0, "OUTBOUND_TYPING_INDICATOR_TIMEOUT must be positive."),
        ("OUTBOUND_OPT_OUT_MESSAGE", "x" * 4097, "OUTBOUND_OPT_OUT_MESSAGE is longer than 4096"),
        (
            "OUTBOUND_OPT_IN_KEYWORDS",
            ["START", "stop!"],
            "OUTBOUND_OPT_OUT_KEYWORDS and OUTBOUND_OPT_IN_KEYWORDS share STOP",
        ),
    ],
)
def test_opt_out_settings_out_of_range_are_refused(settings, name, value, message):
    setattr(settings, name, value)
    [(error_id, text)] = ids_and_messages(check_backends())
    assert error_id == "outbound.E010"
    assert text.startswith(message)


@pytest.mark.parametrize("value", [0, -1])
def test_a_media_size_limit_that_is_not_positive_is_refused(settings, value):
    settings.OUTBOUND_MEDIA_MAX_BYTES = value
    assert ids_and_messages(check_backends()) == [
        ("outbound.E004", "OUTBOUND_MEDIA_MAX_BYTES must be positive.")
    ]


def test_server_side_binding_is_refused_on_postgresql():
    # The worker's claim sends two statements in one message: with server-side binding every claim would fail.
    postgres = {"ENGINE": "django.db.backends.postgresql", "NAME": "wa"}
    refused = client_side_binding_errors(
        {**postgres, "OPTIONS": {"server_side_binding": True}}, vendor="postgresql"
    )
    assert [e.id for e in refused] == ["outbound.E011"]
    assert client_side_binding_errors({**postgres, "OPTIONS": {}}, vendor="postgresql") == []
    assert client_side_binding_errors(postgres, vendor="postgresql") == []
    # A value from a DATABASE_URL query string is a string, which Django does not take as True.
    assert (
        client_side_binding_errors(
            {**postgres, "OPTIONS": {"server_side_binding": "false"}}, vendor="postgresql"
        )
        == []
    )
    # A PostGIS or wrapping backend is still PostgreSQL; SQLite never runs the claim's SQL.
    gis = {"ENGINE": "django.contrib.gis.db.backends.postgis", "OPTIONS": {"server_side_binding": True}}
    assert [e.id for e in client_side_binding_errors(gis, vendor="postgresql")] == ["outbound.E011"]
    assert client_side_binding_errors(gis, vendor="sqlite") == []
    # The claim's second statement must see claims committed after the first one's snapshot.
    for level, errors in (
        (psycopg.IsolationLevel.READ_COMMITTED, 0),
        (psycopg.IsolationLevel.REPEATABLE_READ, 1),
        (psycopg.IsolationLevel.SERIALIZABLE, 1),
    ):
        found = client_side_binding_errors(
            {**postgres, "OPTIONS": {"isolation_level": level}}, vendor="postgresql"
        )
        assert len(found) == errors
    assert check_client_side_binding() == []
