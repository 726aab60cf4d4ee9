"""The one training schedule: how many optimizer updates a spec means, and the LR of each.

Decided by the core from the prepared data, recorded in run.json (`schedule`) and handed to
every backend explicitly (max_steps, an LR table or the matching named scheduler), so the
same spec gives the same updates with the same learning rates whichever backend runs it.

The rules are the Hugging Face Trainer's, because three of the four backends are built on
it: an epoch is ceil(rows / (batch x ranks)) micro-batches, the last one smaller; an
optimizer update closes every `accumulation` micro-batches and at the end of an epoch
(so updates per epoch = ceil(micro-batches / accumulation)); update k (1-based) uses the
LR its scheduler gives at step k - 1 (warmup starts at 0).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


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


def schedule_for(training: dict, n_train: int, has_validation: bool, ranks: int = 1
                 ) -> Schedule:
    """The schedule a spec's `training` section means on `n_train` prepared rows."""
    batch, accum = training["batch_size"], training["gradient_accumulation_steps"]
    micro = max(1, math.ceil(n_train / (batch * ranks)))
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
                    save_every=training["save_steps"] or None, ranks=ranks)


def run_schedule(spec, inputs) -> Schedule:
    """The schedule the runner decided for this run (RunInputs.schedule), or the same rule
    applied here when a caller (a test, `jessy translate`) built RunInputs without one."""
    if getattr(inputs, "schedule", None) is not None:
        return inputs.schedule
    from .scaleout import world_size

    return schedule_for(spec["training"], inputs.data.n_train,
                        inputs.data.validation is not None, world_size(spec["resources"]))
