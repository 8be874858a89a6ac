"""Run a script under cProfile with a CPU-time timer (wall time would count waits on the database and fakes).

    python -m bench.cpu_profile OUT.prof manage.py run_outbound_jobs ...

`bench.speed --profile` uses it for the worker; `python -m pstats OUT.prof` reads the result.
"""

from __future__ import annotations

import cProfile
import runpy
import sys
import time


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        raise SystemExit("usage: python -m bench.cpu_profile OUT.prof SCRIPT [ARGS...]")
    out, script, *args = argv
    sys.argv = [script, *args]
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        profiler.disable()
        profiler.dump_stats(out)


if __name__ == "__main__":
    main(sys.argv[1:])
