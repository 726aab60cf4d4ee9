"""jessy's metric events and batch observer for the HF-Trainer backends.

Imported by backend entry scripts inside their own environments: only the standard library
and transformers/torch may be used here.

`install(torch)` makes every transformers Trainer created afterwards in this process report
what it really feeds the model, at the one place each Trainer forms an optimizer update
(`get_batch_samples`, whichever backend patched it) and where it computes an eval loss:
- labels are cut after the end-of-turn token of each trained span (JESSY_TURN_END), so
  every backend trains exactly the response plus its turn-closing token;
- input and trained tokens per update, and the learning rate each update used;
- a token-weighted validation loss (the Trainer's own is a mean of batch means);
- with JESSY_CAPTURE_ROWS=FILE, every row's input_ids and labels (the parity contract).

Packed batches (training.packing) are read as rows too: a 4D attention mask (LLaMA-Factory's
neat packing: each position attends to the earlier positions of its own row) or, with no
mask, restarting position ids say where each packed row starts; the first token of each
packed row is never trained (nothing in its own row predicts it, as for an unpacked row),
tokens are counted without padding and the capture writes each packed row on its own.
"""

from __future__ import annotations

import json
import math
import os
import resource
import time
from collections.abc import Mapping

EVENT_PREFIX = "JESSY_EVENT "
IGNORE = -100


def emit(event: dict) -> None:
    print(EVENT_PREFIX + json.dumps(event), flush=True)


def peak_memory_gb(torch) -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB on Linux


def _distributed(torch) -> tuple[int, int]:
    """(rank, world size); (0, 1) for a single process."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def real_tokens(torch, mask, ids):
    """Per row, a bool tensor of the positions that hold real tokens: a 2D mask as it is; a
    4D one by its diagonal (a real position attends to itself, padding to nothing); with no
    mask, every position."""
    if mask is None:
        return torch.ones_like(ids, dtype=torch.bool)
    if mask.dim() == 4:
        diagonal = mask[:, 0].diagonal(dim1=-2, dim2=-1)
        return diagonal == 0 if mask.is_floating_point() else diagonal.bool()
    return mask.bool()


def packed_rows(torch, batch: Mapping, keep) -> list[list[list[int]]]:
    """Per batch row, the positions of each row packed into it (one list when unpacked),
    real tokens only: from a 4D mask, the first position each position attends to; with no
    mask, a position id that does not follow the previous one starts a row."""
    mask = batch.get("attention_mask")
    positions = batch.get("position_ids")
    if mask is not None and mask.dim() == 4:
        attends = (mask[:, 0] == 0) if mask.is_floating_point() else mask[:, 0].bool()
        starts = attends.int().argmax(dim=-1).tolist()
    elif mask is None and positions is not None and positions.dim() == 2 \
            and positions.shape == keep.shape:
        starts = []
        for row in positions.tolist():
            first, out = 0, []
            for p, pos in enumerate(row):
                if p == 0 or pos != row[p - 1] + 1:
                    first = p
                out.append(first)
            starts.append(out)
    else:
        return [[[p for p, k in enumerate(row) if k]] for row in keep.tolist()]
    out = []
    for row_starts, row_keep in zip(starts, keep.tolist(), strict=True):
        groups: dict[int, list[int]] = {}
        for p, (start, k) in enumerate(zip(row_starts, row_keep, strict=True)):
            if k:
                groups.setdefault(start, []).append(p)
        out.append(list(groups.values()))
    return out


def cut_after_turn_end(labels: list[int], end_id: int | None) -> list[int]:
    """Mask what a template trains after a span's end-of-turn token (e.g. the newline after
    ChatML's <|im_end|>): a span is a run of labelled positions."""
    if end_id is None:
        return labels
    out, ended = list(labels), False
    for p, label in enumerate(labels):
        if label == IGNORE:
            ended = False
        elif ended:
            out[p] = IGNORE
        elif label == end_id:
            ended = True
    return out


