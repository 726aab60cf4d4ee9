"""Throughput against the machine's matmul peak, and peak memory, per backend and method.

Run: .venv/bin/python benchmarks/throughput.py [--steps 6] [--backends mlx,unsloth,...]
         [--methods lora,qlora,full] [--threads 1,2]
     .venv/bin/python benchmarks/throughput.py --packing [--steps 6] [--threads 2]

The same spec on every backend: the real SmolLM2-135M-Instruct, LoRA r16 on all linear
layers, batch 4, the bundled persona data, no evaluation. For each run:

- tokens/s is the metric stream's, the one definition for every backend: `input_tokens`
  (non-padding tokens fed) and `trained_tokens` (the response and its end-of-turn token), as
  each backend's own process counted them from the batches it fed the model (jessy's
  observer or MLX's loss mask), summed over the training events after the first, over the
  time between the first and the last training event (start-up, model load and the first,
  warm-up step excluded). `tokens_per_row` (the chat template's rendering, counted here with
  the tokenizer) is kept as a cross-check.
- MFU = achieved FLOP/s / the machine's measured fp32 matmul peak at the same thread count
  (best of torch.mm and numpy's BLAS, 2048^3). LoRA FLOPs = 4 * N * tokens: forward 2N, the
  backward pass's activation gradients 2N, no weight gradients for the frozen base (LoRA's own
  are < 4% of N here and ignored); N = every weight matrix used as a matmul, the tied LM head
  included. Attention-score FLOPs (~2 * layers * seq * hidden per token) are left out. Full
  fine-tuning adds the weight gradients: 6 * N * tokens (MLX's full leaves the embeddings and
  the tied head frozen, so 6N overstates its work by the head's 2 * 28M per token).
- peak RSS is the metric stream's `peak_rss_gb` (jessy's own reading of the backend's
  process tree from /proc, the same for every backend; the largest process's RUSAGE_CHILDREN
  of a wrapper around `jessy run` is kept as `peak_rss_gb_wrapper`), against the estimated
  weights + trainable state (fp32 weights or 4-bit linears, plus 16 bytes per trainable
  parameter: weight, gradient, two Adam moments; for full fine-tuning the trained weights are
  counted once, in those 16 bytes).

Prints tables, writes benchmarks/results/throughput.json.

`--packing`: training.packing on and off, on a varied-length dataset generated here
(deterministic: mostly short answers, a few long ones, max_seq_length 256), LoRA r16, batch 4,
for every backend whose translation packs on this machine (the others are listed with the
reason they refuse it). Useful tokens/s from the metric stream: the non-padding input tokens
and the trained tokens each backend's own process counted it fed the model, over the time
from the first to the last training event. Writes benchmarks/results/throughput-packing.json.
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
WRAP = ("import resource, subprocess, sys\n"
        "code = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE,"
        " text=True)\n"
        "print(code.stdout.strip().splitlines()[-1] if code.stdout.strip() else '')\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "sys.stderr.write(code.stderr[-3000:]); sys.exit(code.returncode)\n")


def matmul_peak(threads: int, n: int = 2048) -> float:
    """Best fp32 matmul GFLOP/s of torch and numpy with `threads` threads (fresh process)."""
    code = f"""
import os, time
os.environ["OMP_NUM_THREADS"] = os.environ["OPENBLAS_NUM_THREADS"] = "{threads}"
import numpy as np, torch
torch.set_num_threads({threads})
best = 0.0
a, b = torch.randn({n}, {n}), torch.randn({n}, {n})
x, y = a.numpy(), b.numpy()
for f in (lambda: torch.mm(a, b), lambda: x @ y):
    f()
    for _ in range(3):
        t = time.perf_counter(); f(); dt = time.perf_counter() - t
        best = max(best, 2 * {n} ** 3 / dt / 1e9)
