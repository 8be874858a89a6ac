"""The hand-written UPDATE behind every job transition (outbound/models/transition_sql.py): fencing, the
unclaimed condition, the contact's hold in the same statement (BotPaused or JobChanged), values converted as the
ORM would on both databases, one statement per move, and the statement text kept per shape."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.db.models import F, Q
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from outbound.models import BotPaused, Contact, Event, JobChanged, OutboundJob, bot_paused_q
from outbound.models import transition_sql as statements
from outbound.models.contacts import bot_paused_sql
from tests.factories import make_contact, make_job

pytestmark = pytest.mark.django_db
S = OutboundJob.Status
K = OutboundJob.Kind


def claimed(status: str = S.PENDING, **fields: Any) -> tuple[OutboundJob, uuid.UUID]:
    job = make_job(status=status, **fields)
    token = uuid.uuid4()
    job.mark_claimed(token=token, worker_id="w1", now=timezone.now())
    return job, token


def row_of(job: OutboundJob) -> dict[str, Any]:
    return dict(OutboundJob.objects.filter(pk=job.pk).values().get())


def hold(contact: Contact, *, paused_hours_ago: float | None = None, opted_out: bool = False) -> None:
    now = timezone.now()
    if paused_hours_ago is not None:
        contact.bot_paused_at = contact.bot_human_at = now - timedelta(hours=paused_hours_ago)
    if opted_out:
        contact.opted_out_at = now
    contact.save()


# ------------------------------------------------------------------------------------------------ fencing
def test_a_wrong_token_is_job_changed_and_leaves_the_row_alone():
    job, _ = claimed(S.READY_TO_SEND, content="x")
    before = row_of(job)
    with pytest.raises(JobChanged) as raised:
        job.mark_sent(token=uuid.uuid4(), wa_message_id="wamid.X", message_status="accepted", response={})
    assert not isinstance(raised.value, BotPaused)
    assert row_of(job) == before
    assert job.status == S.READY_TO_SEND  # nothing set in memory either


def test_a_changed_status_is_job_changed_even_with_the_right_token():
    job, token = claimed()
    stale = OutboundJob.objects.get(pk=job.pk)
    job.mark_generated(token=token, content="the reply", send_as=OutboundJob.SendAs.TEXT)
    before = row_of(job)
    with pytest.raises(JobChanged):
        stale.mark_generated(token=token, content="another", send_as=OutboundJob.SendAs.TEXT)
    assert row_of(job) == before


def test_require_unclaimed_refuses_a_claimed_row():
    job = make_job()
    stale = OutboundJob.objects.get(pk=job.pk)  # still thinks nobody holds it
    job.mark_claimed(token=uuid.uuid4(), worker_id="w1", now=timezone.now())
    stale.status = S.PENDING
    before = row_of(job)
    with pytest.raises(JobChanged):
        stale.mark_superseded(by=make_job())
    with pytest.raises(JobChanged):
        stale.mark_cancelled()
    assert row_of(job) == before


# ----------------------------------------------------------------------------------- the contact's hold
@pytest.mark.parametrize(
    ("paused_hours_ago", "opted_out"),
    [(1, False), (None, True), (1, True)],
    ids=["paused", "opted-out", "both"],
)
def test_send_started_refused_while_the_contact_is_held_is_bot_paused(paused_hours_ago, opted_out):
    job, token = claimed(S.READY_TO_SEND, content="x")
    hold(job.contact, paused_hours_ago=paused_hours_ago, opted_out=opted_out)
    before = row_of(job)
    with CaptureQueriesContext(connection) as queries, pytest.raises(BotPaused):
        job.mark_send_started(token=token, send_as=OutboundJob.SendAs.TEXT)
    assert len(queries) == 2  # the refused UPDATE, then the check that told paused from changed
    assert row_of(job) == before
    assert job.send_started_at is None


def test_a_held_contact_with_a_lost_claim_is_job_changed():
    job, _ = claimed(S.READY_TO_SEND, content="x")
    hold(job.contact, paused_hours_ago=1, opted_out=True)
    with pytest.raises(JobChanged) as raised:
        job.mark_send_started(token=uuid.uuid4(), send_as=OutboundJob.SendAs.TEXT)
    assert not isinstance(raised.value, BotPaused)


def test_an_expired_pause_no_longer_holds_the_send(settings):
    settings.OUTBOUND_HANDOFF_HOURS = 24
    job, token = claimed(S.READY_TO_SEND, content="x")
    hold(job.contact, paused_hours_ago=25)
    job.mark_send_started(token=token, send_as=OutboundJob.SendAs.TEXT)
    assert row_of(job)["send_started_at"] == job.send_started_at


def test_with_handoff_hours_zero_a_pause_never_expires(settings):
    settings.OUTBOUND_HANDOFF_HOURS = 0
    job, token = claimed(S.READY_TO_SEND, content="x")
    hold(job.contact, paused_hours_ago=24 * 365)
    with pytest.raises(BotPaused):
        job.mark_send_started(token=token, send_as=OutboundJob.SendAs.TEXT)


def test_another_contacts_hold_does_not_refuse_the_send():
    job, token = claimed(S.READY_TO_SEND, content="x")
    hold(make_contact(wa_id="15550001111"), paused_hours_ago=1, opted_out=True)
    job.mark_send_started(token=token, send_as=OutboundJob.SendAs.TEXT)
    assert row_of(job)["send_started_at"] is not None


@pytest.mark.parametrize("kind", [K.STAFF, K.HANDOFF])
def test_people_and_the_handoff_message_go_out_to_a_held_contact(kind):
    job, token = claimed(S.READY_TO_SEND, content="x", kind=kind)
    hold(job.contact, paused_hours_ago=1, opted_out=True)
    job.mark_send_started(token=token, send_as=OutboundJob.SendAs.TEXT)
    assert row_of(job)["send_started_at"] is not None


@pytest.mark.parametrize("opted_out", [False, True])
@pytest.mark.parametrize("human_hours_ago", [None, -1, 1, 23, 25], ids=lambda h: f"human-{h}")
@pytest.mark.parametrize("paused", [False, True])
@pytest.mark.parametrize("hours", [0, 24])
def test_the_hold_refuses_exactly_what_the_orms_exclude_refused(
    settings, hours, paused, human_hours_ago, opted_out
):
    """Against the condition the ORM excluded before (bot_paused_q | opted out), NULLs included."""
    settings.OUTBOUND_HANDOFF_HOURS = hours
    now = timezone.now()
    job, token = claimed(S.READY_TO_SEND, content="x")
    contact = job.contact
    contact.bot_paused_at = now - timedelta(hours=30) if paused else None
    contact.bot_human_at = None if human_hours_ago is None else now - timedelta(hours=human_hours_ago)
    contact.opted_out_at = now if opted_out else None
    contact.save()
    held = bot_paused_q(now=now, prefix="contact__") | Q(contact__opted_out_at__isnull=False)
    orm_allows = OutboundJob.objects.filter(pk=job.pk).exclude(held).exists()
    try:
        job.mark_send_started(token=token, send_as=OutboundJob.SendAs.TEXT)
    except BotPaused:
        allowed = False
    else:
        allowed = True
    assert allowed == orm_allows


@pytest.mark.parametrize("hours", [0, 24])
def test_bot_paused_sql_selects_the_contacts_bot_paused_q_selects(settings, hours):
    settings.OUTBOUND_HANDOFF_HOURS = hours
    now = timezone.now()
    cases = [None, now, now - timedelta(hours=23), now - timedelta(hours=25), now + timedelta(hours=1)]
    for i, paused_at in enumerate([None, now - timedelta(hours=30)]):
        for j, human_at in enumerate(cases):
            Contact.objects.create(
                phone_number_id="1", wa_id=f"1555{i}{j}", bot_paused_at=paused_at, bot_human_at=human_at
            )
    predicate, params = bot_paused_sql(now=now, alias="c", connection=connection)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT c.id FROM {Contact._meta.db_table} c WHERE {predicate}", params)  # noqa: S608
        by_sql = {pk for (pk,) in cursor.fetchall()}
    by_q = set(Contact.objects.filter(bot_paused_q(now=now)).values_list("pk", flat=True))
    assert by_sql == by_q
    assert by_q  # the grid has paused contacts under either setting


# --------------------------------------------------------------------------------------------- the values
def test_uuid_json_and_datetimes_are_stored_as_the_orm_stores_them():
    job = make_job()
    token = uuid.uuid4()
    at = timezone.now().replace(microsecond=123456)
    job.mark_claimed(token=token, worker_id="w1", now=at)
    assert OutboundJob.objects.filter(claim_token=token, claimed_at=at, last_attempt_at=at).get().pk == job.pk
    knowledge = [{"id": 7, "title": "Horario — “verano”"}]
    job.mark_generated(token=token, content="x", send_as=OutboundJob.SendAs.TEXT, knowledge=knowledge)
    response = {"messages": [{"id": "wamid.A"}], "nested": {"ok": True, "none": None, "n": 1.5}}
    job.mark_sent(token=token, wa_message_id="wamid.A", message_status="accepted", response=response)
    row = OutboundJob.objects.get(pk=job.pk)
    assert (row.knowledge, row.send_response, row.claim_token) == (knowledge, response, None)
    assert row.claimed_at is None
    assert row.updated_at == job.updated_at
    assert row.updated_at.tzinfo is not None
    # Stored as JSON (not a JSON string): the database's own JSON lookups see inside.
    assert OutboundJob.objects.filter(send_response__nested__ok=True, knowledge__0__id=7).get().pk == job.pk


def test_uuid_column_holds_the_backends_form():
    job, token = claimed()
    column = OutboundJob._meta.get_field("claim_token").column
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {column} FROM {OutboundJob._meta.db_table} WHERE id = %s",  # noqa: S608
            [job.pk],
        )
        (stored,) = cursor.fetchone()
    assert stored == (token if connection.features.has_native_uuid_field else token.hex)


def test_a_foreign_key_is_set_from_the_instance():
    job = make_job()
    newer = make_job()
    job.mark_superseded(by=newer)
    assert row_of(job)["superseded_by_id"] == newer.pk
    assert job.superseded_by == newer


# ------------------------------------------------------------------------------- one statement, kept text
def test_each_transition_is_one_statement(django_assert_num_queries):
    job = make_job()
    token = uuid.uuid4()
    with django_assert_num_queries(1):
        job.mark_claimed(token=token, worker_id="w1", now=timezone.now())
    with django_assert_num_queries(1):
        job.mark_generated(token=token, content="x", send_as=OutboundJob.SendAs.TEXT)
    with django_assert_num_queries(1):
        job.mark_send_started(token=token, send_as=OutboundJob.SendAs.TEXT)
    with django_assert_num_queries(1):
        job.mark_sent(token=token, wa_message_id="wamid.B", message_status="accepted", response={})


def test_the_statement_of_a_shape_is_built_once(monkeypatch):
    first, token = claimed()
    first.mark_generated(token=token, content="x", send_as=OutboundJob.SendAs.TEXT)
    built: list[tuple[str, ...]] = []
    real_build = statements._build

    def counting_build(model, conn, names, **kwargs):
        built.append(names)
        return real_build(model, conn, names, **kwargs)

    monkeypatch.setattr(statements, "_build", counting_build)
    second, token = claimed()
    with CaptureQueriesContext(connection) as queries:
        second.mark_generated(token=token, content="y", send_as=OutboundJob.SendAs.TEXT)
    shape = ("content", "send_as", "knowledge", "generated_at", "status", "updated_at")
    kept = statements.transition_sql(
        OutboundJob, connection, shape, fenced=True, unclaimed=False, unless_paused=None
    )
    assert kept is statements.transition_sql(
        OutboundJob, connection, shape, fenced=True, unclaimed=False, unless_paused=None
    )
    assert built == []  # the shape above is mark_generated's, built by `first`
    assert len(queries) == 1
    # Another shape is another statement.
    other = statements.transition_sql(
        OutboundJob, connection, shape, fenced=False, unclaimed=True, unless_paused=None
    )
    assert other is not kept
    assert "IS NULL" in other.update
    assert "IS NULL" not in kept.update


def test_job_changed_inside_a_transaction_leaves_it_usable():
    job, _ = claimed(S.READY_TO_SEND, content="x")
    with transaction.atomic():
        with pytest.raises(JobChanged):
            job.mark_send_started(token=uuid.uuid4(), send_as=OutboundJob.SendAs.TEXT)
        OutboundJob.objects.filter(pk=job.pk).update(content="still writable")
    assert row_of(job)["content"] == "still writable"


def test_an_expression_is_refused_before_anything_is_written():
    job = make_job()
    with pytest.raises(TypeError, match="expressions"):
        job._transition(S.CANCELLED, event=Event.STAFF_CANCEL, attempts=F("attempts") + 1)
    assert row_of(job)["status"] == S.PENDING


def test_with_info_off_the_move_is_made_and_nothing_logged(caplog):
    caplog.set_level(logging.WARNING, logger="outbound.models.jobs")
    job = make_job()
    job.mark_claimed(token=uuid.uuid4(), worker_id="w1", now=timezone.now())
    assert row_of(job)["status"] == S.GENERATING
    assert not [r for r in caplog.records if r.getMessage().startswith("job_transition")]
    caplog.set_level(logging.INFO, logger="outbound.models.jobs")
    job.mark_held(token=job.claim_token)
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("job_transition")]
    assert line.startswith(
        f"job_transition event=held job_id={job.pk} contact_id={job.contact_id} from=GENERATING"
    )
