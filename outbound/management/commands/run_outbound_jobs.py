"""`python manage.py run_outbound_jobs`: one cron run (or, with --loop, a long-running worker)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from outbound.models import OutboundJob
from outbound.services.processing import Outcome
from outbound.worker import Worker
from outbound.worker_config import worker_config_from_settings


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
            help="stop claiming after this many seconds (default 50, so a cron run ends before the next tick)",
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
            default=2.0,
            help="seconds to sleep in --loop when nothing is due",
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
            idle_sleep=options["idle_sleep"],
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
