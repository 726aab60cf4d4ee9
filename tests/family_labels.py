"""Does a backend train exactly the assistant responses and the family's end-of-turn token?

For the rows a backend fed its model (JESSY_CAPTURE_ROWS: one JSON line {"split", "input_ids",
"labels"} per row, labels aligned with input_ids, -100 = not trained): every trained span must
be one response, preceded by what the family writes before a response (the tail of its
prompt format, e.g. "<|im_end|>\\n<|im_start|>assistant\\n") and ending with its end-of-turn
token, nothing after it. The training matrix calls `label_problems` on each backend's capture.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from jessy_adapters.templates import TURN_FORMATS

IGNORE = -100


def trained_spans(labels: list[int]) -> list[tuple[int, int]]:
    """[start, stop) runs of trained positions; position 0 never trains (nothing predicts it)."""
    spans: list[tuple[int, int]] = []
    start = None
    for p, label in enumerate([IGNORE, *labels[1:], IGNORE]):
        if label != IGNORE and start is None:
            start = p
        elif label == IGNORE and start is not None:
            spans.append((start, p))
            start = None
    return spans


def label_problems(capture: Path, tokenizer, family: str,
                   responses: Iterable[str] | None = None) -> list[str]:
    """Every way the capture's rows train something other than response + end of turn; [] when
    none. With `responses` (the data's answers), each trained text must be one of them."""
    fmt = TURN_FORMATS[family]
    end_id = tokenizer.convert_tokens_to_ids(fmt["end"])
    opener = fmt["prompt"].split("{instruction}")[1]
    # Qwen3's template writes the empty think block after the last question only
    openers = (opener, opener.replace("<think>\n\n</think>\n\n", ""))
    lead = fmt.get("lead", "")
    expected = None if responses is None else {lead + r for r in responses}
    problems: list[str] = []
    for n, line in enumerate(capture.read_text().splitlines(), 1):
        row = json.loads(line)
        ids, labels = row["input_ids"], row["labels"]
        where = f"{capture.name}:{n} ({row['split']})"
        if len(ids) != len(labels) or any(lab not in (IGNORE, t)
                                          for t, lab in zip(ids, labels, strict=True)):
            problems.append(f"{where}: labels are not the input ids at trained positions")
            continue
        spans = trained_spans(labels)
        if not spans:
            problems.append(f"{where}: nothing trained")
        for start, stop in spans:
            text = tokenizer.decode(ids[start:stop], skip_special_tokens=False)
            if ids[stop - 1] != end_id or end_id in ids[start:stop - 1]:
                problems.append(f"{where}: trains {text!r}, which does not end at {fmt['end']}")
                continue
            before = tokenizer.decode(ids[:start], skip_special_tokens=False)
            if not before.endswith(openers):
                problems.append(f"{where}: trains {text!r} after {before[-40:]!r}, not after "
                                f"the assistant's opener {opener!r}")
            answer = tokenizer.decode(ids[start:stop - 1], skip_special_tokens=False)
            if expected is not None and answer not in expected:
                problems.append(f"{where}: trains {answer!r}, not a response of the data")
    return problems
