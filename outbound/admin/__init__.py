"""Every admin of the domain: jobs (with the staff actions), contacts and their messages, worker heartbeats."""

from outbound.admin import contacts, heartbeat, jobs
from outbound.admin.jobs import last_error_line

__all__ = ["contacts", "heartbeat", "jobs", "last_error_line"]
