"""The four speed figures of issue 10, measured as CPU time of the processes (steadier than wall time here).

    python -m bench.speed              # full counts (about 3 minutes)
    python -m bench.speed --short      # small counts
    python -m bench.speed --profile    # also: cProfile (CPU time) of a worker run, top functions by own time

1. Latency under cron: a cron emulator starts `run_outbound_jobs --max-runtime P-5` every P seconds (as the
   documented crontab does every minute); messages arrive one by one, as single-message webhook POSTs through
   gunicorn, at random moments; the figure is from the POST's 200 to the reply's arrival at the fake Graph.
   Fakes answer at once, so the model's and Graph's own time is not in it.
2. Peak sends in any one second at the fake Graph, three worker processes, OUTBOUND_MAX_SENDS_PER_SECOND=10.
3. CPU per job: one worker process, --concurrency 1, zero-latency fakes, limit out of the way; CPU time
   (user + system, from wait4) of a run with N jobs minus that of a run with none (start-up excluded); the median
   of three such runs (one with --short).
4. CPU per POST and per verification GET: gunicorn with one worker, CPU time of that worker process
   (the scheduler's nanoseconds, /proc/<pid>/task/*/schedstat) across 1000 requests of each, one at a time, in five rounds of GETs then POSTs; each POST one message from a new contact,
   in Meta's 2026 shape (number and business-scoped user id).

Runs against the code of the checkout it lives in; an older checkout without `--until-idle` is detected (its
runs end as soon as nothing is due, which that flag restores), so the same script measures "before".
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any

from bench import harness
from bench.fakes import FakeGraph, FakeOpenAI, FaultPlan
from bench.loadgen import Request, run_load, signed_post
from webhooks.envelopes import messages_webhook, text_message

WEBHOOK_PATH = "/webhooks/whatsapp/"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _until_idle_flag() -> list[str]:
    """`--until-idle` where the command has it (a run that ends when nothing is due); older code did so anyway."""
    help_text = harness.manage(["run_outbound_jobs", "--help"], env=os.environ)
    return ["--until-idle"] if "--until-idle" in help_text else []


def _worker(concurrency: int, max_runtime: float, extra: list[str] | None = None) -> list[str]:
    return [
        harness.PYTHON,
        "manage.py",
        "run_outbound_jobs",
        "--concurrency",
        str(concurrency),
        "--max-runtime",
        str(max_runtime),
        *(extra or []),
    ]


def message_payload(i: int, *, prefix: str) -> dict[str, Any]:
    wa_id = f"1{zlib.crc32(prefix.encode()) % 10_000:04d}{i:07d}"
    contact = {"profile": {"name": f"Speed {i}"}, "wa_id": wa_id, "user_id": f"US.{prefix}{i:07d}"}
    message = text_message(
        wa_id=wa_id, wamid=f"wamid.{prefix}-{i}", text=f"Question {i}?", timestamp=int(time.time())
    )
    return messages_webhook(messages=[message], contacts=[contact])


# ---------------------------------------------------------------------------------------------- 1. latency
def latency_under_cron(env: dict[str, str], port: int, logdir: Path, *, short: bool) -> dict[str, Any]:
    period = 20.0 if short else 60.0
    count = 8 if short else 25
    with (
        FakeGraph(port + 11, FaultPlan()) as graph,
        FakeOpenAI(port + 12, FaultPlan()) as openai,
        harness.gunicorn(env=env, port=port, workers=2, logdir=logdir / "gunicorn-latency"),
    ):
        wenv = {**env, "WHATSAPP_GRAPH_URL": graph.url, "OPENAI_BASE_URL": f"{openai.url}/v1"}
        group = harness.ProcessGroup(logdir / "cron")
        stop = threading.Event()

        def cron() -> None:
            while not stop.is_set():
                group.start(_worker(4, period - 5), env=wenv, name="cron-run")
                stop.wait(period)

        ticker = threading.Thread(target=cron, daemon=True)
        ticker.start()
        time.sleep(3)  # the first run is up (Django start-up) and idle: nothing was due when it started
        posted: dict[str, float] = {}
        # Random moments inside the first run's window (it claims from about 1 s after its start, for P-5 s),
        # as the goal is stated: messages arriving while a cron-started run is alive.
        rng = random.Random(10)
        moments = sorted(rng.uniform(3, period - 8) for _ in range(count))
        started = time.monotonic() - 3
        for i, moment in enumerate(moments):
            time.sleep(max(0.0, started + moment - time.monotonic()))
            request = signed_post(
                WEBHOOK_PATH, message_payload(i, prefix="cron"), app_secret=harness.APP_SECRET
            )
            result = run_load(host="127.0.0.1", port=port, requests=[request], concurrency=1)
            if result.ok != 1:
                raise RuntimeError(f"webhook POST failed: {result.summary()} {result.errors[:1]}")
            posted[f"wamid.cron-{i}"] = time.time()
        deadline = time.monotonic() + 2 * period + 10
        while time.monotonic() < deadline and len(_answers(graph)) < count:
            time.sleep(0.2)
        stop.set()
        spent = time.monotonic() - started
        for proc, _, _ in group.procs:
            proc.terminate()
        group.wait(timeout=60)
        answers = _answers(graph)
    latencies = sorted(answers[w] - t for w, t in posted.items() if w in answers)
    return {
        "period": period,
        "messages": count,
        "answered": len(latencies),
        "p50": latencies[len(latencies) // 2] if latencies else None,
        "max": latencies[-1] if latencies else None,
        "seconds": spent,
    }


def _answers(graph: FakeGraph) -> dict[str, float]:
    """Inbound wamid → when its reply reached the fake Graph (the send quotes the message it answers)."""
    return {
        str(r["body"].get("context", {}).get("message_id")): r["arrived"]
        for r in graph.accepted()
        if r["body"].get("context")
    }


# ---------------------------------------------------------------------------------------------- 2. peak sends
def peak_sends_three_processes(
    env: dict[str, str], port: int, logdir: Path, *, short: bool
) -> dict[str, Any]:
    jobs = 60 if short else 150
    limit = 10
    with FakeGraph(port + 11, FaultPlan(latency=0.02)) as graph, FakeOpenAI(port + 12, FaultPlan()) as openai:
        wenv = {
            **env,
            "WHATSAPP_GRAPH_URL": graph.url,
            "OPENAI_BASE_URL": f"{openai.url}/v1",
            "OUTBOUND_MAX_SENDS_PER_SECOND": str(limit),
        }
        harness.clear_tables()
        harness.seed_jobs(jobs, prefix="3")
        group = harness.ProcessGroup(logdir / "three")
        for _ in range(3):
            group.start(_worker(4, 120, _until_idle_flag()), env=wenv, name="worker")
        results = group.wait(timeout=300)
        sent = sum(graph.sends_per_job().values())
        return {
            "limit": limit,
            "jobs": jobs,
            "sent": sent,
            "peak": graph.max_in_any_window(1.0),
            "exit": [r.returncode for r in results],
        }


# ---------------------------------------------------------------------------------------------- 3. CPU per job
def cpu_per_job(
    env: dict[str, str], port: int, logdir: Path, *, short: bool, profile: bool
) -> dict[str, Any]:
    jobs = 150 if short else 500
    with FakeGraph(port + 11, FaultPlan()) as graph, FakeOpenAI(port + 12, FaultPlan()) as openai:
        wenv = {
            **env,
            "WHATSAPP_GRAPH_URL": graph.url,
            "OPENAI_BASE_URL": f"{openai.url}/v1",
            "OUTBOUND_MAX_SENDS_PER_SECOND": "100000",
        }
        flag = _until_idle_flag()

        def run(n: int, args: list[str] | None = None) -> float:
            harness.clear_tables()
            graph.reset(FaultPlan())
            harness.seed_jobs(n, prefix="5")
            proc = subprocess.Popen(
                args or _worker(1, 600, flag),
                cwd=harness.REPO,
                env=wenv,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            if proc.returncode != 0 or sum(graph.sends_per_job().values()) != n:
                raise RuntimeError(
                    f"worker exited {proc.returncode}: {proc.stderr.read().decode()[-800:] if proc.stderr else ''}"
                )
            return usage.ru_utime + usage.ru_stime

        startup = min(run(0) for _ in range(2))
        # Three runs, the median reported and all three shown: the machine's speed drifts by ±10 % from one
        # minute to the next, which one run would pass on as the figure.
        per_job = sorted((run(jobs) - startup) / jobs * 1000 for _ in range(1 if short else 3))
        result: dict[str, Any] = {
            "jobs": jobs,
            "startup_cpu": startup,
            "cpu_per_job_ms": per_job[len(per_job) // 2],
            "runs_ms": per_job,
        }
        if profile:
            out = logdir / "worker.prof"
            run(jobs, [harness.PYTHON, "-m", "bench.cpu_profile", str(out), *_worker(1, 600, flag)[1:]])
            result["profile"] = str(out)
        return result


# ---------------------------------------------------------------------------------------------- 4. POST vs GET
def cpu_post_vs_get(env: dict[str, str], port: int, logdir: Path, *, short: bool) -> dict[str, Any]:
    n = 300 if short else 1000
    verify = (
        f"{WEBHOOK_PATH}?hub.mode=subscribe&hub.verify_token={harness.VERIFY_TOKEN}&hub.challenge=1158201444"
    )
    harness.clear_tables()
    with harness.gunicorn(env=env, port=port, workers=1, logdir=logdir / "gunicorn-cpu") as _:
        worker_pid = _gunicorn_worker_pid(port)

        def post(i: int, prefix: str) -> Request:
            return signed_post(WEBHOOK_PATH, message_payload(i, prefix=prefix), app_secret=harness.APP_SECRET)

        run_load(host="127.0.0.1", port=port, requests=[post(i, "warm") for i in range(50)], concurrency=1)
        run_load(host="127.0.0.1", port=port, requests=[Request("GET", verify)] * 50, concurrency=1)
        posts = [post(i, "cpu") for i in range(n)]
        # In rounds, GETs then POSTs, so that the machine's drift (other work, clock speed) falls on both alike.
        rounds, get_cpu, post_cpu, get_ok, post_ok = 5, 0.0, 0.0, 0, 0
        for r in range(rounds):
            chunk = posts[r * n // rounds : (r + 1) * n // rounds]
            before = _cpu_seconds(worker_pid)
            get = run_load(
                host="127.0.0.1", port=port, requests=[Request("GET", verify)] * len(chunk), concurrency=1
            )
            middle = _cpu_seconds(worker_pid)
            posted = run_load(host="127.0.0.1", port=port, requests=chunk, concurrency=1)
            after = _cpu_seconds(worker_pid)
            get_cpu, post_cpu = get_cpu + middle - before, post_cpu + after - middle
            get_ok, post_ok = get_ok + get.ok, post_ok + posted.ok
    if get_ok != n or post_ok != n:
        raise RuntimeError(f"GET {get_ok}/{n} answered 200, POST {post_ok}/{n}")
    get_ms, post_ms = get_cpu / n * 1000, post_cpu / n * 1000
    return {"requests": n, "get_ms": get_ms, "post_ms": post_ms, "ratio": post_ms / get_ms if get_ms else 0.0}


def _gunicorn_worker_pid(port: int) -> int:
    for _ in range(50):
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
                status = Path(f"/proc/{entry}/status").read_text()
            except OSError:
                continue
            ppid = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
            if b"gunicorn" in cmdline and b"config.wsgi" in cmdline and _is_gunicorn(ppid):
                return int(entry)
        time.sleep(0.1)
    raise RuntimeError(f"no gunicorn worker found for port {port}")


def _is_gunicorn(pid: int) -> bool:
    try:
        return b"gunicorn" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _cpu_seconds(pid: int) -> float:
    """CPU time of the process so far, all its threads: the scheduler's count in nanoseconds
    (/proc/<pid>/task/<tid>/schedstat) where the kernel keeps it, else utime + stime in clock ticks.

    Ticks (10 ms) are too coarse here: a round of 200 GETs is about ten of them, so one tick either way moved
    the POST/GET ratio by several percent from one run to the next.
    """
    try:
        return (
            sum(
                int((task / "schedstat").read_text().split()[0])
                for task in Path(f"/proc/{pid}/task").iterdir()
            )
            / 1e9
        )
    except (OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


# ---------------------------------------------------------------------------------------------- main
FIGURES = ("post_vs_get", "cpu_per_job", "peak", "latency")


def measure(
    env: dict[str, str],
    port: int,
    logdir: Path,
    *,
    short: bool,
    profile: bool = False,
    only: tuple[str, ...] = FIGURES,
) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    if "post_vs_get" in only:
        print("== speed: CPU per POST vs GET", flush=True)
        figures["post_vs_get"] = cpu_post_vs_get(env, port, logdir, short=short)
        print(f"  {figures['post_vs_get']}", flush=True)
    if "cpu_per_job" in only:
        print("== speed: CPU per job", flush=True)
        figures["cpu_per_job"] = cpu_per_job(env, port, logdir, short=short, profile=profile)
        print(f"  {figures['cpu_per_job']}", flush=True)
    if "peak" in only:
        print("== speed: peak sends in any second, three processes", flush=True)
        figures["peak"] = peak_sends_three_processes(env, port, logdir, short=short)
        print(f"  {figures['peak']}", flush=True)
    if "latency" in only:
        print("== speed: latency under cron", flush=True)
        harness.clear_tables()
        figures["latency"] = latency_under_cron(env, port, logdir, short=short)
        print(f"  {figures['latency']}", flush=True)
    return figures


def rows(figures: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(figure, value, goal) for the report table."""
    out: list[tuple[str, str, str]] = []
    lat, peak = figures.get("latency"), figures.get("peak")
    job, web = figures.get("cpu_per_job"), figures.get("post_vs_get")
    if lat is None:
        pass
    elif lat["answered"]:
        p50, top = lat["p50"], lat["max"]
        met = lat["answered"] == lat["messages"] and p50 <= 0.5 and top <= 2
        out.append(
            (
                f"latency under cron (period {lat['period']:.0f} s), webhook 200 → reply at Graph",
                f"p50 {p50:.2f} s, max {top:.2f} s ({lat['answered']}/{lat['messages']} answered)",
                f"{'met' if met else 'MISSED'}: p50 ≤ 0.5 s, max ≤ 2 s",
            )
        )
    else:
        out.append(
            ("latency under cron", f"none of {lat['messages']} answered", "MISSED: p50 ≤ 0.5 s, max ≤ 2 s")
        )
    if peak is not None:
        out.append(
            (
                f"peak sends in any 1 s, 3 processes, limit {peak['limit']}/s",
                f"{peak['peak']} ({peak['sent']}/{peak['jobs']} sent)",
                f"{'met' if peak['peak'] <= peak['limit'] else 'MISSED'}: ≤ {peak['limit']}",
            )
        )
    if job is not None:
        out.append(
            (
                f"worker CPU per job ({job['jobs']} jobs, c=1, zero-latency fakes)",
                f"{job['cpu_per_job_ms']:.1f} ms (median of {'/'.join(f'{ms:.1f}' for ms in job['runs_ms'])};"
                f" start-up {job['startup_cpu'] * 1000:.0f} ms excluded)",
                f"{'met' if job['cpu_per_job_ms'] <= 6 else 'MISSED'}: ≤ 6 ms",
            )
        )
    if web is not None:
        out.append(
            (
                f"webhook CPU per POST vs GET ({web['requests']} each, 1 gunicorn worker)",
                f"{web['post_ms']:.2f} ms vs {web['get_ms']:.2f} ms = {web['ratio']:.2f}x",
                f"{'met' if web['ratio'] <= 2.5 else 'MISSED'}: ≤ 2.5x",
            )
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--short", action="store_true")
    parser.add_argument(
        "--profile", action="store_true", help="cProfile a worker run and print the top functions"
    )
    parser.add_argument("--profile-out", type=Path, help="with --profile: keep the profile in this file")
    parser.add_argument(
        "--only", action="append", choices=FIGURES, help="measure only this figure (repeatable)"
    )
    parser.add_argument("--port", type=int, default=8300)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    database_url = os.environ.get("DATABASE_URL", "")
    if not database_url.startswith(("postgres://", "postgresql://")):
        database_url = "postgres://postgres@127.0.0.1:5432/wa_bench_speed"
    env = harness.production_env(database_url=database_url)
    os.environ.update({k: v for k, v in env.items() if k not in ("PATH", "HOME")})
    harness.recreate_database(database_url)
    harness.manage(["migrate", "--noinput"], env=env)
    import django

    django.setup()
    from django.db import connection

    with tempfile.TemporaryDirectory(prefix="wa-speed-") as tmp:
        try:
            figures = measure(
                env,
                args.port,
                Path(tmp),
                short=args.short,
                profile=args.profile,
                only=tuple(args.only or FIGURES),
            )
            if args.profile and "cpu_per_job" in figures:
                import pstats

                stats = pstats.Stats(figures["cpu_per_job"]["profile"])
                if args.profile_out:
                    stats.dump_stats(args.profile_out)
                stats.sort_stats("tottime").print_stats(35)
        finally:
            connection.close()
    for name, value, goal in rows(figures):
        print(f"| {name} | {value} | {goal} |")
    if args.json:
        args.json.write_text(json.dumps({k: v for k, v in figures.items()}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
