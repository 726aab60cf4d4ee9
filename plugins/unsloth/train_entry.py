"""Runs inside the Unsloth environment: Unsloth's Python API with structured metrics.

Usage: python train_entry.py CONFIG.json

The config (written by translate.py) has one section per API call; each is passed through
as keyword arguments. Only the standard library and the backend's own packages may be
imported: jessy is not installed here.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

EVENT_PREFIX = "JESSY_EVENT "

# Response markers per chat-template family, for train_on_responses_only.
MARKERS = {
    "<|im_start|>": ("<|im_start|>user\n", "<|im_start|>assistant\n"),
    "<start_of_turn>": ("<start_of_turn>user\n", "<start_of_turn>model\n"),
    "<|start_header_id|>": ("<|start_header_id|>user<|end_header_id|>\n\n",
                            "<|start_header_id|>assistant<|end_header_id|>\n\n"),
}


def emit(event: dict) -> None:
    print(EVENT_PREFIX + json.dumps(event), flush=True)


def peak_memory_gb(torch) -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB on Linux


def markers_for(template: str) -> tuple[str, str]:
    for key, pair in MARKERS.items():
        if key in (template or ""):
            return pair
    raise ValueError("train_on_responses_only: unknown chat template family; set "
                     "model.chat_template or data.train_on_responses_only: false")


def main(config_path: str) -> int:
    with open(config_path) as fh:
        cfg = json.load(fh)

    import torch
    from datasets import load_dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    import unsloth  # noqa: F401  (must be imported before transformers/trl)
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

    files = {"train": data["train"]}
    if data.get("validation"):
        files["validation"] = data["validation"]
    raw = load_dataset("json", data_files=files)

    def to_text(row):
        if data["format"] == "text":
            return {"text": row["text"]}
        return {"text": tokenizer.apply_chat_template(row["messages"], tokenize=False)}

    dataset = raw.map(to_text, remove_columns=raw["train"].column_names)

    class Events(TrainerCallback):
        def __init__(self):
            self.last = (time.monotonic(), 0)

        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
            event = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4),
                     "peak_memory_gb": round(peak_memory_gb(torch), 3)}
            if "loss" in logs:
                now, seen = time.monotonic(), int(state.num_input_tokens_seen or 0)
                then, seen_then = self.last
                if seen > seen_then and now > then:
                    event["tokens_per_second"] = (seen - seen_then) / (now - then)
                    event["trained_tokens"] = seen
                self.last = (now, seen)
                event.update(type="train", loss=float(logs["loss"]))
                if "learning_rate" in logs:
                    event["learning_rate"] = float(logs["learning_rate"])
                emit(event)
            elif "eval_loss" in logs:
                event.update(type="eval", eval_loss=float(logs["eval_loss"]))
                emit(event)

    sft = dict(cfg["sft"])
    if sft.get("eval_steps") is None:
        sft.pop("eval_steps", None)
    trainer = SFTTrainer(model=model, processing_class=tokenizer,
                         train_dataset=dataset["train"],
                         eval_dataset=dataset.get("validation"),
                         args=SFTConfig(**sft), callbacks=[Events()])
    if data["train_on_responses_only"]:
        instruction, response = markers_for(tokenizer.chat_template)
        trainer = train_on_responses_only(trainer, instruction_part=instruction,
                                          response_part=response)
    trainer.train(resume_from_checkpoint=data.get("resume_from_checkpoint"))
    adapter_dir = os.path.join(sft["output_dir"], "adapter")
    model.save_pretrained(adapter_dir)
    tokenizer.save_pretrained(adapter_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
