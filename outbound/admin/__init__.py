"""Every admin of the domain: jobs (with the staff actions), contacts and their messages, worker heartbeats,
the knowledge entries and the reply settings, the message templates' health."""

from outbound.admin import contacts, heartbeat, jobs, knowledge, templates
from outbound.admin.jobs import last_error_line

__all__ = ["contacts", "heartbeat", "jobs", "knowledge", "last_error_line", "templates"]
