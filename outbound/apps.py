from django.apps import AppConfig


class OutboundConfig(AppConfig):
    name = "outbound"
    verbose_name = "WhatsApp replies"

    def ready(self) -> None:
        from outbound import checks  # noqa: F401  (registers the system checks)
