"""Issue 16's "done when": an Axolotl, a LLaMA-Factory and an mlx-lm example config from
upstream (tests/data/import/, SOURCES.md) each import, then run on the builtin model
(SmolLM2-135M-Instruct) with local rows, on their own backend and on one other backend.

Each test does what README.md's "Coming from another tool" tells a user to do, through the
real command line::

    jessy import <upstream file> --model <SmolLM2 folder> --data rows.jsonl -o spec.yaml
    jessy validate spec.yaml
    jessy run --backend <own or other> --no-fallback spec.yaml

| upstream example | own backend | other backend |
|---|---|---|
| Axolotl `examples/llama-3/lora-1b.yml` | axolotl | mlx (the README's "run it on MLX") |
| LLaMA-Factory `examples/train_lora/llama3_lora_sft.yaml` | llamafactory | mlx |
| mlx-lm `mlx_lm/examples/lora_config.yaml` | mlx | unsloth |

The other backends are ones each config can be honoured on: LLaMA-Factory refuses mlx-lm's
"last 16 blocks" (`/lora/layers`), so the mlx-lm example goes to Unsloth; the LLaMA-Factory
example goes to MLX (a different framework: its LR becomes an MLX LR table, its alpha an MLX
scale) rather than Unsloth (the same HF Trainer, and ~40 s more CI for Unsloth's import).

What a user changes, and only that (`EXAMPLES`: native_edits, spec_edits);
`test_upstream_example_is_refused_only_where_edited` checks that these are what jessy refused,
by key at import or by spec path before a run starts:

- Axolotl: `sample_packing: true` imports to `training.packing: true` (its file names flash
  attention, which keeps packed rows apart); MLX refuses it at `/training/packing` (mlx-lm has
  no packing), and so does Axolotl on this CPU (jessy translates its packing on a CUDA GPU
  only): set to false. `flash_attention: true` imports to
  `model.attn_implementation: flash_attention_2`, which every backend refuses at
  `/model/attn_implementation` on this CPU (no flash-attention kernel): the line is removed
  from the spec (auto: the model's own attention).
- LLaMA-Factory: `template: llama3` imports to `model.chat_template: llama3`, which every
  backend refuses at `/model/chat_template` once `--model` is SmolLM2 (its tokenizer's template
  is chatml; the refusal says "use auto or chatml"): set to auto. `bf16: true` imports to
  `training.precision: bf16`, which LLaMA-Factory refuses at `/training/precision` on a CPU:
  set to auto (float32 here).
- mlx-lm: nothing; the example runs as imported.

And, for every example, the run's size (CI budget, ~2 minutes for the file): after import the
spec's `training.max_steps` is set to 2 (the examples train for epochs or 1000 iters) and
`model.max_seq_length` to 128 (the rows are short; the examples say 2048), and
`training.logging_steps` to 1 so both updates are logged and the learning rate each was
computed with can be checked against the upstream schedule (LLaMA-Factory's and mlx-lm's
examples log every 10). Every other value is the upstream file's, and the tests check that the
run used it: the native config each backend was given, run.json's schedule, the LR of each
logged update, the adapter's rank, alpha and which blocks and projections it adapts, and that
PEFT loads it and it changes the model's output.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import require_env

from jessy_adapters.cli import cli
from jessy_adapters.contract import peft_output_change
from jessy_adapters.devices import nvidia_gpu
from jessy_adapters.importers.common import number, read_native
from jessy_adapters.schedule import Schedule
from jessy_adapters.toolkit.adapters import read_safetensors_header

DATA = Path(__file__).parent / "data" / "import"
MAX_STEPS = 2
SEQ_LEN = 128
PROJECTIONS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
NATIVE_FILE = {"axolotl": "axolotl.yaml", "llamafactory": "llamafactory.yaml",
               "mlx": "mlx_lora.yaml", "unsloth": "unsloth_config.json"}
DELETE = object()
"""A spec edit that removes the line (the field then takes its default)."""


@dataclass(frozen=True)
class Example:
    file: str
    own: str
    other: str
    native_edits: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Import-time refusals: key -> (the upstream line, the line as the user edits it)."""
    spec_edits: dict[str, object] = field(default_factory=dict)
    """Run-time refusals: "section.key" of the imported spec -> the value the user sets."""
    same_keys: tuple[str, ...] = ()
    """Upstream keys the own backend's native config writes under the same name: compared
    as they are."""


