"""A sender that logs the exact Graph request instead of sending it (DEBUG only), like Django's console
e-mail backend: a first run shows the whole flow without Meta credentials."""

from __future__ import annotations

import json
import logging
import uuid

from outbound.whatsapp import Recipient, SendResult, template_message, text_message

logger = logging.getLogger(__name__)


class ConsoleSender:
    """Prints `POST /{phone-number-id}/messages` with its JSON body and pretends Meta accepted it."""

    def __init__(self, *, phone_number_id: str, api_version: str = "v25.0") -> None:
        self._url = f"/{api_version}/{phone_number_id}/messages"

    def send_text(self, *, to: Recipient, body: str, reply_to: str | None, callback_data: str) -> SendResult:
        return self._log(text_message(to=to, body=body, reply_to=reply_to, callback_data=callback_data))

    def send_template(
        self, *, to: Recipient, name: str, language: str, body_parameters: list[str], callback_data: str
    ) -> SendResult:
        return self._log(
            template_message(
                to=to,
                name=name,
                language=language,
                body_parameters=body_parameters,
                callback_data=callback_data,
            )
        )

    def _log(self, message: dict[str, object]) -> SendResult:
        # The console sender exists to show the request, message text included; it never runs in production.
        logger.warning(
            "console_sender NOT SENT (OUTBOUND_SENDER=console) POST %s %s", self._url, json.dumps(message)
        )
        wa_message_id = f"wamid.console-{uuid.uuid4().hex}"
        response = {
            "messaging_product": "whatsapp",
            "messages": [{"id": wa_message_id, "message_status": "accepted"}],
        }
        return SendResult(wa_message_id=wa_message_id, message_status="accepted", response=response)