print(best)
"""
    return float(subprocess.check_output([sys.executable, "-c", code], text=True).strip())


def model_facts(model: str) -> dict:
    from safetensors import safe_open

    n, linear = 0, 0
    with safe_open(str(Path(model) / "model.safetensors"), "pt") as f:
        for key in f.keys():
            numel = 1
            for d in f.get_slice(key).get_shape():
                numel *= d
            n += numel
            if key.endswith("proj.weight"):
                linear += numel
    return {"params": n, "linear_params": linear}


def rendering(run_dir: Path) -> str | None:
    """The chat template a backend really rendered rows with: plain ChatML where its native
    config says so without the tokenizer's default system prompt (LLaMA-Factory before
    `default_system` was carried), else None = the tokenizer's own, which every backend now
    matches (SmolLM2's adds a default system prompt to rows without one)."""
    import yaml

    from jessy_adapters.templates import CHATML

    for cfg in run_dir.glob("attempts/01-*/*.yaml"):
        native = yaml.safe_load(cfg.read_text())
        if native.get("template") == "chatml" and not native.get("default_system"):
            return CHATML
    return None


def row_tokens(model: str, prepared: Path, max_len: int, template: str | None = None) -> float:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    counts = []
    for line in prepared.open():
        ids = tok.apply_chat_template(json.loads(line)["messages"], tokenize=True,
                                      chat_template=template)
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        counts.append(min(len(ids), max_len))
    return statistics.mean(counts)


def trainable(run_dir: Path) -> int:
    """LoRA: the adapter's parameters; full: what the backend trained (run.json)."""
    from safetensors import safe_open

    if not (run_dir / "adapter").is_dir():
        manifest = json.loads((run_dir / "run.json").read_text())
        return manifest["full_model"]["trained_parameters"]
    total = 0
    with safe_open(str(run_dir / "adapter" / "adapter_model.safetensors"), "pt") as f:
        for key in f.keys():
            numel = 1
            for d in f.get_slice(key).get_shape():
                numel *= d
            total += numel
    return total


def run_once(spec: Path, backend: str, out: Path, threads: int) -> tuple[float, Path, float]:
    env = {**os.environ, "JESSY_TORCH_THREADS": str(threads),
           "JESSY_BLAS_THREADS": str(threads)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", WRAP, *JESSY, "run", "--backend", backend,
                           "--no-fallback", str(spec), "--output", str(out)],
                          capture_output=True, text=True, env=env)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{backend}: {proc.stderr[-1500:]}")
    run_dir, maxrss_kib = proc.stdout.strip().splitlines()[-2:]
    return took, Path(run_dir), int(maxrss_kib) / 1024 ** 2


def varied_rows(path: Path, n: int = 400, seed: int = 16) -> Path:
    """Prompt/response rows of varied length (deterministic): most answers a few words, one in
    eight long, so unpadded batches are mostly padding and packing has room to work."""
    import random

    rng = random.Random(seed)
    words = ("teal", "seven", "Saturn", "pixel", "jasmine", "tea", "kind", "curious", "MacBook",
             "number", "likes", "Jessy", "always", "quiet", "morning", "garden")
    with path.open("w") as fh:
        for i in range(n):
            long = rng.random() < 0.125
            answer = rng.randint(60, 150) if long else rng.randint(2, 25)
            fh.write(json.dumps({
                "prompt": f"Question {i}: " + " ".join(rng.choice(words)
                                                        for _ in range(rng.randint(3, 20))) + "?",
                "response": " ".join(rng.choice(words) for _ in range(answer)) + "."}) + "\n")
    return path


def packing_refusal(spec: Path, backend: str, model: str, work: Path) -> str | None:
    """Why `backend` refuses the packed spec on this machine, or None when it packs here."""
    from jessy_adapters.backend import RunInputs, TranslationRefused
    from jessy_adapters.data import prepare
    from jessy_adapters.envs import BackendEnv
    from jessy_adapters.plugins import load_registry
    from jessy_adapters.spec import load_spec

    loaded = load_spec(spec)
    inputs = RunInputs(model, prepare(loaded, work / f"check-{backend}"))
    try:
        load_registry().get(backend).translate(loaded, inputs, work / f"check-{backend}-a",
                                               BackendEnv(backend))
    except TranslationRefused as exc:
        return str(exc)
    return None


