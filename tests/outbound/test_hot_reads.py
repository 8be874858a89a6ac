"""The worker's hand-written per-job reads give what the ORM queries they replace give, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from outbound.hot_reads import (
    BotJobFacts,
    bot_job_facts,
    contact_has_media,
    contact_state_refresh,
    conversation_rows,
    folded_interactive_payloads,
    saved_system_prompt,
)
from outbound.models import Contact, InboundMessage, OutboundJob, ReplySettings
from outbound.services.media import FETCHED_TYPES
from outbound.vocabulary import NO_REPLY_TYPES

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)


def contact(wa_id: str = "15550001") -> Contact:
    return Contact.objects.create(phone_number_id="106540352242922", wa_id=wa_id, last_inbound_at=T0)


def message(
    who: Contact, n: int, *, at: datetime, type: str = "text", text: str | None = None, **kw
) -> InboundMessage:
    return InboundMessage.objects.create(
        wamid=f"wamid.{who.wa_id}-{n}",
        contact=who,
        type=type,
        text=f"message {n}" if text is None else text,
        timestamp=at,
        raw=kw.pop("raw", {"id": n}),
        **kw,
    )


def sent(who: Contact, content: str, *, at: datetime | None, **kw) -> OutboundJob:
    return OutboundJob.objects.create(
        contact=who,
        kind=OutboundJob.Kind.STAFF,
        status=OutboundJob.Status.SENT,
        content=content,
        sent_at=at,
        **kw,
    )


def orm_conversation(*, contact_id: int, until: datetime, limit: int) -> list[tuple[str, str, int | None]]:
    """The two ORM queries and the Python merge that conversation_for used before (the reference)."""
    inbound = (
        InboundMessage.objects.filter(contact_id=contact_id, timestamp__lte=until)
        .exclude(text="")
        .exclude(type__in=sorted(NO_REPLY_TYPES))
        .order_by("-timestamp", "-pk")
        .values_list("timestamp", "text", "pk")[:limit]
    )
    outbound = (
        OutboundJob.objects.filter(
            contact_id=contact_id, status=OutboundJob.Status.SENT, sent_at__isnull=False
        )
        .exclude(content="")
        .exclude(send_as=OutboundJob.SendAs.TEMPLATE)
        .order_by("-sent_at")
        .values_list("sent_at", "content")[:limit]
    )
    turns: list[tuple[Any, int, tuple[str, str, int | None]]] = [
        (ts, 0, ("user", text, pk)) for ts, text, pk in inbound
    ]
    turns += [(ts, 1, ("assistant", text, None)) for ts, text in outbound]
    turns.sort(key=lambda item: (item[0], item[1]))
    return [turn for _, _, turn in turns]


def test_the_conversation_is_the_orm_queries_merged_in_order():
    who, other = contact(), contact("15550002")
    for n in range(8):
        message(who, n, at=T0 + timedelta(seconds=10 * n))
    message(who, 20, at=T0 + timedelta(seconds=15), text="")  # no text: left out
    message(who, 21, at=T0 + timedelta(seconds=16), type=sorted(NO_REPLY_TYPES)[0])  # never answered
    message(who, 22, at=T0 + timedelta(seconds=25))
    message(who, 23, at=T0 + timedelta(seconds=25))  # same instant: newest id first, as before
    message(who, 24, at=T0 + timedelta(hours=1))  # after the answered message
    message(other, 1, at=T0 + timedelta(seconds=12))  # another conversation
    sent(who, "reply at 10", at=T0 + timedelta(seconds=10))  # same instant as message 1: after it
    sent(who, "reply at 35", at=T0 + timedelta(seconds=35))
    sent(who, "", at=T0 + timedelta(seconds=36))  # nothing said
    sent(who, "template", at=T0 + timedelta(seconds=37), send_as=OutboundJob.SendAs.TEMPLATE)
    sent(who, "not yet", at=None)
    OutboundJob.objects.create(contact=who, kind=OutboundJob.Kind.STAFF, content="failed", sent_at=T0)
    sent(other, "other's", at=T0 + timedelta(seconds=11))
    until = T0 + timedelta(seconds=70)
    for limit in (1, 3, 5, 20):
        expected = orm_conversation(contact_id=who.pk, until=until, limit=limit)
        assert conversation_rows(contact_id=who.pk, until=until, limit=limit) == expected
    rows = conversation_rows(contact_id=who.pk, until=until, limit=20)
    assert [text for _, text, _ in rows][:3] == ["message 0", "message 1", "reply at 10"]
    assert [text for _, text, _ in rows].count("message 24") == 0


def test_the_contact_state_is_read_again_with_aware_datetimes():
    who = contact()
    user = get_user_model().objects.create(username="staff")
    stale = Contact.objects.get(pk=who.pk)
    now = timezone.now()
    Contact.objects.filter(pk=who.pk).update(
        bot_paused_at=now, bot_human_at=now, opted_out_at=now, opted_out_by=user
    )
    assert contact_state_refresh(stale) is True
    assert (stale.bot_paused_at, stale.bot_human_at, stale.opted_out_at, stale.opted_out_by_id) == (
        now,
        now,
        now,
        user.pk,
    )
    assert stale.bot_paused(now=now)
    assert all(
        timezone.is_aware(value) for value in (stale.bot_paused_at, stale.bot_human_at, stale.opted_out_at)
    )
    Contact.objects.filter(pk=who.pk).update(
        bot_paused_at=None, bot_human_at=None, opted_out_at=None, opted_out_by=None
    )
    assert contact_state_refresh(stale) is True
    assert (stale.bot_paused_at, stale.bot_human_at, stale.opted_out_at, stale.opted_out_by_id) == (None,) * 4
    Contact.objects.filter(pk=who.pk).delete()
    assert contact_state_refresh(stale) is False


def test_media_is_found_only_of_the_fetched_types_with_an_id():
    who = contact()
    message(who, 1, at=T0, type="image", media_id="")
    message(who, 2, at=T0, type="document", media_id="m-2")
    assert contact_has_media(who.pk, FETCHED_TYPES) is False
    message(who, 3, at=T0, type="audio", media_id="m-3")
    assert contact_has_media(who.pk, FETCHED_TYPES) is True
    assert contact_has_media(contact("15550009").pk, FETCHED_TYPES) is False


def test_the_folded_taps_are_the_interactive_messages_of_superseded_jobs():
    who = contact()
    answered = message(who, 1, at=T0 + timedelta(seconds=9))
    newest = OutboundJob.objects.create(contact=who, inbound_message=answered)
    tap = {"id": "t", "type": "interactive", "interactive": {"button_reply": {"id": "x", "title": "y"}}}
    tapped = message(who, 2, at=T0, type="interactive", raw=tap)
    typed = message(who, 3, at=T0 + timedelta(seconds=1))
    for folded in (tapped, typed):
        OutboundJob.objects.create(
            contact=who, inbound_message=folded, status=OutboundJob.Status.SUPERSEDED, superseded_by=newest
        )
    other = message(who, 4, at=T0, type="interactive", raw={"other": True})
    OutboundJob.objects.create(contact=who, inbound_message=other)  # not folded into the newest
    assert folded_interactive_payloads(newest.pk) == [tap]
    assert folded_interactive_payloads(OutboundJob.objects.get(inbound_message=other).pk) == []


def test_the_saved_prompt_is_read_each_time():
    ReplySettings.objects.filter(pk=ReplySettings.SINGLETON_ID).delete()
    assert saved_system_prompt() is None
    ReplySettings.objects.create(pk=ReplySettings.SINGLETON_ID, system_prompt="Be brief.")
    assert saved_system_prompt() == "Be brief."


def test_a_bot_jobs_facts_are_the_three_reads_in_one_statement(django_assert_num_queries):
    who, other = contact(), contact("15550009")
    user = get_user_model().objects.create(username="staff")
    newest = OutboundJob.objects.create(
        contact=who, inbound_message=message(who, 1, at=T0 + timedelta(seconds=9))
    )
    tap = {"id": "t", "type": "interactive", "interactive": {"button_reply": {"id": "x", "title": "y"}}}
    taps = [tap, {**tap, "id": "t2"}]

    def compare(job: OutboundJob) -> None:
        # Against the separate reads, on a stale copy of the contact each.
        one, apart = Contact.objects.get(pk=job.contact_id), Contact.objects.get(pk=job.contact_id)
        Contact.objects.filter(pk=job.contact_id).update(bot_paused_at=T0, opted_out_at=T0, opted_out_by=user)
        with django_assert_num_queries(1):
            facts = bot_job_facts(one, job_id=job.pk, media_types=FETCHED_TYPES)
        assert contact_state_refresh(apart) is True
        state = ("bot_paused_at", "bot_human_at", "opted_out_at", "opted_out_by_id")
        assert [getattr(one, name) for name in state] == [getattr(apart, name) for name in state]
        assert facts == BotJobFacts(
            has_media=contact_has_media(job.contact_id, FETCHED_TYPES),
            folded_taps=folded_interactive_payloads(job.pk),
        )
        Contact.objects.filter(pk=job.contact_id).update(
            bot_paused_at=None, opted_out_at=None, opted_out_by=None
        )

    compare(newest)  # no media, nothing folded
    for n, raw in enumerate(taps, start=2):
        folded = message(who, n, at=T0, type="interactive", raw=raw)
        OutboundJob.objects.create(
            contact=who, inbound_message=folded, status=OutboundJob.Status.SUPERSEDED, superseded_by=newest
        )
    typed = message(who, 5, at=T0)
    OutboundJob.objects.create(
        contact=who, inbound_message=typed, status=OutboundJob.Status.SUPERSEDED, superseded_by=newest
    )
    message(other, 6, at=T0, type="image", media_id="m-6")  # another contact's media
    compare(newest)  # two taps, no media of its own
    message(who, 7, at=T0, type="audio", media_id="m-7")
    compare(newest)  # two taps and media
    assert sorted(
        t["id"] for t in bot_job_facts(who, job_id=newest.pk, media_types=FETCHED_TYPES).folded_taps
    ) == [
        "t",
        "t2",
    ]
    compare(OutboundJob.objects.create(contact=other))  # media, nothing folded

    gone = Contact.objects.get(pk=who.pk)
    OutboundJob.objects.filter(contact=who).delete()
    InboundMessage.objects.filter(contact=who).delete()
    Contact.objects.filter(pk=who.pk).delete()
    assert bot_job_facts(gone, job_id=newest.pk, media_types=FETCHED_TYPES) is None
