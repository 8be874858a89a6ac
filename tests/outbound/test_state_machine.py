"""A stateful property test of the job state machine: workers claim, generate, send, retry, crash and come back
late with old claim tokens; stale recovery and Meta's status webhooks run in between.

Invariants, checked after every step:
- no job is lost: every job is in a known status and either free to be claimed or held by a claim that stale
  recovery can release (a claimed_at);
- at most one send per job reaches Meta (counted in the model), and a job whose send reached Meta is SENT or
  keeps the send's start on the row (so nothing resends it);
- attempts never decrease, except by one for the documented refund (`mark_retry(refund_attempt=True)`);
- a stale token never finishes a job: the call raises and the row is unchanged (checked in every rule).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from outbound.inbound import ParsedStatus
from outbound.models import Contact, IllegalTransition, InboundMessage, JobChanged, OutboundJob
from outbound.services.claims import outbound_jobs_claim
from outbound.services.recovery import outbound_jobs_recover
from outbound.services.statuses import outbound_jobs_record_statuses
from tests.factories import DEFAULT_PHONE_NUMBER_ID

S = OutboundJob.Status
STALE_SECONDS = 300
MAX_ATTEMPTS = 5
OPEN = (S.PENDING, S.GENERATING, S.READY_TO_SEND)


@dataclass
class Handle:
    """What one worker thread holds after a claim: its copy of the job and the claim token."""

    job: OutboundJob
    token: uuid.UUID
    state: str  # generating | ready | accepted | not_reached | uncertain | done
    alive: bool = True


def row(pk: int) -> dict[str, Any]:
    return dict(OutboundJob.objects.filter(pk=pk).values().get())


class JobStateMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        OutboundJob.objects.all().delete()
        InboundMessage.objects.all().delete()
        Contact.objects.all().delete()
        self.jobs: list[int] = []
        self.handles: list[Handle] = []
        self.sends: Counter[int] = Counter()
        self.reached: dict[int, tuple[str, str]] = {}  # job → (Meta's wamid, send_as) of the send Meta got
        self.attempts: dict[int, int] = {}
        self.refunded: set[int] = set()
        self.stale_finishes = 0

    # ------------------------------------------------------------------ helpers
    def live(self, *states: str) -> list[Handle]:
        return [h for h in self.handles if h.alive and h.state in states]

    def attempt(self, handle: Handle, action: Callable[[], None]) -> bool:
        """Run a worker's write; only the current claim may succeed, anything else leaves the row alone."""
        before = row(handle.job.pk)
        current = before["claim_token"] == handle.token
        refused: Exception | None = None
        try:
            action()
        except (JobChanged, IllegalTransition) as exc:
            refused = exc
        if refused is None:
            assert current, "a stale claim token finished a job"
            return True
        assert row(handle.job.pk) == before, f"a refused {refused!r} still changed the row"
        assert not current, f"the current claim was refused: {refused}"
        self.stale_finishes += isinstance(refused, JobChanged)
        handle.alive = False
        return False

    # ------------------------------------------------------------------ rules
    @initialize()
    def two_jobs(self) -> None:
        self.enqueue()
        self.enqueue()

    @precondition(lambda self: len(self.jobs) < 4)
    @rule()
    def enqueue(self) -> None:
        now = timezone.now()
        n = len(self.jobs)
        contact = Contact.objects.create(
            phone_number_id=DEFAULT_PHONE_NUMBER_ID, wa_id=f"1555{n:07d}", last_inbound_at=now
        )
        message = InboundMessage.objects.create(
            wamid=f"wamid.sm-{n}",
            contact=contact,
            type="text",
            text="hi",
            needs_reply=True,
            timestamp=now,
            raw={},
        )
        job = OutboundJob.objects.create(
            contact=contact, inbound_message=message, next_attempt_at=now - timedelta(seconds=1)
        )
        self.jobs.append(job.pk)
        self.attempts[job.pk] = 0

    @rule()
    def claim(self) -> None:
        for job in outbound_jobs_claim(limit=1, worker_id=f"w{len(self.handles)}", now=timezone.now()):
            assert job.claim_token is not None
            assert job.attempts == self.attempts[job.pk] + 1
            state = "generating" if job.status == S.GENERATING else "ready"
            self.handles.append(Handle(job=job, token=job.claim_token, state=state))

    @precondition(lambda self: any(h.alive for h in self.handles))
    @rule(i=st.integers(min_value=0, max_value=20))
    def crash(self, i: int) -> None:
        """The worker dies: its handle is dropped, the claim stays on the row."""
        live = [h for h in self.handles if h.alive]
        if live:
            live[i % len(live)].alive = False

    @precondition(lambda self: OutboundJob.objects.in_flight().exists())
    @rule()
    def recover_stale(self) -> None:
        """Every claim is older than the stale period (the clock moved on)."""
        later = timezone.now() + timedelta(seconds=STALE_SECONDS + 1)
        outbound_jobs_recover(stale_seconds=STALE_SECONDS, max_attempts=MAX_ATTEMPTS, now=later)

    @rule()
    def recover_fresh(self) -> None:
        """Recovery at the real time releases nothing: every claim here is seconds old."""
        held = list(OutboundJob.objects.in_flight().values_list("pk", "claim_token"))
        counts = outbound_jobs_recover(stale_seconds=STALE_SECONDS, max_attempts=MAX_ATTEMPTS)
        assert counts.released == counts.unsettled == 0
        assert list(OutboundJob.objects.in_flight().values_list("pk", "claim_token")) == held

    @precondition(lambda self: bool(self.live("generating")))
    @rule(i=st.integers(min_value=0, max_value=20))
    def generate(self, i: int) -> None:
        handles = self.live("generating")
        if not handles:
            return
        h = handles[i % len(handles)]
        if self.attempt(
            h, lambda: h.job.mark_generated(token=h.token, content="a reply", send_as=OutboundJob.SendAs.TEXT)
        ):
            h.state = "ready"

    @precondition(lambda self: bool(self.live("ready")))
    @rule(
        i=st.integers(min_value=0, max_value=20), outcome=st.sampled_from(["accepted", "not_reached", "lost"])
    )
    def send(self, i: int, outcome: str) -> None:
        """mark_send_started, then the Graph call: Meta accepts, the request never reaches it, or the answer is lost."""
        handles = self.live("ready")
        if not handles:
            return
        h = handles[i % len(handles)]
        if not self.attempt(h, lambda: h.job.mark_send_started(token=h.token, send_as=h.job.send_as)):
            return
        if outcome == "not_reached":
            h.state = "not_reached"
            return
        self.sends[h.job.pk] += 1
        self.reached[h.job.pk] = (f"wamid.out-{uuid.uuid4().hex[:8]}", h.job.send_as)
        h.state = outcome
        if outcome == "lost":
            assert self.attempt(h, lambda: h.job.mark_send_uncertain(token=h.token, error="no answer"))
            h.state = "uncertain"

    @precondition(lambda self: bool(self.live("accepted")))
    @rule(i=st.integers(min_value=0, max_value=20))
    def finish_sent(self, i: int) -> None:
        handles = self.live("accepted")
        if not handles:
            return
        h = handles[i % len(handles)]
        wamid = self.reached[h.job.pk][0]
        if self.attempt(
            h, lambda: h.job.mark_sent(token=h.token, wa_message_id=wamid, message_status="", response={})
        ):
            h.state = "done"

    @precondition(lambda self: bool(self.live("generating", "ready", "not_reached")))
    @rule(i=st.integers(min_value=0, max_value=20), refund=st.booleans())
    def retry(self, i: int, refund: bool) -> None:
        """A transient error before anything reached Meta: give the claim back (optionally refunding it)."""
        handles = self.live("generating", "ready", "not_reached")
        if not handles:
            return
        h = handles[i % len(handles)]
        if self.attempt(
            h,
            lambda: h.job.mark_retry(
                token=h.token, error="transient", next_attempt_at=timezone.now(), refund_attempt=refund
            ),
        ):
            h.state = "done"
            if refund:
                self.refunded.add(h.job.pk)

    @precondition(lambda self: len(self.handles) > 0)
    @rule(
        i=st.integers(min_value=0, max_value=50),
        action=st.sampled_from(["generated", "send_started", "sent", "retry"]),
    )
    def finish_with_an_old_token(self, i: int, action: str) -> None:
        """A worker presumed dead comes back and tries to finish: it must lose."""
        old = [h for h in self.handles if row(h.job.pk)["claim_token"] != h.token]
        if not old:
            return
        h = old[i % len(old)]
        job, token = h.job, h.token
        calls: dict[str, Callable[[], None]] = {
            "generated": lambda: job.mark_generated(
                token=token, content="late", send_as=OutboundJob.SendAs.TEXT
            ),
            "send_started": lambda: job.mark_send_started(token=token, send_as=job.send_as),
            "sent": lambda: job.mark_sent(
                token=token, wa_message_id="wamid.late", message_status="", response={}
            ),
            "retry": lambda: job.mark_retry(token=token, error="late", next_attempt_at=timezone.now()),
        }
        # attempt() asserts that an old token cannot succeed and leaves the row as it was.
        self.attempt(h, calls[action])

    @precondition(lambda self: bool(self.reached))
    @rule(i=st.integers(min_value=0, max_value=20))
    def status_webhook(self, i: int) -> None:
        """Meta's `sent` status for a send that reached it, echoing our callback data: the job ends SENT."""
        if not self.reached:
            return
        pk = sorted(self.reached)[i % len(self.reached)]
        wamid, send_as = self.reached[pk]
        key = row(pk)["key"]
        status = ParsedStatus(
            wamid=wamid,
            status="sent",
            timestamp=timezone.now(),
            callback_data=f"{key}:{send_as.lower()}",
            phone_number_id="106540352242922",
        )
        outbound_jobs_record_statuses(statuses=[status])
        assert row(pk)["status"] == S.SENT

    # ------------------------------------------------------------------ invariants
    @invariant()
    def nothing_lost_sent_at_most_once_attempts_monotonic(self) -> None:
        rows = {r["id"]: r for r in OutboundJob.objects.values()}
        assert sorted(rows) == sorted(self.jobs)
        for pk, r in rows.items():
            assert r["status"] in S.values
            if r["status"] in OPEN:
                free = r["claim_token"] is None and r["status"] != S.GENERATING
                held = r["claim_token"] is not None and r["claimed_at"] is not None
                assert free or held, f"job {pk} is {r['status']} but neither claimable nor recoverable"
            assert self.sends[pk] <= 1, f"job {pk} reached Meta {self.sends[pk]} times"
            if self.sends[pk]:
                assert r["status"] == S.SENT or r["send_started_at"] is not None
                if r["status"] == S.FAILED:
                    assert "may have reached Meta" in r["error_log"]
                if r["status"] in OPEN:
                    assert r["claim_token"] is not None, "a send that reached Meta is claimable again"
            floor = self.attempts[pk] - (1 if pk in self.refunded else 0)
            assert r["attempts"] >= floor, f"job {pk} attempts went {self.attempts[pk]} → {r['attempts']}"
            self.attempts[pk] = r["attempts"]
        self.refunded.clear()


@pytest.mark.django_db
def test_job_state_machine():
    run_state_machine_as_test(
        JobStateMachine,
        settings=settings(
            max_examples=60,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
