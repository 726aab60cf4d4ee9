"""Every chat family on every backend, without training: the tiny model of each family builds,
loads and renders its family's format; the family is detected, a contradicting name refused;
every backend's translation gets the family's native template, format strings or markers, and
those give the same tokens as the template itself."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner
from conftest import write_spec
from family_labels import label_problems
from jinja2.exceptions import TemplateError

from jessy_adapters.backend import RunInputs, TranslationRefused
from jessy_adapters.cli import cli
from jessy_adapters.data import prepare
from jessy_adapters.envs import BackendEnv
from jessy_adapters.models import BUILTINS, READY, ModelError, resolve_model
from jessy_adapters.spec import load_spec
from jessy_adapters.templates import (
    NON_THINKING,
    TEMPLATES,
    TURN_FORMATS,
    chat_family,
    family_of,
    family_refusal,
    training_template,
    upstream_template,
)
from jessy_adapters.tiny_models import CORPUS, TINY, build_tiny, corpus_from_examples
from jessy_axolotl.backend import AxolotlBackend
from jessy_llamafactory.backend import LlamaFactoryBackend
from jessy_mlx.backend import MLXBackend
from jessy_unsloth.backend import UnslothBackend

FAMILIES = sorted(TINY)
CHAT = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
RENDERED = {
    "llama3": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\nyo<|eot_id|>",
    "gemma": "<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\nyo<end_of_turn>\n",
    "gemma3": "<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\nyo<end_of_turn>\n",
    "qwen2": "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
             "assistant.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
             "yo<|im_end|>\n",
    "qwen3": "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
             "yo<|im_end|>\n",
    "mistral": "<s>[INST] hi[/INST] yo</s>",
    "phi3": "<|user|>\nhi<|end|>\n<|assistant|>\nyo<|end|>\n<|endoftext|>",
}
"""The upstream templates' own rendering of CHAT, as each model's card shows it."""
LLAMAFACTORY = {"llama3": ("llama3", {}), "gemma": ("gemma2", {}), "gemma3": ("gemma", {}),
                "qwen2": ("qwen", {}), "qwen3": ("qwen3", {"enable_thinking": False}),
                "mistral": ("mistral", {}), "phi3": ("phi", {})}
JESSY_RENDERS = {"gemma", "mistral", "qwen3"}
"""Families whose tokenizer-driven backends render with jessy's template under auto."""


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {family: build_tiny(family, root / family) for family in FAMILIES}


def _tokenizer(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_model_loads_and_renders_its_family(tiny, family):
    import torch
    from transformers import AutoModelForCausalLM

    tok = _tokenizer(tiny[family])
    model = AutoModelForCausalLM.from_pretrained(tiny[family])
    assert type(model).__name__ == TINY[family].architecture
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 64
    assert tok.chat_template == upstream_template(family)
    assert tok.apply_chat_template(CHAT, tokenize=False) == RENDERED[family]
    ids = tok.apply_chat_template(CHAT, return_dict=False)
    assert tok.decode(ids) == RENDERED[family]  # every marker is one token, decoded whole
    assert model(torch.tensor([ids])).logits.shape == (1, len(ids), len(tok))
    end = tok.convert_tokens_to_ids(TURN_FORMATS[family]["end"])
    assert end in model.generation_config.eos_token_id  # generation stops at the turn's end


def test_gemma2_keeps_its_soft_capping_and_refuses_a_system_turn_jessy_folds(tiny):
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(tiny["gemma"])
    assert (cfg.attn_logit_softcapping, cfg.final_logit_softcapping) == (50.0, 30.0)
    assert cfg.query_pre_attn_scalar == cfg.head_dim == 16
    system = [{"role": "system", "content": "Be brief."}, *CHAT]
    tok = _tokenizer(tiny["gemma"])
    with pytest.raises(TemplateError, match="System role not supported"):
        tok.apply_chat_template(system, tokenize=False)
    folded = tok.apply_chat_template(system, chat_template=TEMPLATES["gemma"], tokenize=False)
    assert folded == _tokenizer(tiny["gemma3"]).apply_chat_template(system, tokenize=False)
    assert folded.startswith("<bos><start_of_turn>user\nBe brief.\n\nhi<end_of_turn>")


def test_gemma_sentencepiece_model_and_tokenizer_json_agree(tiny):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(tiny["gemma"] / "tokenizer.model"))
    tok = _tokenizer(tiny["gemma"])
    turns = RENDERED["gemma"].removeprefix("<bos>")  # control pieces are never read from text
    lines = CORPUS.read_text().splitlines()[:200] + ["a\n\nb  c 1234 ü", turns]
    assert [sp.encode(x) for x in lines] == [tok(x, add_special_tokens=False)["input_ids"]
                                             for x in lines]