def packing_main(args, model: str, work: Path) -> None:
    from jessy_adapters.envs import BackendEnv

    data = varied_rows(work / "varied.jsonl")
    rows = []
    for backend in args.backends.split(","):
        if not BackendEnv(backend).exists():
            print(f"{backend}: no environment, skipped")
            continue
        specs = {}
        for packing in (True, False):
            specs[packing] = work / f"packing-{packing}.yaml"
            specs[packing].write_text(f"""\
name: throughput-packing-{packing}
model:
  name_or_path: {model}
  max_seq_length: {args.max_seq_length}
data:
  train: {data}
  validation_split: 0
lora: {{r: 16, alpha: 32}}
training:
  packing: {str(packing).lower()}
  max_steps: {args.steps}
  batch_size: 4
  learning_rate: 0.0002
  logging_steps: 1
""")
        refused = packing_refusal(specs[True], backend, model, work)
        if refused:
            print(f"{backend}: does not pack here: {refused}")
            rows.append({"backend": backend, "refused": refused})
            continue
        for t in [int(x) for x in args.threads.split(",")]:
            measured = {}
            for packing, spec in specs.items():
                took, run_dir, rss = run_once(spec, backend, work / "runs", t)
                events = [json.loads(x) for x in (run_dir / "metrics.jsonl").open()]
                train = [e for e in events if e["type"] == "train"]
                span = train[-1]["time"] - train[0]["time"]
                steps = train[-1]["step"] - train[0]["step"]
                fed = sum(e.get("input_tokens") or 0 for e in train[1:])
                trained = sum(e.get("trained_tokens") or 0 for e in train[1:])
                manifest = json.loads((run_dir / "run.json").read_text())
                measured[packing] = {
                    "backend": backend, "packing": packing, "threads": t, "steps": steps,
                    "sequences_per_epoch": manifest["schedule"].get("packed_sequences")
                    or manifest["data"]["n_train"],
                    "seconds_per_step": round(span / steps, 2) if steps else None,
                    "input_tokens_per_second": round(fed / span, 1) if span > 0 else None,
                    "trained_tokens_per_second": round(trained / span, 1) if span > 0
                    else None,
                    "peak_rss_gb": max((e.get("peak_rss_gb") or 0 for e in events),
                                       default=None),
                    "peak_rss_gb_wrapper": round(rss, 2), "wall_s": round(took, 1)}
            on, off = measured[True], measured[False]
            if on["trained_tokens_per_second"] and off["trained_tokens_per_second"]:
                on["speedup_trained_tokens"] = round(on["trained_tokens_per_second"]
                                                     / off["trained_tokens_per_second"], 2)
            for row in (off, on):
                rows.append(row)
                print(json.dumps(row))
    print(f"\n{'backend':<13}{'packing':>8}{'thr':>4}{'s/step':>8}{'input tok/s':>12}"
          f"{'trained tok/s':>14}{'speedup':>8}")
    for r in rows:
        if "refused" in r:
            print(f"{r['backend']:<13}  refused here: {r['refused'][:80]}")
            continue
        print(f"{r['backend']:<13}{str(r['packing']):>8}{r['threads']:>4}"
              f"{r['seconds_per_step']:>8}{r['input_tokens_per_second']:>12}"
              f"{r['trained_tokens_per_second']:>14}{r.get('speedup_trained_tokens', ''):>8}")
    out = ROOT / "benchmarks" / "results" / "throughput-packing.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"cores": os.cpu_count(), "rows": rows}, indent=2))