class BatchObserver:
    """Counts, fixes and (optionally) captures the batches of this process's Trainers."""

    def __init__(self, torch):
        self.torch = torch
        self.turn_end = os.environ.get("JESSY_TURN_END") or None
        self.capture = os.environ.get("JESSY_CAPTURE_ROWS") or None
        self.end_id: int | None = None
        self.input_tokens = 0
        self.trained_tokens = 0
        self.lr_by_update: dict[int, float] = {}
        self.local_losses: list[float] = []
        self.eval_sum = 0.0
        self.eval_tokens = 0

    def attach(self, trainer) -> None:
        if getattr(trainer, "_jessy_observed", False):
            return
        trainer._jessy_observed = True
        tok = getattr(trainer, "processing_class", None)
        tok = getattr(tok, "tokenizer", tok)
        if self.turn_end and tok is not None:
            found = tok.convert_tokens_to_ids(self.turn_end)
            self.end_id = found if isinstance(found, int) and found != tok.unk_token_id else None
        get_batch_samples = trainer.get_batch_samples
        compute_loss = trainer.compute_loss
        observer = self

        def observed_batches(epoch_iterator, *args, **kwargs):
            optimizer = getattr(trainer, "optimizer", None)
            if optimizer is not None:
                update = trainer.state.global_step + 1
                observer.lr_by_update[update] = float(optimizer.param_groups[0]["lr"])
            return get_batch_samples(observer._fixing(epoch_iterator, "train"), *args, **kwargs)

        def observed_loss(model, inputs, *args, **kwargs):
            if not model.training and "labels" in inputs:
                observer._fix(inputs, "eval")
                if kwargs.get("num_items_in_batch") is not None:
                    # the Trainer counted the labels before they were fixed (its evaluation
                    # counts per batch, just before this call): a stale count divides the
                    # fixed batch's loss sum by tokens it no longer trains (LLaMA-Factory's
                    # ChatML newline: every eval batch read ~7% low); the Trainer's own rule
                    # where it has one (a private method), else the same count here
                    count = getattr(trainer, "_get_num_items_in_batch", None)
                    kwargs["num_items_in_batch"] = (
                        count([inputs], trainer.args.device) if count is not None
                        else (inputs["labels"] != IGNORE).sum())
            out = compute_loss(model, inputs, *args, **kwargs)
            loss = out[0] if isinstance(out, tuple) else out
            if model.training:
                observer.local_losses.append(float(loss.detach()))
            elif "labels" in inputs:
                n = int((inputs["labels"][..., 1:] != IGNORE).sum())
                observer.eval_sum += float(loss.detach()) * n
                observer.eval_tokens += n
            return out

        trainer.get_batch_samples = observed_batches
        trainer.compute_loss = observed_loss

    def _fixing(self, batches, split: str):
        for batch in batches:
            if isinstance(batch, Mapping) and "labels" in batch:  # dict or BatchEncoding
                self._fix(batch, split)
                keep = real_tokens(self.torch, batch.get("attention_mask"), batch["input_ids"])
                self.input_tokens += int(keep.sum())
                self.trained_tokens += int((batch["labels"][..., 1:] != IGNORE).sum())
            yield batch

    def _fix(self, batch: dict, split: str) -> None:
        labels = batch["labels"]
        rows = [cut_after_turn_end(row, self.end_id) for row in labels.tolist()]
        positions = batch.get("position_ids")
        if positions is not None and positions.shape == labels.shape:
            # a packed row's first token would be predicted from the row before it
            rows = [[IGNORE if pos == 0 else lab for lab, pos in zip(row, row_pos, strict=True)]
                    for row, row_pos in zip(rows, positions.tolist(), strict=True)]
        batch["labels"] = self.torch.tensor(rows, dtype=labels.dtype, device=labels.device)
        if self.capture and _distributed(self.torch)[0] == 0:
            keep = real_tokens(self.torch, batch.get("attention_mask"), batch["input_ids"])
            with open(self.capture, "a") as fh:
                for ids, row, packed in zip(batch["input_ids"].tolist(), rows,
                                            packed_rows(self.torch, batch, keep), strict=True):
                    for k, part in enumerate(packed):
                        record = {"split": split, "input_ids": [ids[p] for p in part],
                                  "labels": [row[p] for p in part]}
                        if len(packed) > 1:
                            record["packed"] = k  # its place in the packed sequence
                        fh.write(json.dumps(record) + "\n")

    def take_tokens(self) -> tuple[int, int]:
        counts = (self.input_tokens, self.trained_tokens)
        self.input_tokens = self.trained_tokens = 0
        return counts

    def take_eval(self) -> float | None:
        loss = self.eval_sum / self.eval_tokens if self.eval_tokens else None
        self.eval_sum, self.eval_tokens = 0.0, 0
        return loss