def test_the_shipped_corpus_is_the_example_data(tmp_path):
    from conftest import EXAMPLES

    assert CORPUS.read_text() == corpus_from_examples(EXAMPLES)


def test_chat_family_detects_each_family(tiny):
    assert {f: chat_family(str(tiny[f])) for f in FAMILIES} == {f: f for f in FAMILIES}
    chat = [f for f in TEMPLATES if f != "alpaca"]
    assert {f: family_of(TEMPLATES[f]) for f in chat} == {f: f for f in chat}
    assert family_of(TEMPLATES["alpaca"]) is None  # never detected: named only
    smollm = "{{ '<|im_start|>system\\nYou are SmolLM<|im_end|>\\n' }}<|im_start|>"
    assert family_of(smollm) == "chatml"
    llama2 = "[INST] <<SYS>>\\n{{ system }}\\n<</SYS>>\\n\\n{{ user }} [/INST]"
    mistral_v1 = "{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    assert family_of(llama2) is None and family_of(mistral_v1) is None


def test_a_name_that_contradicts_the_tokenizer_is_refused_naming_both(tiny, tmp_path,
                                                                      toy_data):
    refusal = family_refusal(str(tiny["qwen2"]), "gemma")
    assert refusal.spec_path == "/model/chat_template"
    assert "gemma" in refusal.reason and "qwen2" in refusal.reason
    # the same special tokens: allowed
    assert family_refusal(str(tiny["qwen3"]), "chatml") is None
    assert family_refusal(str(tiny["gemma"]), "gemma3") is None
    assert family_refusal(str(tiny["phi3"]), "auto") is None
    for backend in (MLXBackend(), UnslothBackend(), LlamaFactoryBackend(), AxolotlBackend()):
        with pytest.raises(TranslationRefused) as err:
            _translate(backend, tmp_path, tiny["llama3"], toy_data, "  chat_template: mistral\n")
        assert [r.spec_path for r in err.value.refusals] == ["/model/chat_template"], backend


def _translate(backend, tmp_path, model, data, model_extra=""):
    spec = load_spec(write_spec(tmp_path / "s.yaml", f"""\
model:
  name_or_path: {model}
{model_extra}data:
  train: {data}
  validation_split: 0.25
  system_prompt: You are Jessy.
"""))
    prepared = prepare(spec, tmp_path / "data")
    out = backend.translate(spec, RunInputs(str(model), prepared), tmp_path / backend.name,
                            BackendEnv(backend.name, tmp_path / "env"))
    return out, prepared


def _first_row(prepared) -> list[dict]:
    return json.loads(prepared.train.read_text().splitlines()[0])["messages"]


@pytest.mark.parametrize("family", FAMILIES)
def test_tokenizer_driven_backends_render_the_family(tiny, family, tmp_path, toy_data):
    """MLX and Unsloth get the template jessy renders with (or none: the tokenizer's own), the
    family's end of turn and response markers; the prompt MLX masks is a prefix of the row's
    tokens, and what follows is the response and the end of turn."""
    model = tiny[family]
    mlx, prepared = _translate(MLXBackend(), tmp_path, model, toy_data)
    cfg = yaml.safe_load(mlx.files["mlx_lora.yaml"])
    template = cfg.get("jessy_chat_template")
    assert (template is not None) == (family in JESSY_RENDERS)
    if family == "qwen3":
        assert template == NON_THINKING + upstream_template("qwen3")
    fmt = TURN_FORMATS[family]
    assert cfg["jessy_turn_end"] == fmt["end"] and cfg["mask_prompt"] is True
    unsloth = json.loads(_translate(UnslothBackend(), tmp_path, model, toy_data)[0]
                         .files["unsloth_config.json"])["data"]
    assert unsloth["chat_template"] == template

    tok = _tokenizer(model)
    messages = _first_row(prepared)
    full = tok.apply_chat_template(messages, chat_template=template, return_dict=False)
    prompt = tok.apply_chat_template(messages[:-1], chat_template=template,
                                     add_generation_prompt=True, return_dict=False)
    assert full[:len(prompt)] == prompt
    trained = tok.decode(full[len(prompt):], skip_special_tokens=False)
    answer = fmt.get("lead", "") + messages[-1]["content"] + fmt["end"]
    assert trained.startswith(answer), (trained, answer)
    rendered = tok.apply_chat_template(messages, chat_template=template, tokenize=False)
    instruction, response = unsloth["markers"]
    assert -1 < rendered.find(instruction) < rendered.find(messages[1]["content"])
    assert response + answer in rendered


