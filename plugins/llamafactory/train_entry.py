"""Runs inside the LLaMA-Factory environment: its own trainer (run_exp) with structured metrics.

Usage: python train_entry.py CONFIG.yaml

`llamafactory-cli train CONFIG.yaml` runs the same config through the same run_exp; this
entry only adds a TrainerCallback that prints one JSON event per log line (instead of
tailing trainer_log.jsonl). Only the standard library and the backend's packages may be
imported: jessy is not installed here.
"""

from __future__ import annotations

import os
import sys

# jessy's runtime helpers (stdlib + transformers only), located by the runner.
sys.path.insert(0, os.environ["JESSY_RUNTIME_PATH"])
from hf_events import emit, events_callback  # noqa: E402


def register_template(template: dict) -> None:
    """A template jessy's translation describes (translate.alpaca_registration), added to
    LLaMA-Factory's registry under its name; {"special": name} is a token slot. A turn's
    adjacent text slots are encoded as one string (LLaMA-Factory encodes each alone), so the
    prompt's tokens are those of the whole prompt, as Axolotl's alpaca prompter and the
    tokenizer-driven backends encode it (SmolLM2: "request.\n\n###" is ".", "\n", "\n",
    "###" in one piece, ".", "\n\n", "###" in two)."""
    from llamafactory.data.formatter import EmptyFormatter, StringFormatter
    from llamafactory.data.template import Template
    from llamafactory.data.template import register_template as register

    class JoinedTemplate(Template):
        def _convert_elements_to_ids(self, tokenizer, elements):
            joined: list = []
            for element in elements:
                if isinstance(element, str) and joined and isinstance(joined[-1], str):
                    joined[-1] += element
                else:
                    joined.append(element)
            return super()._convert_elements_to_ids(tokenizer, joined)

    def slots(items: list) -> list:
        return [{item["special"]} if isinstance(item, dict) else item for item in items]

    prefix = slots(template["format_prefix"])
    register(name=template["name"],
             format_user=StringFormatter(slots=slots(template["format_user"])),
             format_assistant=StringFormatter(slots=slots(template["format_assistant"])),
             format_system=StringFormatter(slots=slots(template["format_system"])),
             format_prefix=EmptyFormatter(slots=prefix) if prefix else None,
             default_system=template["default_system"], template_class=JoinedTemplate)


def main(config_path: str) -> int:
    import yaml

    with open(config_path) as fh:
        cfg = yaml.safe_load(fh)

    import torch

    import llamafactory
    from llamafactory.train.tuner import run_exp

    emit({"type": "runtime", "llamafactory": llamafactory.__version__,
          "torch": torch.__version__, "device": "cuda" if torch.cuda.is_available() else "cpu",
          "threads": torch.get_num_threads()})
    if cfg.get("jessy_template"):
        register_template(cfg.pop("jessy_template"))
    run_exp(cfg, callbacks=[events_callback(torch)])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
