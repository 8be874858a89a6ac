"""The handoff in the admin: the contact page (conversation, bot state, Reply as staff), pause/resume as buttons
and list actions with their history, the window-closed form, permissions, and the index's waiting list."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from outbound.models import Contact, EchoMessage, OutboundJob
from outbound.services.handoff import contact_bot_pause, contact_staff_reply
from tests.factories import make_contact, make_job, make_message

pytestmark = pytest.mark.django_db

S = OutboundJob.Status
R = Contact.PauseReason
CONTACTS = reverse("admin:outbound_contact_changelist")


def page(contact: Contact) -> str:
    return reverse("admin:outbound_contact_change", args=[contact.pk])


def reply_url(contact: Contact) -> str:
    return reverse("admin:outbound_contact_reply", args=[contact.pk])


def bot_url(contact: Contact, action: str) -> str:
    return reverse("admin:outbound_contact_bot", args=[contact.pk, action])


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def fresh(contact: Contact) -> Contact:
    return Contact.objects.get(pk=contact.pk)


@pytest.fixture
def alice(client: Client) -> User:
    user = User.objects.create_superuser("alice", "alice@example.com", "x")
    client.force_login(user)
    return user


@pytest.fixture
def viewer(client: Client) -> Client:
    """Staff who may view contacts and jobs, but not take a conversation over."""
    user = User.objects.create_user("viewer", password="x", is_staff=True)
    user.user_permissions.add(
        Permission.objects.get(codename="view_contact"), Permission.objects.get(codename="view_outboundjob")
    )
    client.force_login(user)
    return client


# ---------------------------------------------------------------------------------------------- the page
def test_the_contact_page_shows_the_whole_conversation_with_who_wrote_what(client, alice):
    now = timezone.now()
    contact = make_contact()
    bot = make_job(contact=contact, text="Where is my parcel?", at=now - timedelta(hours=3), status=S.SENT)
    OutboundJob.objects.filter(pk=bot.pk).update(
        content="It is on its way.", sent_at=now - timedelta(hours=3)
    )
    handoff = make_job(contact=contact, text="I want a person", at=now - timedelta(hours=2), status=S.SENT)
    OutboundJob.objects.filter(pk=handoff.pk).update(
        kind=OutboundJob.Kind.HANDOFF, content="A person will answer.", sent_at=now - timedelta(hours=2)
    )
    contact_staff_reply(contact=contact, author=alice, text="Hi, Alice here. Checking now.")
    EchoMessage.objects.create(
        wamid="wamid.ECHO1",
        contact=contact,
        type="text",
        text="(from the phone) Found it!",
        timestamp=now + timedelta(seconds=5),
        raw={},
    )
    html = client.get(page(contact)).content.decode()
    conversation = html[html.index('<table class="conversation">') :]
    order = [
        "Where is my parcel?",
        "It is on its way.",
        "I want a person",
        "A person will answer.",
        "Hi, Alice here. Checking now.",
        "(from the phone) Found it!",
    ]
    positions = [conversation.index(text) for text in order]
    assert positions == sorted(positions)
    assert "staff: alice" in conversation
    assert "handoff message" in conversation
    assert "business app" in conversation
    # The bot's state, the buttons and the reply form.
    assert "Bot paused" in html
    assert "a staff member replied" in html
    assert re.search(r'<textarea name="text"[^>]*maxlength="4096"', html)
    assert f'action="{reply_url(contact)}"' in html
    assert f'action="{bot_url(contact, "resume")}"' in html
    assert f'action="{bot_url(contact, "pause")}"' not in html  # already paused
    assert 'name="_save"' not in html


def test_an_active_contact_offers_the_pause_button(client, alice):
    contact = make_contact()
    make_job(contact=contact)
    html = client.get(page(contact)).content.decode()
    assert "Bot active" in html
    assert f'action="{bot_url(contact, "pause")}"' in html


def test_a_staff_reply_job_page_renders(client, alice):
    contact = make_contact()
    make_job(contact=contact, text="hello")
    job = contact_staff_reply(contact=contact, author=alice, text="Hello from Alice")
    html = client.get(reverse("admin:outbound_outboundjob_change", args=[job.pk])).content.decode()
    assert "alice (staff reply)" in html
    assert "a staff reply answers no single message" in html
    assert "Hello from Alice" in html


# ---------------------------------------------------------------------------------------------- replying
def test_reply_as_staff_queues_a_job_and_says_so(client, alice):
    contact = make_contact()
    make_job(contact=contact)
    response = client.post(reply_url(contact), {"text": "We are on it."})
    assert response.status_code == 302
    job = OutboundJob.objects.get(kind=OutboundJob.Kind.STAFF)
    assert (job.content, job.author, job.status) == ("We are on it.", alice, S.READY_TO_SEND)
    assert any(f"Queued a staff reply (job {job.pk})" in m for m in messages_of(response))


@pytest.mark.parametrize(
    ("text", "reason"),
    [("   ", "the reply is empty"), ("x" * 4097, "Ensure this value has at most 4096 characters")],
)
def test_an_empty_or_too_long_reply_is_refused(client, alice, text, reason):
    contact = make_contact()
    response = client.post(reply_url(contact), {"text": text})
    assert response.status_code == 302
    assert not OutboundJob.objects.filter(kind=OutboundJob.Kind.STAFF).exists()
    assert any(reason in m for m in messages_of(response))


def test_window_closed_the_form_says_so_and_offers_the_template(client, alice, settings):
    contact = make_contact(last_inbound_at=timezone.now() - timedelta(hours=30))
    html = client.get(page(contact)).content.decode()
    assert "24-hour window has closed" in html
    assert '<textarea name="text"' not in html
    assert f"Send the template “{settings.WHATSAPP_TEMPLATE_NAME}”" in html

    # Free text is refused even when posted by hand.
    response = client.post(reply_url(contact), {"text": "hello?"})
    assert any("24-hour window has closed" in m for m in messages_of(response))
    assert not OutboundJob.objects.exists()

    client.post(reply_url(contact), {"send_template": "on"})
    job = OutboundJob.objects.get()
    assert (job.kind, job.send_as, job.content, job.author) == (
        OutboundJob.Kind.STAFF,
        OutboundJob.SendAs.TEMPLATE,
        "",
        alice,
    )


def test_window_closed_without_a_template_nothing_can_be_sent(client, alice, settings):
    settings.WHATSAPP_TEMPLATE_NAME = ""
    contact = make_contact(last_inbound_at=timezone.now() - timedelta(hours=30))
    html = client.get(page(contact)).content.decode()
    assert "No template is configured" in html
    response = client.post(reply_url(contact), {"send_template": "on"})
    assert any("no template is configured" in m for m in messages_of(response))
    assert not OutboundJob.objects.exists()


def test_reply_and_bot_urls_take_only_post(client, alice):
    contact = make_contact()
    assert client.get(reply_url(contact)).status_code == 405
    assert client.get(bot_url(contact, "pause")).status_code == 405
    assert client.post(bot_url(contact, "explode")).status_code == 404


# ---------------------------------------------------------------------------------------------- pause / resume
def test_pause_and_resume_buttons_are_recorded_in_the_history(client, alice):
    contact = make_contact()
    response = client.post(bot_url(contact, "pause"))
    assert response.status_code == 302
    contact = fresh(contact)
    assert (contact.bot_pause_reason, contact.bot_paused_by) == (R.STAFF_ACTION, alice)
    client.post(bot_url(contact, "resume"))
    assert fresh(contact).bot_paused_at is None
    history = [
        e.get_change_message() for e in LogEntry.objects.filter(object_id=str(contact.pk)).order_by("pk")
    ]
    assert history == ["Paused the bot", "Resumed the bot"]
    assert {e.user for e in LogEntry.objects.all()} == {alice}


def test_pause_bot_and_resume_bot_list_actions(client, alice):
    anna = make_contact(wa_id="1", name="Anna")
    bob = make_contact(wa_id="2", name="Bob")
    contact_bot_pause(contact=bob, reason=R.STAFF_ACTION)
    response = client.post(CONTACTS, {"action": "pause_bot", "_selected_action": [anna.pk, bob.pk]})
    texts = messages_of(response)
    assert any("Paused the bot for Anna (+1)" in m for m in texts)
    assert any("Skipped Bob (+2): the bot is already paused" in m for m in texts)
    assert fresh(anna).bot_paused_at is not None
    response = client.post(CONTACTS, {"action": "resume_bot", "_selected_action": [anna.pk, bob.pk]})
    assert any("Resumed the bot for Anna (+1), Bob (+2)" in m for m in messages_of(response))
    assert Contact.objects.filter(bot_paused_at__isnull=False).count() == 0
    assert LogEntry.objects.filter(object_id=str(anna.pk)).count() == 2


def test_the_list_shows_and_filters_the_bot_state(client, alice):
    anna = make_contact(wa_id="1", name="Anna")
    make_contact(wa_id="2", name="Bob")
    contact_bot_pause(contact=anna, reason=R.CUSTOMER_ASKED)
    html = client.get(CONTACTS, {"bot": "paused"}).content.decode()
    assert "Anna (+1)" in html
    assert "Bob (+2)" not in html
    assert 'class="bot-state bot-paused" title="the customer asked for a person"' in html


# ---------------------------------------------------------------------------------------------- permissions
def test_view_only_staff_cannot_reply_or_pause(viewer):
    contact = make_contact()
    make_job(contact=contact)
    html = viewer.get(page(contact)).content.decode()
    assert "Bot active" in html  # they can read the state and the conversation
    assert '<table class="conversation">' in html
    assert '<textarea name="text"' not in html
    assert "Pause the bot" not in html
    assert viewer.post(reply_url(contact), {"text": "hi"}).status_code == 403
    assert viewer.post(bot_url(contact, "pause")).status_code == 403
    assert not OutboundJob.objects.filter(kind=OutboundJob.Kind.STAFF).exists()
    assert fresh(contact).bot_paused_at is None
    # No list actions either: posting one by hand changes nothing.
    assert "pause_bot" not in viewer.get(CONTACTS).content.decode()
    viewer.post(CONTACTS, {"action": "pause_bot", "_selected_action": [contact.pk]})
    assert fresh(contact).bot_paused_at is None


def test_staff_with_change_contact_may_take_over(client):
    user = User.objects.create_user("agent", password="x", is_staff=True)
    user.user_permissions.add(
        Permission.objects.get(codename="view_contact"), Permission.objects.get(codename="change_contact")
    )
    client.force_login(user)
    contact = make_contact()
    assert '<textarea name="text"' in client.get(page(contact)).content.decode()
    client.post(reply_url(contact), {"text": "hello"})
    assert OutboundJob.objects.get().author == user


# ---------------------------------------------------------------------------------------------- the index
def test_the_index_lists_conversations_waiting_for_a_person_oldest_first(client, alice):
    now = timezone.now()
    early = make_contact(wa_id="1", name="Early")
    late = make_contact(wa_id="2", name="Late")
    answered = make_contact(wa_id="3", name="Answered")
    make_message(contact=early, text="I asked an hour ago", at=now - timedelta(hours=1))
    contact_bot_pause(contact=early, reason=R.CUSTOMER_ASKED, waiting_since=now - timedelta(hours=1))
    # Paused by staff, then the customer wrote: a held bot reply means they wait too.
    contact_bot_pause(contact=late, reason=R.STAFF_ACTION)
    make_job(contact=late, text="still there?", at=now - timedelta(minutes=10))
    # A staff reply answered this one.
    make_message(contact=answered, text="help", at=now - timedelta(hours=2))
    contact_bot_pause(contact=answered, reason=R.MODEL_ASKED, waiting_since=now - timedelta(hours=2))
    contact_staff_reply(contact=answered, author=alice, text="Here")

    html = client.get(reverse("admin:index")).content.decode()
    section = html[html.index('id="waiting-for-person"') :]
    section = section[: section.index("</table>")]
    assert section.index("Early (+1)") < section.index("Late (+2)")
    assert "Answered" not in section
    assert "1 h 0 min" in section or "59 min" in section
    assert "I asked an hour ago" in section
    assert "still there?" in section
    assert "10 min" in section


def test_the_index_says_when_nobody_waits(client, alice):
    html = client.get(reverse("admin:index")).content.decode()
    assert "Nobody is waiting for a person." in html


def test_regenerate_skips_a_staff_reply(client, alice):
    contact = make_contact()
    job = contact_staff_reply(contact=contact, author=alice, text="my words")
    response = client.post(
        reverse("admin:outbound_outboundjob_changelist"),
        {"action": "regenerate", "_selected_action": [job.pk]},
    )
    assert any(f"job {job.pk} is a staff reply, not the model's" in m for m in messages_of(response))
    assert OutboundJob.objects.get(pk=job.pk).content == "my words"
