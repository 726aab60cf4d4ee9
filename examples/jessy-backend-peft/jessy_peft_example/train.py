"""The training the translation describes: transformers' Trainer, PEFT LoRA, jessy's events.

Usage: python train.py CONFIG.json  (backend.py writes the config; jessy runs this file)

Like every backend entry script it imports only the standard library, its own libraries
(torch, transformers, peft) and jessy's runtime helpers, found through JESSY_RUNTIME_PATH:
never jessy_adapters, so it would run unchanged in a venv of its own.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys

# jessy's runtime helpers (stdlib + transformers only), located by the runner.
sys.path.insert(0, os.environ["JESSY_RUNTIME_PATH"])
from hf_events import IGNORE, emit, events_callback  # noqa: E402


def read_rows(path: str | None) -> list[dict]:
    if not path:
        return []
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _shared(a: list[int], b: list[int]) -> int:
    """How many leading tokens two token lists share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def encode(row: dict, tokenizer, data: dict, limit: int) -> dict:
    """A prepared row as input ids and labels. Chat rows are rendered by the tokenizer's
    chat template; with train_on_responses_only only the assistant turns are labelled (jessy's
    observer then cuts each after its end-of-turn token). Text rows train every token and end
    in EOS."""
    if data["format"] == "text":
        ids = tokenizer(row["text"])["input_ids"] + [tokenizer.eos_token_id]
        labels = list(ids)
    else:
        messages = row["messages"]

        def render(turns, prompt=False):
            return tokenizer.apply_chat_template(turns, tokenize=True, return_dict=False,
                                                 add_generation_prompt=prompt)

        ids = render(messages)
        labels = list(ids) if not data["train_on_responses_only"] else [IGNORE] * len(ids)
        if data["train_on_responses_only"]:
            for i, message in enumerate(messages):
                if message["role"] == "assistant":
                    start = _shared(render(messages[:i], prompt=True), ids)
                    end = _shared(render(messages[: i + 1]), ids)
                    labels[start:end] = ids[start:end]
    return {"input_ids": ids[:limit], "labels": labels[:limit]}


def collator(torch, pad_id: int):
    """Right-padding to the longest row of the batch; padding is masked and trains nothing."""
    def collate(rows: list[dict]) -> dict:
        width = max(len(r["input_ids"]) for r in rows)
        batch: dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": []}
        for r in rows:
            fill = width - len(r["input_ids"])
            batch["input_ids"].append(r["input_ids"] + [pad_id] * fill)
            batch["attention_mask"].append([1] * len(r["input_ids"]) + [0] * fill)
            batch["labels"].append(r["labels"] + [IGNORE] * fill)
        return {key: torch.tensor(value) for key, value in batch.items()}

    return collate


def load_model(torch, cfg: dict):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    m, args = cfg["model"], cfg["args"]
    tokenizer = AutoTokenizer.from_pretrained(m["path"], trust_remote_code=m["trust_remote_code"])
    if m["chat_template"]:
        tokenizer.chat_template = m["chat_template"]
    kwargs = {"dtype": m["dtype"] if m["dtype"] == "auto" else getattr(torch, m["dtype"]),
              "trust_remote_code": m["trust_remote_code"]}
    if m["attn_implementation"]:
        kwargs["attn_implementation"] = m["attn_implementation"]
    if m["load_in_4bit"]:
        if importlib.util.find_spec("bitsandbytes") is None:
            raise RuntimeError("method qlora needs bitsandbytes installed beside jessy "
                               "(pip install bitsandbytes)")
        from transformers import BitsAndBytesConfig

        compute = (torch.bfloat16 if args["bf16"] else torch.float16 if args["fp16"]
                   else torch.float32)
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute)
    model = AutoModelForCausalLM.from_pretrained(m["path"], **kwargs)
    if cfg["peft"] is None:
        return model, tokenizer
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if m["load_in_4bit"]:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=args.get("gradient_checkpointing", False))
    model = get_peft_model(model, LoraConfig(**cfg["peft"]))
    if cfg["init_adapter"]:  # another backend's checkpoint (PEFT): start from its weights
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        state = load_file(os.path.join(cfg["init_adapter"], "adapter_model.safetensors"))
        result = set_peft_model_state_dict(model, state)
        if getattr(result, "unexpected_keys", None):
            raise ValueError(f"init adapter does not fit: {result.unexpected_keys[:5]}")
    return model, tokenizer


def main(config_path: str) -> int:
    with open(config_path) as fh:
        cfg = json.load(fh)

    import peft
    import torch
    import transformers
    from transformers import Trainer, TrainingArguments

    emit({"type": "runtime", "trainer": "transformers Trainer + peft",
          "torch": torch.__version__, "transformers": transformers.__version__,
          "peft": peft.__version__, "device": "cuda" if torch.cuda.is_available() else "cpu",
          "threads": torch.get_num_threads()})
    model, tokenizer = load_model(torch, cfg)
    data, limit = cfg["data"], cfg["model"]["max_seq_length"]
    train = [encode(r, tokenizer, data, limit) for r in read_rows(data["train"])]
    valid = [encode(r, tokenizer, data, limit) for r in read_rows(data["validation"])]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
        else tokenizer.eos_token_id
    trainer = Trainer(model=model, args=TrainingArguments(**cfg["args"]),
                      train_dataset=train, eval_dataset=valid or None,
                      data_collator=collator(torch, pad_id), processing_class=tokenizer,
                      callbacks=[events_callback(torch)])
    trainer.train(resume_from_checkpoint=cfg["resume_from_checkpoint"])
    # a PEFT model saves its adapter; a fully fine-tuned one (peft: null) the whole model
    out = os.path.join(cfg["args"]["output_dir"], "adapter" if cfg["peft"] else "model")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
