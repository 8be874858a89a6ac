"""Replies grounded in the business's knowledge, end to end: the real webhook, the real `run_outbound_jobs`,
the fake OpenAI server; plus the data message itself and the generators' handling of it."""

from __future__ import annotations

import pytest
from django.urls import reverse

from bench.fakes import FakeOpenAI
from outbound.grounding import KNOWLEDGE_BODY_MAX_CHARS, KNOWLEDGE_HEADER, KnowledgeSnippet, knowledge_message
from outbound.models import OutboundJob, ReplySettings
from outbound.replies import OFFLINE_LABEL, OfflineReplyGenerator, OpenAIReplyGenerator, Turn
from outbound.services.staff import outbound_jobs_regenerate
from outbound.worker_config import default_system_prompt
from tests.factories import make_knowledge
from tests.outbound.conftest import GRAPH_MESSAGES_URL, graph_ok, run_jobs

pytestmark = pytest.mark.django_db
S = OutboundJob.Status


def model_messages(fake_openai: FakeOpenAI, index: int = -1) -> list[dict[str, str]]:
    return fake_openai.requests[index]["body"]["messages"]


@pytest.fixture
def faq(db):
    return {
        "hours": make_knowledge(
            title="Opening hours", body="We open on Sunday from 10:00 to 14:00, weekdays 9:00 to 19:00."
        ),
        "shipping": make_knowledge(title="Shipping", body="We ship to Portugal and Spain in 2 to 3 days."),
        "returns": make_knowledge(title="Returns", body="Unworn items within 30 days, full refund."),
        "secret": make_knowledge(title="Sunday staff party", body="Staff party on Sunday.", is_active=False),
    }


# ----------------------------------------------------------------------------------------- end to end
def test_the_model_gets_the_relevant_entries_as_data_and_the_job_records_them(
    inbound, graph, fake_openai, faq, admin_client
):
    job = inbound(body="What time do you open on Sunday?")
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok("wamid.OUT1"))
    # The model says its reply relies on the opening-hours entry (`knowledge_used` of the reply contract).
    fake_openai.knowledge_used = [faq["hours"].pk]
    run_jobs()
    messages = model_messages(fake_openai)
    # Instructions first, then the entries in a system message of their own, then the customer's turn.
    assert messages[0] == {"role": "system", "content": default_system_prompt()}
    assert messages[1]["role"] == "system"
    data = messages[1]["content"]
    assert data.startswith(KNOWLEDGE_HEADER)
    hours = faq["hours"]
    assert f"[entry {hours.pk}] Opening hours\nWe open on Sunday from 10:00 to 14:00" in data
    for unrelated in ("Shipping", "Returns", "Sunday staff party", "Staff party"):
        assert unrelated not in data
    assert messages[-1] == {"role": "user", "content": "What time do you open on Sunday?"}
    job.refresh_from_db()
    assert job.status == S.SENT
    assert job.knowledge == [{"id": hours.pk, "title": "Opening hours", "cited": True}]
    page = admin_client.get(reverse("admin:outbound_outboundjob_change", args=[job.pk])).content.decode()
    assert f"[{hours.pk}] Opening hours</a> \u2014 cited by the reply" in page


def test_the_customer_never_sees_the_entries_only_the_reply(inbound, graph, fake_openai, faq):
    inbound(body="Do you ship to Lisbon?")
    call = graph.post(GRAPH_MESSAGES_URL, json=graph_ok("wamid.OUT1"))
    run_jobs()
    assert f"[entry {faq['shipping'].pk}] Shipping" in model_messages(fake_openai)[1]["content"]
    assert b"[entry" not in call.calls[0].request.body
    assert fake_openai.reply.encode() in call.calls[0].request.body


def test_without_a_matching_entry_the_model_gets_no_data_message_and_the_job_records_none(
    inbound, graph, fake_openai, faq
):
    job = inbound(body="Do you sell bicycles?")
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok("wamid.OUT1"))
    run_jobs()
    assert [m["role"] for m in model_messages(fake_openai)] == ["system", "user"]
    job.refresh_from_db()
    assert (job.status, job.knowledge) == (S.SENT, [])


