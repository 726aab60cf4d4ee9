"""The plugin toolkit: what backend plugins share (LoRA layers, adapter formats, whole-model
outputs, checkpoints, scale-out refusals, the HF-Trainer arguments and normalise). The core
never decides policy here; plugins import these directly."""
