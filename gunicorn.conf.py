"""gunicorn settings for the Procfile's `web:` line (values overridable with GUNICORN_* variables)."""

import multiprocessing
import os

# Loopback: the HTTPS proxy in front is the only client. Django trusts the proxy's X-Forwarded-Proto
# (SECURE_PROXY_SSL_HEADER), so a port open to everyone would let any client claim HTTPS. A platform whose router
# connects from outside (Heroku, Render, Dokku) sets GUNICORN_BIND=0.0.0.0:$PORT; its router overwrites the header.
bind = os.environ.get("GUNICORN_BIND", f"127.0.0.1:{os.environ.get('PORT', '8000')}")
# The usual 2 * CPUs + 1, capped: each worker holds a PostgreSQL connection, and a container often sees
# the host's CPUs rather than its own share. Requests are short (the webhook stores and answers 200).
workers = int(os.environ.get("GUNICORN_WORKERS", min(multiprocessing.cpu_count() * 2 + 1, 9)))
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))
accesslog = os.environ.get("GUNICORN_ACCESSLOG", "-")
# The path without its query string and no referer: Meta's verification GET carries hub.verify_token in the
# query, and admin searches carry customers' numbers and names. %(M)s is the request time in milliseconds.
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(M)sms "%(a)s"'
errorlog = "-"
# Meta's payloads reach 3 MB; gunicorn's own limits are per line and header, not body, so nothing to raise.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
preload_app = False


def on_starting(server: object) -> None:
    """Refuse to start when a system check fails (a missing secret names its variable), like manage.py does."""
    import django
    from django.core import checks

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    errors = [m for m in checks.run_checks(include_deployment_checks=False) if m.is_serious()]
    if errors:
        for message in errors:
            print(f"System check error: {message}", flush=True)
        raise SystemExit(1)