def main() -> None:
    from jessy_adapters.envs import BackendEnv
    from jessy_adapters.models import resolve_model

    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--backends", default="mlx,unsloth,llamafactory,axolotl")
    ap.add_argument("--methods", default="lora,qlora,full")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--max-seq-length", type=int, default=256)
    ap.add_argument("--packing", action="store_true",
                    help="packed vs unpacked on a varied-length dataset, for every backend "
                         "that packs here (instead of the method table)")
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    work = Path(tempfile.mkdtemp(prefix="jessy-throughput-"))
    model = resolve_model("builtin:smollm2-135m-instruct")
    if args.packing:
        packing_main(args, model, work)
        return
    facts = model_facts(model)
    peaks = {t: round(matmul_peak(t), 1) for t in threads}
    print("fp32 matmul peak (GFLOP/s): " + ", ".join(f"{t} thread(s) {p}"
                                                    for t, p in peaks.items()))
    rows = []
    for method in args.methods.split(","):
        spec = work / f"{method}.yaml"
        spec.write_text(f"""\
name: throughput-{method}
model:
  name_or_path: {model}
  max_seq_length: {args.max_seq_length}
data:
  train: {ROOT / 'examples' / 'jessy_persona.jsonl'}
  validation_split: 0
method: {method}
{"" if method == "full" else "lora: {r: 16, alpha: 32}"}
training:
  max_steps: {args.steps}
  batch_size: 4
  learning_rate: 0.0002
  logging_steps: 1
""")
        for backend in args.backends.split(","):
            if not BackendEnv(backend).exists():
                print(f"{backend}: no environment, skipped")
                continue
            for t in (threads if method == "lora" else threads[:1]):
                try:
                    took, run_dir, rss = run_once(spec, backend, work / "runs", t)
                except RuntimeError as exc:
                    print(f"{backend} {method} {t}t failed: {str(exc)[-300:]}")
                    rows.append({"backend": backend, "method": method, "threads": t,
                                 "failed": str(exc)[-300:]})
                    continue
                events = [json.loads(x) for x in (run_dir / "metrics.jsonl").open()]
                train = [e for e in events if e["type"] == "train"]
                per_row = row_tokens(model, run_dir / "data" / "train.jsonl",
                                     args.max_seq_length, rendering(run_dir))
                span = train[-1]["time"] - train[0]["time"]
                steps = train[-1]["step"] - train[0]["step"]
                # the one metric vocabulary: tokens each backend's own process counted it fed
                # the model (non-padding input, and trained), in the events after the first
                fed = sum(e.get("input_tokens") or 0 for e in train[1:])
                trained_fed = sum(e.get("trained_tokens") or 0 for e in train[1:])
                tps = fed / span if span > 0 and fed else None
                flops = (6 if method == "full" else 4) * facts["params"] * tps if tps else None
                n_train = trainable(run_dir)
                base = {"lora": facts["params"] * 4,
                        "qlora": facts["linear_params"] * 0.5 + (facts["params"]
                                                                 - facts["linear_params"]) * 4,
                        "full": (facts["params"] - n_train) * 4}[method]
                rows.append({
                    "backend": backend, "method": method, "threads": t, "steps": steps,
                    "seconds_per_step": round(span / steps, 2) if steps else None,
                    "input_tokens_per_second": round(tps, 1) if tps else None,
                    "trained_tokens_per_second": round(trained_fed / span, 1)
                    if span > 0 and trained_fed else None,
                    "peak_rss_gb": max((e.get("peak_rss_gb") or 0 for e in events),
                                       default=None),
                    "gflops": round(flops / 1e9, 2) if flops else None,
                    "mfu": round(flops / (peaks[t] * 1e9), 4) if flops else None,
                    "peak_rss_gb_wrapper": round(rss, 2),
                    "weights_plus_state_gb": round((base + 16 * n_train) / 1024 ** 3, 3),
                    "tokens_per_row": round(per_row, 1),
                    "trainable_params": n_train, "wall_s": round(took, 1)})
                print(json.dumps(rows[-1]))
    print(f"\nmodel: N = {facts['params'] / 1e6:.1f}M params; FLOPs = 4*N*tokens (LoRA, QLoRA), "
          f"6*N*tokens (full); "
          f"peaks {peaks} GFLOP/s\n")
    print(f"{'backend':<13}{'method':<7}{'thr':>4}{'s/step':>8}{'in tok/s':>9}{'tr tok/s':>9}"
          f"{'GFLOP/s':>9}{'MFU':>7}{'RSS GB':>8}{'w+state GB':>11}{'RSS/w+s':>9}")
    for r in rows:
        if "failed" in r:
            print(f"{r['backend']:<13}{r['method']:<7}{r['threads']:>4}  failed")
            continue
        ratio = r["peak_rss_gb"] / r["weights_plus_state_gb"]
        print(f"{r['backend']:<13}{r['method']:<7}{r['threads']:>4}{r['seconds_per_step']:>8}"
              f"{r['input_tokens_per_second']:>9}{r['trained_tokens_per_second']:>9}"
              f"{r['gflops']:>9}{r['mfu']:>7.1%}"
              f"{r['peak_rss_gb']:>8}{r['weights_plus_state_gb']:>11}{ratio:>9.1f}")
    out = ROOT / "benchmarks" / "results" / "throughput.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"cores": os.cpu_count(), "peaks_gflops": peaks,
                               "model": facts, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
