"""Layer overhead: `jessy run --backend B` vs the backend's own command on the same native config.

Run: .venv/bin/python benchmarks/overhead.py [--steps 20] [--repeat 2] [--backends mlx,...]
For each backend whose environment exists: a warm-up `jessy run` on the tiny test model,
then `--repeat` timed rounds of (a) `jessy run` end to end and (b) the same native config
from `jessy translate`, its command.txt (command + environment) run directly. Prints wall
times and the ratio (goal <= 1.03 on real runs; on a seconds-long tiny run jessy's fixed
costs dominate) and writes benchmarks/results/overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JESSY = [sys.executable, "-m", "jessy_adapters.cli"]


def jessy_run(spec: Path, backend: str, out: Path) -> tuple[float, Path]:
    start = time.perf_counter()
    proc = subprocess.run(JESSY + ["run", "--backend", backend, "--no-fallback", str(spec),
                                   "--output", str(out)], capture_output=True, text=True)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return took, Path(proc.stdout.strip().splitlines()[-1])


def native_run(spec: Path, backend: str, out: Path) -> float:
    """`jessy translate` into a fresh folder, then time only its command.txt (the exact
    command with its environment), as a user running the backend by hand would."""
    subprocess.run(JESSY + ["translate", "--backend", backend, str(spec), "--out", str(out)],
                   capture_output=True, check=True)
    start = time.perf_counter()
    subprocess.run(["bash", str(out / "command.txt")], cwd=out, capture_output=True,
                   check=True)
    return time.perf_counter() - start


PLOT_TAIL = """
import json, sys, time, threading
sys.path.insert(0, {root!r})
from jessy_adapters import plots
events = [{{"step": i, "loss": 2.0 / i, "backend": "x"}} for i in range(1, 50)]
if {preload}:
    plots.preload_in_background()
    time.sleep(5)  # a training run lasts longer than the import
t = time.perf_counter()
plots.plot_losses(events, __import__("pathlib").Path({out!r}))
print(time.perf_counter() - t)
"""


def plot_tail(work: Path) -> dict:
    """What the loss plot adds after the backend exits: cold (matplotlib imported then) vs
    preloaded while the backend trains (what the runner does). Median of 3 fresh processes."""
    out = {}
    for preload in (False, True):
        times = [float(subprocess.check_output(
            [sys.executable, "-c", PLOT_TAIL.format(root=str(ROOT), preload=preload,
                                                    out=str(work / "p.png"))], text=True))
            for _ in range(3)]
        out["preloaded" if preload else "cold"] = round(statistics.median(times), 3)
    return out


def main() -> None:
    from jessy_adapters.envs import BackendEnv
    from jessy_adapters.models import build_tiny_llama, resolve_model

    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--backends", default="mlx,unsloth,llamafactory,axolotl")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="jessy-overhead-"))
    model = build_tiny_llama(work / "tiny", resolve_model("builtin:smollm2-135m-instruct"))
    spec = work / "spec.yaml"
    spec.write_text(f"""\
model:
  name_or_path: {model}
  max_seq_length: 128
data:
  train: {ROOT / 'examples' / 'jessy_persona.jsonl'}
  validation_split: 0.1
training:
  max_steps: {args.steps}
  batch_size: 4
  logging_steps: 5
  eval_steps: 1000
""")
    rows = []
    for backend in args.backends.split(","):
        if not BackendEnv(backend).exists():
            print(f"{backend}: no environment, skipped")
            continue
        jessy_run(spec, backend, work / "runs")  # warm-up: page cache, compiled kernels
        wrapped, native = [], []
        for i in range(args.repeat):
            wrapped.append(jessy_run(spec, backend, work / "runs")[0])
            native.append(native_run(spec, backend, work / f"native-{backend}-{i}"))
        w, n = statistics.median(wrapped), statistics.median(native)
        rows.append({"backend": backend, "steps": args.steps, "jessy_run_s": round(w, 2),
                     "native_s": round(n, 2), "ratio": round(w / n, 3),
                     "difference_s": round(w - n, 2)})
    print(f"{'backend':<14}{'steps':>6}{'jessy run s':>13}{'native s':>10}{'ratio':>8}"
          f"{'extra s':>9}")
    for r in rows:
        print(f"{r['backend']:<14}{r['steps']:>6}{r['jessy_run_s']:>13.2f}{r['native_s']:>10.2f}"
              f"{r['ratio']:>8.3f}{r['difference_s']:>9.2f}")
    tail = plot_tail(work)
    print(f"\nloss plot after the backend exits: cold {tail['cold']} s, matplotlib preloaded "
          f"during training {tail['preloaded']} s")
    out = ROOT / "benchmarks" / "results" / "overhead.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"cores": os.cpu_count(), "rows": rows, "plot_tail_s": tail},
                              indent=2))


if __name__ == "__main__":
    main()
