"""`model.chat_template: alpaca`: the classic Alpaca prompt, the same text on every backend.

The expected text is Axolotl's `type: alpaca` (axolotl/prompters.py AlpacaPrompter, INSTRUCT
style, 0.19.0): the preamble (one for rows with an input, one without), a blank line,
"### Instruction:\\n{instruction}\\n\\n[### Input:\\n{input}\\n\\n]### Response:\\n", the
response, the tokenizer's EOS; BOS first where the tokenizer puts one before plain text.
The backend part trains the four trainers on alpaca rows and checks what each fed its model,
and that Axolotl's own alpaca tokenizer gives the same rows (so an imported `type: alpaca`
trains as it did).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from jessy_adapters.backend import RunInputs
from jessy_adapters.data import prepare, rows_without_room
from jessy_adapters.data.room import row_token_counts
from jessy_adapters.envs import BackendEnv
from jessy_adapters.export import modelfile_text
from jessy_adapters.importers import ImportRefused, import_file
from jessy_adapters.models import resolve_model
from jessy_adapters.plugins import load_registry
from jessy_adapters.spec import load_spec
from jessy_adapters.templates import (
    ALPACA_INPUT_SYSTEM,
    ALPACA_SYSTEM,
    training_template,
)
from tests.conftest import require_env
from tests.test_parity import IGNORE, train

ROWS = [{"instruction": "Name a colour.", "input": "", "output": "Teal."},
        {"instruction": "Translate to French.", "input": "cat", "output": "chat"},
        {"instruction": "Who are you?", "output": "Jessy.", "system": "Be brief."}]
IMPORT = Path(__file__).parent / "data" / "import"


def axolotl_text(row: dict, eos: str, bos: str = "") -> tuple[str, str]:
    """(prompt, response) as Axolotl's AlpacaPrompter writes them (its source, quoted)."""
    if row.get("input"):
        prompt = (f"{row.get('system') or ALPACA_INPUT_SYSTEM}\n\n### Instruction:\n"
                  f"{row['instruction']}\n\n### Input:\n{row['input']}\n\n### Response:\n")
    else:
        prompt = (f"{row.get('system') or ALPACA_SYSTEM}\n\n### Instruction:\n"
                  f"{row['instruction']}\n\n### Response:\n")
    return bos + prompt, row["output"] + eos


def alpaca_spec(tmp: Path, model: str, rows=ROWS, **data) -> Path:
    train_file = tmp / "alpaca.jsonl"
    train_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    doc = {"name": "alpaca", "model": {"name_or_path": model, "max_seq_length": 128,
                                       "chat_template": "alpaca"},
           "data": {"train": str(train_file), "format": "alpaca", "validation_split": 0.0,
                    **data},
           "lora": {"r": 4, "alpha": 8},
           "training": {"max_steps": 2, "batch_size": 2, "learning_rate": 1e-3, "seed": 3,
                        "logging_steps": 1}}
    path = tmp / "alpaca.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def prepared(tmp: Path, model: str, **data) -> list[list[dict]]:
    out = prepare(load_spec(alpaca_spec(tmp, model, **data)), tmp / "prepared")
    return [json.loads(line)["messages"] for line in out.train.read_text().splitlines()]


def rendered(model: str, messages: list[dict]) -> str:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    return tok.apply_chat_template(messages, chat_template=training_template(model, "alpaca"),
                                   tokenize=False)


def test_prepared_rows_render_as_axolotls_alpaca_prompt(tiny_model, tmp_path):
    rows = prepared(tmp_path, tiny_model)
    assert len(rows) == 3
    got = {rendered(tiny_model, m) for m in rows}
    assert got == {"".join(axolotl_text(r, "<|im_end|>")) for r in ROWS}


def test_the_specs_system_prompt_replaces_the_preamble(tiny_model, tmp_path):
    rows = prepared(tmp_path, tiny_model, system_prompt="You are Jessy.")
    systems = sorted(m[0]["content"] for m in rows)
    assert systems == ["Be brief.", "You are Jessy.", "You are Jessy."]  # the row's own first


