"""Benchmarks of the webhook (gunicorn + PostgreSQL), the worker (real processes + fake Meta and OpenAI), and
the admin pages at volume (bench.admin_speed, in a database of its own named `<name>_admin`).

    python -m bench.run_all            # the full run: prints a table of figures and ratios (~3 minutes)
    python -m bench.run_all --short    # CI: small counts; fails only if something is broken, never on speed

DATABASE_URL must point at PostgreSQL; its database is dropped and re-created (default
postgres://postgres@127.0.0.1:5432/wa_bench_run). Servers listen on 127.0.0.1 from --port (default 8200).
Exit status 1 means broken: request errors, messages not stored, jobs not all sent, a job sent twice, a worker
that failed, or a rate-limit window over the limit. Speed goals are printed, never enforced.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import admin_speed, harness, speed
from bench.fakes import FakeGraph, FakeOpenAI, FaultPlan
from bench.loadgen import LoadResult, Request, run_load, signed_post, text_messages

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/wa_bench_run"
WEBHOOK_PATH = "/webhooks/whatsapp/"
# A well-signed change of a kind we ignore: signature, JSON and parsing, but no database statement.
NOTHING_TO_STORE = {
    "object": "whatsapp_business_account",
    "entry": [{"id": "102290129340398", "changes": [{"field": "account_update", "value": {}}]}],
}
OPENAI_LATENCY = 0.200
GRAPH_LATENCY = 0.050


@dataclass
class Report:
    rows: list[tuple[str, str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def add(self, name: str, value: str, goal: str = "") -> None:
        self.rows.append((name, value, goal))
        print(f"  {name}: {value}{f'   [{goal}]' if goal else ''}", flush=True)

    def problem(self, text: str) -> None:
        self.problems.append(text)
        print(f"  PROBLEM: {text}", flush=True)

    def table(self) -> str:
        width = max(len(r[0]) for r in self.rows)
        vwidth = max(len(r[1]) for r in self.rows)
        lines = [
            f"| {'figure':<{width}} | {'value':<{vwidth}} | goal |",
            f"|{'-' * (width + 2)}|{'-' * (vwidth + 2)}|------|",
        ]
        lines += [f"| {n:<{width}} | {v:<{vwidth}} | {g} |" for n, v, g in self.rows]
        return "\n".join(lines)


def goal(met: bool, text: str) -> str:
    return f"{'met' if met else 'MISSED'}: {text}"


# ---------------------------------------------------------------------------------------------- webhook
def bench_webhook(report: Report, *, env: dict[str, str], port: int, short: bool, logdir: Path) -> None:
    print("\n== webhook: gunicorn (Procfile line), PostgreSQL, DEBUG off", flush=True)
    workers = int(os.environ.get("BENCH_GUNICORN_WORKERS", "5"))
    per_level = 150 if short else 1500
    levels = [1, 8] if short else [1, 8, 32]
    now = int(time.time())
    verify = (
        f"{WEBHOOK_PATH}?hub.mode=subscribe&hub.verify_token={harness.VERIFY_TOKEN}&hub.challenge=1158201444"
    )
    with harness.gunicorn(env=env, port=port, workers=workers, logdir=logdir) as _base:
        # Warm every gunicorn worker (imports, database connection) before the clock starts.
        warm = [
            signed_post(
                WEBHOOK_PATH,
                text_messages(prefix="warm", start=i, count=1, timestamp=now),
                app_secret=harness.APP_SECRET,
            )
            for i in range(60)
        ]
        _check(report, "warm-up", run_load(host="127.0.0.1", port=port, requests=warm, concurrency=8))
        _check(
            report,
            "warm-up GET",
            run_load(host="127.0.0.1", port=port, requests=[Request("GET", verify)] * 60, concurrency=8),
        )
        sent = 0
        for level in levels:
            posts = [
                signed_post(
                    WEBHOOK_PATH,
                    text_messages(prefix=f"c{level}", start=i, count=1, timestamp=now),
                    app_secret=harness.APP_SECRET,
                )
                for i in range(per_level)
            ]
            gets = [Request("GET", verify)] * per_level
            get = _check(
                report,
                f"GET c={level}",
                run_load(host="127.0.0.1", port=port, requests=gets, concurrency=level),
            )
            post = _check(
                report,
                f"POST c={level}",
                run_load(host="127.0.0.1", port=port, requests=posts, concurrency=level),
            )
            sent += post.ok
            ratio = post.rps / get.rps if get.rps else 0.0
            report.add(
                f"webhook c={level:<2} GET  req/s, p50, p99",
                f"{get.rps:.0f}/s, {get.percentile(50) * 1000:.1f} ms, {get.percentile(99) * 1000:.1f} ms",
            )
            report.add(
                f"webhook c={level:<2} POST req/s, p50, p99",
                f"{post.rps:.0f}/s, {post.percentile(50) * 1000:.1f} ms, {post.percentile(99) * 1000:.1f} ms",
            )
            report.add(
                f"webhook c={level:<2} POST/GET throughput", f"{ratio:.2f}", goal(ratio >= 0.6, "≥ 0.6")
            )
            if level == 8:
                # The same signed POST path with nothing to store: what the database part of a POST costs.
                empty = signed_post(WEBHOOK_PATH, NOTHING_TO_STORE, app_secret=harness.APP_SECRET)
                bare = _check(
                    report,
                    "POST nothing to store c=8",
                    run_load(host="127.0.0.1", port=port, requests=[empty] * per_level, concurrency=level),
                )
                report.add(
                    "webhook c=8  POST, nothing to store",
                    f"{bare.rps:.0f}/s, {bare.percentile(50) * 1000:.1f} ms, {bare.percentile(99) * 1000:.1f} ms",
                )
                p99 = post.percentile(99) * 1000
                report.add("webhook c=8  POST p99", f"{p99:.1f} ms", goal(p99 <= 50, "≤ 50 ms"))
        _expect_stored(report, prefix_count=sent + len(warm), what="single-message POSTs")

        batch = signed_post(
            WEBHOOK_PATH,
            text_messages(prefix="batch", start=0, count=1000, timestamp=now),
            app_secret=harness.APP_SECRET,
        )
        before = _stored()
        result = _check(
            report, "batch", run_load(host="127.0.0.1", port=port, requests=[batch], concurrency=1)
        )
        after = _stored()
        stored = (after[0] - before[0], after[1] - before[1])
        report.add(
            "webhook one 1000-message POST",
            f"{result.seconds * 1000:.0f} ms at the client ({len(batch.body) / 1e6:.2f} MB), "
            f"{stored[0]} messages and {stored[1]} jobs stored",
        )
        if stored != (1000, 1000):
            report.problem(f"1000-message batch stored {stored} (messages, jobs), expected (1000, 1000)")


def _check(report: Report, what: str, result: LoadResult) -> LoadResult:
    print(f"  {what}: {result.summary()}", flush=True)
    if result.errors or result.ok != result.requests:
        report.problem(
            f"{what}: {result.requests - result.ok} failed {dict(result.statuses)} {result.errors[:3]}"
        )
    return result


def _stored() -> tuple[int, int]:
    from outbound.models import InboundMessage, OutboundJob

    return InboundMessage.objects.count(), OutboundJob.objects.count()


def _expect_stored(report: Report, *, prefix_count: int, what: str) -> None:
    messages, jobs = _stored()
    if (messages, jobs) != (prefix_count, prefix_count):
        report.problem(f"{what}: {messages} messages and {jobs} jobs stored, expected {prefix_count} of each")


# ---------------------------------------------------------------------------------------------- worker
@dataclass
class WorkerRun:
    jobs: int
    seconds: float  # first model request → last send answered, at the fakes
    wall: float  # first process start → last process exit (includes Django start-up)
    max_rss_mib: float
    max_sends_in_1s: int

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds if self.seconds else 0.0


def run_workers(
    report: Report,
    *,
    name: str,
    env: dict[str, str],
    graph: FakeGraph,
    openai: FakeOpenAI,
    jobs: int,
    processes: int,
    concurrency: int,
    logdir: Path,
) -> WorkerRun:
    """Seed `jobs`, run `processes` workers until nothing is due, check every job was sent exactly once."""
    harness.clear_tables()
    graph.reset(FaultPlan(latency=GRAPH_LATENCY))
    openai.reset(FaultPlan(latency=OPENAI_LATENCY))
    harness.seed_jobs(jobs, prefix="9")
    group = harness.ProcessGroup(logdir / name)
    started = time.monotonic()
    for _ in range(processes):
        group.start(harness.worker_args(concurrency=concurrency), env=env, name="worker")
    results = group.wait(timeout=300)
    wall = time.monotonic() - started
    for i, result in enumerate(results):
        if result.returncode != 0:
            report.problem(f"{name}: worker {i} exited {result.returncode}: {result.stdout[-800:]}")
    counts = harness.job_counts()
    per_job = graph.sends_per_job()
    twice = sum(1 for n in per_job.values() if n > 1)
    if counts.get("SENT", 0) != jobs or sum(per_job.values()) != jobs or twice:
        report.problem(
            f"{name}: {counts} after the run; {sum(per_job.values())} sends at the fake, {twice} jobs sent twice"
        )
    span = _span(openai, graph)
    return WorkerRun(
        jobs=jobs,
        seconds=span,
        wall=wall,
        max_rss_mib=max(r.max_rss_kib for r in results) / 1024,
        max_sends_in_1s=graph.max_in_any_window(1.0),
    )


def _span(openai: FakeOpenAI, graph: FakeGraph) -> float:
    first, last = openai.timeline(), graph.timeline()
    if first is None or last is None:
        return 0.0
    return last[1] - first[0]


def bench_worker(report: Report, *, env: dict[str, str], port: int, short: bool, logdir: Path) -> None:
    print(
        f"\n== worker: run_outbound_jobs processes; fake OpenAI {OPENAI_LATENCY * 1000:.0f} ms, "
        f"fake Graph {GRAPH_LATENCY * 1000:.0f} ms",
        flush=True,
    )
    per_job = OPENAI_LATENCY + GRAPH_LATENCY
    with FakeGraph(port + 11) as graph, FakeOpenAI(port + 12) as openai:
        env = {
            **env,
            "WHATSAPP_GRAPH_URL": graph.url,
            "OPENAI_BASE_URL": f"{openai.url}/v1",
            "OPENAI_TIMEOUT": "10",
            "WHATSAPP_TIMEOUT": "10",
        }
        run: Callable[..., WorkerRun] = lambda **kw: run_workers(  # noqa: E731
            report, env=kw.pop("env", env), graph=graph, openai=openai, logdir=logdir, **kw
        )

        n = 200 if short else 1000
        c16 = run(name="c16", jobs=n, processes=1, concurrency=16)
        bound = 16 / per_job
        report.add(
            f"worker --concurrency 16, {n} jobs",
            f"{c16.rate:.1f} jobs/s (Little's-law bound {bound:.0f}/s), {c16.wall:.1f} s wall",
        )
        ratio = c16.rate / bound
        report.add("worker c=16 jobs/s ÷ bound", f"{ratio:.2f}", goal(ratio >= 0.8, "≥ 0.8"))

        n = 100 if short else 400
        one = run(name="one-process", jobs=n, processes=1, concurrency=8)
        two = run(name="two-processes", jobs=n, processes=2, concurrency=8)
        scale = two.rate / one.rate if one.rate else 0.0
        report.add(
            f"worker 1 vs 2 processes, --concurrency 8, {n} jobs",
            f"{one.rate:.1f} vs {two.rate:.1f} jobs/s (bounds {8 / per_job:.0f} and {16 / per_job:.0f})",
        )
        report.add("worker 2 processes ÷ 1", f"{scale:.2f}x", goal(scale >= 1.8, "≥ 1.8x"))

        n = 60 if short else 300
        limited_env = {**env, "OUTBOUND_MAX_SENDS_PER_SECOND": "20"}
        limited = run(name="limited", jobs=n, processes=1, concurrency=16, env=limited_env)
        report.add(
            f"worker OUTBOUND_MAX_SENDS_PER_SECOND=20, c=16, {n} jobs",
            f"max {limited.max_sends_in_1s} sends in any 1 s at the fake, {limited.rate:.1f} jobs/s",
            goal(limited.max_sends_in_1s <= 20, "≤ 20"),
        )
        if limited.max_sends_in_1s > 20:
            report.problem(f"rate limit 20/s: {limited.max_sends_in_1s} sends in one second at the fake")
        report.add(
            "worker default limit (80/s), max sends in any 1 s",
            f"{c16.max_sends_in_1s} (c=16 run)",
            goal(c16.max_sends_in_1s <= 80, "≤ 80"),
        )

        n = 200 if short else 1000
        c32 = run(name="c32", jobs=n, processes=1, concurrency=32)
        report.add(
            f"worker --concurrency 32, {n} jobs",
            f"{c32.rate:.1f} jobs/s (bound {32 / per_job:.0f}/s), peak RSS {c32.max_rss_mib:.0f} MiB",
        )


# ---------------------------------------------------------------------------------------------- speed
def bench_speed(report: Report, *, env: dict[str, str], port: int, short: bool, logdir: Path) -> None:
    """Issue 10's four figures (bench/speed.py): latency under cron, the shared send limit, CPU per job and
    per POST. A limit exceeded or a message never answered is broken; the CPU goals are only printed."""
    print("\n== speed: CPU time of the processes, cron latency, shared send limit", flush=True)
    figures = speed.measure(env, port, logdir / "speed", short=short)
    for name, value, target in speed.rows(figures):
        report.add(name, value, target)
    peak, latency = figures["peak"], figures["latency"]
    if peak["peak"] > peak["limit"] or peak["sent"] != peak["jobs"]:
        report.problem(f"three processes: {peak}")
    if latency["answered"] != latency["messages"]:
        report.problem(f"latency under cron: {latency['answered']} of {latency['messages']} answered")


# ---------------------------------------------------------------------------------------------- admin
def bench_admin(report: Report, *, env: dict[str, str], short: bool, logdir: Path) -> None:
    """Issue 15's admin pages at volume (bench/admin_speed.py), in its own database beside the run's. A page
    that answers anything but 200 is broken; the 300 ms goal is only printed."""
    print("\n== admin pages at volume (bench.admin_speed, its own database)", flush=True)
    figures = logdir / "admin_speed.json"
    command = [
        harness.PYTHON,
        "-m",
        "bench.admin_speed",
        "--json",
        str(figures),
        *(["--short"] if short else []),
    ]
    proc = subprocess.run(
        command, cwd=harness.REPO, env=env, capture_output=True, text=True, timeout=3000, check=False
    )
    print(proc.stdout[-4000:], flush=True)
    if proc.returncode != 0 or not figures.exists():
        report.problem(f"bench.admin_speed exited {proc.returncode}: {proc.stderr.strip()[-1000:]}")
        return
    for row in admin_speed.rows_for_report(figures):
        ms = row["median_ms"]
        report.add(
            f"admin {row['name']}",
            f"{ms:.0f} ms, {row['queries']} queries",
            "" if short else goal(ms < admin_speed.GOAL_MS, f"< {admin_speed.GOAL_MS:.0f} ms"),
        )


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--short", action="store_true", help="small counts for CI; never fails on speed")
    parser.add_argument("--port", type=int, default=8200, help="gunicorn's port; the fakes use port+11, +12")
    parser.add_argument("--only", choices=["webhook", "worker", "speed", "admin"], help="run one part")
    args = parser.parse_args(argv)

    database_url = os.environ.get("DATABASE_URL", "")
    if not database_url.startswith(("postgres://", "postgresql://")):
        database_url = DEFAULT_DATABASE_URL
    env = harness.production_env(database_url=database_url)
    os.environ.update({k: v for k, v in env.items() if k not in ("PATH", "HOME")})
    started = time.monotonic()
    print(f"bench: {'short' if args.short else 'full'} run on {harness.db_name(database_url)}", flush=True)
    harness.recreate_database(database_url)
    harness.manage(["migrate", "--noinput"], env=env)

    import django

    django.setup()
    from django.db import connection

    report = Report()
    with tempfile.TemporaryDirectory(prefix="wa-bench-") as tmp:
        logdir = Path(tmp)
        try:
            if args.only in (None, "webhook"):
                bench_webhook(report, env=env, port=args.port, short=args.short, logdir=logdir)
            if args.only in (None, "worker"):
                bench_worker(report, env=env, port=args.port, short=args.short, logdir=logdir)
            if args.only in (None, "speed"):
                bench_speed(report, env=env, port=args.port, short=args.short, logdir=logdir)
            if args.only in (None, "admin"):
                bench_admin(report, env=env, short=args.short, logdir=logdir)
        except Exception as exc:
            report.problem(f"{type(exc).__name__}: {exc}")
            _dump_logs(logdir)
        finally:
            connection.close()
    print(f"\n== figures ({'short' if args.short else 'full'} run, {time.monotonic() - started:.0f} s)")
    print(f"machine: {os.cpu_count()} cores, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(report.table())
    if report.problems:
        print(f"\nBROKEN ({len(report.problems)}):\n- " + "\n- ".join(report.problems))
        return 1
    print("\nno errors, every job sent exactly once")
    return 0


def _dump_logs(logdir: Path) -> None:
    for log in sorted(logdir.rglob("*.log")):
        if "access" in log.name:
            continue
        text: Any = log.read_text(errors="replace")
        print(f"--- {log.relative_to(logdir)} (last 2000 chars)\n{text[-2000:]}")


if __name__ == "__main__":
    sys.exit(main())
