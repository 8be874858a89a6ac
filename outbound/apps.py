from django.apps import AppConfig
from django.db.backends.signals import connection_created


class OutboundConfig(AppConfig):
    name = "outbound"
    verbose_name = "WhatsApp replies"

    def ready(self) -> None:
        from outbound import checks  # noqa: F401  (registers the system checks)
        from outbound.db import use_sqlite_parameter_limit

        connection_created.connect(use_sqlite_parameter_limit, dispatch_uid="outbound.sqlite_parameter_limit")
