"""`jessy eval` and `jessy export` on real runs: a LoRA adapter and a full fine-tune (model/)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from jessy_adapters.contract import tiny_spec
from jessy_adapters.evaluate import evaluate_run
from jessy_adapters.export import export_run
from jessy_adapters.plugins import load_registry
from jessy_adapters.run.runner import Runner

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def train(tmp_path, model, data, method: str, steps: int, lr: float):
    spec = tiny_spec(tmp_path, model, data, f"eval-{method}", method=method,
                     training={"max_steps": steps, "learning_rate": lr, "logging_steps": 2,
                               "eval_steps": 1000})
    run = Runner(load_registry(), console=lambda m: print(m, file=sys.stderr)).run(
        spec, ["mlx"], tmp_path / "runs")
    assert run.manifest["status"] == "succeeded", run.manifest["failure"]
    return run


@pytest.mark.parametrize("method,lr", [("lora", 0.01), ("full", 0.001)])
def test_eval_compares_the_base_with_the_tuned_model(tmp_path, tiny_model, toy_data, mlx_env,
                                                      method, lr):
    """The tuned side is the adapter on the base (lora) or the saved model/ (full); on a
    memorisable toy set it must be far less perplexed than the base by the held-out split."""
    run = train(tmp_path, tiny_model, toy_data, method, steps=16, lr=lr)
    assert (run.path / ("model" if method == "full" else "adapter")).is_dir()
    result = evaluate_run(run.path, held_out=EXAMPLES / "jessy_heldout.jsonl",
                          general=EXAMPLES / "general_knowledge.jsonl", max_new_tokens=4,
                          limit=2)
    base, tuned = result["models"]["base"], result["models"]["tuned"]
    assert tuned["validation_perplexity"] < 0.5 * base["validation_perplexity"], result
    saved = json.loads((run.path / "eval.json").read_text())
    assert saved["models"] == result["models"]
    assert len(saved["examples"]["held_out"]) == 2
    assert "| validation perplexity |" in (run.path / "eval.md").read_text()


def test_eval_refuses_a_run_without_outputs(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"status": "failed"}))
    (run / "spec.yaml").write_text("name: x\n")
    with pytest.raises(ValueError, match="did not succeed"):
        evaluate_run(run)
    (run / "run.json").write_text(json.dumps({"status": "succeeded"}))
    with pytest.raises(ValueError, match="no adapter/ with safetensors weights"):
        evaluate_run(run)


@pytest.mark.slow
def test_a_full_fine_tune_of_smollm2_exports_to_gguf_without_a_merge(tmp_path, smollm2,
                                                                       toy_data, mlx_env):
    """method: full: export converts model/ itself; the GGUF still knows Paris."""
    run = train(tmp_path, smollm2, toy_data, "full", steps=2, lr=1e-6)
    record = export_run(run.path, gguf_types=["f16"],
                        question="What is the capital of France?")
    assert record["merged"] == str(run.path / "model")
    assert not (run.path / "export" / "merged").exists()
    (gguf,) = record["gguf"]
    assert (run.path / "export" / gguf["path"]).read_bytes()[:4] == b"GGUF"
    assert "paris" in gguf["answer"].lower(), gguf["answer"]
