"""`python manage.py check_whatsapp_template`: is the fallback template approved? (for operators and CI)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from outbound.services.templates import TemplateCheckError, whatsapp_template_check
from outbound.whatsapp import WhatsAppClient


class Command(BaseCommand):
    help = (
        "Ask the Graph API (GET /{waba-id}/message_templates?name=...) for the configured fallback template "
        "(WHATSAPP_TEMPLATE_NAME in WHATSAPP_TEMPLATE_LANGUAGE) and record its status, which the worker and "
        "the admin index read. Exits non-zero when it is missing or not APPROVED."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--name", default="", help="another template's name (default WHATSAPP_TEMPLATE_NAME)"
        )
        parser.add_argument(
            "--language", default="", help="its language code (default WHATSAPP_TEMPLATE_LANGUAGE)"
        )

    def handle(self, *args: Any, name: str, language: str, **options: Any) -> None:
        name = name or settings.WHATSAPP_TEMPLATE_NAME
        language = language or settings.WHATSAPP_TEMPLATE_LANGUAGE
        missing = [
            variable
            for variable, value in (
                ("WHATSAPP_TEMPLATE_NAME (or --name)", name),
                ("WHATSAPP_TEMPLATE_LANGUAGE (or --language)", language),
                ("WHATSAPP_BUSINESS_ACCOUNT_ID", settings.WHATSAPP_BUSINESS_ACCOUNT_ID),
                ("WHATSAPP_ACCESS_TOKEN", settings.WHATSAPP_ACCESS_TOKEN),
            )
            if not value
        ]
        if missing:
            raise CommandError(f"set {', '.join(missing)} to check the template")
        client = WhatsAppClient(
            access_token=settings.WHATSAPP_ACCESS_TOKEN,
            phone_number_id="",
            base_url=settings.WHATSAPP_GRAPH_URL,
            api_version=settings.WHATSAPP_API_VERSION,
            timeout=settings.WHATSAPP_TIMEOUT,
        )
        try:
            template = whatsapp_template_check(
                client=client, account_id=settings.WHATSAPP_BUSINESS_ACCOUNT_ID, name=name, language=language
            )
        except TemplateCheckError as exc:
            raise CommandError(str(exc)) from None
        category = f", category {template.category}" if template.category else ""
        line = f"Template “{name}” ({language}): {template.status or 'no status'}{category}"
        if not template.approved:
            reason = f" ({template.reason})" if template.reason else ""
            raise CommandError(
                f"{line}{reason}. It is not approved: replies outside the 24-hour window will fail until it is."
            )
        self.stdout.write(f"{line}. OK.")