EXAMPLES = {
    "axolotl": Example(
        "axolotl_llama3_lora_1b.yml", "axolotl", "mlx",
        spec_edits={"model.attn_implementation": DELETE, "training.packing": False},
        same_keys=("learning_rate", "lora_r", "lora_alpha", "lora_dropout", "lr_scheduler",
                   "micro_batch_size", "gradient_accumulation_steps", "weight_decay",
                   "train_on_inputs", "gradient_checkpointing", "logging_steps", "tf32")),
    "llamafactory": Example(
        "llamafactory_llama3_lora_sft.yaml", "llamafactory", "mlx",
        spec_edits={"model.chat_template": "auto", "training.precision": "auto"},
        same_keys=("stage", "do_train", "finetuning_type", "lora_rank", "lora_target",
                   "learning_rate", "lr_scheduler_type", "per_device_train_batch_size",
                   "gradient_accumulation_steps", "trust_remote_code", "save_steps")),
    "mlx": Example(
        "mlx_lora_config.yaml", "mlx", "unsloth",
        same_keys=("train", "fine_tune_type", "optimizer", "seed", "batch_size",
                   "learning_rate", "grad_checkpoint", "lora_parameters", "num_layers",
                   "save_every")),
}

RUN_SIZE = {"training.max_steps": MAX_STEPS, "model.max_seq_length": SEQ_LEN,
            "training.logging_steps": 1}


def refused_before_edits(dialect: str, backend: str) -> set[str]:
    """The spec paths `backend` refuses in the imported spec, here, before the user's edits
    (at least these; any other refusal must be one the user edits). flash_attention_2 is a
    CUDA kernel: every backend refuses it on a CPU; so is packing, except LLaMA-Factory's."""
    cpu = nvidia_gpu() is None
    return {("axolotl", "mlx"): {"/model/attn_implementation", "/training/packing"},
            ("axolotl", "axolotl"): ({"/model/attn_implementation", "/training/packing"}
                                     if cpu else set()),
            ("llamafactory", "llamafactory"): {"/model/chat_template"}
            | ({"/training/precision"} if cpu else set()),
            ("llamafactory", "mlx"): {"/model/chat_template"}}.get((dialect, backend), set())


@dataclass(frozen=True)
class Expected:
    """What the upstream file asks for, in the terms every backend's native config has."""

    learning_rate: float
    scheduler: str
    warmup_steps: int
    r: int
    alpha: float
    dropout: float
    batch_size: int
    accumulation: int
    weight_decay: float
    modules: set[str]
    layers: set[int]
    responses_only: bool
    data_format: str

    def schedule(self) -> Schedule:
        return Schedule(MAX_STEPS, self.warmup_steps, 0, 0, 0.0, self.learning_rate,
                        self.scheduler, None, None)


def expected(dialect: str, source: dict, blocks: int) -> Expected:
    """Read off the upstream file (its backend's defaults where it is silent)."""
    every = set(range(blocks))
    if dialect == "axolotl":
        return Expected(number(source["learning_rate"]), source["lr_scheduler"],
                        min(source["warmup_steps"], MAX_STEPS), source["lora_r"],
                        source["lora_alpha"], source["lora_dropout"], source["micro_batch_size"],
                        source["gradient_accumulation_steps"], source["weight_decay"],
                        set(source["lora_target_modules"]), every,
                        not source["train_on_inputs"], "alpaca")
    if dialect == "llamafactory":
        assert source["lora_target"] == "all" and "lora_alpha" not in source
        return Expected(number(source["learning_rate"]), source["lr_scheduler_type"],
                        math.ceil(source["warmup_ratio"] * MAX_STEPS), source["lora_rank"],
                        2 * source["lora_rank"],  # LLaMA-Factory's default alpha
                        0.0,  # its default dropout
                        source["per_device_train_batch_size"],
                        source["gradient_accumulation_steps"], 0.0, PROJECTIONS, every,
                        True,  # train_on_prompt's default false
                        "alpaca")
    lora = source["lora_parameters"]
    assert "lr_schedule" not in source and "optimizer_config" not in source
    return Expected(number(source["learning_rate"]), "constant", 0, lora["rank"],
                    lora["scale"] * lora["rank"], lora["dropout"], source["batch_size"], 1,
                    0.01 if source["optimizer"] == "adamw" else 0.0,  # mlx's AdamW default
                    {k.split(".")[-1] for k in lora["keys"]},
                    set(range(blocks - source["num_layers"], blocks)),
                    False,  # mask_prompt's default
                    "prompt_response")


