"""Chat families jessy knows: how to detect each, the template it sets, its single-turn format.

A family is the chat format a model speaks (`model.chat_template`); `auto` reads it from the
tokenizer's own template. `alpaca` is the one rendering that is no chat format: the classic
Alpaca prompt text (Stanford Alpaca's, as Axolotl's `type: alpaca` writes it), for any model,
ending each response with the tokenizer's own EOS.

Every backend renders the same text for a family: tokenizer-driven backends (MLX, Unsloth,
Axolotl's chat_template rows) through `training_template`, the others through their native
template name (LLaMA-Factory; alpaca's is registered by jessy's entry) or jessy's format
strings (`turn_format`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .backend import Refusal

FAMILIES = ("chatml", "llama3", "gemma", "gemma3", "qwen2", "qwen3", "mistral", "phi3")
"""`gemma` is Gemma-2 (the name predates Gemma-3); `qwen2` is Qwen2.5."""

UPSTREAM = Path(__file__).with_name("model_templates")
"""Upstream chat templates, verbatim (model_templates/SOURCES.md says where each is from)."""

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Gemma has no system role: the system text opens the first user turn, as Gemma-3's template
# does it (Gemma-2's own template refuses a system turn).
GEMMA = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{% set system = messages[0]['content'] + '\\n\\n' %}{% set rest = messages[1:] %}"
    "{% else %}{% set system = '' %}{% set rest = messages %}{% endif %}"
    "{% for message in rest %}"
    "{% set role = 'model' if message['role'] == 'assistant' else 'user' %}"
    "{{ '<start_of_turn>' + role + '\\n' }}{% if loop.first %}{{ system }}{% endif %}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)

# Mistral v0.3's format; the system text opens the first user turn, as Mistral's own template
# renders a prompt (it drops the system turn of a conversation that ends with the answer).
MISTRAL = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{% set system = messages[0]['content'] + '\\n\\n' %}{% set rest = messages[1:] %}"
    "{% else %}{% set system = '' %}{% set rest = messages %}{% endif %}"
    "{% for message in rest %}"
    "{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + (system if loop.first else '') + message['content'] + '[/INST]' }}"
    "{% else %}{{ ' ' + message['content'] | trim + eos_token }}{% endif %}"
    "{% endfor %}"
)

# Qwen3 trains in its non-thinking form: what its template renders with enable_thinking=False
# (the prompt ends with an empty think block, which is never trained).
NON_THINKING = "{%- set enable_thinking = false %}"


ALPACA = "alpaca"
ALPACA_SYSTEM = ("Below is an instruction that describes a task. Write a response that "
                 "appropriately completes the request.")
ALPACA_INPUT_SYSTEM = ("Below is an instruction that describes a task, paired with an input "
                       "that provides further context. Write a response that appropriately "
                       "completes the request.")
"""Alpaca's two preambles (the system text): for rows without an input, and with one."""
ALPACA_INPUT = "\n\n### Input:\n"
"""What joins an alpaca row's input to its instruction in the Alpaca prompt (rendered through a
chat template instead, the two are joined by one newline, as LLaMA-Factory and Axolotl do)."""


def _alpaca_template(bos: bool) -> str:
    return (("{{ bos_token }}" if bos else "")
            + "{% if messages[0]['role'] == 'system' %}"
            "{% set system = messages[0]['content'] %}{% set rest = messages[1:] %}"
            "{% else %}{% set system = '" + ALPACA_SYSTEM + "' %}{% set rest = messages %}"
            "{% endif %}{{ system + '\\n\\n' }}"
            "{% for message in rest %}{% if message['role'] == 'user' %}"
            "{{ '### Instruction:\\n' + message['content'] + '\\n\\n### Response:\\n' }}"
            "{% else %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}")


def upstream_template(family: str) -> str:
    return (UPSTREAM / f"{family}.jinja").read_text()


JESSY_OWN = {"chatml": CHATML, "gemma": GEMMA, "mistral": MISTRAL}
"""Families whose named template is jessy's own; the others' is the upstream one."""


def _named(family: str) -> str:
    if family in JESSY_OWN:
        return JESSY_OWN[family]
    return (NON_THINKING if family == "qwen3" else "") + upstream_template(family)


TEMPLATES = {**{family: _named(family) for family in FAMILIES}, ALPACA: _alpaca_template(False)}
"""The template jessy sets when the spec names a family (alpaca's opens with the BOS token
where the tokenizer puts one before plain text: `training_template`)."""

OVERRIDES = {
    "gemma": ("jessy's gemma template", "Gemma-2's template refuses a system turn: jessy's "
              "folds it into the first user turn, as Gemma-3's does"),
    "mistral": ("jessy's mistral template", "Mistral v0.3's template drops the system turn of "
                "a conversation that ends with the answer: jessy's folds it into the first "
                "user turn"),
    "qwen3": ("the tokenizer's own template with enable_thinking=false",
              "the non-thinking form: the prompt ends with the empty think block"),
}
"""Families whose own template jessy replaces under `auto`: (what it renders with, why)."""

