"""`python manage.py simulate_inbound "Hello"`: send the running server a signed text-message webhook, as Meta would.

The payload has the shape of Meta's own text-message webhook example and is signed with
WHATSAPP_APP_SECRET, so it goes through exactly the path a real message takes: signature, storage, job, worker.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import requests
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.urls import reverse

from outbound.numbers import default_phone_number_id, served_phone_number_ids
from webhooks.envelopes import messages_webhook, text_message
from webhooks.payloads import EXAMPLE_PHONE_NUMBER_ID
from webhooks.signatures import sign

DEFAULT_URL = "http://127.0.0.1:8000"


def phone_number(value: str) -> str:
    digits = value.removeprefix("+").replace(" ", "").replace("-", "")
    if not digits.isdigit():
        raise ValueError(value)
    return digits


def phone_number_id(value: str) -> str:
    value = value.strip()
    if not value.isascii() or not value.isdigit():
        raise ValueError(value)
    return value


class Command(BaseCommand):
    help = "POST a signed WhatsApp text-message webhook to a running server, exactly as Meta would."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "text",
            nargs="+",
            help="what the customer writes; several texts go in one webhook, as a burst of messages (one reply "
            "answers them all)",
        )
        parser.add_argument(
            "--url",
            default=DEFAULT_URL,
            help=f"the running server (default {DEFAULT_URL}; `make run PORT=8123` needs --url http://127.0.0.1:8123)",
        )
        parser.add_argument(
            "--from",
            dest="wa_id",
            type=phone_number,
            default="16505551234",
            help="the customer's number, country code first (default 16505551234)",
        )
        parser.add_argument("--name", default="Test Customer", help="the customer's WhatsApp profile name")
        parser.add_argument(
            "--to",
            dest="phone_number_id",
            type=phone_number_id,
            default=None,
            help="the business number's phone number id the customer writes to (default: the first of "
            "WHATSAPP_PHONE_NUMBER_ID); the reply leaves from it",
        )
        parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the server")

    def handle(self, *args: Any, **options: Any) -> None:
        secret = settings.WHATSAPP_APP_SECRET
        if not secret:
            raise CommandError(
                "WHATSAPP_APP_SECRET is not set, so the webhook cannot be signed and the server would refuse it. "
                "Set it (in .env or the environment) to the same value the server uses."
            )
        wamids = [f"wamid.SIMULATED-{uuid.uuid4().hex}" for _ in options["text"]]
        now = int(time.time())
        wa_id = options["wa_id"]
        # By default the first number the server serves: a webhook for a number it does not serve is ignored.
        to = options["phone_number_id"] or default_phone_number_id() or EXAMPLE_PHONE_NUMBER_ID
        served = served_phone_number_ids()
        if served and to not in served:
            self.stderr.write(
                self.style.WARNING(
                    f"--to {to} is not in WHATSAPP_PHONE_NUMBER_ID ({', '.join(served)}): a server with the same "
                    "configuration logs the webhook and ignores it."
                )
            )
        payload = messages_webhook(
            # One second apart, oldest first, as a customer typing several messages in a row.
            messages=[
                text_message(wa_id=wa_id, wamid=wamid, text=text, timestamp=now - len(wamids) + 1 + i)
                for i, (wamid, text) in enumerate(zip(wamids, options["text"], strict=True))
            ],
            contacts=[{"profile": {"name": options["name"]}, "wa_id": wa_id}],
            phone_number_id=to,
        )
        body = json.dumps(payload).encode()
        url = options["url"].rstrip("/") + reverse("whatsapp-webhook")
        try:
            response = requests.post(
                url,
                data=body,
                headers={
                    "Content-Type": "application/json",
                    "X-Hub-Signature-256": sign(body=body, app_secret=secret),
                },
                timeout=options["timeout"],
            )
        except requests.ConnectionError as exc:
            raise CommandError(
                f"Could not connect to {url} ({type(exc).__name__}). Is the server running? `make run` starts it; "
                "if it serves another port (`make run PORT=8123`), pass --url http://127.0.0.1:8123."
            ) from exc
        except requests.Timeout as exc:
            raise CommandError(f"{url} did not answer within {options['timeout']} seconds.") from exc
        self.stdout.write(f"POST {url} → {response.status_code} {response.text.strip()[:200]}")
        if response.status_code == 403:
            raise CommandError(
                "The server refused the signature: its WHATSAPP_APP_SECRET is not the one this command used."
            )
        if response.status_code != 200:
            raise CommandError(f"The server answered {response.status_code}; see its log.")
        if settings.OUTBOUND_SENDER != "console":
            # With Meta credentials configured the worker really answers: the reply goes to this number.
            self.stdout.write(
                self.style.WARNING(
                    f"OUTBOUND_SENDER={settings.OUTBOUND_SENDER}: the reply will really be sent to +{options['wa_id']}."
                )
            )
        stored = (
            f"message {wamids[0]}" if len(wamids) == 1 else f"{len(wamids)} messages ({', '.join(wamids)})"
        )
        answer = "it" if len(wamids) == 1 else "them with one reply"
        self.stdout.write(
            self.style.SUCCESS(
                f"Stored {stored} from +{wa_id} to business number {to}. The worker answers {answer} from that "
                "number within seconds: "
                f"{options['url'].rstrip('/')}/admin/outbound/outboundjob/"
            )
        )