def test_bos_opens_the_prompt_where_the_tokenizer_writes_one(tmp_path):
    gemma = resolve_model("builtin:tiny-gemma2")
    rows = prepared(tmp_path, gemma)
    text = rendered(gemma, rows[0])
    assert text.startswith("<bos>Below is an instruction") and text.endswith("<eos>")
    assert text.count("<bos>") == 1


def test_the_cheap_count_equals_the_tokenizers(tiny_model, tmp_path):
    spec = load_spec(alpaca_spec(tmp_path, tiny_model))
    data = prepare(spec, tmp_path / "prepared")
    cheap = row_token_counts(data.train, tiny_model, "alpaca", answers=True)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    template = training_template(tiny_model, "alpaca")
    exact = []
    for line in data.train.read_text().splitlines():
        msgs = json.loads(line)["messages"]
        full = tok.apply_chat_template(msgs, chat_template=template, tokenize=True,
                                       return_dict=False)
        head = tok.apply_chat_template(msgs[:-1], chat_template=template, tokenize=True,
                                       add_generation_prompt=True, return_dict=False)
        exact.append((len(head), len(full) - len(head)))
    assert cheap == exact
    spec.data["model"]["max_seq_length"] = 40  # the preamble alone is ~25 tokens
    assert rows_without_room(spec, tiny_model)


def test_each_backend_is_given_the_alpaca_prompt(tiny_model, tmp_path):
    spec = load_spec(alpaca_spec(tmp_path, tiny_model))
    inputs = RunInputs(tiny_model, prepare(spec, tmp_path / "prepared"))
    registry = load_registry()

    def translated(backend: str):
        return registry.get(backend).translate(spec, inputs, tmp_path / backend,
                                               BackendEnv(backend))

    mlx = yaml.safe_load(translated("mlx").files["mlx_lora.yaml"])
    assert mlx["jessy_chat_template"] == training_template(tiny_model, "alpaca")
    unsloth = json.loads(translated("unsloth").files["unsloth_config.json"])
    assert unsloth["data"]["markers"] == ["### Instruction:\n", "### Response:\n"]
    lf = yaml.safe_load(translated("llamafactory").files["llamafactory.yaml"])
    assert lf["template"] == lf["jessy_template"]["name"] == "jessy_alpaca"
    assert lf["jessy_template"]["format_prefix"] == []  # SmolLM2 writes no BOS
    assert lf["default_system"] == ALPACA_SYSTEM
    axolotl = translated("axolotl")
    block = yaml.safe_load(axolotl.files["axolotl.yaml"])["datasets"][0]["type"]
    assert block["format"] == "### Instruction:\n{instruction}\n\n### Response:\n"
    assert block["system_format"] == "{system}\n\n"
    flat = [json.loads(x) for x in axolotl.files["data/axolotl_train.jsonl"].splitlines()]
    assert {r["output"] for r in flat} == {"Teal.<|im_end|>", "chat<|im_end|>",
                                          "Jessy.<|im_end|>"}
    assert ALPACA_SYSTEM in {r["system"] for r in flat}  # the template's default, written out


def test_a_tokenizer_without_eos_is_refused_by_path(tmp_path, tiny_model):
    import shutil

    model = tmp_path / "no-eos"
    shutil.copytree(tiny_model, model)
    cfg = json.loads((model / "tokenizer_config.json").read_text())
    cfg.pop("eos_token", None)
    (model / "tokenizer_config.json").write_text(json.dumps(cfg))
    spec = load_spec(alpaca_spec(tmp_path, str(model)))
    from jessy_adapters.backend import TranslationRefused

    with pytest.raises(TranslationRefused) as err:
        load_registry().get("mlx").translate(spec, RunInputs(str(model), prepare(
            spec, tmp_path / "p")), tmp_path / "a", BackendEnv("mlx"))
    assert [r.spec_path for r in err.value.refusals] == ["/model/chat_template"]


