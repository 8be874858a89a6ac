"""Opt-out and opt-in through the signed webhook, real `run_outbound_jobs` runs and the admin.

STOP: no model call, one confirmation, then nothing until START, which confirms and re-enables the bot.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse
from django.utils import timezone
from responses import matchers

from outbound.models import Contact, OutboundJob
from outbound.services.claims import outbound_jobs_claim
from outbound.services.handoff import StaffReplyRefused, contact_bot_pause, contact_staff_reply
from outbound.services.optout import opt_keyword
from outbound.services.processing import Outcome, outbound_job_process
from outbound.worker_config import worker_config_from_settings
from tests.conftest import batch_payload, text_message, text_payload
from tests.outbound.conftest import GRAPH_MESSAGES_URL, graph_ok, run_jobs

S = OutboundJob.Status
K = OutboundJob.Kind
OUT, IN = K.OPT_OUT, K.OPT_IN


def bodies(graph) -> list[dict[str, Any]]:
    return [json.loads(call.request.body) for call in graph.calls]


def texts(graph) -> list[str]:
    return [b["text"]["body"] for b in bodies(graph)]


def fresh(obj):
    return type(obj).objects.get(pk=obj.pk)


def expect_text(graph, body: str, wamid: str = "wamid.OUT") -> None:
    graph.post(
        GRAPH_MESSAGES_URL,
        match=[
            matchers.json_params_matcher(
                {"type": "text", "text": {"preview_url": False, "body": body}}, strict_match=False
            )
        ],
        json=graph_ok(wamid),
    )


# ------------------------------------------------------------------------------------------------ keywords
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("STOP", OUT),
        ("stop", OUT),
        ("  Stop!  ", OUT),
        ("stop.", OUT),
        ("¡PARAR!", OUT),
        ("Arrêt", OUT),
        ("arret", OUT),
        ("STOPP", OUT),
        ("unsubscribe 🙏", OUT),
        ("START", IN),
        ("start!", IN),
        ("Démarrer", IN),
        ("please stop", None),
        ("stop sending me the newsletter, but tell me the price", None),
        ("stopped", None),
        ("", None),
        ("!!!", None),
        ("stop" + " " * 100, OUT),
    ],
)
def test_keywords(settings, text, expected):
    assert opt_keyword(text) == expected


def test_keywords_are_configurable(settings):
    settings.OUTBOUND_OPT_OUT_KEYWORDS = ["BASTA", "Não quero"]
    settings.OUTBOUND_OPT_IN_KEYWORDS = ["VOLTAR"]
    assert opt_keyword("basta") == OUT
    assert opt_keyword("não quero.") == OUT
    assert opt_keyword("Voltar") == IN
    assert opt_keyword("STOP") is None


# ------------------------------------------------------------------------------------------------ end to end
@pytest.mark.django_db
def test_stop_then_start_through_the_webhook_and_the_worker(inbound, graph, fake_openai, settings):
    stop = inbound(body="STOP", minutes_ago=10)
    contact = fresh(stop.contact)
    assert stop.kind == OUT
    assert contact.opted_out_at == stop.inbound_message.timestamp
    assert contact.opted_out_by is None
    expect_text(graph, settings.OUTBOUND_OPT_OUT_MESSAGE)
    run_jobs()
    assert fresh(stop).status == S.SENT
    assert texts(graph) == [settings.OUTBOUND_OPT_OUT_MESSAGE]
    assert fake_openai.requests == []

    # While opted out: no model call, no send, the job says why.
    later = inbound(body="Hello? Anyone?", minutes_ago=8)
    run_jobs()
    row = fresh(later)
    assert row.status == S.NO_REPLY
    assert "the customer opted out" in row.error_log
    assert "START" in row.error_log
    assert len(graph.calls) == 1
    assert fake_openai.requests == []

    # START: one confirmation, and the bot answers again.
    start = inbound(body="Start", minutes_ago=6)
    assert start.kind == IN
    assert fresh(contact).opted_out_at is None
    expect_text(graph, settings.OUTBOUND_OPT_IN_MESSAGE, "wamid.OUT2")
    run_jobs()
    assert fresh(start).status == S.SENT
    assert fake_openai.requests == []
    question = inbound(body="Do you ship to Lisbon?", minutes_ago=4)
    expect_text(graph, fake_openai.reply, "wamid.OUT3")
    run_jobs()
    assert fresh(question).status == S.SENT
    assert texts(graph) == [
        settings.OUTBOUND_OPT_OUT_MESSAGE,
        settings.OUTBOUND_OPT_IN_MESSAGE,
        fake_openai.reply,
    ]
    assert len(fake_openai.requests) == 1


@pytest.mark.django_db
def test_a_burst_around_stop_gets_one_confirmation_and_nothing_else(webhook, graph, fake_openai, settings):
    now = int(timezone.now().timestamp())
    messages = [
        text_message(wamid="wamid.B1", body="hi", timestamp=now - 30),
        text_message(wamid="wamid.B2", body="STOP", timestamp=now - 20),
        text_message(wamid="wamid.B3", body="I mean it", timestamp=now - 10),
    ]
    assert webhook(batch_payload(messages)).status_code == 200
    expect_text(graph, settings.OUTBOUND_OPT_OUT_MESSAGE)
    run_jobs()
    assert texts(graph) == [settings.OUTBOUND_OPT_OUT_MESSAGE]
    assert fake_openai.requests == []
    statuses = dict(OutboundJob.objects.values_list("inbound_message__wamid", "status"))
    assert statuses["wamid.B2"] == S.SENT
    # The two others were folded into one bot job, which ended without a reply (or was superseded by it).
    assert {statuses["wamid.B1"], statuses["wamid.B3"]} <= {S.NO_REPLY, S.SUPERSEDED}
    assert S.NO_REPLY in {statuses["wamid.B1"], statuses["wamid.B3"]}


@pytest.mark.django_db
def test_stop_while_opted_out_is_not_confirmed_twice(inbound, graph, fake_openai, settings):
    inbound(body="STOP", minutes_ago=10)
    expect_text(graph, settings.OUTBOUND_OPT_OUT_MESSAGE)
    run_jobs()
    again = inbound(body="stop", minutes_ago=5)
    assert again.kind == K.BOT
    run_jobs()
    assert fresh(again).status == S.NO_REPLY
    assert len(graph.calls) == 1


@pytest.mark.django_db
def test_a_redelivered_stop_does_not_undo_a_newer_start(inbound, webhook, graph, fake_openai, settings):
    stop = inbound(body="STOP", minutes_ago=10)
    inbound(body="START", minutes_ago=5)
    contact = fresh(stop.contact)
    assert contact.opted_out_at is None
    # Meta redelivers the STOP (same wamid), then an older STOP we never saw arrives late.
    payload = text_payload(
        wamid=stop.inbound_message.wamid, body="STOP", timestamp=stop.inbound_message.timestamp
    )
    assert webhook(payload).status_code == 200
    late = text_payload(wamid="wamid.LATE", body="STOP", timestamp=timezone.now() - timedelta(minutes=7))
    assert webhook(late).status_code == 200
    assert fresh(contact).opted_out_at is None
    assert OutboundJob.objects.get(inbound_message__wamid="wamid.LATE").kind == K.BOT


@pytest.mark.django_db
def test_stop_is_honoured_while_a_person_has_the_conversation(inbound, graph, fake_openai, settings):
    first = inbound(body="I need help", minutes_ago=10)
    contact_bot_pause(contact=first.contact, reason=Contact.PauseReason.STAFF_ACTION)
    stop = inbound(body="STOP", minutes_ago=5)
    expect_text(graph, settings.OUTBOUND_OPT_OUT_MESSAGE)
    run_jobs()
    assert fresh(stop).status == S.SENT
    assert fresh(first).status == S.PENDING  # held for the person, as before
    assert fake_openai.requests == []


@pytest.mark.django_db
def test_a_reply_generated_before_the_stop_is_never_sent(inbound, graph, fake_openai, settings):
    question = inbound(body="What are your hours?", minutes_ago=10)
    config = worker_config_from_settings()
    [claimed] = outbound_jobs_claim(limit=1, worker_id="w")
    claimed.mark_generated(token=claimed.claim_token, content="9 to 5", send_as=OutboundJob.SendAs.TEXT)
    # The STOP lands while the worker holds the generated reply.
    inbound(body="STOP", minutes_ago=5)
    assert outbound_job_process(job=claimed, config=config).outcome == Outcome.NO_REPLY
    row = fresh(question)
    assert row.status == S.NO_REPLY
    assert "opted out" in row.error_log
    assert list(graph.calls) == []


@pytest.mark.django_db
def test_the_confirmation_is_a_reply_inside_the_window_only(inbound, graph, fake_openai):
    # A STOP that reached us after the window closed (a replay after an outage): no template instead.
    stop = inbound(body="STOP", minutes_ago=25 * 60)
    assert fresh(stop.contact).opted_out_at is not None
    run_jobs()
    row = fresh(stop)
    assert row.status == S.NO_REPLY
    assert "never sent as a template" in row.error_log
    assert list(graph.calls) == []


@pytest.mark.django_db
def test_an_empty_confirmation_setting_sends_nothing_but_still_opts_out(
    inbound, graph, fake_openai, settings
):
    settings.OUTBOUND_OPT_OUT_MESSAGE = ""
    stop = inbound(body="STOP")
    run_jobs()
    assert fresh(stop).status == S.NO_REPLY
    assert "OUTBOUND_OPT_OUT_MESSAGE is empty" in fresh(stop).error_log
    assert fresh(stop.contact).opted_out_at is not None
    assert list(graph.calls) == []


@pytest.mark.django_db
def test_staff_replies_are_refused_while_opted_out(inbound):
    stop = inbound(body="STOP")
    with pytest.raises(StaffReplyRefused, match="opted out"):
        contact_staff_reply(contact=fresh(stop.contact), author=None, text="Are you sure?")


# ------------------------------------------------------------------------------------------------ admin
@pytest.fixture
def staff(client) -> User:
    user = User.objects.create_superuser("alice", "alice@example.com", "x")
    client.force_login(user)
    return user


@pytest.mark.django_db
def test_admin_shows_filters_and_changes_the_state(client, staff, inbound):
    out = inbound(body="STOP", wa_id="15550000001", name="Out Person").contact
    inbound(body="hello", wa_id="15550000002", name="In Person")
    changelist = reverse("admin:outbound_contact_changelist")
    html = client.get(f"{changelist}?opted=out").content.decode()
    assert "Out Person" in html
    assert "In Person" not in html
    assert "opted out" in html
    page = client.get(reverse("admin:outbound_contact_change", args=[out.pk])).content.decode()
    assert 'id="opt-state"' in page
    assert "the customer sent STOP" in page
    assert 'id="opt-in-button"' in page
    assert "opt-out confirmation" in page  # the STOP's job, in the conversation

    # The page's button opts them back in (no message is sent).
    response = client.post(reverse("admin:outbound_contact_opt", args=[out.pk, "in"]))
    assert response.status_code == 302
    assert fresh(out).opted_out_at is None
    # The list action opts both out, by staff.
    response = client.post(
        changelist,
        {"action": "opt_out", "_selected_action": [str(c.pk) for c in Contact.objects.all()]},
        follow=True,
    )
    assert response.status_code == 200
    assert Contact.objects.filter(opted_out_at__isnull=False, opted_out_by=staff).count() == 2
    assert "opted out: the bot sends them nothing" in response.content.decode()
    page = client.get(reverse("admin:outbound_contact_change", args=[out.pk])).content.decode()
    assert "by alice" in page


@pytest.mark.django_db
def test_admin_opt_button_needs_post_and_permission(client, inbound):
    contact = inbound(body="hello").contact
    viewer = User.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_contact"))
    client.force_login(viewer)
    url = reverse("admin:outbound_contact_opt", args=[contact.pk, "out"])
    assert client.get(url).status_code == 405
    assert client.post(url).status_code == 403
    assert fresh(contact).opted_out_at is None


@pytest.mark.parametrize("answer", ["Baja", "alta", "BAJA."])
def test_everyday_words_are_not_opt_keywords_by_default(answer):
    # "¿Talla alta o baja?" — "Baja": an answer to a question, never a request to stop the replies.
    assert opt_keyword(answer) is None
