"""Runs inside LLaMA-Factory's environment (tests/test_packing.py): LLaMA-Factory's own data
pipeline and collator on configs jessy translated, without training.

    python packing_driver.py count CASES.json    # per config: the packed sequences it makes
    python packing_driver.py losses CASES.json   # per config: each row's loss on the base model

CASES.json: {"runtime": jessy's runtime folder (hf_events), "turn_end": the end-of-turn token
or null, "configs": {name: llamafactory.yaml}}. Prints one JSON object on the last line.

`losses` builds each config's training set with get_dataset (rows packed by its greedy
knapsack when the config packs), collates it with the SFT collator run_sft builds (the
block-diagonal 4D mask under neat_packing), fixes the labels with jessy's own batch observer
(the end-of-turn cut and the first token of each packed row, as in a real run), runs the base
model forward in eval mode and returns, for every row, its trained tokens and their summed
cross-entropy, keyed by the row's token ids. Rows are told apart by the dataset itself
(packing_params' sequence boundaries, or the position ids restarting at 0), not by the
observer's reading of the mask.
"""

from __future__ import annotations

import json
import os
import sys

IGNORE = -100


def load(path: str):
    import yaml
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    with open(path) as fh:
        cfg = yaml.safe_load(fh)
    model_args, data_args, training_args, finetuning_args, _ = get_train_args(cfg)
    tokenizer_module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
    module = get_dataset(template, model_args, data_args, training_args, stage="sft",
                         **tokenizer_module)
    return (model_args, data_args, training_args, finetuning_args, tokenizer_module, template,
            module["train_dataset"])


def boundaries(feature: dict) -> list[tuple[int, int]]:
    """The rows of one dataset feature, as (start, end) positions, padding left out."""
    params = feature.get("packing_params")
    labels = feature["labels"]
    if params:
        bounds = params["sequence_boundaries"]
        spans = list(zip(bounds[:-1], bounds[1:], strict=True))
        return spans[:-1] if params.get("right_padding_length") else spans
    positions = feature.get("position_ids")
    if positions is None:
        return [(0, len(labels))]
    starts = [p for p, pos in enumerate(positions) if pos == 0] + [len(positions)]
    spans = list(zip(starts[:-1], starts[1:], strict=True))
    return [(a, b) for a, b in spans
            if any(lab != IGNORE for lab in labels[a:b]) or b - a > 1]


def row_losses(path: str, runtime: str, turn_end: str | None, batch_size: int) -> dict:
    import torch
    from llamafactory.data import SFTDataCollatorWith4DAttentionMask
    from llamafactory.model import load_model

    sys.path.insert(0, runtime)
    from hf_events import BatchObserver

    model_args, data_args, training_args, finetuning_args, tokenizer_module, template, data \
        = load(path)
    tokenizer = tokenizer_module["tokenizer"]
    model = load_model(tokenizer, model_args, finetuning_args, is_trainable=False)
    model.eval()
    collator = SFTDataCollatorWith4DAttentionMask(
        template=template, model=model, pad_to_multiple_of=8, label_pad_token_id=IGNORE,
        block_diag_attn=model_args.block_diag_attn, neat_packing=data_args.neat_packing,
        attn_implementation=getattr(model.config, "_attn_implementation", None),
        compute_dtype=model_args.compute_dtype, **tokenizer_module)
    observer = BatchObserver(torch)
    if turn_end:
        observer.end_id = tokenizer.convert_tokens_to_ids(turn_end)
    features = [dict(f) for f in data]
    rows: list[dict] = []
    packed = 0
    for start in range(0, len(features), batch_size):
        chunk = features[start:start + batch_size]
        spans = [boundaries(f) for f in chunk]
        packed += sum(1 for s in spans if len(s) > 1)
        batch = collator([dict(f) for f in chunk])
        observer._fix(batch, "train")  # jessy's label rules, as in a real run
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")
                  if k in batch}
        with torch.no_grad():
            logits = model(**inputs).logits.float()
        targets = batch["labels"][:, 1:]
        losses = torch.nn.functional.cross_entropy(
            logits[:, :-1].transpose(1, 2), targets, ignore_index=IGNORE, reduction="none")
        for b, row_spans in enumerate(spans):
            ids = batch["input_ids"][b].tolist()
            for a, e in row_spans:
                # target t (label position t + 1) belongs to the row holding position t + 1
                picked = [t for t in range(a, e - 1) if targets[b, t] != IGNORE]
                rows.append({"ids": ids[a:e], "tokens": len(picked),
                             "loss_sum": float(sum(losses[b, t] for t in picked)),
                             "sequence": start + b})
    return {"rows": rows, "sequences": len(features), "packed_sequences": packed,
            "attn_implementation": getattr(model.config, "_attn_implementation", None),
            "mask_dims": batch["attention_mask"].dim() if "attention_mask" in batch else None}


def main(mode: str, cases_path: str) -> int:
    os.environ.setdefault("DISABLE_VERSION_CHECK", "1")
    with open(cases_path) as fh:
        cases = json.load(fh)
    out = {}
    for name, path in cases["configs"].items():
        if mode == "count":
            data = load(path)[-1]
            out[name] = {"sequences": len(data),
                         "lengths": [len(f["input_ids"]) for f in data]}
        else:
            out[name] = row_losses(path, cases["runtime"], cases.get("turn_end"),
                                   cases.get("batch_size", 2))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