# --- the commands, as a user types them ---------------------------------------------------------

def jessy(*args) -> tuple[int, str]:
    """`jessy ARGS` in-process (import, validate, translate: no training): exit code, output
    (stdout and stderr)."""
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


def jessy_run(*args) -> subprocess.CompletedProcess:
    """`jessy run ARGS` as its own process, as a user runs it."""
    exe = Path(sys.executable).with_name("jessy")
    argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "jessy_adapters.cli"]
    return subprocess.run(argv + ["run", *map(str, args)], capture_output=True, text=True,
                          timeout=1200)


def rows(tmp_path: Path, dialect: str, toy_data: Path) -> Path:
    """Local rows for --data: alpaca rows where the upstream dataset is alpaca (Axolotl's
    `type: alpaca`, LLaMA-Factory's alpaca_en_demo); the toy prompt/response facts for mlx-lm
    (its example names a folder of JSONL files, any of its formats)."""
    if dialect == "mlx":
        return toy_data
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"instruction": f"What is fact number {i}?", "input": "",
                                        "output": f"Fact {i}: Jessy likes the number {i * 7}."})
                            + "\n" for i in range(16)))
    return path


def upstream_as_edited(tmp_path: Path, example: Example) -> Path:
    """The upstream file, with the lines the user changed after an import refusal."""
    if not example.native_edits:
        return DATA / example.file
    text = (DATA / example.file).read_text()
    for line, edited in example.native_edits.values():
        assert text.count(f"\n{line}\n") == 1, line
        text = text.replace(f"\n{line}\n", f"\n{edited}\n")
    path = tmp_path / example.file
    path.write_text(text)
    return path


def imported(tmp_path: Path, dialect: str, model: str, data: Path) -> Path:
    """jessy import + jessy validate: the spec as jessy wrote it."""
    example = EXAMPLES[dialect]
    spec = tmp_path / "spec.yaml"
    code, out = jessy("import", upstream_as_edited(tmp_path, example), "--model", model,
                      "--data", data, "-o", spec)
    assert code == 0, out
    code, out = jessy("validate", spec)
    assert code == 0, out
    return spec


def edit(spec: Path, edits: dict[str, object]) -> None:
    """Change keys of the imported spec, as a user edits its YAML."""
    doc = yaml.safe_load(spec.read_text())
    for dotted, value in edits.items():
        section, key = dotted.split(".")
        if value is DELETE:
            doc[section].pop(key)
        else:
            doc.setdefault(section, {})[key] = value
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))


def ready_spec(tmp_path: Path, dialect: str, model: str, data: Path) -> Path:
    spec = imported(tmp_path, dialect, model, data)
    edit(spec, {**EXAMPLES[dialect].spec_edits, **RUN_SIZE})
    code, out = jessy("validate", spec)
    assert code == 0, out
    return spec


# --- import: refused only where the user edits -------------------------------------------------

PAIRS = [(d, b) for d, e in EXAMPLES.items() for b in (e.own, e.other)]


@pytest.mark.parametrize("dialect, backend", PAIRS, ids=[f"{d}-on-{b}" for d, b in PAIRS])
def test_upstream_example_is_refused_only_where_edited(dialect, backend, smollm2, toy_data,
                                                       tmp_path):
    """The edits in EDITS are what jessy refused: the keys refused at import (exit 2, by
    name), then the spec paths `jessy translate` (the check `jessy run` makes before it
    starts a backend) refuses on this machine; after them, the spec translates."""
    example = EXAMPLES[dialect]
    data = rows(tmp_path, dialect, toy_data)
    code, out = jessy("import", DATA / example.file, "--model", smollm2, "--data", data)
    if example.native_edits:
        assert code == 2, out
        refused = set(re.findall(r"^  (\w+): ", out.split("not imported;")[1], re.M))
        assert refused == set(example.native_edits), out
    else:
        assert code == 0, out
    spec = imported(tmp_path, dialect, smollm2, data)
    code, out = jessy("translate", "--backend", backend, spec, "--out", tmp_path / "before")
    refused = set(re.findall(r"^  (/[\w/]+): ", out, re.M))
    assert code == (2 if refused else 0), out
    edited = {"/" + k.replace(".", "/") for k in example.spec_edits}
    assert refused_before_edits(dialect, backend) <= refused <= edited, out
    edit(spec, {**example.spec_edits, **RUN_SIZE})
    code, out = jessy("translate", "--backend", backend, spec, "--out", tmp_path / "after")
    assert code == 0, out