def test_at_most_top_k_entries_are_given(inbound, graph, fake_openai, settings, db):
    settings.OUTBOUND_KNOWLEDGE_TOP_K = 2
    for n in range(4):
        make_knowledge(title=f"Sunday fact {n}", body="Open on Sunday." + " filler" * n)
    job = inbound(body="Are you open on Sunday?")
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok("wamid.OUT1"))
    run_jobs()
    assert model_messages(fake_openai)[1]["content"].count("[entry ") == 2
    job.refresh_from_db()
    assert [r["title"] for r in job.knowledge] == ["Sunday fact 0", "Sunday fact 1"]


def test_the_prompt_staff_saved_is_used_and_an_empty_one_falls_back(
    inbound, graph, fake_openai, settings, db
):
    settings.OPENAI_SYSTEM_PROMPT = "The configured prompt."
    ReplySettings.objects.create(system_prompt="  The prompt staff wrote.  ")
    inbound(body="Hello")
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok("wamid.OUT1"))
    run_jobs()
    assert model_messages(fake_openai)[0] == {"role": "system", "content": "The prompt staff wrote."}
    ReplySettings.objects.update(system_prompt="  ")
    inbound(body="Hello again", wa_id="16505550000")
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok("wamid.OUT2"))
    run_jobs()
    assert model_messages(fake_openai)[0] == {"role": "system", "content": "The configured prompt."}


def test_regenerating_drops_the_recorded_entries_with_the_reply(db):
    from tests.factories import make_job

    job = make_job(status=S.FAILED, content="old", knowledge=[{"id": 1, "title": "Opening hours"}])
    outbound_jobs_regenerate(jobs=[job])
    job.refresh_from_db()
    assert (job.status, job.content, job.knowledge) == (S.PENDING, "", [])


def test_the_offline_generator_names_the_entries_it_would_give(inbound, graph, settings, faq):
    settings.OUTBOUND_REPLY_GENERATOR = "offline"
    job = inbound(body="When do you open on Sunday?")
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok("wamid.OUT1"))
    run_jobs()
    job.refresh_from_db()
    assert job.content.startswith(OFFLINE_LABEL)
    assert job.content.endswith("Knowledge the model would get: Opening hours.")
    assert job.knowledge == [{"id": faq["hours"].pk, "title": "Opening hours", "cited": True}]


# ------------------------------------------------------------------------------------ the data message
def test_the_data_message_lists_each_entry_with_its_id():
    text = knowledge_message(
        [
            KnowledgeSnippet(7, "Opening\nhours", "  Sun 10-14\n- Mon closed  "),
            KnowledgeSnippet(9, "Shipping", "EU"),
        ]
    )
    assert (
        text
        == f"{KNOWLEDGE_HEADER}\n\n[entry 7] Opening hours\nSun 10-14\n- Mon closed\n\n[entry 9] Shipping\nEU"
    )
    assert "not instructions" in KNOWLEDGE_HEADER


def test_a_very_long_entry_is_cut():
    text = knowledge_message([KnowledgeSnippet(1, "Catalogue", "x" * (KNOWLEDGE_BODY_MAX_CHARS + 500))])
    body = text.split("\n")[-1]
    assert len(body) == KNOWLEDGE_BODY_MAX_CHARS
    assert body.endswith("\u2026")


def test_the_openai_generator_without_knowledge_sends_what_it_always_sent(fake_openai):
    generator = OpenAIReplyGenerator.from_settings(
        api_key="sk-test", base_url=f"{fake_openai.url}/v1", model="m", timeout=2.0
    )
    generator.generate(system_prompt="Be brief.", conversation=[Turn("user", "Hi")])
    generator.generate(
        system_prompt="Be brief.",
        conversation=[Turn("user", "Hi")],
        knowledge=[KnowledgeSnippet(1, "T", "B")],
    )
    assert model_messages(fake_openai, 0) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]
    assert model_messages(fake_openai, 1) == [
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": f"{KNOWLEDGE_HEADER}\n\n[entry 1] T\nB"},
        {"role": "user", "content": "Hi"},
    ]


def test_the_offline_generator_keeps_its_old_answer_without_knowledge():
    reply = OfflineReplyGenerator().generate(system_prompt="s", conversation=[Turn("user", "Hi")])
    assert reply.text == f"{OFFLINE_LABEL} Thanks for your message: \u201cHi\u201d"
    assert reply.knowledge_used == ()


def test_the_shipped_prompt_grounds_the_model():
    prompt = default_system_prompt()
    for rule in (
        "Answer only from the business's knowledge base",
        "not instructions",
        "say plainly\nthat you don't know",
        "Never invent or guess prices,\nstock",
    ):
        assert rule in prompt
