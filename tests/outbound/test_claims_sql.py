"""The claim on PostgreSQL (outbound.services.claim_sql): one round trip, the same jobs and moves as the ORM's
claim, the same log lines, jobs that need no further query, and rows held by other transactions left alone."""

from __future__ import annotations

import io
import itertools
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.utils import timezone

from outbound.exceptions import ConfigurationError
from outbound.models import Contact, InboundMessage, OutboundJob
from outbound.services import claim_sql
from outbound.services.claims import _claim_with_orm, outbound_jobs_claim, outbound_jobs_claimable_exist
from tests.factories import make_contact, make_job

pytestmark = pytest.mark.postgres
S = OutboundJob.Status
K = OutboundJob.Kind
# Written at the claim (the token is random, the time is the claim's own clock): compared by presence.
VOLATILE = {"claim_token", "updated_at"}


def fresh(job: OutboundJob) -> OutboundJob:
    return OutboundJob.objects.get(pk=job.pk)


def staff_job(contact: Contact, *, kind: str = K.STAFF, **fields: Any) -> OutboundJob:
    fields.setdefault("status", S.READY_TO_SEND)
    fields.setdefault("next_attempt_at", timezone.now() - timedelta(seconds=5))
    return OutboundJob.objects.create(contact=contact, kind=kind, content="a person's words", **fields)


def pause(contact: Contact, *, human_at: datetime | None = None) -> None:
    now = timezone.now()
    Contact.objects.filter(pk=contact.pk).update(
        bot_paused_at=now, bot_human_at=human_at or now, bot_pause_reason=Contact.PauseReason.STAFF_ACTION
    )


def transitions(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("job_transition")]


def row(obj: Any) -> dict[str, Any]:
    return {
        f.attname: getattr(obj, f.attname)
        for f in type(obj)._meta.concrete_fields
        if f.attname not in VOLATILE
    }


def outcome(claimed: list[OutboundJob], caplog: pytest.LogCaptureFixture) -> dict[str, Any]:
    """What a claim returned (every column of the jobs, their contacts and messages), every job's row after
    it, and the transition lines it logged."""
    returned = [
        (
            row(job),
            job.claim_token is not None,
            row(job.contact),
            row(job.inbound_message) if job.inbound_message else None,
        )
        for job in claimed
    ]
    table = {job.pk: (row(job), job.claim_token is not None) for job in OutboundJob.objects.order_by("pk")}
    return {"returned": returned, "table": table, "log": transitions(caplog)}


