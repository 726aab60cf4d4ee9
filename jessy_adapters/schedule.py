"""The one training schedule: how many optimizer updates a spec means, and the LR of each.

Decided by the core from the prepared data, recorded in run.json (`schedule`) and handed to
every backend explicitly (max_steps, an LR table or the matching named scheduler), so the
same spec gives the same updates with the same learning rates whichever backend runs it.

The rules are the Hugging Face Trainer's, because three of the four backends are built on
it: an epoch is ceil(rows / (batch x ranks)) micro-batches, the last one smaller; an
optimizer update closes every `accumulation` micro-batches and at the end of an epoch
(so updates per epoch = ceil(micro-batches / accumulation)); update k (1-based) uses the
LR its scheduler gives at step k - 1 (warmup starts at 0).

With `training.packing`, the sequences an epoch batches are the packed ones, counted here by
LLaMA-Factory's rule (the one backend that packs on every device here; `packed_sequences`)
from each row's token count (room.row_token_counts, the count the room check makes).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import asdict, dataclass

PACKING_GROUP = 1000
"""Rows packed among themselves: LLaMA-Factory packs each batch of its dataset map on its own
(data/loader.py: `dataset.map(..., batched=True, batch_size=preprocessing_batch_size)`, 1000 by
default, jessy's translation runs one worker), in file order."""

@dataclass(frozen=True)
class Schedule:
    optimizer_steps: int
    warmup_steps: int
    micro_batches_per_epoch: int
    updates_per_epoch: int
    epochs: float
    learning_rate: float
    scheduler: str  # constant | linear | cosine (warmup first, then this)
    eval_every: int | None
    """Evaluate after every this many updates; None: no validation data."""
    save_every: int | None
    ranks: int = 1
    packed: bool = False
    """training.packing: micro_batches_per_epoch batches packed sequences, not rows."""
    packed_sequences: int | None = None
    """The packed training sequences (None: not packed, or not countable cheaply)."""

    def lr_factor(self, step: int) -> float:
        """The scheduler's multiplier at scheduler step `step` (0 = before any update)."""
        w, n = self.warmup_steps, self.optimizer_steps
        if step < w:
            return step / max(1, w)
        if self.scheduler == "constant":
            return 1.0
        if self.scheduler == "linear":
            return max(0.0, (n - step) / max(1, n - w))
        progress = (step - w) / max(1, n - w)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))

    def lr_of_update(self, k: int) -> float:
        """The learning rate update k (1-based) is computed with."""
        return self.learning_rate * self.lr_factor(k - 1)

    def learning_rates(self) -> list[float]:
        return [self.lr_of_update(k) for k in range(1, self.optimizer_steps + 1)]

    def eval_updates(self) -> list[int]:
        """Updates after which validation loss is measured; 0 = before the first update."""
        if self.eval_every is None:
            return []
        points = list(range(0, self.optimizer_steps + 1, self.eval_every))
        if points[-1] != self.optimizer_steps:
            points.append(self.optimizer_steps)
        return points

    def to_json(self) -> dict:
        return {**asdict(self), "eval_updates": self.eval_updates()}


def schedule_for(training: dict, n_train: int, has_validation: bool, ranks: int = 1,
                 packed_sequences: int | None = None) -> Schedule:
    """The schedule a spec's `training` section means on `n_train` prepared rows, or on
    `packed_sequences` packed sequences when the spec packs them and they were counted."""
    packed = bool(training.get("packing"))
    sequences = packed_sequences if packed and packed_sequences is not None else n_train
    batch, accum = training["batch_size"], training["gradient_accumulation_steps"]
    micro = max(1, math.ceil(sequences / (batch * ranks)))
    per_epoch = max(1, math.ceil(micro / accum))
    steps = training["max_steps"] or max(1, math.ceil(training["epochs"] * per_epoch))
    warmup = training["warmup_steps"]
    if training.get("warmup_ratio"):
        warmup = math.ceil(training["warmup_ratio"] * steps)  # transformers' rule
    eval_every = None
    if has_validation:
        eval_every = min(training["eval_steps"] or per_epoch, steps)
    return Schedule(optimizer_steps=steps, warmup_steps=min(warmup, steps),
                    micro_batches_per_epoch=micro, updates_per_epoch=per_epoch,
                    epochs=steps / per_epoch, learning_rate=training["learning_rate"],
                    scheduler=training["lr_scheduler"], eval_every=eval_every,
                    save_every=training["save_steps"] or None, ranks=ranks, packed=packed,
                    packed_sequences=packed_sequences if packed else None)


def greedy_knapsack(lengths: list[int], capacity: int) -> list[list[int]]:
    """LLaMA-Factory's packing (data/processor/processor_utils.py `greedy_knapsack`): the
    lengths sorted; each sequence takes, while one fits, the longest length that fits in
    the room left. Every length must fit (LLaMA-Factory cuts rows to the capacity first)."""
    numbers = sorted(lengths)
    if numbers and (numbers[-1] > capacity or numbers[0] < 0):
        raise ValueError(f"lengths must be within 0..{capacity}")
    packs = []
    while numbers:
        pack, room = [], capacity
        while (index := bisect.bisect(numbers, room)) > 0:
            room -= numbers[index - 1]
            pack.append(numbers.pop(index - 1))
        packs.append(pack)
    return packs


def packed_sequences(row_lengths: list[int], max_seq_length: int) -> int:
    """How many sequences LLaMA-Factory packs rows of these token lengths into (in file
    order): with packing it keeps one position back (hparams/data_args.py: `cutoff_len -= 1`),
    cuts each row to that (a single-turn row keeps min(length, cutoff) tokens,
    processor_utils.infer_seqlen), packs each group of PACKING_GROUP rows to that capacity and
    pads each packed sequence to max_seq_length tokens (processor/supervised.py)."""
    capacity = max_seq_length - 1
    return sum(len(greedy_knapsack([min(n, capacity) for n in row_lengths[i:i + PACKING_GROUP]],
                                   capacity))
               for i in range(0, len(row_lengths), PACKING_GROUP))


def packed_count(spec, inputs) -> int | None:
    """The spec's packed training sequences, or None when the cheap count cannot tell (text
    rows, multi-turn rows, no tokenizer.json, an unknown chat family)."""
    if inputs.data.format == "text":
        return None
    from .data.room import row_token_counts

    counts = row_token_counts(inputs.data.train, inputs.model_path,
                              spec["model"]["chat_template"], answers=True)
    if counts is None:
        return None
    return packed_sequences([p + a for p, a in counts], spec["model"]["max_seq_length"])


def run_schedule(spec, inputs) -> Schedule:
    """The schedule the runner decided for this run (RunInputs.schedule), or the same rule
    applied here when a caller (a test, `jessy translate`) built RunInputs without one."""
    if getattr(inputs, "schedule", None) is not None:
        return inputs.schedule
    from .toolkit.scaleout import world_size

    packed = packed_count(spec, inputs) if spec["training"].get("packing") else None
    return schedule_for(spec["training"], inputs.data.n_train,
                        inputs.data.validation is not None, world_size(spec["resources"]),
                        packed)
