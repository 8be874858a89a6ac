"""Contacts and inbound messages in the admin: readable, never editable."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from outbound.models import OutboundJob
from tests.factories import make_contact, make_job, make_message

pytestmark = pytest.mark.django_db

S = OutboundJob.Status


def test_contact_list_and_search(admin_client):
    make_contact(wa_id="4915112345678", name="Anna Schmidt")
    make_contact(wa_id="16505550000", name="Bob Jones")
    url = reverse("admin:outbound_contact_changelist")
    html = admin_client.get(url, {"q": "Anna"}).content.decode()
    assert "Anna Schmidt (+4915112345678)" in html
    assert "Bob Jones" not in html
    html = admin_client.get(url, {"q": "16505550000"}).content.decode()
    assert "Bob Jones (+16505550000)" in html
    assert "Anna Schmidt" not in html


def test_contact_page_shows_the_conversation_in_time_order_and_the_jobs(admin_client):
    now = timezone.now()
    contact = make_contact()
    first = make_job(
        contact=contact,
        text="Do you ship to Lisbon?",
        at=now - timedelta(hours=2),
        status=S.SENT,
        content="Yes, in 3 days.",
    )
    OutboundJob.objects.filter(pk=first.pk).update(sent_at=now - timedelta(hours=1, minutes=59))
    second = make_job(contact=contact, text="How much is it?", at=now - timedelta(minutes=5), status=S.FAILED)
    make_message(contact=contact, text="a reaction", at=now - timedelta(minutes=30), type="reaction")

    html = admin_client.get(reverse("admin:outbound_contact_change", args=[contact.pk])).content.decode()

    conversation = html[html.index('<table class="conversation">') :]
    order = [
        "Do you ship to Lisbon?",
        "Yes, in 3 days.",
        "a reaction",
        "How much is it?",
        "[no reply generated yet]",
    ]
    positions = [conversation.index(text) for text in order]
    assert positions == sorted(positions)
    # The jobs inline, read-only, with links to each job's page.
    assert "Jobs (newest 50)" in html
    for job in (first, second):
        assert reverse("admin:outbound_outboundjob_change", args=[job.pk]) in html
    assert f"?contact__id__exact={contact.pk}" in html
    assert 'name="_save"' not in html
    assert 'name="outbound_jobs-0-status"' not in html  # nothing editable in the inline


def test_all_jobs_link_filters_the_job_list_by_contact(admin_client):
    anna = make_contact(wa_id="1", name="Anna")
    bob = make_contact(wa_id="2", name="Bob")
    make_job(contact=anna, content="for anna")
    make_job(contact=bob, content="for bob")
    url = reverse("admin:outbound_outboundjob_changelist")
    html = admin_client.get(f"{url}?contact__id__exact={anna.pk}").content.decode()
    assert "for anna" in html
    assert "for bob" not in html


def test_contacts_and_messages_cannot_be_added_changed_or_deleted(admin_client):
    job = make_job()
    contact, message = job.contact, job.inbound_message
    for name in ("contact", "inboundmessage"):
        assert admin_client.get(reverse(f"admin:outbound_{name}_add")).status_code == 403
    assert admin_client.get(reverse("admin:outbound_contact_delete", args=[contact.pk])).status_code == 403
    response = admin_client.post(
        reverse("admin:outbound_contact_change", args=[contact.pk]), {"profile_name": "changed"}
    )
    assert response.status_code == 403
    contact.refresh_from_db()
    assert contact.profile_name == "Sheena Nelson"
    response = admin_client.post(
        reverse("admin:outbound_inboundmessage_change", args=[message.pk]), {"text": "changed"}
    )
    assert response.status_code == 403


def test_inbound_message_list_search_and_page(admin_client):
    job = make_job(text="Does it come in another color?", status=S.SENT, content="Yes.")
    make_message(contact=job.contact, text="thanks!", needs_reply=False)
    url = reverse("admin:outbound_inboundmessage_changelist")
    html = admin_client.get(url, {"q": "color"}).content.decode()
    assert "Does it come in another color?" in html
    assert "thanks!" not in html
    html = admin_client.get(f"{url}?needs_reply__exact=0").content.decode()
    assert "thanks!" in html
    assert "another color" not in html

    message = job.inbound_message
    html = admin_client.get(
        reverse("admin:outbound_inboundmessage_change", args=[message.pk])
    ).content.decode()
    assert f"job {job.pk} (sent)" in html
    assert '"body": "Does it come in another color?"' in html.replace("&quot;", '"')
    assert 'name="_save"' not in html
