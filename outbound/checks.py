"""System checks: with DEBUG off, a missing secret stops `manage.py check` and every command, naming it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
from django.conf import settings
from django.contrib.staticfiles.storage import ManifestFilesMixin
from django.core.checks import Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured
from django.core.files.storage import storages
from django.db import connections

from outbound.knowledge import LANGUAGE_NAME
from outbound.replies import WHATSAPP_TEXT_LIMIT
from outbound.services.optout import opt_keyword
from outbound.usage import PRICE_SETTINGS, parse_price
from outbound.vocabulary import BUTTON_TITLE_LIMIT

REQUIRED_IN_PRODUCTION = (
    (
        "SECRET_KEY",
        "Django's signing key; generate one with `python -c 'import secrets; print(secrets.token_urlsafe(50))'`",
    ),
    (
        "WHATSAPP_APP_SECRET",
        "the app secret from Meta's App Dashboard → Basic settings (checks webhook signatures)",
    ),
    ("WHATSAPP_VERIFY_TOKEN", "the string you type into Meta's webhook configuration as the verify token"),
    ("WHATSAPP_ACCESS_TOKEN", "a system-user access token with whatsapp_business_messaging"),
    ("WHATSAPP_PHONE_NUMBER_ID", "the business number's id from WhatsApp Manager / API Setup"),
    # Empty with DEBUG off, Django answers every request, Meta's included, with 400.
    ("ALLOWED_HOSTS", "the host names this service answers to, comma-separated (e.g. wa.example.com)"),
)


# Secrets anyone can read: the values `.env.example` ships with (tests/test_checks.py keeps this in step with the
# file) and Django's own placeholder prefix. With DEBUG off each is refused as if it were unset.
PUBLIC_EXAMPLE_VALUES = frozenset({"dev-app-secret", "dev-verify-token"})
INSECURE_PREFIX = "django-insecure"
# Shorter secrets can be guessed or brute-forced offline from one signed webhook.
SECRET_MIN_LENGTH = 16
SECRETS = ("SECRET_KEY", "WHATSAPP_APP_SECRET", "WHATSAPP_VERIFY_TOKEN")


@register(Tags.security, deploy=False)
def check_required_settings(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    if settings.DEBUG:
        return []
    errors = [
        Error(f"{name} is not set.", hint=f"Set the environment variable {name}: {what}.", id="outbound.E001")
        for name, what in REQUIRED_IN_PRODUCTION
        if not _is_set(name)
    ]
    errors += [error for name in SECRETS if _is_set(name) and (error := _weak_secret(name)) is not None]
    if settings.OUTBOUND_REPLY_GENERATOR == "openai" and not settings.OPENAI_API_KEY:
        errors.append(
            Error(
                "OPENAI_API_KEY is not set.",
                hint="Set the environment variable OPENAI_API_KEY.",
                id="outbound.E001",
            )
        )
    return errors


def _weak_secret(name: str) -> Error | None:
    value = str(getattr(settings, name))
    hint = (
        f"Set {name} to a long random value of your own, e.g. "
        "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        + (" (and the same in Meta's webhook configuration)." if name == "WHATSAPP_VERIFY_TOKEN" else ".")
    )
    if name == "WHATSAPP_APP_SECRET":
        hint = f"Set {name} to your app's secret from Meta's App Dashboard → Basic settings."
    if value in PUBLIC_EXAMPLE_VALUES or value.startswith(INSECURE_PREFIX):
        return Error(
            f"{name} is a public example value, refused with DEBUG off: anyone could use it to forge "
            "webhooks or sessions.",
            hint=hint,
            id="outbound.E005",
        )
    if len(value) < SECRET_MIN_LENGTH:
        return Error(
            f"{name} is shorter than {SECRET_MIN_LENGTH} characters, refused with DEBUG off.",
            hint=hint,
            id="outbound.E005",
        )
    return None


def _is_set(name: str) -> bool:
    try:
        return bool(getattr(settings, name, ""))
    except ImproperlyConfigured:  # Django refuses to hand out an empty SECRET_KEY: report it, don't crash
        return False


@register(Tags.compatibility)
def check_backends(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    errors = []
    if settings.OUTBOUND_SENDER not in ("graph", "console"):
        errors.append(
            Error(
                f"OUTBOUND_SENDER={settings.OUTBOUND_SENDER!r} is not 'graph' or 'console'.",
                id="outbound.E002",
            )
        )
    elif settings.OUTBOUND_SENDER == "console" and not settings.DEBUG:
        errors.append(
            Error(
                "OUTBOUND_SENDER=console only logs messages and is refused with DEBUG off.",
                hint="Unset OUTBOUND_SENDER (or set it to graph) and configure WHATSAPP_ACCESS_TOKEN.",
                id="outbound.E003",
            )
        )
    if settings.OUTBOUND_REPLY_GENERATOR not in ("openai", "offline"):
        errors.append(
            Error(
                f"OUTBOUND_REPLY_GENERATOR={settings.OUTBOUND_REPLY_GENERATOR!r} is not 'openai' or 'offline'.",
                id="outbound.E002",
            )
        )
    elif settings.OUTBOUND_REPLY_GENERATOR == "offline" and not settings.DEBUG:
        errors.append(
            Error(
                "OUTBOUND_REPLY_GENERATOR=offline sends canned demo replies and is refused with DEBUG off.",
                hint="Unset OUTBOUND_REPLY_GENERATOR (or set it to openai) and configure OPENAI_API_KEY.",
                id="outbound.E003",
            )
        )
    errors += _phone_number_id_errors()
    for name in (
        "OUTBOUND_MAX_ATTEMPTS",
        "OUTBOUND_STALE_SECONDS",
        "OUTBOUND_MAX_SENDS_PER_SECOND",
        "OUTBOUND_MEDIA_MAX_BYTES",
    ):
        if not getattr(settings, name) > 0:
            errors.append(Error(f"{name} must be positive.", id="outbound.E004"))
    if settings.OUTBOUND_RETRY_BASE_SECONDS < 0:
        errors.append(Error("OUTBOUND_RETRY_BASE_SECONDS must not be negative.", id="outbound.E004"))
    if settings.OUTBOUND_KNOWLEDGE_TOP_K < 0:
        errors.append(Error("OUTBOUND_KNOWLEDGE_TOP_K must not be negative.", id="outbound.E004"))
    if not LANGUAGE_NAME.fullmatch(str(settings.OUTBOUND_KNOWLEDGE_LANGUAGE)):
        # Spliced into SQL as a literal (outbound.knowledge): every reply would fail on it.
        errors.append(
            Error(
                f"OUTBOUND_KNOWLEDGE_LANGUAGE={settings.OUTBOUND_KNOWLEDGE_LANGUAGE!r} is not a text search "
                "configuration name.",
                hint="Use the name of one of PostgreSQL's text search configurations, e.g. english, portuguese, "
                "simple (psql: \\dF).",
                id="outbound.E008",
            )
        )
    return errors + _handoff_errors() + _opt_out_errors()


def _phone_number_id_errors() -> list[Error]:
    """WHATSAPP_PHONE_NUMBER_ID: one business number id or a comma-separated list, each Meta's numeric id, once."""
    ids = [part.strip() for part in str(settings.WHATSAPP_PHONE_NUMBER_ID).split(",") if part.strip()]
    if not ids:
        return []  # unset: outbound.E001 reports it when DEBUG is off
    errors = []
    bad = [value for value in ids if not value.isascii() or not value.isdigit()]
    if bad:
        errors.append(
            Error(
                f"WHATSAPP_PHONE_NUMBER_ID has {len(bad)} value(s) that are not a phone number id: "
                + ", ".join(repr(value[:32]) for value in bad[:5]),
                hint="A comma-separated list of the numeric ids shown in WhatsApp Manager / API Setup under "
                "'Phone number ID' (not the phone numbers themselves), e.g. 106540352242922,106540352242923.",
                id="outbound.E007",
            )
        )
    duplicates = sorted({value for value in ids if ids.count(value) > 1})
    if duplicates:
        errors.append(
            Error(
                f"WHATSAPP_PHONE_NUMBER_ID lists {', '.join(duplicates)} more than once.",
                hint="List each business number id once; the first one is the default number.",
                id="outbound.E007",
            )
        )
    return errors


