"""Runs inside the Axolotl environment: Axolotl's own validate_config on many configs at once.

Usage: python validate_configs.py [--gpu N] CONFIG.yaml [CONFIG.yaml ...]

Prints one JSON line per config: {"path", "ok", "error", "dropped"} where `dropped` lists the
keys Axolotl silently discarded (it does not reject unknown keys). Importing Axolotl's config
module costs ~30 s, so callers (tests, `jessy translate --check`) batch their configs.
`--gpu N` validates as for N CUDA GPUs with bf16 (capabilities of an A100), so translations
for a cloud machine can be checked on a laptop.
"""

from __future__ import annotations

import json
import os
import sys


def main(argv: list[str]) -> int:
    gpus = 0
    if argv[:1] == ["--gpu"]:
        gpus, argv = int(argv[1]), argv[2:]
    import torch
    import yaml

    from axolotl.utils.config import validate_config
    from axolotl.utils.dict import DictDefault

    if gpus:
        caps = {"bf16": True, "fp8": False, "tf32": True, "n_gpu": gpus,
                "compute_capability": "sm_80"}
    else:
        caps = {"bf16": False, "fp8": False, "tf32": False,
                "n_gpu": int(os.environ.get("WORLD_SIZE", 1)), "compute_capability": None}
    env_caps = {"torch_version": torch.__version__.split("+", 1)[0]}
    for path in argv:
        with open(path) as fh:
            raw = yaml.safe_load(fh)
        result = {"path": path, "ok": True, "error": None, "dropped": []}
        try:
            checked = validate_config(DictDefault(dict(raw)), capabilities=caps,
                                      env_capabilities=env_caps)
            result["dropped"] = sorted(k for k in raw if k not in checked)
        except Exception as exc:  # noqa: BLE001 (pydantic and plain ValueErrors alike)
            result.update(ok=False, error=f"{type(exc).__name__}: {exc}"[:2000])
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
