"""Cross-backend continue: after a failure, the next backend starts from the failed one's
last checkpoint, converted to PEFT (and, for MLX, from PEFT to MLX's own layout)."""

from __future__ import annotations

import json

import pytest
from conftest import require_env, run_and_kill_backend

from jessy_adapters.contract import tiny_spec
from jessy_adapters.plugins import load_registry
from jessy_adapters.run.runner import Runner


def spec_for(tmp_path, model, data, name, steps, continue_on_fallback):
    return tiny_spec(tmp_path, model, data, name,
                     {"max_steps": steps, "save_steps": 2, "eval_steps": 100,
                      "continue_on_fallback": continue_on_fallback})


def first_mlx_eval(run_dir) -> float:
    for line in (run_dir / "metrics.jsonl").open():
        e = json.loads(line)
        if e["backend"] == "mlx" and e.get("eval_loss") is not None:
            return e["eval_loss"]
    raise AssertionError("no MLX eval event")


def test_mlx_continues_from_unsloths_last_checkpoint(tmp_path, tiny_model, toy_data):
    require_env("unsloth")
    require_env("mlx")
    baseline = Runner(load_registry(), console=lambda m: None).run(
        spec_for(tmp_path, tiny_model, toy_data, "fresh", 1, False), ["mlx"],
        tmp_path / "fresh")
    fresh_eval = first_mlx_eval(baseline.path)

    spec = spec_for(tmp_path, tiny_model, toy_data, "continued", 30, True)
    runner = Runner(load_registry(), console=lambda m: None)
    run, killed = run_and_kill_backend(
        runner, lambda: runner.run(spec, ["unsloth", "mlx"], tmp_path / "runs"),
        lambda: any((out / "trainer_state.json").exists() for out in (tmp_path / "runs").glob(
            "*/attempts/01-unsloth/output/checkpoint-4")))
    assert killed
    m = run.manifest
    assert m["attempts"][0]["failure"]["kind"] == "crashed"
    # the newest complete checkpoint at the kill: with 0.06 s steps one or two more may land
    # after checkpoint-4 was seen and before SIGKILL, and the one being written when the kill
    # came (no trainer_state.json yet) must not be the one continued from
    output = run.path / "attempts" / "01-unsloth" / "output"
    newest = max((p for p in output.glob("checkpoint-*") if (p / "trainer_state.json").is_file()),
                 key=lambda p: int(p.name.split("-")[1]))
    assert m["attempts"][0]["continue_adapter"].endswith(newest.name)
    assert int(newest.name.split("-")[1]) >= 4
    assert m["winner"] == "mlx" and m["status"] == "succeeded"
    assert any("continuing from another backend" in n for n in m["attempts"][1]["notes"])
    continued_eval = first_mlx_eval(run.path)
    # MLX's evaluation before its own first step already reflects Unsloth's 4 steps
    assert continued_eval < fresh_eval - 0.5, (continued_eval, fresh_eval)


def test_mlx_checkpoint_becomes_a_peft_adapter(tmp_path, tiny_model, toy_data):
    require_env("mlx")
    run = Runner(load_registry(), console=lambda m: None).run(
        spec_for(tmp_path, tiny_model, toy_data, "mlxck", 4, False), ["mlx"], tmp_path / "r")
    attempt = run.path / "attempts" / "01-mlx"
    seed = load_registry().get("mlx").checkpoint_as_peft(attempt, tmp_path / "peft")
    config = json.loads((seed / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 8
    from jessy_adapters.contract import peft_output_change

    assert peft_output_change(tiny_model, seed) > 1e-3


def test_an_adapter_is_continued_only_by_a_spec_that_can_train_it(tmp_path, toy_data):
    """Another backend's LoRA checkpoint: same rank -> continued; another rank or a full
    fine-tune -> refused by spec path, before anything runs."""
    from jessy_adapters.toolkit.checkpoints import check_init_adapter

    adapter = tmp_path / "checkpoint-4"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 4}))
    notes, refusals = [], []
    assert check_init_adapter(adapter, tiny_spec(tmp_path, tmp_path, toy_data), refusals,
                              notes) == adapter
    assert refusals == [] and "continuing from another backend" in notes[0]
    spec = tiny_spec(tmp_path, tmp_path, toy_data, "r8", lora={"r": 8, "alpha": 16})
    assert check_init_adapter(adapter, spec, refusals, notes) is None
    full = tiny_spec(tmp_path, tmp_path, toy_data, "full", method="full")
    assert check_init_adapter(adapter, full, refusals, notes) is None
    assert [r.spec_path for r in refusals] == ["/lora/r", "/method"]
    assert "method full trains whole weights" in refusals[1].reason


def first_eval(run_dir, backend: str) -> float:
    """`backend`'s validation loss before its own first update."""
    for line in (run_dir / "metrics.jsonl").open():
        e = json.loads(line)
        if e["backend"] == backend and e.get("type") == "eval" and e.get("eval_loss") is not None:
            return e["eval_loss"]
    raise AssertionError(f"no {backend} eval event")


@pytest.mark.parametrize(("first", "then"), [("mlx", "unsloth"), ("axolotl", "llamafactory")])
def test_the_next_backend_continues_from_the_killed_ones_checkpoint(first, then, tmp_path,
                                                                    tiny_model, toy_data):
    """Beyond Unsloth -> MLX: MLX's own checkpoint layout into an HF backend, and one HF
    Trainer's checkpoint into another's (each through the failed backend's
    checkpoint_as_peft and the next one's init_adapter)."""
    require_env(first)
    require_env(then)
    fresh = Runner(load_registry(), console=lambda m: None).run(
        spec_for(tmp_path, tiny_model, toy_data, "fresh", 1, False), [then], tmp_path / "fresh")
    fresh_eval = first_eval(fresh.path, then)

    spec = spec_for(tmp_path, tiny_model, toy_data, "continued", 60, True)
    def reached_step_7() -> bool:  # save_steps 2: checkpoint 4 (or 6) is complete by then
        return any(e["backend"] == first and e.get("type") == "train" and e["step"] >= 7
                   for metrics in (tmp_path / "runs").glob("*/metrics.jsonl")
                   for e in map(json.loads, metrics.read_text().splitlines()))

    runner = Runner(load_registry(), console=lambda m: None)
    run, killed = run_and_kill_backend(
        runner, lambda: runner.run(spec, [first, then], tmp_path / "runs"), reached_step_7)
    assert killed
    m = run.manifest
    assert m["attempts"][0]["failure"]["kind"] == "crashed", m["attempts"][0]
    assert m["attempts"][0].get("continue_adapter"), m["attempts"][0]
    assert m["winner"] == then and m["status"] == "succeeded", m["failure"]
    assert any("continuing from another backend" in n for n in m["attempts"][1]["notes"])
    continued_eval = first_eval(run.path, then)
    # the next backend's evaluation before its own first update reflects the first's steps
    assert continued_eval < fresh_eval - 0.5, (continued_eval, fresh_eval)
