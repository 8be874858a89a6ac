"""The jobs admin: the list, its filters and search, the job's page, the actions and buttons, permissions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from outbound.admin import last_error_line
from outbound.models import OutboundJob, ReplySettings, WorkerHeartbeat
from outbound.selectors import format_age
from tests.factories import make_contact, make_job, make_message

pytestmark = pytest.mark.django_db

S = OutboundJob.Status
CHANGELIST = reverse("admin:outbound_outboundjob_changelist")
ERROR_LOG = (
    "2026-03-01T10:00:00Z attempt=1 phase=send 503 Service Unavailable (retry in 31s)\n"
    "2026-03-01T10:01:00Z attempt=2 phase=send (#131026) Message undeliverable"
)


def change_url(job: OutboundJob) -> str:
    return reverse("admin:outbound_outboundjob_change", args=[job.pk])


def act_url(job: OutboundJob, action: str) -> str:
    return reverse("admin:outbound_outboundjob_act", args=[job.pk, action])


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def run_action(client: Client, action: str, *jobs: OutboundJob):
    return client.post(CHANGELIST, {"action": action, "_selected_action": [job.pk for job in jobs]})


@pytest.fixture
def viewer(client: Client) -> Client:
    """A staff member who may view jobs but not change them."""
    user = User.objects.create_user("viewer", password="x", is_staff=True)
    user.user_permissions.add(
        Permission.objects.get(codename="view_outboundjob"),
        Permission.objects.get(codename="view_contact"),
    )
    client.force_login(user)
    return client


# ---------------------------------------------------------------------------------------------- the list
def test_list_shows_each_column(admin_client):
    job = make_job(
        status=S.FAILED,
        content="Yes, it also comes in green and in navy blue, both in every size from S to XXL.",
        error_log=ERROR_LOG,
        attempts=2,
        last_attempt_at=timezone.now(),
        send_as=OutboundJob.SendAs.TEXT,
    )
    html = admin_client.get(CHANGELIST).content.decode()
    assert '<span class="job-status job-status-FAILED">failed</span>' in html
    assert "Sheena Nelson (+16505551234)" in html
    assert "Yes, it also comes in green and in navy blue, both in every…" in html
    assert "every size from S to XXL" not in html  # only the start of the reply
    # The last error's short form: the newest line, without its timestamp; the whole line in the tooltip.
    assert "attempt=2 phase=send (#131026) Message undeliverable" in html
    assert "503 Service Unavailable" not in html
    assert f'href="{change_url(job)}"' in html


def test_list_is_newest_first(admin_client):
    contact = make_contact()
    older = make_job(contact=contact, content="older reply")
    newer = make_job(contact=contact, content="newer reply")
    OutboundJob.objects.filter(pk=older.pk).update(created_at=timezone.now() - timedelta(hours=1))
    html = admin_client.get(CHANGELIST).content.decode()
    assert html.index("newer reply") < html.index("older reply")
    assert newer.pk > older.pk


def test_list_costs_a_fixed_number_of_queries(admin_client):
    def queries() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert admin_client.get(CHANGELIST).status_code == 200
        return len(ctx.captured_queries)

    for i in range(2):
        make_job(contact=make_contact(wa_id=f"1555000000{i}"))
    few = queries()
    for i in range(2, 12):
        make_job(contact=make_contact(wa_id=f"1555000000{i}"))
    assert queries() == few


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status__exact=FAILED", {"failed one"}),
        ("delivery_status__exact=read", {"read one"}),
        ("send_as__exact=TEMPLATE", {"template one"}),
        ("status__exact=SENT", {"read one", "template one"}),
    ],
)
def test_list_filters(admin_client, query, expected):
    contact = make_contact()
    make_job(contact=contact, status=S.FAILED, content="failed one")
    make_job(
        contact=contact, status=S.SENT, content="read one", delivery_status="read", wa_message_id="wamid.R"
    )
    make_job(contact=contact, status=S.SENT, content="template one", send_as=OutboundJob.SendAs.TEMPLATE)
    html = admin_client.get(f"{CHANGELIST}?{query}").content.decode()
    for reply in {"failed one", "read one", "template one"}:
        assert (reply in html) == (reply in expected), reply


def test_list_filters_by_created_date(admin_client):
    old = make_job(contact=make_contact(wa_id="111"), content="last month")
    make_job(contact=make_contact(wa_id="222"), content="just now")
    OutboundJob.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=40))
    # What the "Today" link of the created date filter sends.
    today = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    params = {"created_at__gte": str(today), "created_at__lt": str(today + timedelta(days=1))}
    html = admin_client.get(CHANGELIST, params).content.decode()
    assert "Today" in html
    assert "just now" in html
    assert "last month" not in html


@pytest.mark.parametrize(
    ("term", "found"),
    [
        ("4915112345678", "reply to anna"),  # the number
        ("Anna", "reply to anna"),  # the name
        ("wamid.OUTBOUND-ANNA", "reply to anna"),  # our reply's Meta id
        ("navy", "navy reply to bob"),  # words of the reply
    ],
)
def test_list_search(admin_client, term, found):
    make_job(
        contact=make_contact(wa_id="4915112345678", name="Anna Schmidt"),
        content="reply to anna",
        status=S.SENT,
        wa_message_id="wamid.OUTBOUND-ANNA",
    )
    make_job(contact=make_contact(wa_id="16505550000", name="Bob"), content="navy reply to bob")
    html = admin_client.get(CHANGELIST, {"q": term}).content.decode()
    assert found in html
    other = {"reply to anna", "navy reply to bob"} - {found}
    assert other.pop() not in html


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-1, "0 s"),
        (45, "45 s"),
        (7 * 60 + 5, "7 min"),
        (3 * 3600 + 5 * 60, "3 h 5 min"),
        (86400 + 3600, "1 day 1 h"),
    ],
)
def test_format_age(seconds, text):
    assert format_age(timedelta(seconds=seconds)) == text


def test_last_error_line():
    assert last_error_line(ERROR_LOG) == "attempt=2 phase=send (#131026) Message undeliverable"
    assert last_error_line("") == ""
    assert last_error_line("(3 earlier lines dropped)") == "(3 earlier lines dropped)"


# ---------------------------------------------------------------------------------------------- the job's page
def test_job_page_shows_reply_errors_response_and_conversation(admin_client):
    contact = make_contact()
    before = make_message(contact=contact, text="Hi there", at=timezone.now() - timedelta(minutes=30))
    job = make_job(
        contact=contact,
        text="Does it come in another color?",
        at=timezone.now() - timedelta(minutes=20),
        status=S.FAILED,
        content="Yes: green & blue.",
        error_log=ERROR_LOG,
        attempts=2,
        message_status="held_for_quality_assessment",
        send_response={"messages": [{"id": "wamid.X", "message_status": "held_for_quality_assessment"}]},
    )
    after = make_message(contact=contact, text="Hello??", at=timezone.now() - timedelta(minutes=10))
    html = admin_client.get(change_url(job)).content.decode()

    assert '<pre class="job-pre">Yes: green &amp; blue.</pre>' in html
    # The whole error log, preformatted, one attempt per line.
    assert (
        '<pre class="job-pre">2026-03-01T10:00:00Z attempt=1 phase=send 503 Service Unavailable (retry in 31s)\n'
        "2026-03-01T10:01:00Z attempt=2 phase=send (#131026) Message undeliverable</pre>"
    ) in html
    assert "held_for_quality_assessment" in html
    assert '"messages": [\n    {\n      "id": "wamid.X",' in html.replace("&quot;", '"')
    assert reverse("admin:outbound_inboundmessage_change", args=[job.inbound_message_id]) in html
    # The conversation around it, both ways, in time order.
    conversation = html[html.index('<table class="conversation">') :]
    positions = [conversation.index(t) for t in ("Hi there", "Does it come in another color?", "Hello??")]
    assert positions == sorted(positions)
    assert f"job {job.pk}</a>: failed" in conversation
    for message in (before, after):
        assert reverse("admin:outbound_inboundmessage_change", args=[message.pk]) in conversation
    # Read-only: no save buttons, no delete link.
    assert 'name="_save"' not in html
    assert 'name="_continue"' not in html
    assert "deletelink" not in html


def field_box(html: str, name: str) -> str:
    """The rendered read-only value of one field on an admin change page."""
    start = html.index(f'<div class="form-row field-{name}')
    return html[start : html.index("</div>\n", html.index('<div class="readonly">', start))]


def test_job_page_answers_field_links_the_message_with_its_time(admin_client, settings):
    settings.TIME_ZONE = "Europe/Lisbon"
    job = make_job(text="Do you ship to Lisbon?", at=datetime(2026, 7, 1, 9, 30, 5, tzinfo=UTC))
    box = field_box(admin_client.get(change_url(job)).content.decode(), "inbound_message_display")
    url = reverse("admin:outbound_inboundmessage_change", args=[job.inbound_message_id])
    # 09:30:05 UTC is 10:30:05 in Lisbon in July: the admin's time zone, as every other date on the page.
    assert f'<a href="{url}">text message of 2026-07-01 10:30:05</a>' in box
    assert '<pre class="job-pre">Do you ship to Lisbon?</pre>' in box


def admin_display_methods() -> list[tuple[str, str]]:
    """Every read-only callable field of every admin page: the admin shows their exceptions as a silent '-'."""
    from django.contrib import admin as django_admin

    found = []
    for model, model_admin in django_admin.site._registry.items():
        if model._meta.app_label not in ("outbound", "webhooks"):
            continue
        for name in model_admin.readonly_fields:
            if callable(getattr(model_admin, name, None)):
                found.append((str(model._meta.model_name), name))
    return found


@pytest.mark.parametrize(("model_name", "method"), admin_display_methods())
def test_every_display_method_renders_without_raising(model_name, method):
    from django.contrib import admin as django_admin

    job = make_job(
        status=S.FAILED,
        content="Yes: green & blue.",
        error_log=ERROR_LOG,
        send_response={"messages": [{"id": "wamid.X"}]},
    )
    objects = {
        "outboundjob": job,
        "contact": job.contact,
        "inboundmessage": job.inbound_message,
        "replysettings": ReplySettings.objects.create(system_prompt="Be brief."),
    }
    model_admin = next(a for m, a in django_admin.site._registry.items() if m._meta.model_name == model_name)
    # Called directly, an exception fails the test instead of turning into the admin's empty value.
    value = getattr(model_admin, method)(objects[model_name])
    assert str(value).strip() not in ("", "-")


def test_job_page_offers_the_buttons_that_apply(admin_client):
    failed = make_job(contact=make_contact(wa_id="1"), status=S.FAILED, content="x")
    pending = make_job(contact=make_contact(wa_id="2"), status=S.PENDING)
    sent = make_job(contact=make_contact(wa_id="3"), status=S.SENT, content="x")
    html = admin_client.get(change_url(failed)).content.decode()
    for action in ("retry", "regenerate", "cancel"):
        assert f'action="{act_url(failed, action)}"' in html
    html = admin_client.get(change_url(pending)).content.decode()
    assert f'action="{act_url(pending, "cancel")}"' in html
    assert act_url(pending, "retry") not in html
    html = admin_client.get(change_url(sent)).content.decode()
    assert 'class="job-action' not in html


def test_adding_and_deleting_jobs_by_hand_is_off(admin_client):
    job = make_job()
    assert admin_client.get(reverse("admin:outbound_outboundjob_add")).status_code == 403
    assert admin_client.get(reverse("admin:outbound_outboundjob_delete", args=[job.pk])).status_code == 403


def test_posting_the_change_form_writes_nothing(admin_client):
    job = make_job(status=S.FAILED, content="kept")
    response = admin_client.post(change_url(job), {"status": "SENT", "content": "changed"})
    assert response.status_code == 302
    job.refresh_from_db()
    assert (job.status, job.content) == (S.FAILED, "kept")


# ---------------------------------------------------------------------------------------------- actions
def test_retry_action_requeues_failed_jobs_and_refuses_others(admin_client):
    with_reply = make_job(contact=make_contact(wa_id="1"), status=S.FAILED, content="kept reply", attempts=5)
    without = make_job(contact=make_contact(wa_id="2"), status=S.FAILED, attempts=3)
    sent = make_job(contact=make_contact(wa_id="3"), status=S.SENT, content="done")

    response = run_action(admin_client, "retry_jobs", with_reply, without, sent)

    assert response.status_code == 302
    for job in (with_reply, without, sent):
        job.refresh_from_db()
    assert (with_reply.status, with_reply.attempts, with_reply.content) == (S.READY_TO_SEND, 0, "kept reply")
    assert (without.status, without.attempts) == (S.PENDING, 0)
    assert sent.status == S.SENT
    assert messages_of(response) == [
        f"Requeued 2 jobs ({with_reply.pk}, {without.pk}).",
        f"Skipped 1 job: job {sent.pk} is sent, not failed.",
    ]
    entries = LogEntry.objects.filter(action_flag=CHANGE).order_by("object_id")
    assert [(e.object_id, e.user.username, e.change_message) for e in entries] == [
        (str(with_reply.pk), "admin", "Retry: FAILED → READY_TO_SEND"),
        (str(without.pk), "admin", "Retry: FAILED → PENDING"),
    ]


def test_retry_after_the_window_closed_says_the_template_goes(admin_client, settings):
    settings.WHATSAPP_TEMPLATE_NAME = "reply_follow_up"
    contact = make_contact(last_inbound_at=timezone.now() - timedelta(days=2))
    job = make_job(contact=contact, status=S.FAILED, content="late reply")
    response = run_action(admin_client, "retry_jobs", job)
    job.refresh_from_db()
    assert job.status == S.READY_TO_SEND
    assert messages_of(response)[-1] == (
        f"The 24-hour window has closed for 1 job ({job.pk}): the retry will go as the template "
        "“reply_follow_up”, not as the stored reply."
    )


def test_retry_after_the_window_closed_without_a_template_warns_it_will_fail(admin_client, settings):
    settings.WHATSAPP_TEMPLATE_NAME = ""
    job = make_job(
        contact=make_contact(last_inbound_at=timezone.now() - timedelta(days=2)), status=S.FAILED, content="x"
    )
    response = run_action(admin_client, "retry_jobs", job)
    assert "WHATSAPP_TEMPLATE_NAME is not set, so it will fail again" in messages_of(response)[-1]


def test_regenerate_action_drops_the_reply(admin_client):
    ready = make_job(contact=make_contact(wa_id="1"), status=S.READY_TO_SEND, content="bad reply", attempts=1)
    failed = make_job(contact=make_contact(wa_id="2"), status=S.FAILED, content="bad reply 2", attempts=5)
    sent = make_job(contact=make_contact(wa_id="3"), status=S.SENT, content="done")
    response = run_action(admin_client, "regenerate", ready, failed, sent)
    for job in (ready, failed, sent):
        job.refresh_from_db()
    assert (ready.status, ready.content, ready.attempts) == (S.PENDING, "", 0)
    assert (failed.status, failed.content, failed.attempts) == (S.PENDING, "", 0)
    assert (sent.status, sent.content) == (S.SENT, "done")
    assert messages_of(response) == [
        f"Dropped the reply of 2 jobs ({ready.pk}, {failed.pk}).",
        f"Skipped 1 job: job {sent.pk} is sent.",
    ]
    assert LogEntry.objects.filter(
        object_id=str(ready.pk), change_message="Regenerate the reply: READY_TO_SEND → PENDING"
    ).exists()


def test_cancel_action_skips_jobs_a_worker_holds(admin_client):
    pending = make_job(contact=make_contact(wa_id="1"), status=S.PENDING)
    held = make_job(
        contact=make_contact(wa_id="2"),
        status=S.READY_TO_SEND,
        content="x",
        claim_token="7d1b7e2e-0000-4000-8000-000000000001",
        claimed_at=timezone.now(),
    )
    response = run_action(admin_client, "cancel", pending, held)
    pending.refresh_from_db()
    held.refresh_from_db()
    assert pending.status == S.CANCELLED
    assert held.status == S.READY_TO_SEND
    assert messages_of(response) == [
        f"Cancelled 1 job ({pending.pk}).",
        f"Skipped 1 job: job {held.pk} is being processed by a worker right now.",
    ]
    assert "phase=staff cancelled" in pending.error_log


# ---------------------------------------------------------------------------------------------- buttons
@pytest.mark.parametrize(
    ("action", "status", "content", "after", "message"),
    [
        ("retry", S.FAILED, "kept", S.READY_TO_SEND, "Requeued 1 job"),
        ("regenerate", S.READY_TO_SEND, "bad", S.PENDING, "Dropped the reply of 1 job"),
        ("cancel", S.FAILED, "", S.CANCELLED, "Cancelled 1 job"),
    ],
)
def test_buttons_on_the_job_page(admin_client, action, status, content, after, message):
    job = make_job(status=status, content=content)
    response = admin_client.post(act_url(job, action), follow=True)
    assert response.redirect_chain == [(change_url(job), 302)]
    job.refresh_from_db()
    assert job.status == after
    assert f"{message} ({job.pk})." in response.content.decode()
    assert LogEntry.objects.get(object_id=str(job.pk)).user.username == "admin"


def test_button_refusal_is_reported(admin_client):
    job = make_job(status=S.SENT, content="done")
    response = admin_client.post(act_url(job, "retry"), follow=True)
    job.refresh_from_db()
    assert job.status == S.SENT
    assert f"Skipped 1 job: job {job.pk} is sent, not failed." in response.content.decode()
    assert not LogEntry.objects.exists()


def test_buttons_need_post_and_a_known_action(admin_client):
    job = make_job(status=S.FAILED)
    assert admin_client.get(act_url(job, "retry")).status_code == 405
    assert admin_client.post(act_url(job, "explode")).status_code == 404
    assert (
        admin_client.post(reverse("admin:outbound_outboundjob_act", args=[999999, "retry"])).status_code
        == 404
    )
    job.refresh_from_db()
    assert job.status == S.FAILED


# ---------------------------------------------------------------------------------------------- view-only staff
def test_view_only_staff_see_no_actions_and_no_buttons(viewer):
    job = make_job(status=S.FAILED, content="x")
    html = viewer.get(CHANGELIST).content.decode()
    assert "Sheena Nelson" in html
    assert 'name="action"' not in html
    response = viewer.get(change_url(job))
    assert response.status_code == 200
    html = response.content.decode()
    assert '<pre class="job-pre">x</pre>' in html  # they can read the job...
    assert 'class="job-action' not in html  # ...but get no buttons
    assert act_url(job, "retry") not in html


def test_view_only_staff_cannot_post_a_button_or_an_action(viewer):
    job = make_job(status=S.FAILED, content="x")
    assert viewer.post(act_url(job, "retry")).status_code == 403
    run_action(viewer, "retry_jobs", job)
    job.refresh_from_db()
    assert job.status == S.FAILED
    assert not LogEntry.objects.exists()


# ---------------------------------------------------------------------------------------------- the index
def test_index_shows_failed_jobs_counts_and_worker_state(admin_client):
    contact = make_contact()
    for _ in range(3):
        make_job(contact=contact, status=S.FAILED)
    make_job(contact=contact, status=S.SENT)
    due = make_job(contact=contact, status=S.PENDING)
    OutboundJob.objects.filter(pk=due.pk).update(next_attempt_at=timezone.now() - timedelta(minutes=7))
    WorkerHeartbeat.objects.create(
        worker_id="host-a", last_finished_at=timezone.now() - timedelta(seconds=90)
    )

    html = admin_client.get(reverse("admin:index")).content.decode()

    assert f'<a href="{CHANGELIST}?status__exact=FAILED" id="failed-jobs-link">' in html
    assert "3 failed jobs</a>" in html
    assert '<td class="job-count" id="count-FAILED">3</td>' in html
    assert '<td class="job-count" id="count-SENT">1</td>' in html
    assert '<td class="job-count" id="count-PENDING">1</td>' in html
    assert '<td class="job-count" id="count-CANCELLED">0</td>' in html
    assert "Oldest job waiting for the worker: due 7 min ago" in html
    assert "Last worker run finished 1 min ago by host-a." in html
    # Django's own app list is still there.
    assert reverse("admin:outbound_contact_changelist") in html


def test_index_when_nothing_is_waiting(admin_client):
    html = admin_client.get(reverse("admin:index")).content.decode()
    assert "0 failed jobs</a>" in html
    assert "No job is waiting for the worker." in html
    assert "No worker run has finished yet" in html


def test_failed_link_lists_exactly_the_failed_jobs(admin_client):
    contact = make_contact()
    make_job(contact=contact, status=S.FAILED, content="needs a look")
    make_job(contact=contact, status=S.SENT, content="fine")
    html = admin_client.get(f"{CHANGELIST}?status__exact=FAILED").content.decode()
    assert "needs a look" in html
    assert "fine" not in html.split('id="result_list"')[1]
