"""The knowledge admin (entries, reply settings) through the real forms, and a job's page showing its entries."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from outbound.models import KnowledgeEntry, OutboundJob, ReplySettings
from outbound.worker_config import default_system_prompt
from tests.factories import make_job, make_knowledge

pytestmark = pytest.mark.django_db

ENTRIES = reverse("admin:outbound_knowledgeentry_changelist")
ADD_ENTRY = reverse("admin:outbound_knowledgeentry_add")
SETTINGS = reverse("admin:outbound_replysettings_changelist")
ADD_SETTINGS = reverse("admin:outbound_replysettings_add")


def staff(client: Client, *codenames: str) -> Client:
    user = User.objects.create_user("editor", password="x", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client.force_login(user)
    return client


def entry_url(entry: KnowledgeEntry) -> str:
    return reverse("admin:outbound_knowledgeentry_change", args=[entry.pk])


# ---------------------------------------------------------------------------------------------- entries
def test_staff_with_the_add_permission_add_an_entry_through_the_form(client):
    editor = staff(client, "view_knowledgeentry", "add_knowledgeentry")
    assert editor.get(ADD_ENTRY).status_code == 200
    response = editor.post(
        ADD_ENTRY, {"title": "Opening hours", "body": "Sundays 10:00 to 14:00.", "is_active": "on"}
    )
    assert response.status_code == 302
    entry = KnowledgeEntry.objects.get()
    assert (entry.title, entry.body, entry.is_active) == ("Opening hours", "Sundays 10:00 to 14:00.", True)
    assert LogEntry.objects.filter(object_id=str(entry.pk)).exists()


def test_staff_with_the_change_permission_edit_an_entry(client):
    entry = make_knowledge(title="Opening hours", body="old")
    editor = staff(client, "view_knowledgeentry", "change_knowledgeentry")
    html = editor.get(entry_url(entry)).content.decode()
    assert 'name="title"' in html
    assert ">\nold</textarea>" in html
    response = editor.post(entry_url(entry), {"title": "Opening hours", "body": "new"})  # unticked: inactive
    assert response.status_code == 302
    entry.refresh_from_db()
    assert (entry.body, entry.is_active) == ("new", False)


def test_a_duplicate_title_is_a_form_error(admin_client):
    make_knowledge(title="Opening hours")
    response = admin_client.post(ADD_ENTRY, {"title": "Opening hours", "body": "again", "is_active": "on"})
    assert response.status_code == 200
    assert "Knowledge entry with this Title already exists." in response.content.decode()
    assert KnowledgeEntry.objects.count() == 1


def test_staff_without_the_permissions_cannot_add_or_change(client):
    entry = make_knowledge()
    viewer = staff(client, "view_knowledgeentry")
    assert viewer.get(ADD_ENTRY).status_code == 403
    assert viewer.post(entry_url(entry), {"title": "x", "body": "y"}).status_code == 403
    html = viewer.get(entry_url(entry)).content.decode()
    assert 'name="title"' not in html  # read-only page
    entry.refresh_from_db()
    assert entry.title == "Opening hours"


def test_the_list_searches_and_filters(admin_client):
    make_knowledge(title="Opening hours", body="We open on Sunday from 10:00 to 14:00.")
    make_knowledge(title="Shipping", body="We ship to Portugal.", is_active=False)
    html = admin_client.get(ENTRIES).content.decode()
    assert "Opening hours" in html
    assert "We open on Sunday from 10:00 to 14:00." in html
    assert "Shipping" in html
    html = admin_client.get(ENTRIES, {"q": "Portugal"}).content.decode()
    assert ">Shipping</a>" in html
    assert ">Opening hours</a>" not in html
    html = admin_client.get(ENTRIES, {"is_active__exact": "1"}).content.decode()
    assert ">Opening hours</a>" in html
    assert ">Shipping</a>" not in html


def test_the_list_actions_activate_and_deactivate(admin_client):
    on = make_knowledge(title="On")
    off = make_knowledge(title="Off", is_active=False)
    response = admin_client.post(
        ENTRIES, {"action": "deactivate", "_selected_action": [on.pk, off.pk]}, follow=True
    )
    assert "1 entry made inactive; 1 already inactive." in response.content.decode()
    assert not KnowledgeEntry.objects.filter(is_active=True).exists()
    admin_client.post(ENTRIES, {"action": "activate", "_selected_action": [on.pk, off.pk]})
    assert KnowledgeEntry.objects.filter(is_active=True).count() == 2


# ------------------------------------------------------------------------------------- reply settings
def test_the_system_prompt_form_starts_from_the_prompt_in_use(admin_client, settings):
    settings.OPENAI_SYSTEM_PROMPT = "Answer in rhymes."
    response = admin_client.get(SETTINGS)
    assert response.status_code == 302
    assert response["Location"] == ADD_SETTINGS
    html = admin_client.get(ADD_SETTINGS).content.decode()
    assert ">\nAnswer in rhymes.</textarea>" in html


def test_staff_save_the_system_prompt_once_then_edit_it(admin_client):
    response = admin_client.post(ADD_SETTINGS, {"system_prompt": "Be brief and kind."})
    assert response.status_code == 302
    row = ReplySettings.objects.get()
    assert row.system_prompt == "Be brief and kind."
    change = reverse("admin:outbound_replysettings_change", args=[row.pk])
    assert admin_client.get(SETTINGS)["Location"] == change
    assert admin_client.get(ADD_SETTINGS).status_code == 403  # one row only
    html = admin_client.get(change).content.decode()
    assert ">\nBe brief and kind.</textarea>" in html
    # The default is shown beside it, for comparison.
    assert default_system_prompt().splitlines()[0] in html
    admin_client.post(change, {"system_prompt": ""})
    assert ReplySettings.objects.get().system_prompt == ""


def test_the_system_prompt_needs_the_change_permission(client):
    row = ReplySettings.objects.create(system_prompt="Be brief.")
    viewer = staff(client, "view_replysettings")
    change = reverse("admin:outbound_replysettings_change", args=[row.pk])
    assert viewer.post(change, {"system_prompt": "Be rude."}).status_code == 403
    assert ReplySettings.objects.get().system_prompt == "Be brief."


# ------------------------------------------------------------------------------------------- the job
def test_the_job_page_shows_the_entries_given_to_the_model(admin_client):
    hours = make_knowledge(title="Opening hours (2026)")
    gone = make_knowledge(title="Old prices")
    job = make_job(
        status=OutboundJob.Status.SENT,
        content="We open at 10:00 on Sundays.",
        knowledge=[{"id": hours.pk, "title": "Opening hours"}, {"id": gone.pk, "title": "Old prices"}],
    )
    gone_id = gone.pk
    gone.delete()
    html = admin_client.get(reverse("admin:outbound_outboundjob_change", args=[job.pk])).content.decode()
    assert "Knowledge given to the model:" in html
    # The title as the model saw it, linked to the entry as it is now.
    assert f'<li><a href="{entry_url(hours)}">[{hours.pk}] Opening hours</a></li>' in html
    assert f"<li>[{gone_id}] Old prices (deleted since)</li>" in html


def test_the_job_page_says_when_no_entry_was_given(admin_client):
    job = make_job(status=OutboundJob.Status.SENT, content="Hello!")
    html = admin_client.get(reverse("admin:outbound_outboundjob_change", args=[job.pk])).content.decode()
    assert '<div class="readonly">None.</div>' in html
