"""`python manage.py run_outbound_jobs`: one cron run (or, with --loop, a long-running worker).

A cron run stays for `--max-runtime`, answering messages as they arrive (woken by PostgreSQL's NOTIFY, or
polling every `--idle-sleep` seconds on SQLite); `--until-idle` ends it as soon as nothing is due instead.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection

from outbound.models import OutboundJob
from outbound.services.processing import Outcome
from outbound.worker import Worker
from outbound.worker_config import worker_config_from_settings

# When nothing is due: PostgreSQL wakes an idle run by NOTIFY, so its poll is only the fallback (a lost
# notification, a listening connection being re-opened); SQLite has nothing to wake it and polls more often.
IDLE_SLEEP_POSTGRESQL = 2.0
IDLE_SLEEP_POLLING = 0.5


def default_idle_sleep() -> float:
    """The poll interval for this database when --idle-sleep is not given."""
    return IDLE_SLEEP_POSTGRESQL if connection.vendor == "postgresql" else IDLE_SLEEP_POLLING


def positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} must be 1 or more")
    return number


def positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not number > 0 or number == float("inf"):
        raise argparse.ArgumentTypeError(f"{value!r} must be a positive number of seconds")
    return number


class Command(BaseCommand):
    help = "Recover stale claims, then generate and send due WhatsApp replies."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--max-runtime",
            type=positive_float,
            default=50.0,
            help="stay this many seconds taking new jobs as they arrive, then stop claiming (default 50; set it "
            "just under the cron period)",
        )
        parser.add_argument(
            "--until-idle",
            action="store_true",
            help="end as soon as nothing is due instead of waiting for new jobs (drains, scripts, benchmarks)",
        )
        parser.add_argument(
            "--batch-size", type=positive_int, default=None, help="stop after claiming this many jobs"
        )
        parser.add_argument(
            "--concurrency", type=positive_int, default=1, help="jobs in flight at once (threads)"
        )
        parser.add_argument(
            "--loop", action="store_true", help="keep polling until SIGTERM (for a supervisor)"
        )
        parser.add_argument(
            "--idle-sleep",
            type=positive_float,
            default=None,
            help="when nothing is due, look again after this many seconds: the fallback when no notification "
            f"wakes the run (default {IDLE_SLEEP_POSTGRESQL:g} on PostgreSQL, which wakes the run within "
            f"milliseconds by LISTEN/NOTIFY; {IDLE_SLEEP_POLLING:g} on SQLite, which can only poll)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        _configure_logging(options["verbosity"])
        worker = Worker(
            config=worker_config_from_settings(),
            stale_seconds=settings.OUTBOUND_STALE_SECONDS,
            concurrency=options["concurrency"],
            batch_size=options["batch_size"],
            max_runtime=options["max_runtime"],
            loop=options["loop"],
            stay=not options["until_idle"],
            idle_sleep=options["idle_sleep"] or default_idle_sleep(),
            on_job_done=self._progress if options["verbosity"] >= 2 else None,
        )
        previous = _install_sigterm(worker)
        try:
            summary = worker.run()
        finally:
            _restore_sigterm(previous)
        self.stdout.write(f"run_outbound_jobs {summary.line()}")
        if worker.fatal is not None:
            raise CommandError(str(worker.fatal))

    def _progress(self, job: OutboundJob, outcome: Outcome) -> None:
        self.stdout.write(
            f"job {job.pk} contact {job.contact_id} attempt {job.attempts}: {outcome} ({job.status})"
        )


def _configure_logging(verbosity: int) -> None:
    level = {0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO}.get(verbosity, logging.DEBUG)
    logging.getLogger("outbound").setLevel(min(level, logging.getLogger("outbound").getEffectiveLevel()))


def _install_sigterm(worker: Worker) -> Any:
    def handler(signum: int, frame: FrameType | None) -> None:
        sys.stderr.write("SIGTERM: finishing the jobs in flight, then exiting\n")
        worker.stop()

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (tests calling the command from a thread)
        return None


def _restore_sigterm(previous: Any) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)