def test_the_modelfile_deploys_the_trained_prompt(tiny_model):
    text = modelfile_text("m.gguf", "alpaca", ALPACA_SYSTEM, {}, tiny_model)
    assert ('{{ if .System }}{{ .System }}\n\n{{ end }}### Instruction:\n{{ .Prompt }}\n\n'
            '### Response:\n{{ .Response }}<|im_end|>') in text
    assert 'PARAMETER stop "<|im_end|>"' in text and f'SYSTEM """{ALPACA_SYSTEM}"""' in text


def test_axolotls_alpaca_type_imports_as_the_alpaca_prompt(tmp_path):
    spec = import_file(IMPORT / "axolotl_llama3_lora_1b.yml").spec
    assert spec["data"]["format"] == "alpaca" and spec["model"]["chat_template"] == "alpaca"


@pytest.mark.parametrize("template", ["alpaca", "default", "empty"])
def test_llamafactory_templates_that_are_no_spec_rendering_are_refused(template, tmp_path):
    source = yaml.safe_load((IMPORT / "llamafactory_llama3_lora_sft.yaml").read_text())
    source["template"] = template
    path = tmp_path / "lf.yaml"
    path.write_text(yaml.safe_dump(source))
    with pytest.raises(ImportRefused) as err:
        import_file(path, "llamafactory")
    assert "template" in str(err.value)


# --- the four trainers, for real ---------------------------------------------------------------

TRAINERS = ("mlx", "unsloth", "llamafactory", "axolotl")
AXOLOTL_ALPACA = """
import json, sys
from transformers import AutoTokenizer
from axolotl.prompters import AlpacaPrompter
from axolotl.prompt_tokenizers import AlpacaPromptTokenizingStrategy
tok = AutoTokenizer.from_pretrained(sys.argv[1])
strategy = AlpacaPromptTokenizingStrategy(AlpacaPrompter(None), tok, False, 128)
for line in open(sys.argv[2]):
    out = strategy.tokenize_prompt(json.loads(line))
    print(json.dumps({"input_ids": out["input_ids"], "labels": out["labels"]}))
"""
"""Axolotl's own `type: alpaca` tokenization (utils/data/wrappers.py _handle_alpaca_dataset)."""


@pytest.fixture(scope="module")
def alpaca_trained(tiny_model, tmp_path_factory):
    for backend in TRAINERS:
        require_env(backend)
    tmp = tmp_path_factory.mktemp("alpaca")
    rows = [r for r in ROWS if "system" not in r] * 3  # Axolotl's prompter has no system field
    spec = alpaca_spec(tmp, tiny_model, rows=rows)
    with pytest.MonkeyPatch.context() as mp:
        return tmp, {b: train(b, spec, tmp, mp) for b in TRAINERS}


@pytest.mark.backend("all trainers")
def test_every_trainer_fed_the_alpaca_prompt(alpaca_trained, tiny_model):
    from transformers import AutoTokenizer

    tmp, trained = alpaca_trained
    tok = AutoTokenizer.from_pretrained(tiny_model)
    rows = trained["mlx"]["rows"]["train"]
    for backend in TRAINERS[1:]:
        assert trained[backend]["rows"]["train"] == rows, backend
    texts = {tok.decode(ids) for ids, _ in rows}
    assert texts == {"".join(axolotl_text(r, "<|im_end|>")) for r in ROWS[:2]}
    for ids, labels in rows:  # the response and its EOS trained, nothing else
        trained_text = tok.decode([t for t, lab in zip(ids, labels, strict=True)
                                   if lab != IGNORE])
        assert trained_text in ("Teal.<|im_end|>", "chat<|im_end|>")

    # Axolotl's own alpaca tokenizer on the source rows gives the same rows
    source = tmp / "alpaca.jsonl"
    proc = subprocess.run([str(require_env("axolotl").python), "-c", AXOLOTL_ALPACA,
                           tiny_model, str(source)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    native = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    native_rows = {(tuple(r["input_ids"]), tuple([IGNORE, *r["labels"][1:]])) for r in native}
    assert native_rows == rows
