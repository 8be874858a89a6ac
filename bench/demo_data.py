"""Two weeks of plausible traffic for the admin index's charts (bench.screenshot_admin, and by hand).

    DEBUG=1 DATABASE_URL=sqlite:////tmp/demo.sqlite3 python -m bench.demo_data   # after `manage.py migrate`

Deterministic for a given seed and `now`: a day-shaped rate of messages, replies that mostly take a few
seconds (a slow hour now and then, when the worker fell behind), a few failures with Meta's usual codes, a
few handoffs, model tokens per reply, and a worker heartbeat. Needs Django set up by the caller (or `main`).
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Iterator
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from outbound.models import Contact, InboundMessage, OutboundJob, WorkerHeartbeat
from outbound.numbers import EXAMPLE_PHONE_NUMBER_ID, default_phone_number_id
from outbound.vocabulary import DeliveryStatus

S = OutboundJob.Status
NAMES = ["Sheena", "Ravi", "Ana", "Tomás", "Mei", "Olu", "Greta", "Yusuf", "Lena", "Kofi", "Ines", "Arjun"]
SEND_FAILURES = [(131026, "send"), (131051, "send"), (100, "send"), (None, "generate"), (131000, "send")]


@contextlib.contextmanager
def _keep_timestamps() -> Iterator[None]:
    """Let the seeded rows keep the past times given to them (auto_now(_add) would stamp them now)."""
    fields = [
        f
        for model in (Contact, InboundMessage, OutboundJob)
        for f in model._meta.concrete_fields
        if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)
    ]
    saved = [(f, f.auto_now, f.auto_now_add) for f in fields]  # type: ignore[attr-defined]
    for f in fields:
        f.auto_now = f.auto_now_add = False  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for f, auto_now, auto_now_add in saved:
            f.auto_now, f.auto_now_add = auto_now, auto_now_add  # type: ignore[attr-defined]


def hourly_rate(moment: datetime) -> float:
    """Messages per hour: quiet at night, busy around midday and early evening, a little more on weekdays."""
    hour = moment.hour + moment.minute / 60
    day = 0.25 + 0.75 * max(math.sin((hour - 6) / 16 * math.pi), 0)
    return 14 * day * (1.15 if moment.weekday() < 5 else 0.8)


def seed_demo_data(*, now: datetime | None = None, seed: int = 7, days: int = 14) -> int:
    """Create the demo rows; returns the number of jobs. Refuses a database that already has jobs."""
    if OutboundJob.objects.exists():
        raise RuntimeError("the database already has jobs: seed the demo data into an empty one")
    now = now or timezone.now()
    rng = random.Random(seed)
    start = now - timedelta(days=days)
    number = default_phone_number_id() or EXAMPLE_PHONE_NUMBER_ID
    contacts = [
        Contact(
            phone_number_id=number,
            wa_id=f"1650555{1000 + i:04d}",
            profile_name=f"{NAMES[i % len(NAMES)]} {chr(65 + i // len(NAMES))}.",
            created_at=start,
            updated_at=now,
            last_inbound_at=now - timedelta(minutes=rng.uniform(5, 600)),
        )
        for i in range(48)
    ]
    slow_hours = {rng.randrange(days * 24) for _ in range(days)}
    messages: list[InboundMessage] = []
    plans: list[tuple[int, bool]] = []  # (which contact, in a slow hour)
    moment, n = start, 0
    while moment < now:
        hour_index = int((moment - start) / timedelta(hours=1))
        moment += timedelta(hours=rng.expovariate(hourly_rate(moment)))
        if moment >= now:
            break
        n += 1
        who = rng.randrange(len(contacts))
        messages.append(
            InboundMessage(
                wamid=f"wamid.DEMO{n:06d}",
                type=InboundMessage.Type.TEXT,
                text=rng.choice(["Do you have it in blue?", "When do you open?", "Thanks!", "Price?"]),
                needs_reply=True,
                timestamp=moment,
                raw={},
                received_at=moment + timedelta(seconds=rng.uniform(0.2, 1.5)),
            )
        )
        plans.append((who, hour_index in slow_hours))
    with _keep_timestamps(), transaction.atomic():
        Contact.objects.bulk_create(contacts)
        saved_contacts = list(Contact.objects.order_by("pk"))
        for message, (who, _) in zip(messages, plans, strict=True):
            message.contact = saved_contacts[who]
        InboundMessage.objects.bulk_create(messages, batch_size=500)
        saved_messages = list(InboundMessage.objects.order_by("pk"))
        jobs = [
            _job(message, slow=slow, rng=rng, now=now)
            for message, (_, slow) in zip(saved_messages, plans, strict=True)
        ]
        OutboundJob.objects.bulk_create(jobs, batch_size=500)
        waiting = saved_contacts[:3]
        for i, contact in enumerate(waiting):  # three conversations wait for a person
            contact.bot_paused_at = contact.bot_human_at = now - timedelta(minutes=20 + 35 * i)
            contact.handoff_requested_at = contact.bot_paused_at
            contact.bot_pause_reason = Contact.PauseReason.CUSTOMER_ASKED
        Contact.objects.bulk_update(
            waiting, ["bot_paused_at", "bot_human_at", "handoff_requested_at", "bot_pause_reason"]
        )
    WorkerHeartbeat.objects.update_or_create(
        worker_id="demo-worker-1",
        defaults={"last_finished_at": now - timedelta(seconds=12), "last_summary": "demo"},
    )
    return len(jobs)


def _job(message: InboundMessage, *, slow: bool, rng: random.Random, now: datetime) -> OutboundJob:
    received = message.received_at
    waiting = rng.uniform(30, 240) if slow else rng.lognormvariate(0, 0.6)
    generating = rng.lognormvariate(1.1, 0.35)
    sending = rng.lognormvariate(-1.2, 0.4)
    claimed = received + timedelta(seconds=waiting)
    generated = claimed + timedelta(seconds=generating)
    sent = generated + timedelta(seconds=sending)
    fields: dict[str, object] = {
        "contact": message.contact,
        "inbound_message": message,
        "created_at": received,
        "updated_at": sent,
        "next_attempt_at": received,
        "attempts": 1,
        "last_attempt_at": claimed,
        "first_claimed_at": claimed,
        "content": "Yes, it also comes in blue and green.",
        "input_tokens": rng.randint(700, 2600),
        "output_tokens": rng.randint(30, 180),
    }
    fields["cached_input_tokens"] = rng.choice([0, 0, 512, 1024]) if generating > 3 else 0
    if sent > now:
        # Still on its way: not claimed yet.
        return OutboundJob(
            status=S.PENDING,
            **{
                **fields,
                "first_claimed_at": None,
                "input_tokens": None,
                "output_tokens": None,
                "cached_input_tokens": None,
                "content": "",
                "attempts": 0,
                "last_attempt_at": None,
            },
        )
    roll = rng.random()
    if roll < 0.025:
        code, phase = rng.choice(SEND_FAILURES)
        return OutboundJob(
            status=S.FAILED,
            generated_at=generated,
            failure_phase=phase,
            failure_code=code,
            error_log=f"{sent:%Y-%m-%dT%H:%M:%S}Z attempt=1 phase={phase} (#{code}) demo failure",
            **{**fields, "updated_at": sent},
        )
    kind = OutboundJob.Kind.HANDOFF if roll < 0.04 else OutboundJob.Kind.BOT
    delivery = DeliveryStatus.READ if rng.random() < 0.7 else DeliveryStatus.DELIVERED
    delivery_code = None
    if rng.random() < 0.01:
        delivery, delivery_code = DeliveryStatus.FAILED, rng.choice([131049, 131026])
    return OutboundJob(
        status=S.SENT,
        kind=kind,
        generated_at=generated,
        sent_at=sent,
        wa_message_id=f"wamid.OUT{message.wamid[9:]}",
        message_status="accepted",
        delivery_status=delivery,
        delivery_updated_at=sent + timedelta(seconds=rng.uniform(1, 90)),
        delivery_error_code=delivery_code,
        **fields,
    )


def main() -> None:
    import django

    django.setup()
    print(f"seeded {seed_demo_data()} jobs")


if __name__ == "__main__":
    main()