# --- the runs ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def axolotl_env():
    return require_env("axolotl")


@pytest.fixture(scope="module")
def llamafactory_env():
    return require_env("llamafactory")


@pytest.fixture(scope="module")
def unsloth_env():
    return require_env("unsloth")


def native_values(backend: str, attempt: Path) -> dict:
    """The training values in the config jessy wrote for `backend`, under one set of names."""
    text = (attempt / NATIVE_FILE[backend]).read_text()
    if backend == "unsloth":
        cfg = json.loads(text)
        sft, peft = cfg["sft"], cfg["peft"]
        return {"learning_rate": sft["learning_rate"], "r": peft["r"],
                "alpha": peft["lora_alpha"], "dropout": peft["lora_dropout"],
                "batch_size": sft["per_device_train_batch_size"],
                "accumulation": sft["gradient_accumulation_steps"],
                "max_steps": sft["max_steps"], "warmup_steps": sft["warmup_steps"],
                "scheduler": sft["lr_scheduler_type"], "weight_decay": sft["weight_decay"],
                "max_seq_length": cfg["from_pretrained"]["max_seq_length"]}
    cfg = yaml.safe_load(text)
    if backend == "mlx":
        lora = cfg["lora_parameters"]
        options = cfg.get("optimizer_config", {}).get(cfg["optimizer"], {})
        return {"learning_rate": cfg["learning_rate"], "r": lora["rank"],
                "alpha": lora["scale"] * lora["rank"], "dropout": lora["dropout"],
                "batch_size": cfg["batch_size"], "accumulation": cfg["grad_accumulation_steps"],
                "max_steps": cfg["iters"] // cfg["grad_accumulation_steps"],
                "lr_table": cfg["jessy_lr_table"],
                "weight_decay": options.get("weight_decay", 0.0),
                "max_seq_length": cfg["max_seq_length"]}
    if backend == "axolotl":
        return {"learning_rate": cfg["learning_rate"], "r": cfg["lora_r"],
                "alpha": cfg["lora_alpha"], "dropout": cfg["lora_dropout"],
                "batch_size": cfg["micro_batch_size"],
                "accumulation": cfg["gradient_accumulation_steps"],
                "max_steps": cfg["max_steps"], "warmup_steps": cfg["warmup_steps"],
                "scheduler": cfg["lr_scheduler"], "weight_decay": cfg["weight_decay"],
                "max_seq_length": cfg["sequence_len"]}
    return {"learning_rate": cfg["learning_rate"], "r": cfg["lora_rank"],
            "alpha": cfg["lora_alpha"], "dropout": cfg["lora_dropout"],
            "batch_size": cfg["per_device_train_batch_size"],
            "accumulation": cfg["gradient_accumulation_steps"], "max_steps": cfg["max_steps"],
            "warmup_steps": cfg["warmup_steps"], "scheduler": cfg["lr_scheduler_type"],
            "weight_decay": cfg["weight_decay"], "max_seq_length": cfg["cutoff_len"]}


def adapted(adapter: Path) -> tuple[set[tuple[int, str]], set[int]]:
    """(block, projection) pairs the PEFT adapter holds LoRA weights for, and its ranks."""
    header, _ = read_safetensors_header(adapter / "adapter_model.safetensors")
    pairs, ranks = set(), set()
    for name, info in header.items():
        m = re.search(r"layers\.(\d+)\.\w+\.(\w+)\.lora_A\.weight$", name)
        if m:
            pairs.add((int(m[1]), m[2]))
            ranks.add(info["shape"][0])
    return pairs, ranks


def approx(a, b) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)