OBSERVER: BatchObserver | None = None


def install(torch) -> BatchObserver:
    """Observe every Trainer this process creates from now on (idempotent)."""
    global OBSERVER
    if OBSERVER is None:
        from transformers import Trainer

        OBSERVER = BatchObserver(torch)
        init = Trainer.__init__

        def observed_init(self, *args, **kwargs):
            init(self, *args, **kwargs)
            OBSERVER.attach(self)

        Trainer.__init__ = observed_init
    return OBSERVER


def _gather_sum(torch, values: list[float]) -> list[float]:
    """Element-wise sum over ranks (rank 0's view); the values themselves when alone."""
    _, world = _distributed(torch)
    if world == 1:
        return values
    gathered = [None] * world
    torch.distributed.all_gather_object(gathered, values)
    return [sum(g[i] for g in gathered) for i in range(len(values))]


def events_callback(torch, trainer=None):
    """The TrainerCallback that prints jessy's events (built lazily: importing this module
    needs no transformers). `install(torch)` must have run (or `trainer` be given)."""
    from transformers import TrainerCallback

    observer = install(torch)
    if trainer is not None:
        observer.attach(trainer)

    class Events(TrainerCallback):
        def __init__(self):
            self.last = time.monotonic()
            self.evaluated_at: int | None = None

        def on_step_end(self, args, state, control, **kw):
            # the Trainer evaluates every eval_steps only; jessy's schedule also measures
            # after the last update
            if state.global_step >= state.max_steps and \
                    getattr(args.eval_strategy, "value", args.eval_strategy) != "no":
                control.should_evaluate = True

        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
            if "loss" not in logs:
                return
            rank, world = _distributed(torch)
            inputs, trained = observer.take_tokens()
            inputs, trained = _gather_sum(torch, [inputs, trained])
            gathered = [None] * world
            if world > 1:  # every rank logs the same keys at the same step
                mine = observer.local_losses
                mean = sum(mine) / len(mine) if mine else None
                torch.distributed.all_gather_object(
                    gathered, mean if mean is not None and math.isfinite(mean) else None)
            observer.local_losses.clear()
            if rank != 0:
                return
            now = time.monotonic()
            seconds, self.last = now - self.last, now
            event = {"type": "train", "step": state.global_step,
                     "epoch": round(state.epoch or 0.0, 4), "loss": float(logs["loss"]),
                     "input_tokens": int(inputs), "trained_tokens": int(trained),
                     "backend_peak_memory_gb": round(peak_memory_gb(torch), 3)}
            if seconds > 0:
                event["input_tokens_per_second"] = inputs / seconds
                event["trained_tokens_per_second"] = trained / seconds
            lr = observer.lr_by_update.get(state.global_step)
            if lr is not None:
                event["learning_rate"] = lr
            if "learning_rate" in logs:
                event["backend_learning_rate"] = float(logs["learning_rate"])
            if world > 1:
                event.update(world_size=world, rank_losses=gathered)
            emit(event)

        def on_evaluate(self, args, state, control, metrics=None, **kw):
            if state.global_step == self.evaluated_at:  # a backend's own extra final evaluate
                observer.take_eval()
                return
            self.evaluated_at = state.global_step
            total, tokens = _gather_sum(torch, [observer.eval_sum, observer.eval_tokens])
            observer.eval_sum, observer.eval_tokens = total, int(tokens)
            loss = observer.take_eval()
            if _distributed(torch)[0] != 0:
                return
            event = {"type": "eval", "step": state.global_step}
            if loss is not None:
                event["eval_loss"] = loss
            if metrics and "eval_loss" in metrics:
                event["backend_eval_loss"] = float(metrics["eval_loss"])
                event.setdefault("eval_loss", float(metrics["eval_loss"]))
            self.last = time.monotonic()  # evaluation time is not training time
            emit(event)

    return Events()
