"""System checks: the console sender and offline replies are refused with DEBUG off; missing secrets are named."""

from __future__ import annotations

import pytest

from outbound.checks import check_backends, check_required_settings


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
    "name",
    ["WHATSAPP_APP_SECRET", "WHATSAPP_VERIFY_TOKEN", "WHATSAPP_ACCESS_TOKEN", "WHATSAPP_PHONE_NUMBER_ID"],
)
def test_a_missing_secret_is_named(settings, name):
    settings.DEBUG = False
    setattr(settings, name, "")
    [error] = check_required_settings()
    assert (error.id, error.msg) == ("outbound.E001", f"{name} is not set.")
    assert f"Set the environment variable {name}" in error.hint


def test_missing_openai_key_is_named_only_when_openai_replies(settings):
    settings.DEBUG = False
    settings.OPENAI_API_KEY = ""
    assert ids_and_messages(check_required_settings()) == [("outbound.E001", "OPENAI_API_KEY is not set.")]


def test_an_empty_secret_key_is_reported_not_raised(settings):
    # Django itself raises ImproperlyConfigured on reading an empty SECRET_KEY.
    settings.DEBUG = False
    settings.SECRET_KEY = ""
    assert ids_and_messages(check_required_settings()) == [("outbound.E001", "SECRET_KEY is not set.")]
