"""The domain's operations, one module per concern; each is `<entity>_<action>` with keyword-only arguments.

- `ingest`: a webhook POST becomes contacts, messages and jobs (and its statuses are applied).
- `statuses`: Meta's delivery status webhooks applied to jobs.
- `claims`: a worker takes due jobs, one per contact.
- `recovery`: claims of dead workers released; 131047 text replies reopened for the template.
- `processing`: one claimed job generated and sent; the only place errors become state transitions.
- `staff`: what staff do from the admin (retry, regenerate, cancel).
"""