@pytest.mark.parametrize("family", FAMILIES)
def test_llamafactory_gets_the_native_template(tiny, family, tmp_path, toy_data):
    out, _ = _translate(LlamaFactoryBackend(), tmp_path, tiny[family], toy_data)
    cfg = yaml.safe_load(out.files["llamafactory.yaml"])
    name, keys = LLAMAFACTORY[family]
    assert cfg["template"] == name and all(cfg[k] == v for k, v in keys.items())
    default = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    assert cfg.get("default_system") == (default if family == "qwen2" else None)


def test_llamafactory_trains_gemma2_prompts_with_gemma(tiny, tmp_path, toy_data):
    out, _ = _translate(LlamaFactoryBackend(), tmp_path, tiny["gemma"], toy_data)
    assert yaml.safe_load(out.files["llamafactory.yaml"])["template"] == "gemma2"
    spec = f"data:\n  train_on_responses_only: false\n  train: {toy_data}\n"
    path = write_spec(tmp_path / "p.yaml", f"model:\n  name_or_path: {tiny['gemma']}\n{spec}")
    loaded = load_spec(path)
    out = LlamaFactoryBackend().translate(loaded, RunInputs(str(tiny["gemma"]),
                                                            prepare(loaded, tmp_path / "d")),
                                          tmp_path / "lf", BackendEnv("llamafactory"))
    assert yaml.safe_load(out.files["llamafactory.yaml"])["template"] == "gemma"
    assert any("refuses train_on_prompt" in n for n in out.notes)


@pytest.mark.parametrize("family", FAMILIES)
def test_axolotl_format_strings_give_the_templates_tokens(tiny, family, tmp_path, toy_data):
    """Axolotl tokenizes a format-string row's prompt and response apart; together they must be
    the tokens of the template's own rendering, up to the end of turn. Phi-3 rows go through
    Axolotl's chat_template type, which trains its end of turn, not the EOS after it."""
    model = tiny[family]
    out, prepared = _translate(AxolotlBackend(), tmp_path, model, toy_data)
    cfg = yaml.safe_load(out.files["axolotl.yaml"])
    block, fmt = cfg["datasets"][0], TURN_FORMATS[family]
    template = training_template(str(model), "auto")
    if family == "phi3":
        assert block["type"] == "chat_template" and cfg["eot_tokens"] == [fmt["end"]]
        assert (block["train_on_eot"], block["train_on_eos"]) == ("turn", "none")
        assert "chat_template_jinja" not in block and template is None
        return
    assert block["type"]["format"] == fmt["prompt"] and "eot_tokens" not in cfg
    row = json.loads(out.files["data/axolotl_train.jsonl"].splitlines()[0])
    if fmt.get("fold"):
        assert row["system"] == "" and row["instruction"].startswith("You are Jessy.\n\n")
    tok = _tokenizer(model)
    system = block["type"]["system_format"].format(system=row["system"]) if row["system"] else ""
    prompt_ids = tok(system + block["type"]["format"].format(instruction=row["instruction"])
                     )["input_ids"]
    response_ids = tok(row["output"], add_special_tokens=False)["input_ids"]
    full = tok.apply_chat_template(_first_row(prepared), chat_template=template,
                                   return_dict=False)
    assert prompt_ids + response_ids == full[:len(prompt_ids) + len(response_ids)]
    assert response_ids[-1] == tok.convert_tokens_to_ids(fmt["end"])


LF_ENCODE = """\
import json, sys
from transformers import AutoTokenizer
from llamafactory.data.template import get_template_and_fix_tokenizer
from llamafactory.hparams import DataArguments
for case in json.loads(sys.argv[1]):
    tok = AutoTokenizer.from_pretrained(case.pop("model"))
    messages = case.pop("messages")
    template = get_template_and_fix_tokenizer(tok, DataArguments(**case))
    pairs = template.encode_multiturn(tok, messages[1:], messages[0]["content"])
    print(json.dumps({"ids": [t for s, r in pairs for t in s + r], "prompt": len(pairs[0][0])}))
"""


@pytest.fixture(scope="module")
def lf_env():
    from conftest import require_env

    return require_env("llamafactory")


