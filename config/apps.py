from django.contrib.admin.apps import AdminConfig


class WhatsAppAdminConfig(AdminConfig):
    """Django's admin with our site class (its index page shows the jobs overview)."""

    default_site = "config.admin.WhatsAppAdminSite"
