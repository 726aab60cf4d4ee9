"""Runs inside the MLX environment: mlx-lm's own LoRA trainer with structured metrics.

Usage: python train_entry.py CONFIG.yaml

It reads an mlx-lm LoRA config (plus `jessy_*` keys written by translate.py), then calls
mlx_lm.lora.train_model with a TrainingCallback that prints one JSON event per report.
(`mlx_lm.lora.run` would replace our callback, so loading is done here the same way.)
Only the standard library, yaml, mlx and mlx_lm may be imported: jessy is not installed here.
"""

from __future__ import annotations

import json
import os
import sys
import time
import types

import numpy as np

EVENT_PREFIX = "JESSY_EVENT "
PAD_TO = 32


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
    from mlx_lm import lora as mlx_lora
    from mlx_lm.tuner import trainer as mlx_trainer
    from mlx_lm.tuner.callbacks import TrainingCallback
    from mlx_lm.tuner.datasets import CacheDataset, load_dataset
    from mlx_lm.tuner.trainer import evaluate
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
        sys.path.insert(0, os.environ["JESSY_RUNTIME_PATH"])
        from lora_convert import peft_dir_to_mlx_file

        init_file = f"{args.adapter_path}/init_from_peft.safetensors"
        peft_dir_to_mlx_file(jessy["jessy_init_peft_adapter"], init_file)
        args.resume_adapter_file = init_file
    if jessy.get("jessy_turn_end"):
        found = tokenizer.convert_tokens_to_ids(jessy["jessy_turn_end"])
        jessy["jessy_turn_end_id"] = found if found != tokenizer.unk_token_id else None

    if jessy.get("jessy_max_grad_norm"):
        # mlx-lm builds its optimizer by name inside train_model; give it clipped classes.
        norm = float(jessy["jessy_max_grad_norm"])
        mlx_lora.optim = types.SimpleNamespace(
            Adam=clipped(optim.Adam, norm), AdamW=clipped(optim.AdamW, norm),
            SGD=clipped(optim.SGD, norm), Muon=clipped(optim.Muon, norm),
            Adafactor=clipped(optim.Adafactor, norm))

    schedule = jessy.get("jessy_lr_table")
    if schedule:
        table = mx.array(schedule, dtype=mx.float32)
        last = len(schedule) - 1
        # train_model builds the optimizer's LR from lr_schedule; hand it the core's table
        args.lr_schedule = {"name": "jessy_lr_table", "updates": len(schedule)}
        mlx_lora.build_schedule = lambda _cfg: (lambda step: table[mx.minimum(step, last)])
    valid = CacheDataset(valid_set) if len(valid_set) else None
    batches = Batches(args, jessy, n_accum=accum)
    reporter = reporting(args)

    def measure(update: int) -> None:
        """jessy's validation loss (token-weighted over every validation row) after `update`
        optimizer updates; 0 = before the first."""
        if valid is None or update not in batches.eval_updates:
            return
        tic = time.perf_counter()
        loss = evaluate(model=model, dataset=valid, batch_size=args.batch_size,
                        num_batches=-1, max_seq_length=args.max_seq_length,
                        loss=masked_loss, iterate_batches=batches)
        model.train()
        batches.eval_seconds += time.perf_counter() - tic
        emit({"type": "eval", "step": update, "eval_loss": _finite(loss),
              "eval_seconds": time.perf_counter() - tic})
        if reporter is not None:
            reporter.on_val_loss_report({"iteration": update * accum, "val_loss": loss,
                                         "val_time": time.perf_counter() - tic})

    batches.before_update = measure

    class Events(TrainingCallback):
        def __init__(self):
            self.last = time.perf_counter()

        def on_train_loss_report(self, info):
            it = info["iteration"]
            now = time.perf_counter()
            seconds = now - self.last - batches.eval_seconds
            self.last, batches.eval_seconds = now, 0.0
            inputs, trained = batches.take_tokens()
            event = {"type": "train", "step": it // accum, "iteration": it,
                     "epoch": round((it // accum) / batches.updates_per_epoch, 4),
                     "loss": _finite(info["train_loss"]),
                     "learning_rate": float(info["learning_rate"]),
                     "input_tokens": inputs, "trained_tokens": trained,
                     "backend_peak_memory_gb": float(info["peak_memory"])}
            if seconds > 0:
                event["input_tokens_per_second"] = inputs / seconds
                event["trained_tokens_per_second"] = trained / seconds
            emit(event)
            if reporter is not None:
                reporter.on_train_loss_report(info)

    def jessy_train(**kwargs):
        kwargs["val_dataset"] = None  # jessy measures validation loss itself (measure)
        return mlx_trainer.train(**kwargs, loss=masked_loss, iterate_batches=batches)

    mlx_lora.train = jessy_train
    mlx_lora.train_model(args, model, train_set, valid_set, Events())
    measure(args.iters // accum)
    if reporter is not None and "wandb" in sys.modules:
        sys.modules["wandb"].finish()
    return 0


def reporting(args):
    """mlx-lm's own reporters (tracking.report_to: wandb) or None. They get the reports jessy's
    callback gets, and jessy's validation losses (mlx-lm's own evaluation is off); wandb
    writes offline (WANDB_MODE from jessy) into this attempt folder, the working directory."""
    if not getattr(args, "report_to", None):
        return None
    from mlx_lm.tuner.callbacks import get_reporting_callbacks

    return get_reporting_callbacks(args.report_to, project_name=args.project_name,
                                   log_dir=os.getcwd(), config=dict(vars(args)))


def masked_loss(model, batch, spans):
    """Cross-entropy over each row's trained span, scaled as the HF Trainer scales it.

    spans[i] = (first trained position, end, denominator, multiplier): position p of row i
    is trained iff first <= p < end (end = one past the end-of-turn token, so nothing the
    template adds after it is trained, and no padding ever is). A training micro-batch's
    loss is its token sum x accumulation / the tokens of its whole update, so mlx-lm's
    mean over the accumulated micro-batches is the update's token-weighted mean (the HF
    Trainer's num_items_in_batch); an evaluation batch's is its own token mean.
    """
    import mlx.core as mx
    import mlx.nn as nn

    inputs, targets = batch[:, :-1], batch[:, 1:]
    logits = model(inputs)
    positions = mx.arange(1, targets.shape[1] + 1)
    mask = mx.logical_and(positions >= spans[:, 0:1], positions < spans[:, 1:2])
    ce = (nn.losses.cross_entropy(logits, targets) * mask).astype(mx.float32).sum()
    ntoks = mask.sum()
    return ce * spans[0, 3] / mx.maximum(spans[0, 2], 1), ntoks


class Batches:
    """mlx-lm's `iterate_batches` replaced by the HF Trainer's epoch structure.

    mlx-lm sorts rows by length, drops the last partial batch (the longest rows never
    train) and updates every `accumulation` micro-batches across epoch boundaries. Here an
    epoch is a seeded permutation of every row in micro-batches of `batch_size` (the last
    smaller), an update closes every `accumulation` micro-batches and at the end of each
    epoch (padded with empty micro-batches so mlx-lm's fixed accumulation lines up), and
    evaluation batches cover every validation row.
    """

    def __init__(self, args, jessy: dict, n_accum: int):
        self.args, self.accum = args, n_accum
        self.seed = args.seed
        self.turn_end_id = jessy.get("jessy_turn_end_id")
        self.eval_updates = set(jessy.get("jessy_eval_updates") or [])
        self.updates_per_epoch = jessy.get("jessy_updates_per_epoch") or 1
        self.capture = os.environ.get("JESSY_CAPTURE_ROWS") or None
        self.before_update = None
        self.updates_done = 0
        self.eval_seconds = 0.0
        self.input_tokens = self.trained_tokens = 0

    def take_tokens(self) -> tuple[int, int]:
        counts = (self.input_tokens, self.trained_tokens)
        self.input_tokens = self.trained_tokens = 0
        return counts

    def row(self, item) -> tuple[list[int], int, int]:
        """(tokens, first trained position, end) of one processed row."""
        tokens, offset = (item if isinstance(item, tuple) else (item, 0))
        tokens = list(tokens)[: self.args.max_seq_length]
        first, end = max(offset, 1), len(tokens)
        if offset and self.turn_end_id is not None:
            ends = [p for p in range(offset, len(tokens)) if tokens[p] == self.turn_end_id]
            end = ends[0] + 1 if ends else end
        return tokens, first, end

    def pack(self, rows: list, denominator: int, multiplier: int, split: str):
        import mlx.core as mx

        # widths on a grid of 32 (+1 for the shifted targets), as mlx-lm pads: every new
        # shape makes mx.compile trace the step again
        longest = max([len(t) for t, _, _ in rows] + [1])
        width = min(1 + PAD_TO * -(-longest // PAD_TO), max(self.args.max_seq_length, 2))
        arr = np.zeros((max(1, len(rows)), width), np.int32)
        spans = np.zeros((max(1, len(rows)), 4), np.int32)
        spans[:, 2], spans[:, 3] = denominator, multiplier
        for i, (tokens, first, end) in enumerate(rows):
            arr[i, : len(tokens)] = tokens
            spans[i, 0], spans[i, 1] = first, end
        if self.capture and rows:
            with open(self.capture, "a") as fh:
                for tokens, first, end in rows:
                    labels = [t if first <= p < end else -100 for p, t in enumerate(tokens)]
                    fh.write(json.dumps({"split": split, "input_ids": tokens,
                                         "labels": labels}) + "\n")
        return mx.array(arr), mx.array(spans)

    def __call__(self, dataset, batch_size, max_seq_length, loop=False, seed=None,
                 comm_group=None):
        if not loop:  # evaluation: every row, in order
            for i in range(0, len(dataset), batch_size):
                rows = [self.row(dataset[j]) for j in range(i, min(i + batch_size, len(dataset)))]
                tokens = sum(max(0, e - f) for _, f, e in rows)
                yield self.pack(rows, tokens, 1, "eval")
            return
        epoch = 0
        while True:
            order = np.random.RandomState(self.seed + epoch).permutation(len(dataset))
            micro = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
            for w in range(0, len(micro), self.accum):
                window = [[self.row(dataset[int(j)]) for j in m] for m in micro[w:w + self.accum]]
                window += [[]] * (self.accum - len(window))  # empty: no tokens, no gradient
                tokens = sum(max(0, e - f) for rows in window for _, f, e in rows)
                if self.before_update is not None:
                    self.before_update(self.updates_done)
                for rows in window:
                    self.input_tokens += sum(len(t) for t, _, _ in rows)
                    self.trained_tokens += sum(max(0, e - f) for _, f, e in rows)
                    yield self.pack(rows, tokens, self.accum, "train")
                self.updates_done += 1
            epoch += 1


def _finite(x) -> float:
    """NaN/inf pass through as JSON NaN/Infinity; jessy's runner stops the run on them."""
    return float(x)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
