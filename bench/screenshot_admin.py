"""Screenshot the admin index with two weeks of demo data, in the light and the dark theme.

    python -m bench.screenshot_admin                   # docs/admin-index.png, admin-index-dark.png, admin-job.png
    python -m bench.screenshot_admin --out /tmp/shots  # elsewhere

Builds its own SQLite database in a temporary folder (never touches DATABASE_URL's), migrates it, seeds it
(bench.demo_data), renders /admin/ as a logged-in superuser with Django's test client, points the page's
static files at their files on disk, and has headless Chromium (`chromium` on PATH, or --chromium) take the
picture. The dark one uses Chromium's --force-dark-mode, which the admin's prefers-color-scheme CSS follows.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def render_admin_html(path: str = "/admin/") -> str:
    """An admin page's HTML as a superuser sees it, static URLs replaced by file URLs (Django set up by the
    caller)."""
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.contrib.staticfiles import finders
    from django.test import Client

    user = User.objects.filter(username="demo").first() or User.objects.create_superuser(
        "demo", "demo@example.com", "demo-password-0123456789"
    )
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    response = client.get(path)
    if response.status_code != 200:
        raise SystemExit(f"{path} answered {response.status_code}")
    html = response.content.decode()

    def local(match: re.Match[str]) -> str:
        found = finders.find(match.group(2))
        return f"{match.group(1)}{Path(found).as_uri() if found else match.group(0)}"

    static = re.escape(settings.STATIC_URL)
    return re.sub(rf'((?:href|src)="){static}([^"?]+)(?:\?[^"]*)?', local, html)


def screenshot(*, html: Path, png: Path, chromium: str, dark: bool, width: int, height: int) -> None:
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--allow-file-access-from-files",
        f"--window-size={width},{height}",
        f"--screenshot={png}",
        *(["--force-dark-mode"] if dark else []),
        html.as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0 or not png.exists():
        raise SystemExit(f"chromium failed ({result.returncode}): {result.stderr.strip()[-500:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="folder for the PNG files")
    parser.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"))
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=3000)
    args = parser.parse_args(argv)
    if not args.chromium:
        parser.error("--chromium: no chromium on PATH (apt-get install chromium)")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="admin-shot-") as tmp:
        os.environ.update(
            {
                "DJANGO_SETTINGS_MODULE": "config.settings",
                "DEBUG": "1",
                "DATABASE_URL": f"sqlite:///{tmp}/demo.sqlite3",
                "ENV_FILE": f"{tmp}/none.env",
                "TIME_ZONE": "UTC",
            }
        )
        sys.path.insert(0, str(REPO))
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0)
        from bench.demo_data import seed_demo_data

        print(f"seeded {seed_demo_data()} jobs", flush=True)
        from outbound.models import OutboundJob

        job = OutboundJob.objects.filter(status="SENT", delivery_status="read").order_by("-sent_at").first()
        assert job is not None
        shots = [
            ("/admin/", "admin-index.png", False, args.height),
            ("/admin/", "admin-index-dark.png", True, args.height),
            (f"/admin/outbound/outboundjob/{job.pk}/change/", "admin-job.png", False, 900),
        ]
        for path, name, dark, height in shots:
            page = Path(tmp) / f"{name}.html"
            page.write_text(render_admin_html(path), encoding="utf-8")
            screenshot(
                html=page,
                png=args.out / name,
                chromium=args.chromium,
                dark=dark,
                width=args.width,
                height=height,
            )
            print(f"wrote {args.out / name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
