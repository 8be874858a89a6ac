"""The admin at volume: searches that use indexes (exact numbers and ids, words), estimated counts, no per-row
queries on the contact page."""

from __future__ import annotations

import pytest
from django.db import connection
from django.urls import reverse

from outbound.admin import scale
from outbound.admin.scale import EstimatedCountPaginator
from outbound.models import Contact, InboundMessage, OutboundJob
from tests.factories import make_contact, make_job
from tests.outbound.conftest import is_postgres

pytestmark = pytest.mark.django_db
JOBS = reverse("admin:outbound_outboundjob_changelist")
CONTACTS = reverse("admin:outbound_contact_changelist")
MESSAGES = reverse("admin:outbound_inboundmessage_changelist")


def listed(admin_client, url: str, q: str) -> set[int]:
    response = admin_client.get(url, {"q": q})
    assert response.status_code == 200
    return {obj.pk for obj in response.context["cl"].result_list}


@pytest.fixture
def people():
    ana = make_contact(wa_id="16505551234", name="Ana Lima")
    bo = make_contact(wa_id="165055512349", name="Bo Anand")
    a = make_job(
        contact=ana, content="Yes, the lamp comes in blue.", wa_message_id="wamid.OUTA", wamid="wamid.INA"
    )
    b = make_job(
        contact=bo, content="Your order R1234 ships tomorrow.", wa_message_id="wamid.OUTB", wamid="wamid.INB"
    )
    return ana, bo, a, b


def test_a_number_matches_a_contact_exactly(admin_client, people):
    ana, _, a, b = people
    assert listed(admin_client, JOBS, "16505551234") == {a.pk}
    assert listed(admin_client, JOBS, "+165055512349") == {b.pk}
    assert listed(admin_client, JOBS, "1650555") == set()  # no substring of a number: an exact id
    assert listed(admin_client, CONTACTS, "16505551234") == {ana.pk}
    assert listed(admin_client, MESSAGES, "165055512349") == {b.inbound_message_id}


def test_meta_ids_ours_and_the_customers(admin_client, people):
    _, _, a, b = people
    assert listed(admin_client, JOBS, "wamid.OUTA") == {a.pk}
    assert listed(admin_client, JOBS, "wamid.INB") == {b.pk}
    assert listed(admin_client, JOBS, "wamid.NOPE") == set()
    assert listed(admin_client, MESSAGES, "wamid.INA") == {a.inbound_message_id}


def test_words_of_the_reply_and_of_the_name_every_word_counts(admin_client, people):
    ana, _, a, b = people
    assert listed(admin_client, JOBS, "LAMP blue") == {a.pk}
    assert listed(admin_client, JOBS, "lamp tomorrow") == set()
    assert listed(admin_client, JOBS, "r1234") == {b.pk}
    assert listed(admin_client, JOBS, "anand") == {b.pk}  # the name
    assert listed(admin_client, JOBS, "ana") == {a.pk, b.pk}  # "Ana" and "Anand"
    assert listed(admin_client, CONTACTS, "lima") == {ana.pk}


def test_a_business_scoped_user_id_matches_exactly(admin_client):
    contact = Contact.objects.create(user_id="US.13491208655302741918", profile_name="Username user")
    assert listed(admin_client, CONTACTS, "US.13491208655302741918") == {contact.pk}


def test_the_contact_page_reads_its_jobs_once(admin_client, django_assert_max_num_queries):
    contact = make_contact()
    make_job(contact=contact)
    url = reverse("admin:outbound_contact_change", args=[contact.pk])
    admin_client.get(url)
    with django_assert_max_num_queries(30) as few:
        admin_client.get(url)
    for _ in range(20):
        make_job(contact=contact)
    with django_assert_max_num_queries(len(few.captured_queries)):
        assert admin_client.get(url).status_code == 200


def test_lists_count_exactly_when_small():
    make_job()
    paginator = EstimatedCountPaginator(OutboundJob.objects.order_by("-pk"), 50)
    assert paginator.count == 1


@pytest.mark.skipif(not is_postgres(), reason="PostgreSQL's estimates")
def test_big_lists_take_postgresqls_estimate(monkeypatch):
    for i in range(30):
        make_job(wamid=f"wamid.EST{i}")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE outbound_outboundjob")
        cursor.execute("ANALYZE webhooks_inboundmessage")
    monkeypatch.setattr(scale, "EXACT_COUNT_LIMIT", 0)
    # Unfiltered: pg_class.reltuples, which ANALYZE just set to the real number.
    assert EstimatedCountPaginator(OutboundJob.objects.order_by("-pk"), 50).count == 30
    # Filtered: the planner's estimate, a positive number without a COUNT.
    estimate = EstimatedCountPaginator(InboundMessage.objects.filter(text__icontains="color"), 50).count
    assert estimate >= 1


def test_every_list_answers_searches_without_error(admin_client, people):
    for url in (JOBS, CONTACTS, MESSAGES):
        for q in ("16505551234", "wamid.INA", "blue lamp", "ana", "  "):
            assert admin_client.get(url, {"q": q}).status_code == 200


def test_counts_by_status_are_exact_when_small():
    make_job(status=OutboundJob.Status.SENT, wamid="wamid.C1")
    make_job(status=OutboundJob.Status.FAILED, wamid="wamid.C2")
    counts, estimated = OutboundJob.objects.counts_by_status()
    assert (counts["SENT"], counts["FAILED"], counts["PENDING"], estimated) == (1, 1, 0, False)


@pytest.mark.skipif(not is_postgres(), reason="PostgreSQL's estimates")
def test_a_year_of_sent_jobs_is_estimated_and_shown_so(admin_client, monkeypatch):
    from outbound.models import queries

    for i in range(40):
        make_job(status=OutboundJob.Status.SENT, wamid=f"wamid.Y{i}")
    make_job(status=OutboundJob.Status.FAILED, wamid="wamid.YF")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE outbound_outboundjob")
    monkeypatch.setattr(queries, "ESTIMATE_SENT_OVER", 10)
    counts, estimated = OutboundJob.objects.counts_by_status()
    assert estimated
    assert counts["SENT"] == 40  # ANALYZE saw every row of so small a table
    assert counts["FAILED"] == 1  # exact
    page = admin_client.get(reverse("admin:index")).content.decode()
    assert '<td class="job-count" id="count-SENT">\u2248 40</td>' in page


def test_short_words_are_dropped_beside_longer_ones(admin_client, people):
    _, _, a, _ = people
    assert listed(admin_client, JOBS, "comes in blue") == {a.pk}
    assert listed(admin_client, JOBS, "in") == {a.pk}  # alone, a short word still counts
