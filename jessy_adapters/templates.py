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


def chat_family(model_path: str, choice: str = "auto") -> str | None:
    """The chat format a model speaks: "chatml", "gemma", "llama3", or None when unknown.

    Read from the spec's choice, else from the tokenizer's own template (tokenizer_config.json
    or chat_template.jinja), without loading a tokenizer.
    """
    if choice in TEMPLATES:
        return choice
    from pathlib import Path

    text = ""
    for name in ("tokenizer_config.json", "chat_template.jinja"):
        f = Path(model_path) / name
        if f.is_file():
            text += f.read_text(errors="replace")
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
