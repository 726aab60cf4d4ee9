"""The spec's `resources` section: process layout, launcher arguments, DeepSpeed/FSDP2 configs.

Backend-neutral pieces only. jessy writes the configuration a launcher (torchrun) and an engine
(DeepSpeed, FSDP2) read; it never schedules processes or machines itself.
"""

from __future__ import annotations

import os

from ..backend import Refusal

RESOURCE_FIELDS = ("/resources/nodes", "/resources/gpus_per_node", "/resources/strategy",
                   "/resources/zero_stage", "/resources/offload")


def world_size(resources: dict) -> int:
    return resources["nodes"] * resources["gpus_per_node"]


def single_process_only(spec, backend: str, refusals: list[Refusal],
                        carried: dict[str, str]) -> None:
    """For backends that train in one process: refuse any other layout, by spec path."""
    res = spec["resources"]
    for path in RESOURCE_FIELDS:
        carried[path] = "refused unless one process"
    if res["nodes"] > 1:
        refusals.append(Refusal("/resources/nodes", f"{backend} trains on one machine here; "
                                "use a backend that scales out (docs/backends.md)"))
    if res["gpus_per_node"] > 1:
        refusals.append(Refusal("/resources/gpus_per_node", f"{backend} is driven as one "
                                "process by jessy; use a backend that scales out "
                                "(docs/backends.md)"))
    if res["strategy"] != "ddp" or res["offload"] != "none":
        refusals.append(Refusal("/resources/strategy", f"{backend} is driven as one process: "
                                "no sharding or offload"))


def torchrun_args(resources: dict, refusals: list[Refusal]) -> list[str]:
    """torchrun's own flags for the layout; multi-node rendezvous comes from the environment."""
    args = ["--nproc_per_node", str(resources["gpus_per_node"]),
            "--nnodes", str(resources["nodes"])]
    if resources["nodes"] > 1:
        addr = os.environ.get("JESSY_MASTER_ADDR")
        rank = os.environ.get("JESSY_NODE_RANK")
        if not addr or rank is None:
            refusals.append(Refusal("/resources/nodes", "several machines need "
                                    "JESSY_MASTER_ADDR and JESSY_NODE_RANK in the environment "
                                    "(the SkyPilot task sets them from SKYPILOT_NODE_IPS and "
                                    "SKYPILOT_NODE_RANK)"))
            return args
        port = os.environ.get("JESSY_MASTER_PORT", "29500")
        args += ["--node_rank", rank, "--master_addr", addr, "--master_port", port]
    return args


def deepspeed_config(resources: dict) -> dict:
    """A ZeRO config whose batch/precision values are left to the HF Trainer ("auto").

    Written by jessy because Axolotl's shipped deepspeed_configs/ are not in its wheel.
    """
    stage = resources["zero_stage"]
    zero: dict = {"stage": stage, "overlap_comm": True, "contiguous_gradients": True,
                  "reduce_bucket_size": "auto"}
    if stage == 3:
        zero.update({"stage3_prefetch_bucket_size": "auto",
                     "stage3_param_persistence_threshold": "auto",
                     "stage3_gather_16bit_weights_on_model_save": True})
    if resources["offload"] in ("optimizer", "optimizer_and_params"):
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if resources["offload"] == "optimizer_and_params":
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return {"zero_optimization": zero,
            "bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"},
            "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
            "train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto",
            "wall_clock_breakdown": False}


def offload_refusals(resources: dict, refusals: list[Refusal]) -> None:
    if resources["offload"] == "optimizer_and_params" and resources["strategy"] == "deepspeed" \
            and resources["zero_stage"] != 3:
        refusals.append(Refusal("/resources/offload", "parameter offload needs ZeRO stage 3 "
                                "(zero_stage: 3)"))
    if resources["offload"] == "optimizer" and resources["strategy"] == "fsdp2":
        refusals.append(Refusal("/resources/offload", "FSDP2 offloads parameters and optimizer "
                                "states together: use optimizer_and_params"))
    if resources["offload"] != "none" and resources["strategy"] == "ddp":
        refusals.append(Refusal("/resources/offload", "ddp keeps everything on each device; "
                                "offload needs strategy fsdp2 or deepspeed"))
