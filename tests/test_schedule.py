"""The one schedule: the HF Trainer's update count and LR rule, decided by the core."""

from __future__ import annotations

import math

import pytest

from jessy_adapters.schedule import schedule_for

BASE = {"max_steps": None, "epochs": 3, "batch_size": 2, "gradient_accumulation_steps": 2,
        "warmup_steps": 0, "learning_rate": 1e-3, "lr_scheduler": "cosine", "eval_steps": None,
        "save_steps": None}


def test_updates_follow_the_trainers_epoch_rule():
    # 5 rows, batch 2 -> 3 micro-batches per epoch -> 2 updates per epoch (the last closes
    # the epoch with one micro-batch) -> 6 updates in 3 epochs; the three translations used
    # to count 6, 5 and 4.
    s = schedule_for(BASE, 5, has_validation=True)
    assert (s.micro_batches_per_epoch, s.updates_per_epoch, s.optimizer_steps) == (3, 2, 6)
    assert s.eval_updates() == [0, 2, 4, 6]


def test_max_steps_wins_and_ranks_share_the_rows():
    assert schedule_for({**BASE, "max_steps": 9}, 1000, False).optimizer_steps == 9
    assert schedule_for(BASE, 8, False, ranks=2).micro_batches_per_epoch == 2


def test_fractional_epochs_round_up():
    assert schedule_for({**BASE, "epochs": 1.5}, 8, False).optimizer_steps == 3


@pytest.mark.parametrize("name,expected", [
    ("constant", [0.0, 0.5, 1.0, 1.0, 1.0]),
    ("linear", [0.0, 0.5, 1.0, 2 / 3, 1 / 3]),
    ("cosine", [0.0, 0.5, 1.0, 0.5 * (1 + math.cos(math.pi / 3)),
                0.5 * (1 + math.cos(2 * math.pi / 3))]),
])
def test_lr_of_each_update_is_the_schedulers_value_before_it(name, expected):
    s = schedule_for({**BASE, "max_steps": 5, "warmup_steps": 2, "lr_scheduler": name,
                      "learning_rate": 1.0}, 100, False)
    assert s.learning_rates() == pytest.approx(expected)


def test_the_schedule_is_recorded_as_json():
    j = schedule_for({**BASE, "eval_steps": 4}, 5, True).to_json()
    assert j["optimizer_steps"] == 6 and j["eval_every"] == 4 and j["eval_updates"] == [0, 4, 6]


def test_warmup_ratio_becomes_updates_by_the_trainers_rule():
    s = schedule_for({**BASE, "max_steps": 25, "warmup_ratio": 0.1}, 100, False)
    assert s.warmup_steps == 3  # ceil(0.1 x 25)


def test_warmup_ratio_and_steps_together_are_refused(tmp_path):
    from jessy_adapters.spec import SpecError, load_spec

    path = tmp_path / "s.yaml"
    path.write_text("model: {name_or_path: m}\ndata: {train: d.jsonl}\n"
                    "training: {warmup_steps: 5, warmup_ratio: 0.1}\n")
    with pytest.raises(SpecError, match="/training/warmup_ratio: give either"):
        load_spec(path)