def _handoff_errors() -> list[Error]:
    errors = []
    if settings.OUTBOUND_HANDOFF_HOURS < 0:
        errors.append(
            Error(
                "OUTBOUND_HANDOFF_HOURS must not be negative.",
                hint="Hours before a paused conversation goes back to the bot; 0 means never.",
                id="outbound.E009",
            )
        )
    if len(settings.OUTBOUND_HANDOFF_MESSAGE.strip()) > WHATSAPP_TEXT_LIMIT:
        errors.append(
            Error(
                f"OUTBOUND_HANDOFF_MESSAGE is longer than {WHATSAPP_TEXT_LIMIT} characters.",
                id="outbound.E009",
            )
        )
    if len(settings.OUTBOUND_HANDOFF_BUTTON.strip()) > BUTTON_TITLE_LIMIT:
        errors.append(
            Error(
                f"OUTBOUND_HANDOFF_BUTTON is longer than {BUTTON_TITLE_LIMIT} characters.",
                hint="Meta refuses reply buttons with longer titles, and every bot reply would fail.",
                id="outbound.E009",
            )
        )
    return errors


def _opt_out_errors() -> list[Error]:
    errors = []
    if not settings.OUTBOUND_TYPING_INDICATOR_TIMEOUT > 0:
        errors.append(
            Error(
                "OUTBOUND_TYPING_INDICATOR_TIMEOUT must be positive.",
                hint="Seconds the typing indicator may take before the reply goes on without it (e.g. 2).",
                id="outbound.E010",
            )
        )
    for name in ("OUTBOUND_OPT_OUT_MESSAGE", "OUTBOUND_OPT_IN_MESSAGE"):
        if len(getattr(settings, name).strip()) > WHATSAPP_TEXT_LIMIT:
            errors.append(
                Error(f"{name} is longer than {WHATSAPP_TEXT_LIMIT} characters.", id="outbound.E010")
            )
    both = sorted(
        word
        for word in settings.OUTBOUND_OPT_OUT_KEYWORDS
        if word.strip() and opt_keyword(word, opt_out=(), opt_in=settings.OUTBOUND_OPT_IN_KEYWORDS)
    )
    if both:
        errors.append(
            Error(
                f"OUTBOUND_OPT_OUT_KEYWORDS and OUTBOUND_OPT_IN_KEYWORDS share {', '.join(both)}.",
                hint="A word cannot both stop and start the replies: remove it from one list.",
                id="outbound.E010",
            )
        )
    return errors


