"""Runs inside the Unsloth environment: Unsloth's Python API with structured metrics.

Usage: python train_entry.py CONFIG.json

The config (written by translate.py) has one section per API call; each is passed through
as keyword arguments. Only the standard library and the backend's own packages may be
imported: jessy is not installed here.
"""

from __future__ import annotations

import json
import os
import sys

# jessy's runtime helpers (stdlib + transformers only), located by the runner.
sys.path.insert(0, os.environ["JESSY_RUNTIME_PATH"])
from hf_events import emit, events_callback  # noqa: E402


def main(config_path: str) -> int:
    with open(config_path) as fh:
        cfg = json.load(fh)

    import unsloth  # noqa: F401, I001  (before torch, transformers and trl, as Unsloth asks)
    import torch
    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer
    from unsloth import FastLanguageModel
    from unsloth.chat_templates import train_on_responses_only

    on_gpu = torch.cuda.is_available()
    emit({"type": "runtime", "unsloth": unsloth.__version__, "torch": torch.__version__,
          "device": "cuda" if on_gpu else "cpu", "threads": torch.get_num_threads()})

    load = dict(cfg["from_pretrained"])
    if load.get("dtype"):
        load["dtype"] = getattr(torch, load["dtype"])
    model, tokenizer = FastLanguageModel.from_pretrained(**load)
    data = cfg["data"]
    if data.get("chat_template"):
        tokenizer.chat_template = data["chat_template"]
    if cfg["peft"] is not None:
        model = FastLanguageModel.get_peft_model(model, **cfg["peft"])
    if data.get("init_adapter"):
        # another backend's checkpoint (PEFT): start from its LoRA weights
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        state = load_file(os.path.join(data["init_adapter"], "adapter_model.safetensors"))
        result = set_peft_model_state_dict(model, state)
        if getattr(result, "unexpected_keys", None):
            raise ValueError(f"init adapter does not fit: {result.unexpected_keys[:5]}")

    files = {"train": data["train"]}
    if data.get("validation"):
        files["validation"] = data["validation"]
    raw = load_dataset("json", data_files=files)

    def to_inputs(row):
        """Chat rows as the tokenizer's template tokenises them (what MLX and jessy eval feed
        the model): as token ids, so TRL neither re-tokenises nor appends an EOS after the
        template's own end of turn. Text rows stay text (TRL appends EOS, as mlx-lm does)."""
        if data["format"] == "text":
            return {"text": row["text"]}
        return {"input_ids": tokenizer.apply_chat_template(row["messages"], tokenize=True,
                                                           return_dict=False)}

    dataset = raw.map(to_inputs, remove_columns=raw["train"].column_names)

    sft = dict(cfg["sft"])
    if sft.get("eval_steps") is None:
        sft.pop("eval_steps", None)
    trainer = SFTTrainer(model=model, processing_class=tokenizer,
                         train_dataset=dataset["train"],
                         eval_dataset=dataset.get("validation"),
                         args=SFTConfig(**sft), callbacks=[events_callback(torch)])
    if data["train_on_responses_only"]:
        # the chat family's markers (translate.py); none: Unsloth finds them in the template
        instruction, response = data.get("markers") or (None, None)
        trainer = train_on_responses_only(trainer, instruction_part=instruction,
                                          response_part=response)
    trainer.train(resume_from_checkpoint=data.get("resume_from_checkpoint"))
    # a PEFT model saves its adapter; a fully fine-tuned one (peft: null) the whole model
    out_dir = os.path.join(sft["output_dir"], "adapter" if cfg["peft"] is not None else "model")
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
