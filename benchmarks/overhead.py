"""Layer overhead: `jessy run --backend B` vs the backend's own command on the same native config.

Run: .venv/bin/python benchmarks/overhead.py [--model tiny|smollm2] [--steps 20] [--repeat 3]
                                             [--backends mlx,unsloth,llamafactory,axolotl]
For each backend whose environment exists: a warm-up `jessy run`, then `--repeat` rounds of
(a) `jessy run` end to end and (b) the same native config from `jessy translate`, its
command.txt (command + environment) run directly; the order alternates between rounds so
drift on a shared machine does not favour one side. Two measurements come out:

- the cross-run ratio (jessy wall / native wall): what the issue asks, but on a shared VM
  two runs of the same command differ by several percent;
- the in-run split from run.json (timings + attempts[].phases): the same jessy process's wall
  time minus its backend process's lifetime is exactly what jessy added, by step. Comparing
  the backend's lifetime inside jessy with the native wall shows whether supervision (log
  streaming, parsing) slows the backend itself.

Prints tables and writes benchmarks/results/overhead[-MODEL].json.
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
STEPS = ("startup_s", "prepare_s", "check_s", "translate_s", "normalise_s", "plot_s", "exit_s")


def jessy_run(spec: Path, backend: str, out: Path) -> dict:
    start = time.perf_counter()
    proc = subprocess.run(JESSY + ["run", "--backend", backend, "--no-fallback", str(spec),
                                   "--output", str(out)], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    m = json.loads((run_dir / "run.json").read_text())
    phases = m["attempts"][-1]["phases"]
    t = m["timings"]
    split = {"startup_s": t["startup_s"], "prepare_s": t["prepare_s"], **phases}
    # after the run is finished: final manifest write, interpreter exit, and what the
    # process clock cannot see (fork/exec before /proc starts counting)
    split["exit_s"] = wall - t["startup_s"] - t["prepare_s"] - sum(phases.values())
    return {"wall_s": wall, "backend_s": phases["backend_s"], "split": split}


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


def measure(spec: Path, backend: str, repeat: int, work: Path) -> dict:
    jessy_run(spec, backend, work / "runs")  # warm-up: page cache, compiled kernels
    wrapped, native = [], []
    for i in range(repeat):
        for side in (("jessy", "native") if i % 2 == 0 else ("native", "jessy")):
            if side == "jessy":
                wrapped.append(jessy_run(spec, backend, work / "runs"))
            else:
                native.append(native_run(spec, backend, work / f"native-{backend}-{i}"))
    med = statistics.median
    walls = [w["wall_s"] for w in wrapped]
    ratios = [w["wall_s"] / n for w, n in zip(wrapped, native, strict=True)]
    split = {k: round(med(w["split"][k] for w in wrapped), 3) for k in STEPS}
    own = [w["wall_s"] - w["backend_s"] for w in wrapped]
    return {"backend": backend, "rounds": repeat,
            "jessy_run_s": round(med(walls), 2), "native_s": round(med(native), 2),
            "ratio": round(med(walls) / med(native), 3),
            "ratio_min": round(min(ratios), 3), "ratio_max": round(max(ratios), 3),
            "native_spread_s": round(max(native) - min(native), 2),
            "backend_in_jessy_s": round(med(w["backend_s"] for w in wrapped), 2),
            "jessy_own_s": round(med(own), 3),
            "in_run_ratio": round(med(w["wall_s"] / w["backend_s"] for w in wrapped), 4),
            "split_s": split}


def spec_text(model: str, data: Path, steps: int) -> str:
    return f"""\
model:
  name_or_path: {model}
  max_seq_length: 128
data:
  train: {data}
  validation_split: 0.1
training:
  max_steps: {steps}
  batch_size: 4
  logging_steps: 5
  eval_steps: 1000
"""


def main() -> None:
    from jessy_adapters.envs import BackendEnv
    from jessy_adapters.models import build_tiny_llama, resolve_model

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=("tiny", "smollm2"), default="tiny",
                    help="tiny: 2-layer random model (fixed costs dominate); smollm2: the "
                         "135M model (a short real run)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--backends", default="mlx,unsloth,llamafactory,axolotl")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="jessy-overhead-"))
    model = resolve_model("builtin:smollm2-135m-instruct")
    if args.model == "tiny":
        model = build_tiny_llama(work / "tiny", model)
    spec = work / "spec.yaml"
    spec.write_text(spec_text(model, ROOT / "examples" / "jessy_persona.jsonl", args.steps))
    rows = []
    for backend in args.backends.split(","):
        if not BackendEnv(backend).exists():
            print(f"{backend}: no environment, skipped")
            continue
        rows.append(measure(spec, backend, args.repeat, work))
        print(f"{backend}: done", file=sys.stderr)
    print(f"model {args.model}, {args.steps} steps, median of {args.repeat} alternating rounds\n")
    print(f"{'backend':<13}{'jessy run s':>12}{'native s':>10}{'ratio':>8}{'per round':>15}"
          f"{'native spread':>15}{'backend in jessy s':>20}{'jessy own s':>13}"
          f"{'in-run ratio':>14}")
    for r in rows:
        print(f"{r['backend']:<13}{r['jessy_run_s']:>12.2f}{r['native_s']:>10.2f}"
              f"{r['ratio']:>8.3f}{r['ratio_min']:>8.3f}-{r['ratio_max']:<6.3f}"
              f"{r['native_spread_s']:>15.2f}{r['backend_in_jessy_s']:>20.2f}"
              f"{r['jessy_own_s']:>13.3f}{r['in_run_ratio']:>14.4f}")
    print("\nwhere jessy's own seconds go (median per step; exit = final write + interpreter "
          "exit)")
    print(f"{'backend':<13}" + "".join(f"{k[:-2]:>11}" for k in STEPS))
    for r in rows:
        print(f"{r['backend']:<13}" + "".join(f"{r['split_s'][k]:>11.3f}" for k in STEPS))
    tail = plot_tail(work)
    print(f"\nloss plot after the backend exits: cold {tail['cold']} s, matplotlib preloaded "
          f"during training {tail['preloaded']} s")
    name = "overhead.json" if args.model == "tiny" else f"overhead-{args.model}.json"
    out = ROOT / "benchmarks" / "results" / name
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"cores": os.cpu_count(), "model": args.model,
                               "steps": args.steps, "rows": rows, "plot_tail_s": tail},
                              indent=2))


if __name__ == "__main__":
    main()
