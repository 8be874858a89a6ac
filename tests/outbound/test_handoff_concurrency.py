"""Handoffs racing on PostgreSQL, with real threads and connections: the bot pauses once (one handoff message),
and staff replies racing each other and a worker's claim neither deadlock nor lose a reply."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection

from outbound.models import Contact, OutboundJob
from outbound.services.claims import outbound_jobs_claim
from outbound.services.handoff import contact_bot_pause, contact_staff_reply
from tests.factories import make_job

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]
R = Contact.PauseReason


def race(n: int, work: Callable[[int], Any]) -> list[Any]:
    """Run `work(i)` in `n` threads released together; each thread has its own connection."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = work(i)
        except Exception as exc:  # reported below, with the others
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    errors = [r for r in results if isinstance(r, Exception)]
    assert errors == []
    return results


def test_racing_handoffs_pause_exactly_once():
    contact = make_job().contact
    reasons = [R.MODEL_ASKED, R.CUSTOMER_ASKED, R.STAFF_ACTION, R.MODEL_FAILED] * 2
    results = race(
        len(reasons), lambda i: contact_bot_pause(contact=Contact(pk=contact.pk), reason=reasons[i])
    )
    assert sum(r.changed for r in results) == 1
    winner = reasons[[r.changed for r in results].index(True)]
    assert Contact.objects.get(pk=contact.pk).bot_pause_reason == winner


def test_staff_replies_racing_each_other_and_a_claim_are_all_kept():
    job = make_job()
    users = [User.objects.create_user(f"agent{i}", is_staff=True) for i in range(4)]

    def work(i: int) -> Any:
        if i == len(users):
            return outbound_jobs_claim(limit=5, worker_id="w")
        contact = Contact.objects.get(pk=job.contact_id)
        return contact_staff_reply(contact=contact, author=users[i], text=f"reply {i}")

    results = race(len(users) + 1, work)
    staff = OutboundJob.objects.filter(kind=OutboundJob.Kind.STAFF)
    assert sorted(staff.values_list("content", flat=True)) == [f"reply {i}" for i in range(4)]
    contact = Contact.objects.get(pk=job.contact_id)
    assert contact.bot_paused_at is not None
    # The bot's reply was either claimed first (and its send will be refused) or handed off while unclaimed;
    # whatever the order, at most one job of the contact is in flight.
    assert OutboundJob.objects.filter(contact=contact, claim_token__isnull=False).count() <= 1
    bot = OutboundJob.objects.get(pk=job.pk)
    claimed = results[len(users)]
    assert bot.status == (OutboundJob.Status.GENERATING if bot in claimed else OutboundJob.Status.HANDED_OFF)
