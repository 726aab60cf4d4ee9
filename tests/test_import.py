"""`jessy import`: upstream example configs -> specs -> the same native values back, and
specs -> native -> the same spec; every source key mapped, dropped or refused, never lost."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import SPEC_EXAMPLES

from jessy_adapters.backend import RunInputs, TranslationRefused
from jessy_adapters.cli import cli
from jessy_adapters.data import prepare
from jessy_adapters.envs import BackendEnv
from jessy_adapters.importers import ImportRefused, detect, import_data, import_file
from jessy_adapters.importers.common import close, number, read_native, unclassified
from jessy_adapters.plugins import load_registry
from jessy_adapters.schedule import run_schedule
from jessy_adapters.spec import load_spec, spec_from_dict
from jessy_adapters.toolkit.layers import adapted_layers

DATA = Path(__file__).parent / "data" / "import"
NATIVE_FILE = {"mlx": "mlx_lora.yaml", "llamafactory": "llamafactory.yaml",
               "axolotl": "axolotl.yaml"}
"""The config file each backend's translation writes."""


def model_folder(tmp_path: Path, layers: int = 30) -> Path:
    d = tmp_path / f"model{layers}"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(json.dumps({"num_hidden_layers": layers,
                                               "model_type": "llama",
                                               "architectures": ["LlamaForCausalLM"]}))
    # a tokenizer's EOS (Axolotl's alpaca rows end with it); no chat template: auto stays auto
    (d / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>"}))
    return d


def alpaca_rows(tmp_path: Path, n: int = 16) -> Path:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"instruction": f"Question {i}?", "input": "",
                                        "output": f"Answer {i}."}) + "\n" for i in range(n)))
    return path


def assert_every_key_once(imported_ctx, source: dict) -> None:
    """The rule the importer promises: each source key in exactly one of the three lists."""
    assert unclassified(imported_ctx) == []
    lists = [{k.split(".")[0] for k, *_ in imported_ctx.mapped},
             {k for k, _ in imported_ctx.dropped}, {k for k, _ in imported_ctx.refused}]
    for key in source:
        assert sum(key in seen for seen in lists) == 1, key


def translate(backend: str, spec_data: dict, tmp_path: Path, model: Path, data_file=None):
    """The real translator on a spec: (native config, schedule, attempt folder)."""
    spec = spec_from_dict(spec_data, tmp_path)
    if data_file is not None:
        spec["data"]["train"] = str(data_file)
    prepared = prepare(spec, tmp_path / f"prepared-{backend}")
    inputs = RunInputs(str(model), prepared)
    attempt = tmp_path / f"attempt-{backend}"
    out = load_registry().get(backend).translate(spec, inputs, attempt, BackendEnv(backend))
    for name, text in out.files.items():
        (attempt / name).parent.mkdir(parents=True, exist_ok=True)
        (attempt / name).write_text(text)
    cfg = yaml.safe_load(out.files[NATIVE_FILE[backend]])
    return cfg, run_schedule(spec, inputs), attempt


def without_packing(tmp_path: Path, name: str) -> Path:
    """An Axolotl example with sample_packing off: jessy translates Axolotl's packing on a
    CUDA GPU only, and these round trips translate here."""
    data = read_native(DATA / name)
    data["sample_packing"] = False
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# --- upstream examples -> spec ----------------------------------------------------------------

UPSTREAM = {"llamafactory_llama3_lora_sft.yaml": "llamafactory",
            "llamafactory_llama3_lora_sft_otfq.yaml": "llamafactory",
            "axolotl_llama3_lora_1b.yml": "axolotl", "axolotl_llama3_qlora_1b.yml": "axolotl",
            "axolotl_gemma3_1b_qlora.yml": "axolotl",
            "mlx_lora_config.yaml": "mlx"}


