from pathlib import Path

import pytest
from django.core.checks import Error
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from outbound.checks import PUBLIC_EXAMPLE_VALUES, SECRETS, check_required_settings

REQUIRED = [
    "SECRET_KEY",
    "WHATSAPP_APP_SECRET",
    "WHATSAPP_VERIFY_TOKEN",
    "WHATSAPP_ACCESS_TOKEN",
    "WHATSAPP_PHONE_NUMBER_ID",
    "ALLOWED_HOSTS",
    "OPENAI_API_KEY",
]


@pytest.fixture
def production(settings):
    settings.DEBUG = False
    return settings


def test_nothing_missing_no_error(production):
    assert check_required_settings() == []


@pytest.mark.parametrize("name", REQUIRED)
def test_each_missing_variable_is_an_error_naming_it(production, name):
    setattr(production, name, "")
    errors = check_required_settings()
    assert len(errors) == 1
    [error] = errors
    assert isinstance(error, Error)
    assert error.id == "outbound.E001"
    assert name in error.msg
    assert name in (error.hint or "")


def test_every_missing_variable_is_reported_at_once(production):
    for name in REQUIRED:
        setattr(production, name, "")
    errors = check_required_settings()
    assert [e.id for e in errors] == ["outbound.E001"] * len(REQUIRED)
    assert all(any(name in e.msg for e in errors) for name in REQUIRED)


def test_openai_key_not_needed_by_the_offline_generator(production):
    production.OPENAI_API_KEY = ""
    production.OUTBOUND_REPLY_GENERATOR = "offline"
    assert [e for e in check_required_settings() if e.id == "outbound.E001"] == []


@pytest.mark.parametrize("name", REQUIRED)
def test_manage_py_check_stops_naming_the_variable(production, name):
    setattr(production, name, "")
    with pytest.raises(SystemCheckError, match=name):
        call_command("check")


@pytest.mark.parametrize("name", REQUIRED)
def test_debug_on_no_such_error(settings, name):
    settings.DEBUG = True
    setattr(settings, name, "")
    assert check_required_settings() == []


def test_check_passes_with_everything_set(production):
    call_command("check")


def _example_env() -> dict[str, str]:
    lines = (Path(__file__).resolve().parent.parent / ".env.example").read_text().splitlines()
    pairs = (line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    return {name.strip(): value.strip() for name, value in pairs}


def test_every_secret_shipped_in_env_example_is_refused(production):
    example = _example_env()
    shipped = {name: example[name] for name in SECRETS if example.get(name)}
    assert shipped, ".env.example ships no secret values: nothing to check"
    for name, value in shipped.items():
        setattr(production, name, value)
    errors = check_required_settings()
    assert sorted((e.id, e.msg.split()[0]) for e in errors) == sorted(("outbound.E005", n) for n in shipped)
    assert set(shipped.values()) <= PUBLIC_EXAMPLE_VALUES


@pytest.mark.parametrize("name", SECRETS)
def test_a_secret_shorter_than_16_characters_is_refused(production, name):
    setattr(production, name, "x" * 15)
    [error] = check_required_settings()
    assert error.id == "outbound.E005"
    assert error.msg == f"{name} is shorter than 16 characters, refused with DEBUG off."
    setattr(production, name, "x" * 16)
    assert check_required_settings() == []


def test_django_insecure_placeholder_key_is_refused(production):
    production.SECRET_KEY = "django-insecure-" + "k" * 50
    [error] = check_required_settings()
    assert (error.id, error.msg.split()[0]) == ("outbound.E005", "SECRET_KEY")


def test_weak_secrets_are_allowed_with_debug_on(settings):
    settings.DEBUG = True
    settings.WHATSAPP_APP_SECRET = "dev-app-secret"
    settings.SECRET_KEY = "short"
    assert check_required_settings() == []
