"""MLX matmul speed on Linux: bundled reference BLAS vs preloaded OpenBLAS, 1 vs 2 threads.

Run: .venv/bin/python benchmarks/mlx_blas.py [--size 1024] [--repeat 5]
Prints a table and writes benchmarks/results/mlx_blas.json. Needs `jessy env create mlx`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path

from jessy_adapters.envs import BackendEnv
from jessy_mlx.blas import find_openblas, preload_environment

PROBE = r"""
import sys, time, mlx.core as mx
n, reps = int(sys.argv[1]), int(sys.argv[2])
a = mx.random.normal((n, n)); b = mx.random.normal((n, n)); mx.eval(a, b)
mx.eval(a @ b)
best = 1e9
for _ in range(reps):
    t = time.perf_counter(); mx.eval(a @ b); best = min(best, time.perf_counter() - t)
blas = sorted({l.split()[-1].rsplit('/', 1)[-1] for l in open('/proc/self/maps') if 'blas' in l})
print(2 * n**3 / best / 1e9, ",".join(blas))
"""


def measure(env: BackendEnv, extra: dict, size: int, repeat: int) -> tuple[float, str]:
    base = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "OMP_NUM_THREADS")}
    out = subprocess.run([str(env.python), "-c", PROBE, str(size), str(repeat)],
                         env={**base, **extra}, capture_output=True, text=True, check=True)
    gflops, libs = out.stdout.split()
    return float(gflops), libs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    env = BackendEnv("mlx")
    lib = find_openblas()
    rows = [("bundled reference BLAS", {"OPENBLAS_NUM_THREADS": "1"})]
    if lib:
        for t in ("1", "2"):
            rows.append((f"OpenBLAS, {t} thread(s)",
                         {**preload_environment(lib), "OPENBLAS_NUM_THREADS": t}))
    results = []
    for name, extra in rows:
        gflops, libs = measure(env, extra, args.size, args.repeat)
        results.append({"setting": name, "gflops": round(gflops, 2), "libs": libs})
    base = results[0]["gflops"]
    print(f"sgemm {args.size}x{args.size}, best of {args.repeat}, cores={os.cpu_count()}")
    print(f"{'setting':<26} {'GFLOP/s':>8} {'x bundled':>10}")
    for r in results:
        print(f"{r['setting']:<26} {r['gflops']:>8.2f} {r['gflops'] / base:>10.1f}")
    out = Path(__file__).parent / "results" / "mlx_blas.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"size": args.size, "results": results}, indent=2))


if __name__ == "__main__":
    main()