def import_and_run(dialect: str, backend: str, model: str, toy_data: Path,
                   tmp_path: Path) -> None:
    example = EXAMPLES[dialect]
    data = rows(tmp_path, dialect, toy_data)
    spec = ready_spec(tmp_path, dialect, model, data)
    proc = jessy_run("--backend", backend, "--no-fallback", spec, "-o", tmp_path / "runs")
    assert proc.returncode == 0, proc.stderr[-4000:]
    run = Path(proc.stdout.strip().splitlines()[-1])
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["status"] == "succeeded" and manifest["winner"] == backend
    assert [a["backend"] for a in manifest["attempts"]] == [backend]

    source = read_native(upstream_as_edited(tmp_path, example))
    blocks = json.loads((Path(model) / "config.json").read_text())["num_hidden_layers"]
    want = expected(dialect, source, blocks)
    planned = want.schedule()

    # the local rows, in the format --data's first row says
    n_rows = len(data.read_text().splitlines())
    spec = yaml.safe_load((run / "spec.yaml").read_text())
    assert spec["data"]["format"] == want.data_format
    assert manifest["data"]["format"] == "messages"  # what every backend is fed
    assert manifest["data"]["n_train"] + manifest["data"]["n_validation"] == n_rows

    # the schedule jessy decided: the upstream LR, scheduler and warmup, MAX_STEPS updates
    schedule = manifest["schedule"]
    assert schedule["optimizer_steps"] == MAX_STEPS
    assert approx(schedule["learning_rate"], want.learning_rate)
    assert (schedule["scheduler"], schedule["warmup_steps"]) == (want.scheduler,
                                                                 want.warmup_steps)

    # the config the backend was given carries it
    attempt = run / manifest["attempts"][0]["dir"]
    native = native_values(backend, attempt)
    values = {"learning_rate": want.learning_rate, "r": want.r, "alpha": want.alpha,
              "dropout": want.dropout, "batch_size": want.batch_size,
              "accumulation": want.accumulation, "max_steps": MAX_STEPS,
              "weight_decay": want.weight_decay, "max_seq_length": SEQ_LEN}
    for key, value in values.items():
        assert approx(native[key], value), (key, native[key], value)
    if "lr_table" in native:  # MLX: the LR of each update, written out
        assert all(map(approx, native["lr_table"], planned.learning_rates())), native
    else:
        assert native["warmup_steps"] == want.warmup_steps
        assert {"constant_with_warmup": "constant"}.get(native["scheduler"],
                                                        native["scheduler"]) == want.scheduler
    if backend == example.own:  # the upstream file's own keys, as they were
        cfg = yaml.safe_load((attempt / NATIVE_FILE[backend]).read_text())
        for key in example.same_keys:
            got, original = cfg[key], source[key]
            if key == "logging_steps":
                original = RUN_SIZE["training.logging_steps"]
            if isinstance(original, dict):
                assert got == {k: number(v) for k, v in original.items()}, key
            else:
                assert got == number(original), (key, got, original)

    # each logged update was computed with the upstream schedule's LR
    events = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train = [e for e in events if e["type"] == "train"]
    assert [e["step"] for e in train] == list(range(1, MAX_STEPS + 1)), train
    for event, lr in zip(train, planned.learning_rates(), strict=True):
        assert approx(event["learning_rate"], lr), (event, lr)
    assert all(e.get("loss") is not None and math.isfinite(e["loss"]) for e in train), train
    evals = [e["step"] for e in events if e["type"] == "eval"]
    assert evals == schedule["eval_updates"]

    # the adapter: the upstream rank, alpha, projections and blocks; PEFT loads it
    adapter = run / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"]) == (want.r, want.alpha)
    assert approx(config["lora_dropout"], want.dropout)
    assert manifest["adapter"]["r"] == want.r and manifest["adapter"]["lora_alpha"] == want.alpha
    pairs, ranks = adapted(adapter)
    assert ranks == {want.r}
    assert pairs == {(b, m) for b in want.layers for m in want.modules}
    assert peft_output_change(model, adapter) > 0


def test_axolotl_example_runs_on_axolotl(axolotl_env, smollm2, toy_data, tmp_path):
    import_and_run("axolotl", "axolotl", smollm2, toy_data, tmp_path)


def test_axolotl_example_runs_on_mlx(mlx_env, smollm2, toy_data, tmp_path):
    """README's three lines: "I have an Axolotl config; run it on MLX"."""
    import_and_run("axolotl", "mlx", smollm2, toy_data, tmp_path)


def test_llamafactory_example_runs_on_llamafactory(llamafactory_env, smollm2, toy_data,
                                                    tmp_path):
    import_and_run("llamafactory", "llamafactory", smollm2, toy_data, tmp_path)


def test_llamafactory_example_runs_on_mlx(mlx_env, smollm2, toy_data, tmp_path):
    import_and_run("llamafactory", "mlx", smollm2, toy_data, tmp_path)


def test_mlx_example_runs_on_mlx(mlx_env, smollm2, toy_data, tmp_path):
    import_and_run("mlx", "mlx", smollm2, toy_data, tmp_path)


def test_mlx_example_runs_on_unsloth(unsloth_env, smollm2, toy_data, tmp_path):
    import_and_run("mlx", "unsloth", smollm2, toy_data, tmp_path)