REFUSED_UPSTREAM = {"axolotl_gemma3_1b_qlora.yml": ["unfrozen_parameters", "tf32"]}
"""What the spec cannot say yet in these examples: Gemma-3's unfrozen LM weights next to the
adapter; TF32 matmuls. (Their sample_packing: true is training.packing: true.)"""


@pytest.mark.parametrize("name", UPSTREAM)
def test_upstream_example_is_recognised_and_every_key_judged(name, tmp_path):
    source = read_native(DATA / name)
    assert detect(source) == [UPSTREAM[name]]
    try:
        imported = import_file(DATA / name, model_path=str(model_folder(tmp_path, 16)),
                               data_path=str(alpaca_rows(tmp_path)))
        ctx = imported.ctx
        spec_from_dict(imported.spec)  # valid
    except ImportRefused as exc:
        ctx = exc.ctx
        assert [k for k, _ in exc.problems] == REFUSED_UPSTREAM[name]
    assert_every_key_once(ctx, source)


def test_llamafactory_example_resolves_datasets_and_applies_its_defaults(tmp_path):
    spec = import_file(DATA / "llamafactory_llama3_lora_sft.yaml").spec
    assert spec["data"]["train"] == [str(DATA / "identity.jsonl"),
                                     str(DATA / "alpaca_en_demo.jsonl")]
    assert spec["data"]["format"] == "alpaca"
    assert spec["lora"] == {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"}
    assert spec["training"]["gradient_checkpointing"] is True  # LLaMA-Factory's default
    assert spec["training"]["learning_rate"] == 1e-4  # "1.0e-4" read as a number
    assert spec["model"]["chat_template"] == "llama3"


def test_qlora_example_is_qlora_with_its_validation_split(tmp_path):
    spec = import_file(DATA / "llamafactory_llama3_lora_sft_otfq.yaml").spec
    assert spec["method"] == "qlora" and spec["data"]["validation_split"] == 0.1
    assert spec["training"]["eval_steps"] == 500


def test_mlx_scale_becomes_alpha_and_iters_become_updates(tmp_path):
    source = read_native(DATA / "mlx_lora_config.yaml")
    source.update(grad_accumulation_steps=4)
    ctx = import_data(source, "mlx", DATA / "x.yaml", str(model_folder(tmp_path, 30)),
                      str(alpaca_rows(tmp_path))).spec
    assert ctx["lora"]["alpha"] == 20.0 * 8
    assert ctx["lora"]["layers"] == "last 16"  # mlx-lm's num_layers, as the spec says it
    assert ctx["training"]["max_steps"] == 1000 // 4
    assert ctx["training"]["logging_steps"] == 10 // 4
    assert ctx["training"]["lr_scheduler"] == "constant"  # no lr_schedule
    assert ctx["training"]["max_grad_norm"] is None  # mlx-lm does not clip


def test_mlx_last_layers_need_no_model_to_import():
    """`last N` is resolved against the model when a backend translates it, so an mlx-lm
    config imports without --model; a count that is no count is refused by key."""
    spec = import_file(DATA / "mlx_lora_config.yaml").spec
    assert spec["lora"]["layers"] == "last 16"
    source = read_native(DATA / "mlx_lora_config.yaml")
    with pytest.raises(ImportRefused) as err:
        import_data({**source, "num_layers": 0}, "mlx", DATA / "x.yaml", None, None)
    assert [k for k, _ in err.value.problems] == ["num_layers"]


# --- upstream examples -> spec -> the same backend: the same native values --------------------

COMPARED = {
    "llamafactory": ["lora_rank", "lora_alpha", "lora_dropout", "lora_target", "cutoff_len",
                     "per_device_train_batch_size", "gradient_accumulation_steps",
                     "learning_rate", "lr_scheduler_type", "weight_decay", "max_grad_norm",
                     "seed", "trust_remote_code", "finetuning_type", "quantization_bit",
                     "stage", "logging_steps", "save_steps", "template", "train_on_prompt",
                     "disable_gradient_checkpointing", "eval_steps"],
    "axolotl": ["base_model", "adapter", "load_in_4bit", "lora_r", "lora_alpha", "lora_dropout",
                "sequence_len", "micro_batch_size", "gradient_accumulation_steps",
                "learning_rate", "lr_scheduler", "weight_decay", "train_on_inputs",
                "gradient_checkpointing", "logging_steps", "warmup_steps",
                "attn_implementation"],
    "mlx": ["batch_size", "learning_rate", "seed", "max_seq_length", "grad_checkpoint",
            "steps_per_report", "save_every", "iters", "optimizer", "fine_tune_type"],
}
"""Native keys compared as they are. The rest is compared by meaning below: LLaMA-Factory's
num_train_epochs and warmup_ratio become the update count and warmup updates jessy passes as
max_steps/warmup_steps; Axolotl's lora_target_modules listing all seven projections comes back
as lora_target_linear, its adamw_8bit as adamw_torch on a CPU (bitsandbytes needs CUDA), its
num_epochs as max_steps, bf16: auto as bf16: false on a CPU; LLaMA-Factory's bf16: true is set
to auto before translating (both HF backends refuse bf16 on a CPU); mlx-lm's scale, num_layers
and optimizer_config come back with the same meaning (weight decay, the same blocks)."""

HF_DEFAULTS = {"lora_alpha": lambda src: 2 * src.get("lora_rank", 8), "lora_dropout": 0.0,
               "lora_rank": 8, "weight_decay": 0.0, "max_grad_norm": 1.0, "seed": 42,
               "train_on_prompt": False, "disable_gradient_checkpointing": False,
               "trust_remote_code": False, "quantization_bit": None, "eval_steps": None}
"""LLaMA-Factory's values for keys its examples leave out."""


def updates(rows: int, batch: int, accum: int, epochs: float) -> int:
    """The HF Trainer's update count: ceil(ceil(rows / batch) / accum) per epoch."""
    return math.ceil(epochs * max(1, math.ceil(math.ceil(rows / batch) / accum)))


@pytest.mark.parametrize("name", ["llamafactory_llama3_lora_sft.yaml",
                                  "llamafactory_llama3_lora_sft_otfq.yaml"])
def test_llamafactory_example_round_trips(name, tmp_path):
    source = read_native(DATA / name)
    spec = import_file(DATA / name, model_path=str(model_folder(tmp_path))).spec
    spec["training"]["precision"] = "auto"
    cfg, schedule, _ = translate("llamafactory", spec, tmp_path, model_folder(tmp_path))
    for key in COMPARED["llamafactory"]:
        default = HF_DEFAULTS.get(key)
        want = source.get(key, default(source) if callable(default) else default)
        got = cfg.get(key)
        if key == "eval_steps" and want is not None:  # jessy caps validation at the run's end
            want = min(want, schedule.optimizer_steps)
        assert close(got, number(want)), (key, got, want)
    rows = sum(len((DATA / f).read_text().splitlines()) for f in spec["data"]["train"])
    assert cfg["max_steps"] == updates(min(rows, source["max_samples"]),
                                       source["per_device_train_batch_size"],
                                       source["gradient_accumulation_steps"],
                                       source["num_train_epochs"])
    assert cfg["warmup_steps"] == math.ceil(source["warmup_ratio"] * cfg["max_steps"])


AXOLOTL_DEFAULTS = {"train_on_inputs": False}
"""Axolotl's values for keys its examples leave out."""


@pytest.mark.parametrize("name", ["axolotl_llama3_lora_1b.yml", "axolotl_llama3_qlora_1b.yml"])
def test_axolotl_example_round_trips(name, tmp_path):
    path = without_packing(tmp_path, name)
    source = read_native(path)
    model, rows = model_folder(tmp_path), alpaca_rows(tmp_path, 100)
    spec = import_file(path, model_path=str(model), data_path=str(rows)).spec
    if spec["model"].get("attn_implementation") == "flash_attention_2":
        # imported as asked; translated without it: every backend refuses it on a CPU
        assert source.get("flash_attention") or source.get("attn_implementation")
        del spec["model"]["attn_implementation"]
    cfg, schedule, _ = translate("axolotl", spec, tmp_path, model)
    source["base_model"] = str(model)  # --model
    for key in COMPARED["axolotl"]:
        want = source.get(key, AXOLOTL_DEFAULTS.get(key))
        if key == "load_in_4bit" and not want:
            want = None  # jessy writes it for qlora only
        if key == "warmup_steps" and want is None:
            want = math.ceil(source["warmup_ratio"] * schedule.optimizer_steps)
        if key == "attn_implementation":
            continue  # above
        assert close(cfg.get(key), want), (key, cfg.get(key), want)
    assert cfg["lora_target_linear"] is True  # the seven projections listed = every linear
    n_train = round(100 * (1 - source["val_set_size"]))
    assert cfg["max_steps"] == updates(n_train, source["micro_batch_size"],
                                       source["gradient_accumulation_steps"],
                                       source["num_epochs"])


@pytest.mark.parametrize("layers", [16, 30])
def test_mlx_example_round_trips(layers, tmp_path):
    source = read_native(DATA / "mlx_lora_config.yaml")
    model = model_folder(tmp_path, layers)
    spec = import_file(DATA / "mlx_lora_config.yaml", model_path=str(model),
                       data_path=str(alpaca_rows(tmp_path))).spec
    cfg, _, _ = translate("mlx", spec, tmp_path, model)
    for key in COMPARED["mlx"]:
        assert close(cfg[key], number(source[key])), (key, cfg[key], source[key])
    assert cfg["lora_parameters"] == {**source["lora_parameters"]}
    # the same blocks: "the last 16" of 16 is every block (-1), of 30 is 16 again
    assert cfg["num_layers"] == (-1 if layers == 16 else 16)
    assert cfg["optimizer_config"]["adamw"]["weight_decay"] == 0.01  # mlx's AdamW default
    assert set(cfg["jessy_lr_table"]) == {1e-5}  # constant, as without lr_schedule
    assert cfg["mask_prompt"] is False and "jessy_max_grad_norm" not in cfg


# --- spec -> native -> spec ---------------------------------------------------------------------

GENERATED = {
    "lora-cosine": {"lora": {"r": 16, "alpha": 32, "dropout": 0.05,
                             "target_modules": ["q_proj", "v_proj"]},
                    "training": {"max_steps": 9, "batch_size": 2,
                                 "gradient_accumulation_steps": 2, "learning_rate": 3e-4,
                                 "lr_scheduler": "cosine", "warmup_steps": 2,
                                 "weight_decay": 0.01, "max_grad_norm": 0.5, "seed": 7,
                                 "gradient_checkpointing": True, "logging_steps": 2,
                                 "save_steps": 3},
                    "data": {"train_on_responses_only": False}},
    "full-constant": {"method": "full",
                      "training": {"epochs": 2, "lr_scheduler": "constant",
                                   "warmup_ratio": 0.2, "learning_rate": 1e-5}},
    "qlora-tail": {"method": "qlora", "lora": {"r": 4, "alpha": 4, "layers": [27, 28, 29]},
                   "training": {"max_steps": 5, "lr_scheduler": "linear",
                                "optimizer": "adamw_8bit"}},
}

COMPARED_FIELDS = ["/method", "/lora/r", "/lora/alpha", "/lora/dropout", "/lora/target_modules",
                   "/lora/layers", "/lora/use_rslora", "/model/max_seq_length",
                   "/model/trust_remote_code", "/model/attn_implementation",
                   "/data/train_on_responses_only", "/training/batch_size",
                   "/training/gradient_accumulation_steps", "/training/learning_rate",
                   "/training/lr_scheduler", "/training/weight_decay", "/training/max_grad_norm",
                   "/training/optimizer", "/training/seed", "/training/gradient_checkpointing",
                   "/training/logging_steps", "/training/save_steps"]
"""Spec fields every dialect holds. Not compared: /name, /data/* but train_on_responses_only
(the native file names jessy's prepared copy), /evaluation, /export, /output, /requirements,
/plans, /resources, /training/continue_on_fallback (jessy's own); /training/epochs,
/training/warmup_ratio, /training/eval_steps (jessy passes the update count, warmup and
validation updates instead: compared with the schedule); /training/precision and /model/dtype
(auto on a CPU); /model/chat_template (auto stays auto). adam comes back as adamw from the HF
backends (adamw_torch; the same update without weight decay); adamw_8bit as adamw from MLX and
from HF backends on a CPU; LLaMA-Factory cannot hold /lora/layers (refused unless all), MLX
cannot hold /model/attn_implementation (its own attention)."""


def cases():
    for example in sorted(SPEC_EXAMPLES.glob("*.yaml")):
        yield example.name, None, example
    for name, extra in GENERATED.items():
        yield name, extra, None


def spec_dict(tmp_path: Path, extra: dict | None, example: Path | None) -> dict:
    if example is not None:
        spec = load_spec(example)
        data = dict(spec.data)
        data["model"] = {**data["model"], "name_or_path": str(model_folder(tmp_path))}
        data["training"] = {**data["training"], "precision": "auto"}  # CPU
        data["model"]["dtype"] = "auto"
        data["data"] = {**data["data"], "train": [str((example.parent / t).resolve()) for t in
                        ([data["data"]["train"]] if isinstance(data["data"]["train"], str)
                         else data["data"]["train"])]}
        return data
    base = {"model": {"name_or_path": str(model_folder(tmp_path)), "max_seq_length": 128},
            "data": {"train": str(alpaca_rows(tmp_path, 24)), "format": "alpaca",
                     "validation_split": 0.25}}
    for section, values in extra.items():
        base[section] = {**base.get(section, {}), **values} if isinstance(values, dict) \
            else values
    return base


def path_value(spec: dict, pointer: str):
    node = spec
    for part in pointer.strip("/").split("/"):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


@pytest.mark.parametrize("backend", ["mlx", "llamafactory", "axolotl"])
@pytest.mark.parametrize("case", list(cases()), ids=lambda c: c[0])
def test_spec_round_trips_through_each_dialect(backend, case, tmp_path):
    _, extra, example = case
    raw = spec_dict(tmp_path, extra, example)
    original = spec_from_dict(raw, tmp_path)
    try:
        cfg, schedule, attempt = translate(backend, raw, tmp_path,
                                           model_folder(tmp_path))
    except TranslationRefused as exc:
        assert backend == "llamafactory" and [r.spec_path for r in exc.refusals] == [
            "/lora/layers"]
        return
    imported = import_file(attempt / NATIVE_FILE[backend], backend,
                           model_path=str(model_folder(tmp_path))).spec
    imported = spec_from_dict(imported).data  # resolved, like the original
    assert_every_key_once_for(backend, attempt)
    for pointer in COMPARED_FIELDS:
        want, got = path_value(original.data, pointer), path_value(imported, pointer)
        if original["method"] == "full" and pointer.startswith("/lora/"):
            continue  # a full fine-tune has no LoRA settings
        if pointer == "/training/optimizer":
            want = {"adam": "adamw"}.get(want, want) if backend != "mlx" else want
            if want == "adamw_8bit" and (backend == "mlx" or not cfg.get("optim", cfg.get(
                    "optimizer", "")).endswith("8bit")):
                want = "adamw"
        if pointer == "/model/attn_implementation" and backend == "mlx":
            continue  # MLX has one attention of its own: its config cannot say
        if pointer == "/training/lr_scheduler" and schedule.warmup_steps == \
                schedule.optimizer_steps:
            continue  # every update warms up: no scheduler acts (an MLX LR table cannot say)
        if pointer == "/lora/layers":  # the same blocks, however written (mlx-lm: last N)
            model = str(model_folder(tmp_path))
            want, got = adapted_layers(want, model, []), adapted_layers(got, model, [])
        assert close(got, want), (pointer, got, want)
    assert imported["training"]["max_steps"] == schedule.optimizer_steps
    assert imported["training"]["warmup_steps"] == schedule.warmup_steps


def assert_every_key_once_for(backend: str, attempt: Path) -> None:
    path = attempt / NATIVE_FILE[backend]
    ctx = import_file(path, backend, model_path=str(model_folder(attempt))).ctx
    assert_every_key_once(ctx, read_native(path))


# --- the command ------------------------------------------------------------------------------

def run(*args):
    return CliRunner().invoke(cli, ["import", *map(str, args)])


def test_command_writes_a_valid_spec_and_reports_each_key(tmp_path):
    out = tmp_path / "spec.yaml"
    result = run(DATA / "llamafactory_llama3_lora_sft.yaml", "-o", out,
                 "--model", model_folder(tmp_path))
    assert result.exit_code == 0, result.output
    load_spec(out)
    assert "mapped   lora_rank -> /lora/r = 8" in result.output
    assert "dropped  output_dir:" in result.output
    assert "default  /lora/alpha = 16: lora_alpha's default 2 x lora_rank" in result.output


def test_stage_dpo_is_refused_by_key(tmp_path):
    source = read_native(DATA / "llamafactory_llama3_lora_sft.yaml")
    source["stage"] = "dpo"
    path = tmp_path / "dpo.yaml"
    path.write_text(yaml.safe_dump(source))
    result = run(path)
    assert result.exit_code == 2
    assert "  stage: 'dpo': jessy trains supervised fine-tuning (sft) only" in result.output


def test_unknown_keys_and_optimizers_are_refused_not_dropped(tmp_path):
    source = read_native(DATA / "llamafactory_llama3_lora_sft.yaml")
    source.update(optim="lion_32bit", some_new_option=3)
    with pytest.raises(ImportRefused) as err:
        import_data(source, "llamafactory", DATA / "x.yaml")
    assert sorted(k for k, _ in err.value.problems) == ["optim", "some_new_option"]


def test_duplicate_keys_are_refused_with_both_lines(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("model_name_or_path: a\nstage: sft\nlora_rank: 8\nlora_rank: 64\n")
    result = run(path)
    assert result.exit_code == 2
    assert f"{path}:4: duplicate key 'lora_rank': first at line 3, again at line 4" in \
        result.output


def test_dialect_is_recognised_or_asked_for(tmp_path):
    ambiguous = tmp_path / "both.yaml"
    ambiguous.write_text("model_name_or_path: a\nstage: sft\nbase_model: b\n"
                         "micro_batch_size: 1\n")
    result = run(ambiguous)
    assert result.exit_code == 2 and "give --from" in result.output
    result = run("--from", "mlx", DATA / "llamafactory_llama3_lora_sft.yaml")
    assert result.exit_code == 2
    assert "looks like llamafactory, not mlx" in result.output


def test_alpha_default_follows_the_rank_llamafactory_reads(tmp_path):
    source = {"model_name_or_path": "m", "stage": "sft", "lora_rank": 32,
              "dataset": "identity"}
    spec = import_data(source, "llamafactory", DATA / "x.yaml").spec
    assert spec["lora"]["alpha"] == 64


def test_command_recognises_the_dialect_and_prints_the_spec(tmp_path):
    result = run(DATA / "mlx_lora_config.yaml", "--model", model_folder(tmp_path, 16),
                 "--data", alpaca_rows(tmp_path))
    assert result.exit_code == 0, result.output
    assert "mapped   lora_parameters.scale -> /lora/alpha = 160.0" in result.output
    assert "dropped  adapter_path:" in result.output


def test_lora_keys_of_a_full_fine_tune_are_dropped_not_mapped(tmp_path):
    source = read_native(without_packing(tmp_path, "axolotl_llama3_lora_1b.yml"))
    del source["adapter"]  # Axolotl trains every weight
    imported = import_data(source, "axolotl", DATA / "x.yaml")
    assert imported.spec["method"] == "full" and "lora" not in imported.spec
    assert ("lora_r", "a LoRA setting, and this is a full fine-tune") in imported.ctx.dropped
    assert_every_key_once(imported.ctx, source)


def test_mlx_full_fine_tune_of_the_last_blocks_is_refused(tmp_path):
    source = read_native(DATA / "mlx_lora_config.yaml")
    source["fine_tune_type"] = "full"
    with pytest.raises(ImportRefused) as err:
        import_data(source, "mlx", DATA / "x.yaml", str(model_folder(tmp_path, 30)))
    assert [k for k, _ in err.value.problems] == ["num_layers"]


def test_a_key_without_a_verdict_is_caught(tmp_path):
    from jessy_adapters.importers.common import Context

    ctx = Context("mlx", {"iters": 10, "seed": 1}, DATA / "x.yaml")
    ctx.map("seed", "/training/seed", 1)
    assert unclassified(ctx) == ["iters"]
    ctx.drop("seed", "twice")
    assert unclassified(ctx) == ["iters", "seed"]


def test_llamafactory_hub_datasets_stay_references(tmp_path):
    (tmp_path / "dataset_info.json").write_text(json.dumps(
        {"alpaca_gpt4": {"hf_hub_url": "llamafactory/alpaca_gpt4_en"}}))
    source = {"model_name_or_path": "m", "stage": "sft", "dataset": "alpaca_gpt4"}
    imported = import_data(source, "llamafactory", tmp_path / "x.yaml")
    assert imported.spec["data"]["train"] == "llamafactory/alpaca_gpt4_en"
    assert any("--data" in note for note in imported.ctx.notes)


def test_gemma3_example_without_what_jessy_lacks(tmp_path):
    source = read_native(DATA / "axolotl_gemma3_1b_qlora.yml")
    source.update(tf32=False)
    del source["unfrozen_parameters"]
    imported = import_data(source, "axolotl", DATA / "x.yaml")
    spec = imported.spec
    assert spec["training"]["packing"] is True  # sample_packing under flash_attention
    assert spec["model"]["chat_template"] == "gemma3"
    assert spec["data"]["format"] == "sharegpt"  # role: from, content: value
    assert "fields" not in spec["data"]  # field_messages: conversations, sharegpt's own name
    assert spec["lora"]["target_modules"] == "all-linear" and spec["method"] == "qlora"
    assert spec["training"]["optimizer"] == "adamw_8bit"
    assert_every_key_once(imported.ctx, source)


@pytest.mark.parametrize("schedule, verdict", [
    ({"name": "cosine_decay", "arguments": [1e-5, 1000]}, "cosine"),
    ({"name": "linear_schedule", "arguments": [1e-5, 0, 1000]}, "linear"),
    ({"name": "cosine_decay", "warmup": 100, "warmup_init": 1e-7,
      "arguments": [1e-5, 1000, 1e-7]}, None),  # the commented-out example: refused
])
def test_mlx_lr_schedule_is_mapped_only_when_the_spec_can_say_it(schedule, verdict, tmp_path):
    source = read_native(DATA / "mlx_lora_config.yaml")
    source.update(lr_schedule=schedule, num_layers=-1)
    if verdict is None:
        with pytest.raises(ImportRefused) as err:
            import_data(source, "mlx", DATA / "x.yaml")
        assert [k for k, _ in err.value.problems] == ["lr_schedule"]
        assert "warmup" in err.value.problems[0][1] and "end LR" in err.value.problems[0][1]
        return
    spec = import_data(source, "mlx", DATA / "x.yaml").spec
    assert spec["training"]["lr_scheduler"] == verdict