@register(Tags.staticfiles, deploy=True)
def check_static_files_collected(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """With the manifest storage (DEBUG off), every admin page is a 500 until `collectstatic` has run."""
    storage = storages["staticfiles"]
    if not isinstance(storage, ManifestFilesMixin):
        return []
    manifest = Path(settings.STATIC_ROOT) / storage.manifest_name
    if manifest.is_file():
        return []
    return [
        Error(
            f"Static files are not collected: {manifest} does not exist, so every admin page would fail.",
            hint="Run `python manage.py collectstatic --noinput` (the Procfile's web line does) before starting "
            "the web server, with the same STATIC_ROOT.",
            id="outbound.E006",
        )
    ]


@register(Tags.security, deploy=False)
def check_metrics_token(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    """A short or public /metrics token with DEBUG off: the figures are readable by anyone who guesses it."""
    token = settings.METRICS_TOKEN
    if settings.DEBUG or not token:
        return []
    if token in PUBLIC_EXAMPLE_VALUES or token.startswith(INSECURE_PREFIX) or len(token) < SECRET_MIN_LENGTH:
        return [
            Warning(
                f"METRICS_TOKEN is shorter than {SECRET_MIN_LENGTH} characters or a public example value: "
                "anyone who guesses it reads the service's traffic, failures and costs at /metrics.",
                hint="Set METRICS_TOKEN to a long random value, e.g. "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'` (and the same in Prometheus' "
                "scrape config), or unset it to turn /metrics off.",
                id="outbound.W010",
            )
        ]
    return []


@register(Tags.compatibility)
def check_prices(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """Each OPENAI_PRICE_*_PER_MTOK must be a number of zero or more (a price per million tokens)."""
    return [
        Error(
            f"{name}={getattr(settings, name)!r} is not a price per million tokens.",
            hint=f"Set {name} to a number of zero or more, e.g. 0.40 (the account's currency).",
            id="outbound.E010",
        )
        for name in PRICE_SETTINGS
        if parse_price(getattr(settings, name)) is None
    ]


@register(Tags.database)
def check_client_side_binding(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """The worker's claim sends two statements in one message (outbound.services.claim_sql): PostgreSQL takes
    that only with client-side binding, Django's default; and its second statement must see what committed
    after the first one's snapshot, which only READ COMMITTED (PostgreSQL's default) gives."""
    return client_side_binding_errors(settings.DATABASES["default"], vendor=connections["default"].vendor)


def client_side_binding_errors(database: dict[str, Any], *, vendor: str) -> list[Error]:
    if vendor != "postgresql":
        return []
    options = database.get("OPTIONS", {})
    errors = []
    # Django turns server-side binding on only for the value True (a string from a URL does not).
    if options.get("server_side_binding") is True:
        errors.append(
            Error(
                "DATABASES['default']['OPTIONS']['server_side_binding'] is not supported.",
                hint="Remove the option: the worker's claim needs client-side binding (Django's default).",
                id="outbound.E011",
            )
        )
    isolation = options.get("isolation_level")
    if isolation is not None and isolation != psycopg.IsolationLevel.READ_COMMITTED:
        errors.append(
            Error(
                f"DATABASES['default']['OPTIONS']['isolation_level'] is {isolation!r}: not supported.",
                hint="Remove the option: the worker's claim needs READ COMMITTED (PostgreSQL's default).",
                id="outbound.E011",
            )
        )
    return errors