def claim_both_ways(caplog: pytest.LogCaptureFixture, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ORM's claim (rolled back), then the SQL claim, from the same rows at the same `now`."""
    kwargs.setdefault("now", timezone.now())
    kwargs.setdefault("worker_id", "w1")
    exclude = set(kwargs.pop("exclude_ids", ()))
    caplog.set_level(logging.INFO, logger="outbound.models.jobs")
    caplog.clear()
    with transaction.atomic():
        orm = outcome(_claim_with_orm(exclude=exclude, **kwargs), caplog)
        transaction.set_rollback(True)
    caplog.clear()
    sql = outcome(outbound_jobs_claim(exclude_ids=exclude, **kwargs), caplog)
    return orm, sql


def mixed_contacts() -> dict[str, Any]:
    """One contact for each case the claim decides."""
    now = timezone.now()
    made: dict[str, Any] = {}
    numbers = itertools.count()

    def contact(name: str) -> Contact:
        return make_contact(wa_id=f"1555300{next(numbers):04d}", name=name)

    c = made["burst"] = contact("burst")
    for i in range(3):
        make_job(
            contact=c, at=now - timedelta(minutes=30 - i), next_attempt_at=now - timedelta(minutes=30 - i)
        )
    c = made["people"] = contact("people")
    make_job(contact=c, at=now - timedelta(minutes=29))
    made["people_first"] = staff_job(c)
    staff_job(c, kind=K.HANDOFF)
    c = made["paused"] = contact("paused")
    make_job(contact=c, at=now - timedelta(minutes=28))
    made["paused_staff"] = staff_job(c)
    pause(c)
    c = made["paused_bot_only"] = contact("paused bot only")
    make_job(contact=c, at=now - timedelta(minutes=27))
    pause(c)
    c = made["pause_expired"] = contact("pause expired")
    make_job(contact=c, at=now - timedelta(minutes=26))
    pause(c, human_at=now - timedelta(hours=48))
    c = made["opted_out"] = contact("opted out")
    make_job(contact=c, at=now - timedelta(minutes=25))
    Contact.objects.filter(pk=c.pk).update(opted_out_at=now)
    c = made["busy"] = contact("busy")
    make_job(
        contact=c, status=S.GENERATING, claim_token="8b5e3f3a-5c43-4ad0-9c44-0c7ab3e7d3a1", claimed_at=now
    )
    make_job(contact=c, at=now - timedelta(minutes=24))
    c = made["newest_not_due"] = contact("newest not due")
    make_job(contact=c, at=now - timedelta(minutes=23))
    make_job(contact=c, at=now - timedelta(minutes=1), next_attempt_at=now + timedelta(minutes=5))
    c = made["newest_excluded"] = contact("newest excluded")
    make_job(contact=c, at=now - timedelta(minutes=22))
    made["excluded"] = make_job(contact=c, at=now - timedelta(minutes=2))
    c = made["ready"] = contact("ready to send again")
    make_job(
        contact=c,
        status=S.READY_TO_SEND,
        content="saved reply",
        knowledge=[{"id": 1, "title": "Opening hours"}],
        attempts=1,
        first_claimed_at=now - timedelta(minutes=20),
        next_attempt_at=now - timedelta(minutes=21),
    )
    c = made["failed_and_new"] = contact("failed and new")
    make_job(contact=c, status=S.FAILED, at=now - timedelta(minutes=40))
    make_job(contact=c, at=now - timedelta(minutes=19))
    for i in range(3):
        c = contact(f"plain {i}")
        make_job(contact=c, at=now - timedelta(minutes=18 - i))
    return made


@pytest.mark.django_db
@pytest.mark.parametrize("limit", [1, 3, 5, 50])
@pytest.mark.parametrize("handoff_hours", [24, 0])
def test_the_sql_claim_does_what_the_orm_claim_does(caplog, settings, limit, handoff_hours):
    settings.OUTBOUND_HANDOFF_HOURS = handoff_hours
    made = mixed_contacts()
    orm, sql = claim_both_ways(caplog, limit=limit, exclude_ids=[made["excluded"].pk])
    assert sql == orm
    assert sql["returned"]
    if limit == 50:
        # Each case went as the claim decides it (the ORM's claim agreeing is the reference above).
        claimed = {job.contact_id: job for job in OutboundJob.objects.filter(claim_token__isnull=False)}
        assert claimed[made["people"].pk].pk == made["people_first"].pk
        assert claimed[made["paused"].pk].pk == made["paused_staff"].pk
        assert (made["paused_bot_only"].pk in claimed) is False
        assert (made["pause_expired"].pk in claimed) is (handoff_hours > 0)
        assert made["opted_out"].pk in claimed
        assert made["newest_not_due"].pk not in claimed
        assert made["newest_excluded"].pk not in claimed
        ready = claimed[made["ready"].pk]
        assert (ready.status, ready.attempts) == (S.READY_TO_SEND, 2)
        assert ready.first_claimed_at < ready.claimed_at
        superseded = OutboundJob.objects.filter(status=S.SUPERSEDED)
        # Folded even when the newest is not claimed this time (not due, excluded), as the ORM's fold does.
        assert {job.contact_id for job in superseded} == {
            made["burst"].pk,
            made["newest_not_due"].pk,
            made["newest_excluded"].pk,
        }


@pytest.mark.django_db
def test_a_burst_is_folded_into_the_newest_with_the_transition_lines(caplog):
    caplog.set_level(logging.INFO, logger="outbound.models.jobs")
    now = timezone.now()
    contact = make_contact()
    jobs = [make_job(contact=contact, at=now - timedelta(seconds=30 - i)) for i in range(3)]
    [claimed] = outbound_jobs_claim(limit=5, worker_id="w1")
    assert claimed.pk == jobs[-1].pk
    assert (claimed.status, claimed.attempts, claimed.claimed_by) == (S.GENERATING, 1, "w1")
    assert claimed.claim_token == fresh(claimed).claim_token is not None
    for older in jobs[:-1]:
        assert (fresh(older).status, fresh(older).superseded_by_id) == (S.SUPERSEDED, claimed.pk)
    c = contact.pk
    assert transitions(caplog) == [
        *(
            f"job_transition event=superseded job_id={older.pk} contact_id={c} from=PENDING to=SUPERSEDED "
            f"attempt=0 send_as=TEXT superseded_by={claimed.pk}"
            for older in jobs[:-1]
        ),
        f"job_transition event=claim job_id={claimed.pk} contact_id={c} from=PENDING to=GENERATING attempt=1 "
        "send_as=TEXT ",
    ]


@pytest.mark.django_db
def test_the_fold_follows_the_message_time_not_the_job_order():
    now = timezone.now()
    contact = make_contact()
    newest = make_job(contact=contact, at=now - timedelta(seconds=10))
    older = make_job(contact=contact, at=now - timedelta(seconds=50))  # delivered late: a higher pk
    [claimed] = outbound_jobs_claim(limit=5, worker_id="w1")
    assert claimed.pk == newest.pk
    assert fresh(older).superseded_by_id == newest.pk


@pytest.mark.django_db
def test_a_persons_job_goes_first_alone_and_the_bot_replies_wait():
    contact = make_contact()
    bots = [make_job(contact=contact), make_job(contact=contact)]
    first = staff_job(contact)
    staff_job(contact, kind=K.HANDOFF)
    [claimed] = outbound_jobs_claim(limit=5, worker_id="w1")
    assert (claimed.pk, claimed.status, claimed.inbound_message) == (first.pk, S.READY_TO_SEND, None)
    assert {(fresh(bot).status, fresh(bot).claim_token) for bot in bots} == {(S.PENDING, None)}


@pytest.mark.django_db
@pytest.mark.parametrize("handoff_hours", [24, 0])
def test_a_paused_contacts_bot_reply_is_held_and_a_staff_reply_still_goes(settings, handoff_hours):
    settings.OUTBOUND_HANDOFF_HOURS = handoff_hours
    held = make_job(contact=make_contact(wa_id="15551000001"))
    pause(held.contact)
    assert outbound_jobs_claim(limit=5, worker_id="w1") == []
    staff = staff_job(held.contact)
    [claimed] = outbound_jobs_claim(limit=5, worker_id="w1")
    assert claimed.pk == staff.pk
    assert fresh(held).status == S.PENDING


@pytest.mark.django_db
def test_an_expired_pause_holds_nothing():
    job = make_job()
    pause(job.contact, human_at=timezone.now() - timedelta(hours=25))
    assert [j.pk for j in outbound_jobs_claim(limit=5, worker_id="w1")] == [job.pk]


@pytest.mark.django_db
def test_an_opted_out_contacts_job_is_claimed_as_before():
    # The claim does not look at the opt-out: processing settles the job (no reply) and the send refuses it.
    job = make_job()
    Contact.objects.filter(pk=job.contact_id).update(opted_out_at=timezone.now())
    assert [j.pk for j in outbound_jobs_claim(limit=5, worker_id="w1")] == [job.pk]


@pytest.mark.django_db
def test_excluded_jobs_and_the_limit():
    now = timezone.now()
    jobs = [
        make_job(
            contact=make_contact(wa_id=f"1555100{i:04d}"), next_attempt_at=now - timedelta(minutes=9 - i)
        )
        for i in range(4)
    ]
    claimed = outbound_jobs_claim(limit=2, worker_id="w1", exclude_ids=iter([jobs[0].pk]))
    assert [job.pk for job in claimed] == [jobs[1].pk, jobs[2].pk]
    assert fresh(jobs[0]).claim_token is None
    assert [job.pk for job in outbound_jobs_claim(limit=0, worker_id="w1")] == []
    assert [job.pk for job in outbound_jobs_claim(limit=5, worker_id="w1")] == [jobs[0].pk, jobs[3].pk]


@pytest.mark.django_db
def test_a_contact_with_a_job_in_flight_is_skipped():
    first = make_job(contact=make_contact(wa_id="15551000001"))
    [claimed] = outbound_jobs_claim(limit=5, worker_id="w1")
    assert claimed.pk == first.pk
    second = make_job(contact=first.contact)
    other = make_job(contact=make_contact(wa_id="15551000002"))
    assert [job.pk for job in outbound_jobs_claim(limit=5, worker_id="w2")] == [other.pk]
    assert (fresh(second).status, fresh(second).claim_token) == (S.PENDING, None)


@pytest.mark.django_db
def test_a_claim_is_one_round_trip_and_its_jobs_need_no_further_query(django_assert_num_queries):
    outbound_jobs_claim(
        limit=1, worker_id="w0"
    )  # the connection's first claim also reads its isolation level
    bot = make_job(contact=make_contact(wa_id="15551000001"), knowledge=[{"id": 3, "title": "Prices"}])
    staff = staff_job(make_contact(wa_id="15551000002"))
    with django_assert_num_queries(1):
        claimed = outbound_jobs_claim(limit=5, worker_id="w1")
    with django_assert_num_queries(0):
        by_pk = {job.pk: job for job in claimed}
        assert by_pk[bot.pk].contact.wa_id == "15551000001"
        assert by_pk[bot.pk].inbound_message.text == bot.inbound_message.text
        assert by_pk[bot.pk].inbound_message.raw == bot.inbound_message.raw
        assert by_pk[bot.pk].inbound_message.outbound_job is by_pk[bot.pk]
        assert by_pk[bot.pk].knowledge == [{"id": 3, "title": "Prices"}]
        assert by_pk[staff.pk].contact.wa_id == "15551000002"
        assert by_pk[staff.pk].inbound_message is None
        assert all(not job._state.adding and job._state.db == "default" for job in claimed)
    with django_assert_num_queries(1):
        assert outbound_jobs_claim(limit=5, worker_id="w1") == []


@pytest.mark.django_db
def test_the_second_statement_looks_again_for_a_job_in_flight():
    # A claim of the contact that committed after statement 1 took its snapshot (a staff reply arrived and was
    # claimed) is invisible to statement 1; statement 2 runs under the contact locks with a later snapshot and
    # must leave the contact alone. Statement 2 run alone, handed a contact that is busy by now:
    busy = make_job(contact=make_contact(wa_id="15551000001"))
    OutboundJob.objects.filter(pk=busy.pk).update(status=S.GENERATING, claim_token=uuid.uuid4())
    waiting = make_job(contact=busy.contact)
    free = make_job(contact=make_contact(wa_id="15551000002"))
    statement = claim_sql._statement("default")
    locked = f"{{{busy.contact_id},{free.contact_id}}}"
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config(%s, %s, true)", [claim_sql.CONTACTS_SETTING, locked])
        params = claim_sql.claim_params(limit=1, worker_id="w1", now=timezone.now(), exclude=[])
        cursor.execute(statement.claim_sql, params)
        claimed = claim_sql.read_claim_rows(cursor.fetchall())
    # The limit counts the contacts left after that check, as the ORM's claim does.
    assert [job.pk for job in claimed] == [free.pk]
    assert (fresh(waiting).status, fresh(waiting).claim_token) == (S.PENDING, None)


# ------------------------------------------------------------------ other transactions holding rows
@contextmanager
def held_elsewhere(lock: Callable[[], Any]) -> Iterator[None]:
    """Run `lock` in another thread (its own connection and transaction) and keep its locks until the end."""
    locked, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def hold() -> None:
        try:
            with transaction.atomic():
                lock()
                locked.set()
                release.wait(timeout=30)
        except BaseException as exc:  # reported in the test's thread
            errors.append(exc)
            locked.set()
        finally:
            connection.close()

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert locked.wait(timeout=30)
        assert errors == []
        yield
    finally:
        release.set()
        thread.join(timeout=30)


@pytest.mark.django_db(transaction=True)
def test_a_job_row_held_elsewhere_is_skipped():
    held = make_job(contact=make_contact(wa_id="15551000001"))
    free = make_job(contact=make_contact(wa_id="15551000002"))
    with held_elsewhere(lambda: list(OutboundJob.objects.select_for_update().filter(pk=held.pk))):
        assert [job.pk for job in outbound_jobs_claim(limit=5, worker_id="w1")] == [free.pk]
        assert outbound_jobs_claimable_exist(exclude_ids=[free.pk])
    assert [job.pk for job in outbound_jobs_claim(limit=5, worker_id="w1")] == [held.pk]


@pytest.mark.django_db(transaction=True)
def test_a_contact_row_held_elsewhere_is_skipped():
    held = make_job(contact=make_contact(wa_id="15551000001"))
    free = make_job(contact=make_contact(wa_id="15551000002"))
    with held_elsewhere(lambda: list(Contact.objects.select_for_update().filter(pk=held.contact_id))):
        assert [job.pk for job in outbound_jobs_claim(limit=5, worker_id="w1")] == [free.pk]
    assert [job.pk for job in outbound_jobs_claim(limit=5, worker_id="w1")] == [held.pk]


@pytest.mark.django_db(transaction=True)
def test_a_contact_whose_older_open_job_is_held_elsewhere_is_left_whole():
    now = timezone.now()
    contact = make_contact()
    # Not due, so not a candidate: only the fold would touch it, and it cannot lock it.
    older = make_job(contact=contact, at=now - timedelta(minutes=5), next_attempt_at=now + timedelta(hours=1))
    newest = make_job(contact=contact, at=now - timedelta(minutes=1))
    with held_elsewhere(lambda: list(OutboundJob.objects.select_for_update().filter(pk=older.pk))):
        assert outbound_jobs_claim(limit=5, worker_id="w1") == []
        assert {fresh(older).status, fresh(newest).status} == {S.PENDING}
    [claimed] = outbound_jobs_claim(limit=5, worker_id="w1")
    assert claimed.pk == newest.pk
    assert fresh(older).superseded_by_id == newest.pk


@pytest.mark.django_db(transaction=True)
def test_racing_claimers_take_each_job_once_and_one_job_per_contact():
    now = timezone.now()
    contacts = [make_contact(wa_id=f"1555400{i:04d}") for i in range(24)]
    for i, contact in enumerate(contacts):
        for k in range(1 + i % 3):
            make_job(contact=contact, at=now - timedelta(minutes=10 - k))
        if i % 5 == 0:
            staff_job(contact)
    barrier = threading.Barrier(6)
    taken: list[list[int]] = [[] for _ in range(6)]
    errors: list[BaseException] = []

    def claimer(n: int) -> None:
        try:
            barrier.wait(timeout=30)
            for _ in range(200):
                jobs = outbound_jobs_claim(limit=2, worker_id=f"w{n}")
                taken[n] += [job.pk for job in jobs]
                if not jobs and not outbound_jobs_claimable_exist():
                    return
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    all_taken = [pk for pks in taken for pk in pks]
    assert len(all_taken) == len(set(all_taken)) == len(contacts)
    in_flight = OutboundJob.objects.filter(claim_token__isnull=False)
    assert sorted(in_flight.values_list("pk", flat=True)) == sorted(all_taken)
    assert sorted(in_flight.values_list("contact_id", flat=True)) == sorted(c.pk for c in contacts)


def test_the_statement_is_built_once():
    assert claim_sql._statement("default") is claim_sql._statement("default")
    assert InboundMessage._meta.db_table in claim_sql._statement("default").sql


@pytest.mark.django_db(transaction=True)
def test_the_isolation_level_is_read_once_per_connection(django_assert_num_queries):
    connection.close()
    with django_assert_num_queries(2) as first:
        assert outbound_jobs_claim(limit=1, worker_id="w1") == []
    assert "transaction_isolation" in first.captured_queries[0]["sql"]
    with django_assert_num_queries(1):
        assert outbound_jobs_claim(limit=1, worker_id="w1") == []


@pytest.mark.django_db(transaction=True)
def test_a_database_or_role_defaulting_to_repeatable_read_stops_the_worker_naming_the_level():
    job = make_job(contact=make_contact(wa_id="15551000009"))
    # Not in DATABASES' OPTIONS (check E011 refuses it there), but set on the database itself.
    name = connection.settings_dict["NAME"]
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER DATABASE \"{name}\" SET default_transaction_isolation = 'repeatable read'")
    try:
        connection.close()  # a new connection takes the database's default
        with pytest.raises(ConfigurationError, match=r"'repeatable read'.*needs 'read committed'"):
            outbound_jobs_claim(limit=1, worker_id="w1")
        with pytest.raises(CommandError, match="needs 'read committed'"):
            call_command("run_outbound_jobs", "--until-idle", stdout=io.StringIO())
        assert (fresh(job).status, fresh(job).claim_token) == (S.PENDING, None)
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f'ALTER DATABASE "{name}" RESET default_transaction_isolation')
        connection.close()
