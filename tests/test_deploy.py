"""Production settings as an operator sets them: `check --deploy` is clean, and a missing variable is named.

These run manage.py in a subprocess with a clean environment (no .env influence: real variables win, and every
variable that matters is set here), exactly like CI's production check.
"""

from __future__ import annotations

import os
import runpy
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent

PRODUCTION = {
    "DEBUG": "false",
    "SECRET_KEY": "deploy-test-" + "k" * 50,
    "ALLOWED_HOSTS": "wa.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://wa.example.com",
    "WHATSAPP_APP_SECRET": "deploy-test-app-secret-0123456789",
    "WHATSAPP_VERIFY_TOKEN": "deploy-test-verify-token",
    "WHATSAPP_ACCESS_TOKEN": "EAAdeploytest",
    "WHATSAPP_PHONE_NUMBER_ID": "106540352242922",
    "OPENAI_API_KEY": "sk-deploy-test",
    "OUTBOUND_SENDER": "graph",
    "OUTBOUND_REPLY_GENERATOR": "openai",
}


def manage(
    *args: str, tmp_path: Path, unset: tuple[str, ...] = (), **overrides: str
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "STATIC_ROOT": str(tmp_path / "static"),
        **PRODUCTION,
    }
    env.update(overrides)
    for name in unset:
        env.pop(name)
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
    collected = manage("collectstatic", "--noinput", "--verbosity", "0", tmp_path=tmp_path)
    assert collected.returncode == 0, collected.stderr
    result = manage("check", "--deploy", "--fail-level", "WARNING", tmp_path=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (2 silenced)." in result.stdout  # HSTS subdomains, preload


@pytest.mark.slow
def test_check_deploy_names_collectstatic_when_static_files_are_missing(tmp_path):
    result = manage("check", "--deploy", tmp_path=tmp_path)
    assert result.returncode == 1
    assert "(outbound.E006) Static files are not collected" in result.stderr
    assert "python manage.py collectstatic --noinput" in result.stderr
    assert "Traceback" not in result.stderr
    # The worker needs no static files: its command is not blocked by this deployment check.
    assert manage("check", tmp_path=tmp_path).returncode == 0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("WHATSAPP_APP_SECRET", "dev-app-secret", "is a public example value"),
        ("WHATSAPP_VERIFY_TOKEN", "dev-verify-token", "is a public example value"),
        ("SECRET_KEY", "django-insecure-copied-from-a-tutorial-0123456789", "is a public example value"),
        ("WHATSAPP_APP_SECRET", "short-secret", "is shorter than 16 characters"),
    ],
)
def test_a_public_or_short_secret_is_refused_naming_it(tmp_path, name, value, message):
    result = manage("check", tmp_path=tmp_path, **{name: value})
    assert result.returncode == 1
    assert f"(outbound.E005) {name} {message}" in result.stderr
    assert value not in result.stderr  # the refused secret itself is not printed
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_with_debug_off_a_leftover_env_file_is_not_read(tmp_path):
    # `make run` left a .env with the example secret; production sets DEBUG=false but forgets the secret.
    env_file = tmp_path / ".env"
    env_file.write_text("DEBUG=true\nWHATSAPP_APP_SECRET=a-long-enough-leftover-secret\n")
    result = manage("check", tmp_path=tmp_path, unset=("WHATSAPP_APP_SECRET",), ENV_FILE=str(env_file))
    assert result.returncode == 1
    assert "(outbound.E001) WHATSAPP_APP_SECRET is not set." in result.stderr
    # Without DEBUG in the real environment, the developer's .env is read as before.
    dev = manage("check", tmp_path=tmp_path, unset=("DEBUG", "WHATSAPP_APP_SECRET"), ENV_FILE=str(env_file))
    assert dev.returncode == 0, dev.stderr


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(":", 1) for line in lines if line.strip() and not line.startswith("#"))


def test_procfile_has_release_web_and_worker():
    processes = procfile()
    assert processes["release"].strip() == "python manage.py migrate --noinput"
    assert "gunicorn config.wsgi:application --config gunicorn.conf.py" in processes["web"]
    assert "collectstatic --noinput" in processes["web"]
    assert processes["worker"].strip().startswith("python manage.py run_outbound_jobs --loop")


def test_gunicorn_access_log_leaves_out_query_strings():
    config = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    # %(r)s is the request line with its query (hub.verify_token); %(q)s the query; %(f)s the referer.
    for leaky in ("%(r)s", "%(q)s", "%(f)s"):
        assert leaky not in config["access_log_format"]
    assert "%(U)s" in config["access_log_format"]
    assert 1 <= config["workers"] <= 9
    assert config["accesslog"] == "-"


@pytest.mark.slow
def test_the_procfile_web_line_serves_the_admin_with_its_css(tmp_path):
    port = free_port()
    env = {
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        "HOME": str(tmp_path),
        "DEBUG": "true",
        "PORT": str(port),
        "GUNICORN_WORKERS": "1",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "STATIC_ROOT": str(tmp_path / "static"),
    }
    server = subprocess.Popen(
        ["bash", "-c", procfile()["web"]], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                login = requests.get(f"{base}/admin/login/", timeout=2)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        else:
            pytest.fail("gunicorn did not start")
        assert login.status_code == 200
        assert '<link rel="stylesheet" href="/static/admin/css/base.css">' in login.text
        css = requests.get(f"{base}/static/admin/css/base.css", timeout=2)
        assert css.status_code == 200
        assert css.headers["Content-Type"].startswith("text/css")
        assert (tmp_path / "static" / "admin" / "css" / "base.css").is_file()  # collectstatic ran first
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0].decode()
    assert f"Listening at: http://127.0.0.1:{port}" in output  # loopback: only the proxy reaches it
    assert '"GET /static/admin/css/base.css HTTP/1.1" 200' in output
