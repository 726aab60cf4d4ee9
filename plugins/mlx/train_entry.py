"""Runs inside the MLX environment: mlx-lm's own LoRA trainer with structured metrics.

Usage: python train_entry.py CONFIG.yaml

It reads an mlx-lm LoRA config (plus `jessy_*` keys written by translate.py), then calls
mlx_lm.lora.train_model with a TrainingCallback that prints one JSON event per report.
(`mlx_lm.lora.run` would replace our callback, so loading is done here the same way.)
Only the standard library, yaml, mlx and mlx_lm may be imported: jessy is not installed here.
"""

from __future__ import annotations

import json
import sys
import types

EVENT_PREFIX = "JESSY_EVENT "


def emit(event: dict) -> None:
    print(EVENT_PREFIX + json.dumps(event), flush=True)


def loaded_blas() -> str:
    """Which BLAS this process really mapped (the proof that OpenBLAS was preloaded)."""
    try:
        with open("/proc/self/maps") as fh:
            maps = fh.read()
    except OSError:
        return "unknown (no /proc)"
    libs = sorted({ln.split()[-1].rsplit("/", 1)[-1] for ln in maps.splitlines()
                   if "blas" in ln.lower() and "/" in ln})
    return ", ".join(libs) or "none mapped"


def clipped(base, max_norm: float):
    import mlx.optimizers as optim

    class Clipped(base):
        def update(self, model, gradients):
            gradients, _ = optim.clip_grad_norm(gradients, max_norm)
            return super().update(model, gradients)

    Clipped.__name__ = f"Clipped{base.__name__}"
    return Clipped


def main(config_path: str) -> int:
    import yaml

    with open(config_path) as fh:
        cfg = yaml.safe_load(fh)

    import mlx_lm
    import numpy as np
    from mlx_lm import lora as mlx_lora
    from mlx_lm.tuner.callbacks import TrainingCallback
    from mlx_lm.tuner.datasets import load_dataset
    from mlx_lm.utils import load

    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim

    jessy = {k: cfg.pop(k) for k in list(cfg) if k.startswith("jessy_")}
    args = dict(mlx_lora.CONFIG_DEFAULTS)
    args.update(cfg)
    args = types.SimpleNamespace(**args)
    accum = max(1, args.grad_accumulation_steps)
    emit({"type": "runtime", "blas": loaded_blas(), "mlx": mx.__version__,
          "mlx_lm": mlx_lm.__version__, "device": str(mx.default_device())})

    np.random.seed(args.seed)
    model, tokenizer = load(args.model,
                            tokenizer_config={"trust_remote_code": args.trust_remote_code},
                            trust_remote_code=args.trust_remote_code)
    if jessy.get("jessy_chat_template"):
        tokenizer.chat_template = jessy["jessy_chat_template"]
    if jessy.get("jessy_dtype"):
        model.set_dtype(getattr(mx, jessy["jessy_dtype"]))
    if jessy.get("jessy_quantize"):
        q = jessy["jessy_quantize"]
        nn.quantize(model, group_size=q["group_size"], bits=q["bits"])
    train_set, valid_set, _ = load_dataset(args, tokenizer)
    if jessy.get("jessy_init_peft_adapter"):
        # another backend's checkpoint (PEFT) -> MLX file, loaded as mlx-lm loads a resume
        import os

        sys.path.insert(0, os.environ["JESSY_RUNTIME_PATH"])
        from lora_convert import peft_dir_to_mlx_file

        init_file = f"{args.adapter_path}/init_from_peft.safetensors"
        peft_dir_to_mlx_file(jessy["jessy_init_peft_adapter"], init_file)
        args.resume_adapter_file = init_file
    n_train = len(train_set)

    if jessy.get("jessy_max_grad_norm"):
        # mlx-lm builds its optimizer by name inside train_model; give it clipped classes.
        norm = float(jessy["jessy_max_grad_norm"])
        mlx_lora.optim = types.SimpleNamespace(
            Adam=clipped(optim.Adam, norm), AdamW=clipped(optim.AdamW, norm),
            SGD=clipped(optim.SGD, norm), Muon=clipped(optim.Muon, norm),
            Adafactor=clipped(optim.Adafactor, norm))

    class Events(TrainingCallback):
        def on_train_loss_report(self, info):
            it = info["iteration"]
            emit({"type": "train", "step": it // accum, "iteration": it,
                  "epoch": round(it * args.batch_size / max(n_train, 1), 4),
                  "loss": _finite(info["train_loss"]),
                  "learning_rate": float(info["learning_rate"]),
                  "tokens_per_second": float(info["tokens_per_second"]),
                  "trained_tokens": int(info["trained_tokens"]),
                  "peak_memory_gb": float(info["peak_memory"])})

        def on_val_loss_report(self, info):
            it = info["iteration"]
            emit({"type": "eval", "step": it // accum, "iteration": it,
                  "eval_loss": _finite(info["val_loss"]),
                  "eval_seconds": float(info["val_time"])})

    mlx_lora.train_model(args, model, train_set, valid_set, Events())
    return 0


def _finite(x) -> float:
    """NaN/inf pass through as JSON NaN/Infinity; jessy's runner stops the run on them."""
    return float(x)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
