"""`python manage.py simulate_inbound "Hello"`: send the running server a signed text-message webhook, as Meta would.

The payload has the shape of Meta's own text-message webhook example and is signed with
WHATSAPP_APP_SECRET, so it goes through exactly the path a real message takes: signature, storage, job, worker.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import Any

import requests
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.urls import reverse

from outbound.media import PLACEHOLDER_PNG, SIMULATED_PREFIX, simulated_media_id
from outbound.numbers import default_phone_number_id, served_phone_number_ids
from webhooks.envelopes import media_message, messages_webhook, text_message
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
            nargs="*",
            help="what the customer writes; several texts go in one webhook, as a burst of messages (one reply "
            "answers them all)",
        )
        parser.add_argument(
            "--voice",
            action="append",
            default=[],
            metavar="WORDS",
            help="also send a voice note saying WORDS (repeatable). With OUTBOUND_SENDER=console the worker "
            "'downloads' these words and the offline transcriber reads them back, labelled; against Meta the "
            "media id is unknown and the reply asks the customer to resend",
        )
        parser.add_argument(
            "--image",
            action="append",
            default=[],
            metavar="CAPTION",
            help="also send a photo with this caption (repeatable; '' for none). With OUTBOUND_SENDER=console "
            "the worker 'downloads' a placeholder picture",
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
        texts, voices, images = options["text"], options["voice"], options["image"]
        if not texts and not voices and not images:
            raise CommandError("Say what the customer sends: a text, --voice WORDS, or --image CAPTION.")
        if any(not words.strip() for words in voices):
            raise CommandError(
                "--voice needs the words of the voice note, e.g. --voice 'Is the blue one in stock?'"
            )
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
        # Texts, then voice notes, then photos: one second apart, oldest first, as a customer sending several
        # messages in a row.
        parts = [("text", t) for t in texts] + [("voice", v) for v in voices] + [("image", c) for c in images]
        wamids = [f"wamid.SIMULATED-{uuid.uuid4().hex}" for _ in parts]
        now = int(time.time())
        payload = messages_webhook(
            messages=[
                _message(kind, value, wa_id=wa_id, wamid=wamid, timestamp=now - len(parts) + 1 + i)
                for i, (wamid, (kind, value)) in enumerate(zip(wamids, parts, strict=True))
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


def _message(kind: str, value: str, *, wa_id: str, wamid: str, timestamp: int) -> dict[str, Any]:
    if kind == "voice":
        return _voice_note(wa_id, wamid, timestamp, value)
    if kind == "image":
        return _photo(wa_id, wamid, timestamp, value)
    return text_message(wa_id=wa_id, wamid=wamid, text=value, timestamp=timestamp)


def _voice_note(wa_id: str, wamid: str, timestamp: int, words: str) -> dict[str, Any]:
    """A voice note (`audio` with `voice: true`) whose media id carries its words, for the console media source."""
    data = words.encode("utf-8")
    return media_message(
        wa_id=wa_id,
        wamid=wamid,
        kind="audio",
        media_id=simulated_media_id(words),
        mime_type="audio/ogg; codecs=opus",
        sha256=hashlib.sha256(data).hexdigest(),
        timestamp=timestamp,
        voice=True,
    )


def _photo(wa_id: str, wamid: str, timestamp: int, caption: str) -> dict[str, Any]:
    return media_message(
        wa_id=wa_id,
        wamid=wamid,
        kind="image",
        media_id=f"{SIMULATED_PREFIX}image",
        mime_type="image/png",
        sha256=hashlib.sha256(PLACEHOLDER_PNG).hexdigest(),
        caption=caption,
        timestamp=timestamp,
    )