def test_llamafactory_encodes_every_family_as_the_template_renders_it(tiny, lf_env, tmp_path,
                                                                       toy_data):
    """LLaMA-Factory's own template code (no training): the same tokens as the template jessy
    renders with, and the same prompt length (what is masked), up to the end of turn."""
    import subprocess

    cases, expected = [], []
    for family in FAMILIES:
        (tmp_path / family).mkdir()
        out, prepared = _translate(LlamaFactoryBackend(), tmp_path / family, tiny[family],
                                   toy_data)
        cfg = yaml.safe_load(out.files["llamafactory.yaml"])
        messages = _first_row(prepared)
        cases.append({"model": str(tiny[family]), "messages": messages,
                      **{k: cfg[k] for k in ("template", "enable_thinking", "default_system")
                         if k in cfg}})
        tok, template = _tokenizer(tiny[family]), training_template(str(tiny[family]), "auto")
        full = tok.apply_chat_template(messages, chat_template=template, return_dict=False)
        prompt = tok.apply_chat_template(messages[:-1], chat_template=template,
                                         add_generation_prompt=True, return_dict=False)
        end = full.index(tok.convert_tokens_to_ids(TURN_FORMATS[family]["end"]), len(prompt))
        expected.append({"ids": full[:end + 1], "prompt": len(prompt)})
    proc = subprocess.run([str(lf_env.python), "-c", LF_ENCODE, json.dumps(cases)],
                          capture_output=True, text=True, timeout=300,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    for family, want, have in zip(FAMILIES, expected, got, strict=True):
        assert have["ids"][:len(want["ids"])] == want["ids"], family
        assert have["prompt"] == want["prompt"], family


def _capture(path, rows):
    path.write_text("".join(json.dumps({"split": "train", "input_ids": ids, "labels": labels})
                            + "\n" for ids, labels in rows))
    return path


def test_label_check_accepts_responses_and_catches_everything_else(tiny, tmp_path):
    """What the training matrix runs on every backend's capture of fed rows."""
    tok = _tokenizer(tiny["qwen3"])
    messages = [{"role": "user", "content": "What is your name?"},
                {"role": "assistant", "content": "My name is Jessy."}]
    full = tok.apply_chat_template(messages, return_dict=False)
    prompt = tok.apply_chat_template(messages[:1], chat_template=TEMPLATES["qwen3"],
                                     add_generation_prompt=True, return_dict=False)
    end = full.index(tok.convert_tokens_to_ids("<|im_end|>"), len(prompt)) + 1
    good = [t if len(prompt) <= p < end else -100 for p, t in enumerate(full)]
    responses = ["My name is Jessy."]
    ok = _capture(tmp_path / "ok.jsonl", [(full, good)])
    assert label_problems(ok, tok, "qwen3", responses) == []
    whole = [t if p >= 1 else -100 for p, t in enumerate(full)]
    think = [t if len(prompt) - 4 <= p < end else -100 for p, t in enumerate(full)]
    newline = [t if len(prompt) <= p < end + 1 else -100 for p, t in enumerate(full)]
    bad = _capture(tmp_path / "bad.jsonl", [(full, whole), (full, think), (full, newline),
                                            (full, [-100] * len(full))])
    problems = label_problems(bad, tok, "qwen3", responses)
    assert {p.split(":")[1].split(" ")[0] for p in problems} == {"1", "2", "3", "4"}, problems
    other = _capture(tmp_path / "other.jsonl", [(full, good)])
    assert label_problems(other, tok, "qwen3", ["Something else."])


def test_builtin_tiny_models_build_once_into_jessy_home(tmp_path, monkeypatch):
    monkeypatch.setenv("JESSY_HOME", str(tmp_path / "home"))
    path = resolve_model("builtin:tiny-gemma2")
    ready = json.loads((tmp_path / "home" / "models" / "tiny-gemma2" / READY).read_text())
    assert path.endswith("tiny-gemma2") and ready["version"] == BUILTINS["tiny-gemma2"][1]
    stamp = (tmp_path / "home" / "models" / "tiny-gemma2" / READY).stat().st_mtime_ns
    result = CliRunner().invoke(cli, ["model", "build", "tiny-gemma2"])
    assert result.exit_code == 0 and result.output.strip() == path
    assert (tmp_path / "home" / "models" / "tiny-gemma2" / READY).stat().st_mtime_ns == stamp
    assert chat_family(path) == "gemma"
    assert [p.name for p in (tmp_path / "home" / "models").iterdir()] == ["tiny-gemma2"]
    with pytest.raises(ModelError, match="tiny-qwen3"):
        resolve_model("builtin:tiny-gemma")
