"""Chat templates a spec can name, for models whose tokenizer lacks the right one."""

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Gemma has no system role: the system text is folded into the first user turn.
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

TEMPLATES = {"chatml": CHATML, "gemma": GEMMA}


def template_for(name: str) -> str | None:
    """None means: keep the tokenizer's own template ("auto")."""
    return TEMPLATES.get(name)


def _template_text(model_path: str) -> str:
    import json
    from pathlib import Path

    text = ""
    cfg = Path(model_path) / "tokenizer_config.json"
    if cfg.is_file():
        try:
            template = json.loads(cfg.read_text()).get("chat_template")
        except (json.JSONDecodeError, AttributeError):
            template = None
        text += template if isinstance(template, str) else ""
    jinja = Path(model_path) / "chat_template.jinja"
    if jinja.is_file():
        text += jinja.read_text(errors="replace")
    return text


def default_system_prompt(model_path: str) -> str | None:
    """The system prompt a ChatML tokenizer template adds to rows that have none (SmolLM2:
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face"), so backends that
    render ChatML themselves (LLaMA-Factory's `chatml`, Axolotl's format strings) train on the
    same text as the tokenizer-driven ones (MLX, Unsloth) and as `jessy eval`."""
    import re

    match = re.search(r"<\|im_start\|>system(?:\n|\\n)([^'\"{}<+]+?)<\|im_end\|>",
                      _template_text(model_path))
    return match.group(1) if match else None


def chat_family(model_path: str, choice: str = "auto") -> str | None:
    """The chat format a model speaks: "chatml", "gemma", "llama3", or None when unknown.

    Read from the spec's choice, else from the tokenizer's own template (tokenizer_config.json
    or chat_template.jinja), without loading a tokenizer.
    """
    if choice in TEMPLATES:
        return choice
    text = _template_text(model_path)
    if "<|im_start|>" in text:
        return "chatml"
    if "<start_of_turn>" in text:
        return "gemma"
    if "<|start_header_id|>" in text:
        return "llama3"
    return None


# Single-turn prompt formats per family, as str.format strings over {system} and {instruction},
# and what closes the assistant's turn. These match CHATML/GEMMA above and Llama-3's template.
TURN_FORMATS = {
    "chatml": {"system": "<|im_start|>system\n{system}<|im_end|>\n",
               "prompt": "<|im_start|>user\n{instruction}<|im_end|>\n<|im_start|>assistant\n",
               "end": "<|im_end|>"},
    "gemma": {"system": "{system}\n\n",  # no system role: folded into the user turn
              "prompt": "<start_of_turn>user\n{instruction}<end_of_turn>\n<start_of_turn>model\n",
              "end": "<end_of_turn>"},
    "llama3": {"system": "<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>",
               "prompt": "<|start_header_id|>user<|end_header_id|>\n\n{instruction}<|eot_id|>"
                         "<|start_header_id|>assistant<|end_header_id|>\n\n",
               "end": "<|eot_id|>"},
}


def trained_turn_end(spec, inputs) -> str | None:
    """The token that closes a trained response (ChatML's <|im_end|>, Gemma's <end_of_turn>,
    Llama-3's <|eot_id|>), when the spec trains responses only: every backend trains the
    response and this token, and nothing its template adds after it (e.g. a newline)."""
    if inputs.data.format == "text" or not spec["data"]["train_on_responses_only"]:
        return None
    family = chat_family(inputs.model_path, spec["model"]["chat_template"])
    return TURN_FORMATS[family]["end"] if family in TURN_FORMATS else None
