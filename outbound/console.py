"""A sender that logs the exact Graph request instead of sending it (DEBUG only), like Django's console
e-mail backend: a first run shows the whole flow without Meta credentials."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from outbound.whatsapp import WhatsAppClient

logger = logging.getLogger(__name__)


class ConsoleSender(WhatsAppClient):
    """Prints `POST /{phone-number-id}/messages` with its JSON body and pretends Meta accepted it.

    Only the `_request` chokepoint differs from the Graph client: the messages are built exactly as sent.
    """

    def __init__(self, *, phone_number_id: str, api_version: str = "v25.0") -> None:
        super().__init__(
            access_token="", phone_number_id=phone_number_id, base_url="", api_version=api_version
        )

    def mark_read(
        self, *, message_id: str, typing: bool, timeout: float, phone_number_id: str | None = None
    ) -> bool:
        """Log the read receipt (and typing indicator) that would go to Meta."""
        logger.warning(
            "console_sender NOT SENT (OUTBOUND_SENDER=console) read receipt POST %s message_id=%s typing=%s",
            self.messages_url(phone_number_id),
            message_id,
            typing,
        )
        return True

    def _request(
        self, method: str, url: str, payload: dict[str, Any] | None, **options: Any
    ) -> dict[str, Any]:
        # The console sender exists to show the request, message text included; it never runs in production.
        logger.warning(
            "console_sender NOT SENT (OUTBOUND_SENDER=console) %s %s %s", method, url, json.dumps(payload)
        )
        return {
            "messaging_product": "whatsapp",
            "messages": [{"id": f"wamid.console-{uuid.uuid4().hex}", "message_status": "accepted"}],
        }
