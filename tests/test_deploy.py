"""Production settings as an operator sets them: `check --deploy` is clean, and a missing variable is named.

These run manage.py in a subprocess with a clean environment (no .env influence: real variables win, and every
variable that matters is set here), exactly like CI's production check.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PRODUCTION = {
    "DEBUG": "false",
    "SECRET_KEY": "deploy-test-" + "k" * 50,
    "ALLOWED_HOSTS": "wa.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://wa.example.com",
    "WHATSAPP_APP_SECRET": "app-secret",
    "WHATSAPP_VERIFY_TOKEN": "verify-token",
    "WHATSAPP_ACCESS_TOKEN": "EAAdeploytest",
    "WHATSAPP_PHONE_NUMBER_ID": "106540352242922",
    "OPENAI_API_KEY": "sk-deploy-test",
    "OUTBOUND_SENDER": "graph",
    "OUTBOUND_REPLY_GENERATOR": "openai",
}


def manage(*args: str, tmp_path: Path, **overrides: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        **PRODUCTION,
    }
    # Empty, not absent: a developer's .env must not fill the gap (real variables win over .env).
    env.update(overrides)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.slow
def test_check_deploy_reports_nothing(tmp_path):
    result = manage("check", "--deploy", "--fail-level", "WARNING", tmp_path=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["SECRET_KEY", "WHATSAPP_APP_SECRET", "WHATSAPP_ACCESS_TOKEN", "OPENAI_API_KEY"]
)
def test_a_missing_variable_is_named_without_a_traceback(tmp_path, name):
    result = manage("check", tmp_path=tmp_path, **{name: ""})
    assert result.returncode == 1
    assert f"(outbound.E001) {name} is not set." in result.stderr
    assert f"HINT: Set the environment variable {name}" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_the_console_sender_is_refused_in_production(tmp_path):
    result = manage("check", tmp_path=tmp_path, OUTBOUND_SENDER="console")
    assert result.returncode == 1
    assert "(outbound.E003) OUTBOUND_SENDER=console only logs messages" in result.stderr
