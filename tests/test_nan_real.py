"""A real NaN loss inside each HF-Trainer backend reaches jessy's guard, and falls back.

The Trainer's default `logging_nan_inf_filter` replaces a NaN/inf loss in what it logs (with
the mean of the previous ones: 0.0 on the first step), so without jessy's
`logging_nan_inf_filter: false` the guard would never see one there. The NaN here is real:
the backend's own forward pass on a model with one NaN weight, on every step; the chain
then runs the next backend (MLX), which meets the same model and stops the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import require_env, write_spec

from jessy_adapters import failures
from jessy_adapters.plugins import load_registry
from jessy_adapters.run.runner import Runner
from jessy_adapters.spec import load_spec

pytestmark = pytest.mark.backend("HF trainers + mlx")

STEPS = 200


@pytest.fixture(scope="module")
def poisoned_model(tiny_model, tmp_path_factory) -> str:
    """The tiny model with one NaN in its first MLP: every hidden state, hence every loss,
    is NaN from the first forward pass (deterministic, on every backend)."""
    import shutil

    from safetensors.torch import load_file, save_file

    out = tmp_path_factory.mktemp("poisoned") / "tiny-nan"
    shutil.copytree(tiny_model, out)
    weights = out / "model.safetensors"
    tensors = load_file(weights)
    name = next(k for k in tensors if k.endswith("layers.0.mlp.down_proj.weight"))
    tensors[name][0, 0] = float("nan")
    save_file(tensors, weights, metadata={"format": "pt"})
    return str(out)


def nan_spec(tmp_path: Path, model: str, data: Path) -> Path:
    return write_spec(tmp_path / "nan.yaml", f"""\
name: nan
model:
  name_or_path: {model}
  max_seq_length: 128
data:
  train: {data}
  validation_split: 0
training:
  max_steps: {STEPS}
  batch_size: 4
  learning_rate: 1.0e-3
  logging_steps: 1
  lr_scheduler: constant
""")


@pytest.mark.parametrize("backend", ["unsloth", "llamafactory", "axolotl"])
def test_a_real_nan_stops_the_backend_and_falls_back(backend, tmp_path, poisoned_model,
                                                    toy_data):
    require_env(backend)
    require_env("mlx")
    spec = load_spec(nan_spec(tmp_path, poisoned_model, toy_data))
    run = Runner(load_registry(), console=lambda _line: None).run(
        spec, [backend, "mlx"], tmp_path / "runs")
    m = run.manifest
    assert [a["backend"] for a in m["attempts"]] == [backend, "mlx"], m["attempts"]
    for attempt in m["attempts"]:
        assert attempt["status"] == "failed", attempt
        assert attempt["failure"]["kind"] == failures.NAN_LOSS, attempt["failure"]
    assert m["status"] == "failed" and m["failure"]["kind"] == failures.NAN_LOSS
    events = [json.loads(x) for x in (run.path / "metrics.jsonl").open()]
    mine = [e for e in events if e.get("backend") == backend and e.get("type") == "train"]
    assert mine, f"{backend} logged no training step"
    # the NaN itself was logged (not filtered into 0.0), and the guard stopped it early
    assert mine[0]["loss"] is None and mine[0]["loss_non_finite"] == "nan", mine[0]
    assert max(e["step"] for e in mine) < STEPS // 4, "the guard did not stop the run early"
