"""CLI start-up, `jessy plan` over a whole chain, and fallback latency.

Run: .venv/bin/python benchmarks/cli_latency.py [--repeat 5]
Prints a table (median and best wall time per command) and writes
benchmarks/results/cli_latency.json. Goals from issue 8: --help <= 0.3 s, plan < 2 s.

Fallback latency: `jessy run --backend unsloth --fallback mlx` with no Unsloth environment,
from process start to the first MLX metric line on stderr (tiny model, so training itself
is not what is measured).
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
QUICKSTART = ROOT / "specs" / "examples" / "quickstart.yaml"


def timed(args: list[str], env: dict | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(args, capture_output=True, env=env, check=False)
    return time.perf_counter() - start


def fallback_latency(home: Path) -> float | None:
    from jessy_adapters.envs import BackendEnv
    from jessy_adapters.models import build_tiny_llama, resolve_model

    mlx = BackendEnv("mlx")
    if not mlx.exists():
        return None
    work = Path(tempfile.mkdtemp(prefix="jessy-bench-"))
    model = build_tiny_llama(work / "tiny", resolve_model("builtin:smollm2-135m-instruct"))
    (home / "envs").mkdir(parents=True, exist_ok=True)
    link = home / "envs" / "mlx"
    if not link.exists():
        link.symlink_to(mlx.root)
    data = ROOT / "examples" / "jessy_persona.jsonl"
    spec = work / "spec.yaml"
    spec.write_text(f"model:\n  name_or_path: {model}\ndata:\n  train: {data}\n"
                    "training:\n  max_steps: 2\n  logging_steps: 1\n")
    env = {**os.environ, "JESSY_HOME": str(home)}
    start = time.perf_counter()
    proc = subprocess.Popen(JESSY + ["run", "--backend", "unsloth", "--fallback", "mlx",
                                     str(spec), "--output", str(work / "runs")],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    first = None
    for line in proc.stderr:
        if first is None and line.startswith("[mlx] step") and "loss" in line:
            first = time.perf_counter() - start
    proc.wait()
    return first


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    cases = {
        "jessy --help": JESSY + ["--help"],
        "jessy validate quickstart": JESSY + ["validate", str(QUICKSTART)],
        "jessy backends": JESSY + ["backends"],
        "jessy plan --plan A": JESSY + ["plan", "--plan", "A", str(QUICKSTART)],
    }
    rows = []
    for name, cmd in cases.items():
        times = [timed(cmd) for _ in range(args.repeat)]
        rows.append({"case": name, "median_s": round(statistics.median(times), 3),
                     "best_s": round(min(times), 3)})
    with tempfile.TemporaryDirectory() as home:
        fb = fallback_latency(Path(home))
    rows.append({"case": "fallback unsloth->mlx, start to first MLX step",
                 "median_s": round(fb, 2) if fb else None, "best_s": None})
    print(f"{'case':<48} {'median s':>9} {'best s':>8}")
    for r in rows:
        med = "n/a" if r["median_s"] is None else f"{r['median_s']:.3f}"
        best = "" if r["best_s"] is None else f"{r['best_s']:.3f}"
        print(f"{r['case']:<48} {med:>9} {best:>8}")
    out = ROOT / "benchmarks" / "results" / "cli_latency.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"python": sys.version.split()[0], "cores": os.cpu_count(),
                               "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
