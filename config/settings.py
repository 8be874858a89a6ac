"""Django settings: the only module that reads the environment (django-environ, `.env` supported).

Every variable is documented in `.env.example` and in the README's configuration table.
"""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# `.env` is for a developer's machine (`make run` creates it from `.env.example`, DEBUG on). A production host
# sets real variables, DEBUG=false among them, and then no `.env` is read at all: a forgotten secret is reported
# as missing rather than silently filled with a public example value from a leftover `.env`. Otherwise real
# variables win over `.env`. ENV_FILE points elsewhere (tests use it).
ENV_FILE = Path(env.str("ENV_FILE", default=str(BASE_DIR / ".env")))
if env.bool("DEBUG", default=True):
    environ.Env.read_env(ENV_FILE, overwrite=False)

# GENERAL
# ------------------------------------------------------------------------------
DEBUG: bool = env.bool("DEBUG", default=False)
# Dev-only fallback. With DEBUG off an empty key is reported by the system check outbound.E001.
SECRET_KEY: str = env.str("SECRET_KEY", default="") or (
    "django-insecure-dev-only-key-never-use-in-production" if DEBUG else ""
)
ALLOWED_HOSTS: list[str] = env.list(
    "ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"] if DEBUG else []
)
CSRF_TRUSTED_ORIGINS: list[str] = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "config.apps.WhatsAppAdminConfig",  # django.contrib.admin with our index page
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "webhooks",
    "outbound",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Filled by `collectstatic` (the Procfile's web line runs it); whitenoise serves it with far-future caching.
STATIC_ROOT: Path = Path(env.str("STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Meta batches up to 1000 updates and up to 3 MB in one webhook POST; Django's default limit (2.5 MB)
# would reject the largest ones. Above this limit the webhook answers 413.
DATA_UPLOAD_MAX_MEMORY_SIZE: int = env.int("WEBHOOK_MAX_BODY_BYTES", default=4 * 1024 * 1024)

# DATABASE
# ------------------------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web server read while the worker writes; IMMEDIATE takes the write lock at BEGIN so that
    # a claim transaction can never be upgraded into a "database is locked" error half-way.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
else:
    # Persistent connections, checked before reuse so a restarted PostgreSQL does not fail a request; the
    # check looks at the socket first and needs no round trip while it is quiet (outbound/postgresql/base.py).
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        DATABASES["default"]["ENGINE"] = "outbound.postgresql"
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].setdefault(
        "connect_timeout", env.int("DATABASE_CONNECT_TIMEOUT", default=5)
    )

# SECURITY (production: behind an HTTPS reverse proxy)
# ------------------------------------------------------------------------------
# Trusts X-Forwarded-Proto, so the proxy must overwrite it (never pass a client's own); gunicorn binds to
# loopback by default so that nothing but the proxy can reach the app (docs/deploy.md).
if env.bool("SECURE_PROXY_SSL_HEADER_ENABLED", default=not DEBUG):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT: bool = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
# The load balancer's health probe usually speaks plain HTTP to the app.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SECURE_HSTS_SECONDS: int = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
# Both commit every subdomain (preload: for months, in browsers' lists), not just this service: opt in.
SECURE_HSTS_INCLUDE_SUBDOMAINS: bool = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD: bool = env.bool("SECURE_HSTS_PRELOAD", default=False)
# Django's deploy checks ask for both; leaving them off is the decision above, not an oversight.
SILENCED_SYSTEM_CHECKS = ["security.W005", "security.W021"]
SESSION_COOKIE_SECURE: bool = not DEBUG
CSRF_COOKIE_SECURE: bool = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# WHATSAPP (Meta Cloud API)
# ------------------------------------------------------------------------------
WHATSAPP_APP_SECRET: str = env.str("WHATSAPP_APP_SECRET", default="")
WHATSAPP_VERIFY_TOKEN: str = env.str("WHATSAPP_VERIFY_TOKEN", default="")
WHATSAPP_ACCESS_TOKEN: str = env.str("WHATSAPP_ACCESS_TOKEN", default="")
# Comma-separated: the business numbers served; webhooks for any other number are ignored (webhooks.views).
WHATSAPP_PHONE_NUMBER_ID: str = env.str("WHATSAPP_PHONE_NUMBER_ID", default="")
WHATSAPP_GRAPH_URL: str = env.str("WHATSAPP_GRAPH_URL", default="https://graph.facebook.com")
WHATSAPP_API_VERSION: str = env.str("WHATSAPP_API_VERSION", default="v25.0")
WHATSAPP_TIMEOUT: float = env.float("WHATSAPP_TIMEOUT", default=15.0)
WHATSAPP_TEMPLATE_NAME: str = env.str("WHATSAPP_TEMPLATE_NAME", default="")
WHATSAPP_TEMPLATE_LANGUAGE: str = env.str("WHATSAPP_TEMPLATE_LANGUAGE", default="en_US")
# What fills the template's body placeholders {{1}}, {{2}}, ... in order; known values: contact_name.
WHATSAPP_TEMPLATE_BODY_PARAMETERS: list[str] = env.list("WHATSAPP_TEMPLATE_BODY_PARAMETERS", default=[])
# The 24-hour window is treated as closed this long before it really closes: a reply must not race it.
WHATSAPP_WINDOW_MARGIN_SECONDS: int = env.int("WHATSAPP_WINDOW_MARGIN_SECONDS", default=300)
# The WhatsApp Business Account id: `check_whatsapp_template` lists its templates; template webhooks of any
# other account are ignored (unset: all are recorded).
WHATSAPP_BUSINESS_ACCOUNT_ID: str = env.str("WHATSAPP_BUSINESS_ACCOUNT_ID", default="")

# OPENAI (the SDK reads OPENAI_API_KEY and OPENAI_BASE_URL itself; they are read here to check and pass them)
# ------------------------------------------------------------------------------
OPENAI_API_KEY: str = env.str("OPENAI_API_KEY", default="")
OPENAI_BASE_URL: str | None = env.str("OPENAI_BASE_URL", default="") or None
OPENAI_MODEL: str = env.str("OPENAI_MODEL", default="gpt-4.1-mini")
OPENAI_TIMEOUT: float = env.float("OPENAI_TIMEOUT", default=30.0)
OPENAI_SYSTEM_PROMPT: str = env.str("OPENAI_SYSTEM_PROMPT", default="")
OPENAI_SYSTEM_PROMPT_FILE: Path = Path(
    env.str(
        "OPENAI_SYSTEM_PROMPT_FILE", default=str(BASE_DIR / "templates" / "outbound" / "system_prompt.txt")
    )
)
# Prices per million tokens (the account's currency), for the estimated cost per reply on the admin and /metrics.
# The defaults are OpenAI's list prices in USD for the default model (gpt-4.1-mini); set them for another model.

# Read as text: the system check outbound.E010 names a value that is not a price.
OPENAI_PRICE_INPUT_PER_MTOK: str = env.str("OPENAI_PRICE_INPUT_PER_MTOK", default="0.40")
OPENAI_PRICE_CACHED_INPUT_PER_MTOK: str = env.str("OPENAI_PRICE_CACHED_INPUT_PER_MTOK", default="0.10")
OPENAI_PRICE_OUTPUT_PER_MTOK: str = env.str("OPENAI_PRICE_OUTPUT_PER_MTOK", default="1.60")
# How many earlier messages (inbound and outbound) the model sees with the one it answers.
OPENAI_HISTORY_MESSAGES: int = env.int("OPENAI_HISTORY_MESSAGES", default=20)
# Voice notes are transcribed with this model (OpenAI's transcription endpoint, same key and base URL).
OPENAI_TRANSCRIPTION_MODEL: str = env.str("OPENAI_TRANSCRIPTION_MODEL", default="gpt-4o-mini-transcribe")

# OUTBOUND (the worker)
# ------------------------------------------------------------------------------
OUTBOUND_MAX_ATTEMPTS: int = env.int("OUTBOUND_MAX_ATTEMPTS", default=5)
OUTBOUND_RETRY_BASE_SECONDS: float = env.float("OUTBOUND_RETRY_BASE_SECONDS", default=30.0)
OUTBOUND_RETRY_MAX_SECONDS: float = env.float("OUTBOUND_RETRY_MAX_SECONDS", default=3600.0)
OUTBOUND_STALE_SECONDS: int = env.int("OUTBOUND_STALE_SECONDS", default=300)
OUTBOUND_MAX_SENDS_PER_SECOND: float = env.float("OUTBOUND_MAX_SENDS_PER_SECOND", default=80.0)
# "graph" sends through Meta; "console" logs the exact Graph request instead (DEBUG only).
OUTBOUND_SENDER: str = env.str(
    "OUTBOUND_SENDER", default="console" if DEBUG and not WHATSAPP_ACCESS_TOKEN else "graph"
)
# "openai" asks the model; "offline" returns a canned, clearly labelled reply (DEBUG only).
OUTBOUND_REPLY_GENERATOR: str = env.str(
    "OUTBOUND_REPLY_GENERATOR", default="offline" if DEBUG and not OPENAI_API_KEY else "openai"
)
# Human handoff: a paused conversation goes back to the bot this many hours after the last staff reply
# (0: never by itself); the message the customer gets, once, when the conversation is handed to a person; and
# the title of the optional "Talk to a person" reply button offered in bot replies (empty: no button).
OUTBOUND_HANDOFF_HOURS: int = env.int("OUTBOUND_HANDOFF_HOURS", default=24)
OUTBOUND_HANDOFF_MESSAGE: str = env.str(
    "OUTBOUND_HANDOFF_MESSAGE",
    default="Thanks! A person from our team will answer you here as soon as possible.",
)
OUTBOUND_HANDOFF_BUTTON: str = env.str("OUTBOUND_HANDOFF_BUTTON", default="")
# Mark the customer's message read and show "typing…" while a reply is generated (best effort: a failure
# or a timeout is logged and never delays the reply by more than the timeout, never costs an attempt).
OUTBOUND_TYPING_INDICATOR: bool = env.bool("OUTBOUND_TYPING_INDICATOR", default=True)
OUTBOUND_TYPING_INDICATOR_TIMEOUT: float = env.float("OUTBOUND_TYPING_INDICATOR_TIMEOUT", default=2.0)
# Opt-out and opt-in: a message that is only one of these words (any case, surrounding punctuation ignored)
# stops the bot's replies for that customer, or starts them again; each change is confirmed once. No everyday
# words: Spanish "baja" / "alta" (low / high, also a size) are answers to questions, not requests to stop.
OUTBOUND_OPT_OUT_KEYWORDS: list[str] = env.list(
    "OUTBOUND_OPT_OUT_KEYWORDS",
    default=[
        "STOP",
        "STOPALL",
        "UNSUBSCRIBE",
        "PARAR",
        "DETENER",
        "ARRÊT",
        "ARRET",
        "STOPP",
        "ABMELDEN",
        "DISISCRIVI",
    ],
)
OUTBOUND_OPT_IN_KEYWORDS: list[str] = env.list(
    "OUTBOUND_OPT_IN_KEYWORDS",
    default=[
        "START",
        "UNSTOP",
        "SUBSCRIBE",
        "INICIAR",
        "COMENZAR",
        "DÉMARRER",
        "DEMARRER",
        "ANMELDEN",
    ],
)
OUTBOUND_OPT_OUT_MESSAGE: str = env.str(
    "OUTBOUND_OPT_OUT_MESSAGE",
    default="You will get no more automatic replies from us here. Send START at any time to turn them back on.",
)
OUTBOUND_OPT_IN_MESSAGE: str = env.str(
    "OUTBOUND_OPT_IN_MESSAGE",
    default="Welcome back! We will answer your messages here again. Send STOP at any time to stop.",
)
# The largest voice note or image the worker downloads from Meta (Meta's own limit for audio: 16 MB). Larger
# media is not downloaded: the customer is asked to write instead.
OUTBOUND_MEDIA_MAX_BYTES: int = env.int("OUTBOUND_MEDIA_MAX_BYTES", default=16 * 1024 * 1024)
# Bearer token Prometheus sends to /metrics; empty: /metrics answers 404 (off).
METRICS_TOKEN: str = env.str("METRICS_TOKEN", default="")
# /healthz reports 503 when no worker run has finished for this long.
OUTBOUND_HEALTH_MAX_AGE_SECONDS: int = env.int("OUTBOUND_HEALTH_MAX_AGE_SECONDS", default=180)
# How many knowledge entries (the most relevant to the customer's recent messages) the model sees per reply.
OUTBOUND_KNOWLEDGE_TOP_K: int = env.int("OUTBOUND_KNOWLEDGE_TOP_K", default=5)
# PostgreSQL's text-search configuration for the entries and the questions (stemming, stop words). The search
# column is built with it by `migrate`; after changing it, run `manage.py reindex_knowledge`.
OUTBOUND_KNOWLEDGE_LANGUAGE: str = env.str("OUTBOUND_KNOWLEDGE_LANGUAGE", default="english")

# LOGGING (stdout, one line per event; never tokens, never message text at INFO)
# ------------------------------------------------------------------------------
LOG_LEVEL: str = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "line": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {
        "stdout": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": "line"},
    },
    "root": {"handlers": ["stdout"], "level": "WARNING"},
    "loggers": {
        "webhooks": {"level": LOG_LEVEL},
        "outbound": {"level": LOG_LEVEL},
        # Replaces Django's own console handler, which printed each line twice beside ours with DEBUG on.
        "django": {"level": "WARNING"},
        "django.request": {"level": "ERROR"},
    },
}