DETECTION = (
    ("qwen3", ("<|im_start|>", "<think>"), ()),
    ("qwen2", ("<|im_start|>", "<tool_call>"), ()),
    ("chatml", ("<|im_start|>",), ()),
    ("gemma3", ("<start_of_turn>", "first_user_prefix"), ()),
    ("gemma", ("<start_of_turn>",), ()),
    ("llama3", ("<|start_header_id|>",), ()),
    ("phi3", ("<|user|>", "<|end|>"), ()),
    ("mistral", ("[INST]", "[/INST]"), ("<<SYS>>", " [/INST]")),
)
"""(family, markers the template must contain, markers it must not), first match wins. Alpaca
is never detected: a tokenizer's own Alpaca-like template is its own text, rendered as is.
Mistral's excludes Llama-2 (<<SYS>>) and Mistral v0.1/v0.2 (a space before [/INST])."""

COMPATIBLE = ({"chatml", "qwen2"}, {"chatml", "qwen3"}, {"gemma", "gemma3"})
"""Named families that may replace a tokenizer's own: the same special tokens."""


def _tokenizer_config(model_path: str) -> dict:
    try:
        cfg = json.loads((Path(model_path) / "tokenizer_config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return cfg if isinstance(cfg, dict) else {}


def _token_text(token) -> str | None:
    token = token.get("content") if isinstance(token, dict) else token
    return token if isinstance(token, str) and token else None


def eos_token(model_path: str) -> str | None:
    """The tokenizer's EOS token as text (what `eos_token` is in its chat template)."""
    return _token_text(_tokenizer_config(model_path).get("eos_token"))


def _post_processor_bos(processor) -> str | None:
    if not isinstance(processor, dict):
        return None
    if processor.get("type") == "Sequence":
        return next(filter(None, map(_post_processor_bos, processor.get("processors", []))),
                    None)
    single = processor.get("single") if processor.get("type") == "TemplateProcessing" else None
    first = single[0] if isinstance(single, list) and single else {}
    return _token_text(first.get("SpecialToken", {}).get("id")) if isinstance(first, dict) \
        else None


def plain_text_bos(model_path: str) -> str | None:
    """The BOS token the tokenizer puts before plain text (Llama, Gemma, Mistral; not
    SmolLM2, Qwen or Phi-3), read from its files: `add_bos_token` where it says, else
    tokenizer.json's post-processor. Axolotl's alpaca prompt starts with it, so jessy's
    alpaca template writes it too."""
    cfg = _tokenizer_config(model_path)
    if isinstance(cfg.get("add_bos_token"), bool):
        return _token_text(cfg.get("bos_token")) if cfg["add_bos_token"] else None
    try:
        tokenizer = json.loads((Path(model_path) / "tokenizer.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return _post_processor_bos(tokenizer.get("post_processor")) if isinstance(
        tokenizer, dict) else None


def _template_text(model_path: str) -> str:
    text = ""
    template = _tokenizer_config(model_path).get("chat_template")
    text += template if isinstance(template, str) else ""
    jinja = Path(model_path) / "chat_template.jinja"
    if jinja.is_file():
        text += jinja.read_text(errors="replace")
    return text


def family_of(template: str) -> str | None:
    for family, needs, refuses in DETECTION:
        if all(m in template for m in needs) and not any(m in template for m in refuses):
            return family
    return None


def chat_family(model_path: str, choice: str = "auto") -> str | None:
    """The family a run trains in: the spec's choice, else the one the tokenizer's own template
    (tokenizer_config.json or chat_template.jinja) speaks, read without loading a tokenizer;
    None when unknown."""
    return choice if choice in TEMPLATES else family_of(_template_text(model_path))


def family_refusal(model_path: str, choice: str) -> Refusal | None:
    """A named family the tokenizer's own template contradicts (other special tokens)."""
    if choice == ALPACA:
        return None if eos_token(model_path) else Refusal(
            "/model/chat_template", "alpaca ends each response with the tokenizer's EOS token, "
                                    "and this tokenizer names none (tokenizer_config.json)")
    own = family_of(_template_text(model_path))
    if choice == "auto" or own is None or own == choice or {own, choice} in COMPATIBLE:
        return None
    return Refusal("/model/chat_template",
                   f"{choice} contradicts the tokenizer's own template, which is {own}; "
                   f"use auto or {own}")


def training_template(model_path: str, choice: str) -> str | None:
    """The template jessy sets on the tokenizer for backends that render rows with it (MLX,
    Unsloth, Axolotl's chat_template rows); None keeps the tokenizer's own."""
    if choice == ALPACA:
        return _alpaca_template(plain_text_bos(model_path) is not None)
    if choice in TEMPLATES:
        return TEMPLATES[choice]
    own = _template_text(model_path)
    family = family_of(own)
    if family == "qwen3":
        return NON_THINKING + own
    return TEMPLATES[family] if family in OVERRIDES else None


def template_summary(model_path: str, choice: str) -> str:
    """Which template tokenizer-driven backends render rows with, in words (records, docs)."""
    if choice == ALPACA:
        return "jessy's alpaca template (the classic Alpaca prompt, the tokenizer's EOS)"
    if choice in TEMPLATES:
        return f"jessy's {choice} template"
    family = family_of(_template_text(model_path))
    if family in OVERRIDES:
        return OVERRIDES[family][0]
    return "the tokenizer's own template" + (f" ({family})" if family else "")


def _rendered_template(model_path: str, choice: str) -> str:
    return training_template(model_path, choice) or _template_text(model_path)


def default_system_prompt(model_path: str, choice: str = "auto") -> str | None:
    """The system prompt a ChatML template adds to rows that have none (SmolLM2: "You are a
    helpful AI assistant named SmolLM, trained by Hugging Face"; Qwen2.5: "You are Qwen..."),
    so backends that render ChatML themselves (LLaMA-Factory's templates, Axolotl's format
    strings) train on the same text as the tokenizer-driven ones (MLX, Unsloth) and as
    `jessy eval`. Alpaca's is its preamble for rows without an input."""
    if chat_family(model_path, choice) == ALPACA:
        return ALPACA_SYSTEM
    match = re.search(r"<\|im_start\|>system(?:\n|\\n)([^'\"{}<+]+?)<\|im_end\|>",
                      _rendered_template(model_path, choice))
    return match.group(1) if match else None


def renders_dates(model_path: str, choice: str = "auto") -> bool:
    """Llama-3.1+ templates put today's date in the system turn: no fixed format string or
    native template name can write it, only the template itself."""
    text = _rendered_template(model_path, choice)
    return "strftime_now" in text or "Cutting Knowledge Date" in text


# Single-turn prompt formats per family, as str.format strings over {system} and {instruction};
# `end` closes the assistant's turn, `lead` is what the template writes before the response
# (part of the trained text), `after` what it writes after `end` (never trained; part of a
# packed row's length), `fold` means no system role (the system text opens the user
# turn). These match TEMPLATES above.
_CHATML_TURN = {"system": "<|im_start|>system\n{system}<|im_end|>\n",
                "prompt": "<|im_start|>user\n{instruction}<|im_end|>\n<|im_start|>assistant\n",
                "end": "<|im_end|>", "after": "\n"}
_GEMMA_TURN = {"system": "{system}\n\n", "fold": True,
               "prompt": "<start_of_turn>user\n{instruction}<end_of_turn>\n<start_of_turn>model\n",
               "end": "<end_of_turn>", "after": "\n"}
TURN_FORMATS = {
    "chatml": _CHATML_TURN,
    "qwen2": _CHATML_TURN,
    "qwen3": {**_CHATML_TURN, "prompt": _CHATML_TURN["prompt"] + "<think>\n\n</think>\n\n"},
    "gemma": _GEMMA_TURN,
    "gemma3": _GEMMA_TURN,
    "llama3": {"system": "<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>",
               "prompt": "<|start_header_id|>user<|end_header_id|>\n\n{instruction}<|eot_id|>"
                         "<|start_header_id|>assistant<|end_header_id|>\n\n",
               "end": "<|eot_id|>"},
    "mistral": {"system": "{system}\n\n", "fold": True, "prompt": "[INST] {instruction}[/INST]",
                "lead": " ", "end": "</s>"},
    "phi3": {"system": "<|system|>\n{system}<|end|>\n",
             "prompt": "<|user|>\n{instruction}<|end|>\n<|assistant|>\n", "end": "<|end|>",
             "after": "\n"},
}


_ALPACA_TURN = {"system": "{system}\n\n",
                "prompt": "### Instruction:\n{instruction}\n\n### Response:\n"}


def turn_format(family: str, model_path: str) -> dict:
    """The family's single-turn format (TURN_FORMATS); alpaca's ends with the model's EOS."""
    if family == ALPACA:
        return {**_ALPACA_TURN, "end": eos_token(model_path) or ""}
    return TURN_FORMATS[family]


def single_turn_formats() -> tuple[str, ...]:
    """Every rendering with a single-turn format: the chat families and alpaca."""
    return (*TURN_FORMATS, ALPACA)


def trained_turn_end(spec, inputs) -> str | None:
    """The token that closes a trained response (ChatML's <|im_end|>, Gemma's <end_of_turn>,
    Llama-3's <|eot_id|>), when the spec trains responses only: every backend trains the
    response and this token, and nothing its template adds after it (e.g. a newline)."""
    if inputs.data.format == "text" or not spec["data"]["train_on_responses_only"]:
        return None
    family = chat_family(inputs.model_path, spec["model"]["chat_template"])
    return turn_format(family, inputs.model_path)["end"] or None \
        if family in single_turn_formats() else None
