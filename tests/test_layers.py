"""`lora.layers: last N`: resolved once against the model's block count (layers.py) and
carried by every backend that can adapt a subset of blocks; refused by path where it cannot."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from conftest import require_env

from jessy_adapters.backend import RunInputs, TranslationRefused
from jessy_adapters.contract import tiny_spec
from jessy_adapters.data import prepare
from jessy_adapters.envs import BackendEnv
from jessy_adapters.plugins import load_registry
from jessy_adapters.run.runner import Runner
from jessy_adapters.spec import SpecError, spec_from_dict
from jessy_adapters.toolkit.adapters import read_safetensors_header
from jessy_adapters.toolkit.layers import adapted_layers


def model_folder(tmp_path, layers=4):
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps({
        "num_hidden_layers": layers, "model_type": "llama",
        "architectures": ["LlamaForCausalLM"]}))
    return folder


@pytest.mark.parametrize("layers, expected", [
    ("all", "all"), ([3, 1], [1, 3]), ("last 2", [2, 3]), ("last 4", "all")])
def test_layers_resolve_against_the_models_block_count(tmp_path, layers, expected):
    refusals = []
    assert adapted_layers(layers, str(model_folder(tmp_path)), refusals) == expected
    assert refusals == []


def test_more_blocks_than_the_model_has_or_no_count_is_refused_at_the_path(tmp_path):
    refusals = []
    assert adapted_layers("last 5", str(model_folder(tmp_path)), refusals) is None
    assert refusals[0].spec_path == "/lora/layers" and "only 4 blocks" in refusals[0].reason
    refusals = []
    assert adapted_layers("last 2", str(tmp_path), refusals) is None
    assert "num_hidden_layers" in refusals[0].reason


@pytest.mark.parametrize("bad", ["last 0", "last", "first 2", "last -1", "last 2.5", "LAST 2"])
def test_the_schema_takes_only_last_and_a_positive_count(tmp_path, bad):
    with pytest.raises(SpecError) as err:
        spec_from_dict({"model": {"name_or_path": "m"}, "data": {"train": "t.jsonl"},
                        "lora": {"layers": bad}})
    assert "/lora/layers" in str(err.value)


NATIVE = {"mlx": "mlx_lora.yaml", "unsloth": "unsloth_config.json",
          "axolotl": "axolotl.yaml", "llamafactory": "llamafactory.yaml"}


def translated(backend, tmp_path, toy_data, layers):
    model = model_folder(tmp_path)
    spec = spec_from_dict({"model": {"name_or_path": str(model)},
                           "data": {"train": str(toy_data)}, "lora": {"layers": layers}},
                          tmp_path)
    inputs = RunInputs(str(model), prepare(spec, tmp_path / f"prepared-{backend}"))
    out = load_registry().get(backend).translate(spec, inputs, tmp_path / backend,
                                                 BackendEnv(backend))
    return yaml.safe_load(out.files[NATIVE[backend]])


@pytest.mark.parametrize("backend, read", [
    ("mlx", lambda c: c["num_layers"]),
    ("unsloth", lambda c: c["peft"]["layers_to_transform"]),
    ("axolotl", lambda c: c["peft_layers_to_transform"]),
])
def test_each_backend_adapts_the_last_blocks(tmp_path, toy_data, backend, read):
    got = read(translated(backend, tmp_path, toy_data, "last 2"))
    assert got == (2 if backend == "mlx" else [2, 3])


def test_llamafactory_refuses_a_subset_of_blocks_by_path(tmp_path, toy_data):
    with pytest.raises(TranslationRefused) as err:
        translated("llamafactory", tmp_path, toy_data, "last 2")
    assert [r.spec_path for r in err.value.refusals] == ["/lora/layers"]
    # the last N of N blocks is every block: nothing to refuse
    translated("llamafactory", tmp_path, toy_data, "last 4")


@pytest.mark.parametrize("backend", ["mlx", "unsloth"])
def test_a_real_adapter_has_lora_weights_only_in_the_last_block(tmp_path, tiny_model,
                                                               toy_data, backend):
    require_env(backend)
    spec = tiny_spec(tmp_path, tiny_model, toy_data, "lastone", {"max_steps": 2},
                     lora={"r": 4, "alpha": 8, "layers": "last 1"})
    run = Runner(load_registry(), console=lambda m: None).run(spec, [backend],
                                                              tmp_path / "runs")
    assert run.manifest["status"] == "succeeded", run.manifest.get("failure")
    header, _ = read_safetensors_header(run.path / "adapter" / "adapter_model.safetensors")
    blocks = {int(m.group(1)) for k in header if (m := re.search(r"layers\.(\d+)\.", k))}
    assert blocks == {1}  # the tiny model has blocks 0 and 1
