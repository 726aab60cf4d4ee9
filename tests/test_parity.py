"""The parity contract: one spec, the same training on every trainer.

Each backend really trains the same small spec (the tiny model), with JESSY_CAPTURE_ROWS
set so that its own process writes the input_ids and labels of every row it fed the model
(MLX: jessy's batch iterator; the HF backends: jessy's observer on the Trainer's batches).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import yaml

from jessy_adapters.plugins import load_registry
from jessy_adapters.run.runner import Runner
from jessy_adapters.spec import load_spec
from tests.conftest import require_env

pytestmark = pytest.mark.backend("all trainers")

TRAINERS = ("mlx", "unsloth", "llamafactory", "axolotl")
IGNORE = -100



def facts(path: Path, n: int = 22) -> Path:
    with open(path, "w") as fh:
        for i in range(n):
            fh.write(json.dumps({"prompt": f"What is fact number {i}?",
                                 "response": f"Fact {i} is that Jessy likes the number "
                                             f"{i * 7}."}) + "\n")
    return path


def parity_spec(tmp: Path, model: str, **data) -> Path:
    doc = {"name": "parity", "model": {"name_or_path": model, "max_seq_length": 64},
           "data": {"train": str(facts(tmp / "facts.jsonl")), "validation_split": 0.25,
                    **data},
           "lora": {"r": 8, "alpha": 16},
           "training": {"epochs": 2, "batch_size": 2, "gradient_accumulation_steps": 2,
                        "learning_rate": 5e-4, "lr_scheduler": "cosine", "warmup_steps": 1,
                        "seed": 7, "logging_steps": 1}}
    path = tmp / "parity.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def train(backend: str, spec_path: Path, out: Path, monkeypatch) -> dict:
    capture = out / f"rows-{backend}.jsonl"
    monkeypatch.setenv("JESSY_CAPTURE_ROWS", str(capture))
    run = Runner(load_registry(), console=lambda _line: None).run(
        load_spec(spec_path), [backend], out / "runs")
    monkeypatch.delenv("JESSY_CAPTURE_ROWS")
    assert run.manifest["status"] == "succeeded", (backend, run.manifest["failure"])
    return {"manifest": run.manifest, "events": run.metrics(), "rows": fed_rows(capture)}


def fed_rows(capture: Path) -> dict[str, set]:
    """Each split's distinct (input_ids, labels), up to the last trained token: what follows
    it is never trained and, the model being causal, cannot change any trained token's loss
    (Axolotl's format strings end at the end-of-turn token, the template adds a newline).
    The first label never trains (nothing predicts position 0)."""
    out: dict[str, set] = {"train": set(), "eval": set()}
    for line in capture.read_text().splitlines():
        row = json.loads(line)
        labels = [IGNORE, *row["labels"][1:]]
        last = max((p for p, label in enumerate(labels) if label != IGNORE), default=-1)
        out[row["split"]].add((tuple(row["input_ids"][:last + 1]), tuple(labels[:last + 1])))
    return out


def row_differences(a: dict[str, set], b: dict[str, set]) -> list[str]:
    return [f"{split}: {len(a[split] - b[split])} rows differ" for split in ("train", "eval")
            if a[split] != b[split]]


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory):
    for backend in TRAINERS:
        require_env(backend)
    tmp = tmp_path_factory.mktemp("parity")
    spec = parity_spec(tmp, tiny_model)
    with pytest.MonkeyPatch.context() as mp:
        return {b: train(b, spec, tmp, mp) for b in TRAINERS}


def test_every_trainer_fed_the_model_the_same_rows(trained):
    reference = trained["mlx"]["rows"]
    assert reference["train"] and reference["eval"]
    for backend in TRAINERS[1:]:
        assert row_differences(reference, trained[backend]["rows"]) == [], backend


def test_same_updates_with_the_same_learning_rates(trained):
    schedule = trained["mlx"]["manifest"]["schedule"]
    planned = [schedule["learning_rate"] * f for f in _factors(schedule)]
    for backend, result in trained.items():
        assert result["manifest"]["schedule"] == schedule, backend
        train_events = [e for e in result["events"] if e["type"] == "train"]
        assert [e["step"] for e in train_events] == list(range(1, len(planned) + 1)), backend
        for event, lr in zip(train_events, planned, strict=True):
            got = event["learning_rate"]
            assert got == pytest.approx(lr, rel=1e-6, abs=1e-12), (backend, event["step"])


def _factors(schedule: dict) -> list[float]:
    from jessy_adapters.schedule import Schedule

    s = Schedule(**{k: v for k, v in schedule.items() if k != "eval_updates"})
    return [s.lr_factor(k - 1) for k in range(1, s.optimizer_steps + 1)]


def test_validation_loss_starts_equal_and_falls_alike(trained):
    first = {b: r["manifest"]["summary"]["first_eval_loss"] for b, r in trained.items()}
    final = {b: r["manifest"]["summary"]["final_eval_loss"] for b, r in trained.items()}
    start = statistics.median(first.values())
    for backend in TRAINERS:
        evals = [e for e in trained[backend]["events"] if e["type"] == "eval"]
        assert [e["step"] for e in evals] == trained[backend]["manifest"]["schedule"][
            "eval_updates"], backend
        assert first[backend] == pytest.approx(start, rel=0.01), (backend, first)
        assert final[backend] < first[backend], (backend, first[backend], final[backend])
    median = statistics.median(final.values())
    for backend, value in final.items():
        assert value == pytest.approx(median, rel=0.15), (backend, final)


def test_token_counts_mean_the_same_everywhere(trained):
    trained_tokens = {b: r["manifest"]["summary"]["trained_tokens"] for b, r in trained.items()}
    assert all(trained_tokens.values()), trained_tokens
    # the same rows are drawn in other orders, so a step's count differs by backend; every
    # backend's total is bounded by the tokens of the rows its epochs covered
    rows = trained["mlx"]["rows"]["train"]
    per_epoch = sum(sum(1 for label in labels if label != IGNORE) for _, labels in rows)
    epochs = trained["mlx"]["manifest"]["schedule"]["epochs"]
    for backend, total in trained_tokens.items():
        assert total == pytest.approx(per_epoch * epochs, rel=0.2), (backend, trained_tokens)


def test_the_check_catches_a_backend_training_on_the_prompt(trained, tiny_model, tmp_path,
                                                            monkeypatch):
    """Mutation check: the same spec with the prompt trained must fail the row check."""
    spec = parity_spec(tmp_path, tiny_model, train_on_responses_only=False)
    mutated = train("mlx", spec, tmp_path, monkeypatch)
    assert row_differences(trained["unsloth"]["rows"], mutated["rows"]) != []
