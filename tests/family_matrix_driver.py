"""Runs inside one backend's environment: many attempts of that backend, each in its own
process, for the price of one start-up (tests/test_family_matrix.py).

Usage: python family_matrix_driver.py JOBS.json RESULTS.json

JOBS.json: {"preimport": [module, ...], "parallel": N, "timeout": seconds,
            "jobs": [{"name", "cwd", "argv", "env", "log"}, ...]}

The parent imports the backend's heavy modules once (torch, transformers, the backend
itself: seconds each time on a small CPU), then forks one child per job, at most `parallel`
at a time. A child takes its job's environment and folder, sends its output to the job's log,
and runs `argv` as `python argv...` would: the backend's own entry script (or its console
script), i.e. the command jessy's runner launches for that attempt, with that attempt's
files. A job that fails, crashes or times out is only its own; the others still run.
RESULTS.json: {name: {"returncode", "seconds"}}; -9 = killed at the timeout.

Only the standard library: jessy is not installed in a backend's environment.
"""

from __future__ import annotations

import importlib
import json
import os
import runpy
import signal
import sys
import time
import traceback


def run_job(job: dict) -> None:
    """In the forked child: become the job's process, run its command, never return."""
    code = 1
    try:
        os.setpgid(0, 0)  # its own group: a timeout kills whatever it started too
        fd = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        os.chdir(job["cwd"])
        os.environ.update(job["env"])
        sys.argv = list(job["argv"])
        sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))  # as `python SCRIPT` does
        runpy.run_path(sys.argv[0], run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 (the job's own failure, reported in its log)
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def main(jobs_path: str, results_path: str) -> int:
    with open(jobs_path) as fh:
        plan = json.load(fh)
    for name in plan["preimport"]:
        importlib.import_module(name)
    pending, running, results = list(plan["jobs"]), {}, {}
    while pending or running:
        while pending and len(running) < max(1, plan["parallel"]):
            job = pending.pop(0)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                run_job(job)
            running[pid] = (job, time.monotonic())
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            for child, (_, start) in running.items():
                if time.monotonic() - start > plan["timeout"]:
                    try:
                        os.killpg(child, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            time.sleep(0.05)
            continue
        if pid not in running:  # a process the preimported modules started, not a job
            continue
        job, start = running.pop(pid)
        results[job["name"]] = {"returncode": os.waitstatus_to_exitcode(status),
                                "seconds": round(time.monotonic() - start, 2)}
        print(f"{job['name']}: {results[job['name']]}", flush=True)
    with open(results_path, "w") as fh:
        json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
