"""The bundled evaluation sets stay apart from what the quickstart trains on: a sweep tunes on
jessy_dev.jsonl and the final figures come from jessy_heldout.jsonl, so neither may repeat a
training prompt, nor each other's (after normalising case and punctuation)."""

from __future__ import annotations

import json
import re
from pathlib import Path

EXAMPLES = Path(__file__).parents[1] / "examples"


def prompts(name: str) -> set[str]:
    return {re.sub(r"[^a-z0-9 ]", "", json.loads(line)["prompt"].lower()).strip()
            for line in (EXAMPLES / name).open()}


def facts(name: str) -> set[str]:
    return {json.loads(line)["fact"] for line in (EXAMPLES / name).open()}


def test_dev_and_held_out_sets_share_no_prompt_with_training_or_each_other():
    trained = prompts("jessy_persona.jsonl") | prompts("general_replay.jsonl")
    dev, held = prompts("jessy_dev.jsonl"), prompts("jessy_heldout.jsonl")
    assert not dev & trained and not held & trained
    assert not dev & held


def test_the_dev_set_asks_about_every_fact_the_held_out_set_does():
    assert facts("jessy_dev.jsonl") == facts("jessy_heldout.jsonl")
    for line in (EXAMPLES / "jessy_dev.jsonl").open():
        row = json.loads(line)
        assert row["expected"] and all(isinstance(e, str) and e for e in row["expected"])
