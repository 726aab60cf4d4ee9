"""MLX <-> PEFT adapter conversion, numerically (the math, not just the key names)."""

from __future__ import annotations

import numpy as np
import pytest

from jessy_adapters.toolkit.adapters import (
    mlx_to_peft,
    peft_to_mlx,
    read_safetensors,
    save_peft_adapter,
    write_safetensors,
)


def fake_mlx(rank=4, d_in=16, d_out=24, layers=(2, 3), seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for n in layers:
        for mod in ("self_attn.q_proj", "mlp.down_proj"):
            out[f"model.layers.{n}.{mod}.lora_a"] = rng.normal(size=(d_in, rank)).astype("f4")
            out[f"model.layers.{n}.{mod}.lora_b"] = rng.normal(size=(rank, d_out)).astype("f4")
    return out


def test_peft_delta_equals_mlx_delta():
    """MLX: scale * x @ a @ b.  PEFT: (alpha/r) * B(A(x)) = (alpha/r) * x @ A.T @ B.T."""
    mlx = fake_mlx()
    rank, scale = 4, 2.5
    tensors, config = mlx_to_peft(mlx, rank, scale, 0.05, "/base")
    x = np.random.default_rng(1).normal(size=(3, 16)).astype("f4")
    key = "model.layers.2.self_attn.q_proj"
    mlx_delta = scale * x @ mlx[f"{key}.lora_a"] @ mlx[f"{key}.lora_b"]
    A = tensors[f"base_model.model.{key}.lora_A.weight"]
    B = tensors[f"base_model.model.{key}.lora_B.weight"]
    peft_delta = (config["lora_alpha"] / config["r"]) * x @ A.T @ B.T
    np.testing.assert_allclose(peft_delta, mlx_delta, rtol=1e-5)
    assert A.shape == (4, 16) and B.shape == (24, 4)
    assert config["target_modules"] == ["down_proj", "q_proj"]
    assert config["layers_to_transform"] == [2, 3]
    assert config["lora_alpha"] == 10.0 and config["lora_dropout"] == 0.05


def test_round_trip_is_exact():
    mlx = fake_mlx()
    tensors, config = mlx_to_peft(mlx, 4, 2.0, 0.0, "/base")
    back, params = peft_to_mlx(tensors, config)
    assert set(back) == set(mlx)
    for k in mlx:
        np.testing.assert_array_equal(back[k], mlx[k])
    assert params == {"rank": 4, "scale": 2.0, "dropout": 0.0}


def test_rank_mismatch_is_refused():
    with pytest.raises(ValueError, match="rank 4 does not match r=8"):
        mlx_to_peft(fake_mlx(rank=4), 8, 2.0, 0.0, "/base")


def test_unexpected_tensor_is_refused():
    with pytest.raises(ValueError, match="unexpected tensor"):
        mlx_to_peft({"lm_head.weight": np.zeros((2, 2), "f4")}, 2, 1.0, 0.0, "/b")


def test_bf16_safetensors_are_read(tmp_path):
    """numpy has no bfloat16; MLX saves bf16 adapters for bf16 models."""
    import json
    import struct

    values = np.array([1.0, -2.5, 0.15625], dtype=np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype(np.uint16).tobytes()
    header = json.dumps({"w": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]}}).encode()
    path = tmp_path / "bf16.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + bf16)
    np.testing.assert_array_equal(read_safetensors(path)["w"], values)


def test_saved_adapter_reads_back(tmp_path):
    tensors, config = mlx_to_peft(fake_mlx(), 4, 2.0, 0.0, "/base")
    save_peft_adapter(tensors, config, tmp_path / "adapter")
    again = read_safetensors(tmp_path / "adapter" / "adapter_model.safetensors")
    assert set(again) == set(tensors)
    write_safetensors(again, tmp_path / "x.safetensors")

