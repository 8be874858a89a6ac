"""Test settings: the production settings with fixed test secrets and a fake Graph host.

The database still comes from DATABASE_URL, so the same suite runs on SQLite and on PostgreSQL.
"""

import os

from config.settings import *  # noqa: F403
from config.settings import BASE_DIR, DATABASES

SECRET_KEY = "tests-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"
WHATSAPP_APP_SECRET = "test-app-secret-0123456789"
WHATSAPP_VERIFY_TOKEN = "test-verify-token"
WHATSAPP_ACCESS_TOKEN = "EAAtestaccesstoken0123456789abcdef"
WHATSAPP_PHONE_NUMBER_ID = "106540352242922"
# Worker subprocess tests point a child `manage.py` at the fake servers and at the test database; these
# TEST_* variables exist only for them (config/settings.py stays the only reader of the real configuration).
WHATSAPP_GRAPH_URL = os.environ.get("TEST_WHATSAPP_GRAPH_URL", "https://graph.test")
WHATSAPP_API_VERSION = "v25.0"
WHATSAPP_TEMPLATE_NAME = "reply_follow_up"
WHATSAPP_TEMPLATE_LANGUAGE = "en_US"
WHATSAPP_TEMPLATE_BODY_PARAMETERS = ["contact_name"]
OPENAI_API_KEY = "sk-test-openai-key-0123456789"
OPENAI_BASE_URL = os.environ.get("TEST_OPENAI_BASE_URL", "http://openai.test/v1")
OUTBOUND_SENDER = "graph"
OUTBOUND_REPLY_GENERATOR = "openai"
OUTBOUND_RETRY_BASE_SECONDS = 30.0
# The read receipt / typing indicator is one more Graph call per reply: off for the suite, whose tests script
# Graph's answers call by call; tests/outbound/test_typing_indicator.py turns it on.
OUTBOUND_TYPING_INDICATOR = False
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
SECURE_SSL_REDIRECT = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

if os.environ.get("TEST_DATABASE_NAME"):
    DATABASES["default"]["NAME"] = os.environ["TEST_DATABASE_NAME"]
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file rather than memory, so that a worker subprocess can share the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "db.sqlite3.test")}
