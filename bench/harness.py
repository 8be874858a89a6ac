"""Processes and data for the benchmarks and the fault tests: databases, seeded jobs, gunicorn, workers.

Everything here starts real processes the way the Procfile does (`gunicorn ... --config gunicorn.conf.py`,
`manage.py run_outbound_jobs`), on loopback only, and every helper that starts one also stops it.
The ORM helpers (`seed_jobs`, `job_counts`) need Django set up by the caller (bench.run_all or pytest).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

# Production-shaped settings (DEBUG off, every required secret set), for gunicorn and the workers.
APP_SECRET = "bench-app-secret"  # noqa: S105 (a benchmark-only value, not a secret)
VERIFY_TOKEN = "bench-verify-token"  # noqa: S105
PHONE_NUMBER_ID = "106540352242922"


def production_env(*, database_url: str, **overrides: str) -> dict[str, str]:
    """The environment a deployed web or worker process would have, pointed at `database_url`."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", str(REPO)),
        "LANG": "C.UTF-8",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DEBUG": "false",
        "SECRET_KEY": "bench-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz-0123456789",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "false",
        "DATABASE_URL": database_url,
        "WHATSAPP_APP_SECRET": APP_SECRET,
        "WHATSAPP_VERIFY_TOKEN": VERIFY_TOKEN,
        "WHATSAPP_ACCESS_TOKEN": "EAAbenchaccesstoken0123456789abcdef",
        "WHATSAPP_PHONE_NUMBER_ID": PHONE_NUMBER_ID,
        "WHATSAPP_TEMPLATE_NAME": "reply_follow_up",
        "OPENAI_API_KEY": "sk-bench-openai-key-0123456789",
        "OUTBOUND_RETRY_BASE_SECONDS": "0",
        "PYTHONUNBUFFERED": "1",
    }
    env.update(overrides)
    return env


# ---------------------------------------------------------------------------------------------- databases
def with_db_name(url: str, name: str) -> str:
    """`url` with its database name replaced."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def db_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def recreate_database(url: str) -> None:
    """Drop and create the database named in `url` (PostgreSQL), connecting to the `postgres` database."""
    import psycopg
    from psycopg import sql

    name = db_name(url)
    with psycopg.connect(with_db_name(url, "postgres"), autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [name],
        )
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def manage(args: list[str], *, env: Mapping[str, str], timeout: float = 120) -> str:
    """Run `manage.py <args>`; raise with its output if it fails."""
    proc = subprocess.run(
        [PYTHON, "manage.py", *args],
        cwd=REPO,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


# ---------------------------------------------------------------------------------------------- data
def seed_jobs(n: int, *, prefix: str, last_inbound_at: datetime | None = None) -> list[int]:
    """Bulk-insert `n` contacts, each with one inbound text message and one PENDING job; return the job ids.

    One contact per job, so that the one-job-per-contact-in-flight rule does not serialise them.
    """
    from django.utils import timezone

    from outbound.models import Contact, InboundMessage, OutboundJob

    now = timezone.now()
    when = last_inbound_at or now - timedelta(seconds=30)
    contacts = Contact.objects.bulk_create(
        [
            Contact(
                phone_number_id=PHONE_NUMBER_ID,
                wa_id=f"{prefix}{i:07d}",
                profile_name=f"Bench {i}",
                last_inbound_at=when,
            )
            for i in range(n)
        ]
    )
    messages = InboundMessage.objects.bulk_create(
        [
            InboundMessage(
                wamid=f"wamid.{prefix}-{i}",
                contact=contact,
                type="text",
                text=f"Question number {i}?",
                needs_reply=True,
                timestamp=when,
                raw={"id": f"wamid.{prefix}-{i}", "type": "text"},
            )
            for i, contact in enumerate(contacts)
        ]
    )
    jobs = OutboundJob.objects.bulk_create(
        [
            OutboundJob(contact=message.contact, inbound_message=message, next_attempt_at=now)
            for message in messages
        ]
    )
    return [job.pk for job in jobs]


def job_counts() -> dict[str, int]:
    """Jobs per status."""
    from django.db.models import Count

    from outbound.models import OutboundJob

    return {
        row["status"]: row["n"]
        for row in OutboundJob.objects.order_by().values("status").annotate(n=Count("pk"))
    }


def clear_tables() -> None:
    """Delete every job, message, contact and heartbeat (between benchmark cases)."""
    from outbound.models import Contact, InboundMessage, OutboundJob, WorkerHeartbeat

    OutboundJob.objects.all().delete()
    InboundMessage.objects.all().delete()
    Contact.objects.all().delete()
    WorkerHeartbeat.objects.all().delete()


# ---------------------------------------------------------------------------------------------- processes
@dataclass
class ProcessResult:
    returncode: int
    max_rss_kib: int
    seconds: float
    stdout: str
    stderr: str


class ProcessGroup:
    """Started processes, each with its output in a file; `wait()` collects exit codes and peak memory."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[tuple[subprocess.Popen[bytes], Path, float]] = []

    def start(self, args: list[str], *, env: Mapping[str, str], name: str) -> subprocess.Popen[bytes]:
        self.logdir.mkdir(parents=True, exist_ok=True)
        log = self.logdir / f"{name}-{len(self.procs)}.log"
        out: IO[bytes] = log.open("wb")
        proc = subprocess.Popen(args, cwd=REPO, env=dict(env), stdout=out, stderr=subprocess.STDOUT)
        out.close()
        self.procs.append((proc, log, time.monotonic()))
        return proc

    def wait(self, timeout: float) -> list[ProcessResult]:
        """Wait for every process (killing any still running at the deadline) and report each one."""
        deadline = time.monotonic() + timeout
        results = []
        for proc, log, started in self.procs:
            rc, rss = _wait_with_rusage(proc, deadline)
            results.append(
                ProcessResult(
                    returncode=rc,
                    max_rss_kib=rss,
                    seconds=time.monotonic() - started,
                    stdout=log.read_text(errors="replace"),
                    stderr="",
                )
            )
        self.procs.clear()
        return results


