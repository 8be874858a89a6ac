"""Merging two contacts that are one customer: which contact each group of state comes from (pure rules), and a
worker holding a job of the contact merged away."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from outbound.models import Contact, OutboundJob
from outbound.services.claims import outbound_jobs_claim
from outbound.services.contacts import BOT_FIELDS, MARKETING_FIELDS, OPT_FIELDS, merge_groups_from_other
from outbound.services.processing import Outcome, outbound_job_process
from outbound.worker_config import worker_config_from_settings
from tests.conftest import text_payload
from tests.outbound.conftest import GRAPH_MESSAGES_URL, graph_ok

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def taken(survivor: Contact, other: Contact) -> list[tuple[str, ...]]:
    return merge_groups_from_other(survivor=survivor, other=other)


def test_opt_state_comes_whole_from_the_newer_change():
    start_an_hour_ago = Contact(opted_out_at=None, opt_changed_at=NOW - HOUR)
    stop_two_days_ago = Contact(opted_out_at=NOW - 48 * HOUR, opt_changed_at=NOW - 48 * HOUR)
    assert OPT_FIELDS not in taken(start_an_hour_ago, stop_two_days_ago)
    assert OPT_FIELDS in taken(stop_two_days_ago, start_an_hour_ago)


def test_opt_state_without_a_change_time_counts_from_the_opt_out():
    never_changed = Contact()
    opted_out_before_change_times = Contact(opted_out_at=NOW - HOUR)
    assert OPT_FIELDS in taken(never_changed, opted_out_before_change_times)
    assert OPT_FIELDS not in taken(opted_out_before_change_times, never_changed)
    assert OPT_FIELDS not in taken(Contact(), Contact())


def test_marketing_preference_comes_whole_from_the_newer_one():
    older_stop = Contact(marketing_preference="stop", marketing_preference_at=NOW - 3 * HOUR)
    newer_resume = Contact(marketing_preference="resume", marketing_preference_at=NOW - HOUR)
    assert MARKETING_FIELDS in taken(older_stop, newer_resume)
    assert MARKETING_FIELDS not in taken(newer_resume, older_stop)
    # A preference without its time (none is recorded without one today) fills an empty one, never overwrites.
    assert MARKETING_FIELDS in taken(Contact(), Contact(marketing_preference="stop"))
    assert MARKETING_FIELDS not in taken(
        Contact(marketing_preference="resume"), Contact(marketing_preference="stop")
    )


def test_a_pause_on_either_contact_wins_over_an_active_bot():
    paused = Contact(
        bot_paused_at=NOW - 10 * HOUR, bot_human_at=NOW - 10 * HOUR, bot_pause_reason="STAFF_ACTION"
    )
    active = Contact()
    assert BOT_FIELDS in taken(active, paused)
    assert BOT_FIELDS not in taken(paused, active)
    assert BOT_FIELDS not in taken(Contact(), Contact())


def test_of_two_pauses_the_one_with_the_latest_activity_wins():
    paused_long_ago_but_staff_replied_now = Contact(
        bot_paused_at=NOW - 10 * HOUR, bot_human_at=NOW - 0.1 * HOUR, bot_pause_reason="STAFF_REPLY"
    )
    paused_recently = Contact(
        bot_paused_at=NOW - HOUR, bot_human_at=NOW - HOUR, bot_pause_reason="STAFF_ACTION"
    )
    assert BOT_FIELDS in taken(paused_recently, paused_long_ago_but_staff_replied_now)
    assert BOT_FIELDS not in taken(paused_long_ago_but_staff_replied_now, paused_recently)
    # A handoff request newer than any human activity counts too.
    waiting = Contact(
        bot_paused_at=NOW - 2 * HOUR,
        bot_human_at=NOW - 2 * HOUR,
        handoff_requested_at=NOW - 0.5 * HOUR,
        bot_pause_reason="CUSTOMER_ASKED",
    )
    assert BOT_FIELDS in taken(paused_recently, waiting)


@pytest.mark.django_db
@pytest.mark.usefixtures("no_batch_fallback")
def test_a_worker_holding_a_job_of_the_contact_merged_away_sends_it(webhook, graph, fake_openai):
    number, bsuid = "4915100000", "US.13491208655302741918"
    now = int(timezone.now().timestamp())
    by_user = text_payload(wamid="wamid.BY-USER", wa_id=number, timestamp=now - 120, name="Kim")
    value = by_user["entry"][0]["changes"][0]["value"]
    value["contacts"][0].pop("wa_id")
    value["contacts"][0]["user_id"] = bsuid
    value["messages"][0].pop("from")
    value["messages"][0]["from_user_id"] = bsuid
    webhook(by_user)
    webhook(text_payload(wamid="wamid.BY-NUMBER", wa_id=number, timestamp=now - 60, name="Kim"))
    assert Contact.objects.count() == 2
    claimed = outbound_jobs_claim(limit=2, worker_id="w")
    [job] = [j for j in claimed if j.contact.wa_id == number]
    gone = job.contact_id

    # The customer writes naming both: the newer contact (this job's) is merged into the older one.
    both = text_payload(wamid="wamid.BOTH", wa_id=number, timestamp=now - 30, name="Kim")
    value = both["entry"][0]["changes"][0]["value"]
    value["contacts"][0]["user_id"] = bsuid
    value["messages"][0]["from_user_id"] = bsuid
    webhook(both)
    kept = Contact.objects.get()
    assert kept.pk != gone
    assert OutboundJob.objects.get(pk=job.pk).contact_id == kept.pk

    graph.post(GRAPH_MESSAGES_URL, json=graph_ok())
    result = outbound_job_process(job=job, config=worker_config_from_settings())
    assert result.outcome == Outcome.SENT
    row = OutboundJob.objects.get(pk=job.pk)
    assert (row.status, row.contact_id, row.error_log) == (OutboundJob.Status.SENT, kept.pk, "")
    assert len(graph.calls) == 1
