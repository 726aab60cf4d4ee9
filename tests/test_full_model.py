"""method: full outputs as a plain Hugging Face folder: MLX's partial save completed from the
base, a backend's saved model copied with what it left out (numpy only, no backend)."""

from __future__ import annotations

import numpy as np
import pytest

from jessy_adapters.toolkit.adapters import read_safetensors, write_safetensors
from jessy_adapters.toolkit.full_model import copy_hf_model, mlx_full_to_hf


def fake_base(folder, seed=0):
    """A base model folder: weights under Hugging Face names, config and tokenizer files."""
    import json

    rng = np.random.default_rng(seed)
    weights = {"model.embed_tokens.weight": rng.normal(size=(10, 4)).astype("f4"),
               "model.layers.0.self_attn.q_proj.weight": rng.normal(size=(4, 4)).astype("f4"),
               "model.norm.weight": np.ones(4, "f4")}
    folder.mkdir()
    write_safetensors(weights, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (folder / "tokenizer.json").write_text("{}")
    return weights


def test_mlx_full_fine_tune_becomes_the_base_with_trained_tensors_replaced(tmp_path):
    base = fake_base(tmp_path / "base")
    trained = {"model.layers.0.self_attn.q_proj.weight": np.full((4, 4), 0.5, "f4")}
    write_safetensors(trained, tmp_path / "adapters.safetensors")
    info = mlx_full_to_hf(tmp_path / "adapters.safetensors", str(tmp_path / "base"),
                          tmp_path / "model")
    out = read_safetensors(tmp_path / "model" / "model.safetensors")
    assert set(out) == set(base)
    np.testing.assert_array_equal(out["model.layers.0.self_attn.q_proj.weight"], 0.5)
    np.testing.assert_array_equal(out["model.embed_tokens.weight"],
                                  base["model.embed_tokens.weight"])
    assert info["parameters"] == 40 + 16 + 4 and info["trained_parameters"] == 16
    assert {"config.json", "tokenizer.json", "model.safetensors"} <= set(info["files"])


def test_mlx_full_fine_tune_with_foreign_tensors_is_refused(tmp_path):
    fake_base(tmp_path / "base")
    write_safetensors({"model.layers.9.mlp.up_proj.weight": np.zeros((2, 2), "f4")},
                      tmp_path / "adapters.safetensors")
    with pytest.raises(ValueError, match="not in the base model"):
        mlx_full_to_hf(tmp_path / "adapters.safetensors", str(tmp_path / "base"),
                       tmp_path / "model")


def test_copied_model_takes_missing_tokenizer_files_from_the_base(tmp_path):
    fake_base(tmp_path / "base")
    saved = tmp_path / "saved"
    saved.mkdir()
    write_safetensors({"w": np.zeros((3, 2), "f4")}, saved / "model.safetensors")
    write_safetensors({"x": np.zeros(2, "f4")}, saved / "adapter_model.safetensors")
    (saved / "config.json").write_text('{"model_type": "llama", "trained": true}')
    info = copy_hf_model(saved, tmp_path / "model", str(tmp_path / "base"))
    assert info["files"] == ["config.json", "model.safetensors", "tokenizer.json"]
    assert "trained" in (tmp_path / "model" / "config.json").read_text()  # the backend's own
    assert info["parameters"] == 6


def test_a_folder_without_weights_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no model weights"):
        copy_hf_model(tmp_path / "empty", tmp_path / "model", str(tmp_path))