def _wait_with_rusage(proc: subprocess.Popen[bytes], deadline: float) -> tuple[int, int]:
    """Reap `proc` with wait4 so that its peak RSS (KiB on Linux) is known; kill it at the deadline."""
    while True:
        if proc.returncode is not None:  # already reaped by someone else: no rusage
            return proc.returncode, 0
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_maxrss
        if time.monotonic() > deadline:
            proc.send_signal(signal.SIGKILL)
            pid, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_maxrss
        time.sleep(0.02)


def worker_args(
    *, concurrency: int, max_runtime: float = 120, until_idle: bool = True, extra: list[str] | None = None
) -> list[str]:
    """`manage.py run_outbound_jobs` as a cron run: by default one that ends when nothing is due."""
    return [
        PYTHON,
        "manage.py",
        "run_outbound_jobs",
        "--concurrency",
        str(concurrency),
        "--max-runtime",
        str(max_runtime),
        *(["--until-idle"] if until_idle else []),
        *(extra or []),
    ]


@contextlib.contextmanager
def gunicorn(*, env: Mapping[str, str], port: int, workers: int, logdir: Path) -> Iterator[str]:
    """Start gunicorn as the Procfile does; yield its base URL once it answers; stop it (SIGTERM)."""
    env = {
        **env,
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": str(workers),
        "GUNICORN_ACCESSLOG": str(logdir / "gunicorn-access.log"),
    }
    logdir.mkdir(parents=True, exist_ok=True)
    log = (logdir / "gunicorn.log").open("wb")
    proc = subprocess.Popen(
        [
            str(Path(PYTHON).parent / "gunicorn"),
            "config.wsgi:application",
            "--config",
            "gunicorn.conf.py",
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{base}/healthz", proc, logdir / "gunicorn.log")
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until_up(url: str, proc: subprocess.Popen[Any], log: Path, timeout: float = 30) -> None:
    """Poll `url` until the server answers anything (even a 503) or the process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 (loopback)
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server at {url} did not answer in {timeout}s")
