"""Flow-DPO training for the Step-Video DiT (no Django; see dpo/README.md).

Public API (imported lazily so ``import dpo`` stays cheap):
    FlowDPOConfig, ConfigError            dpo.config
    FlowDPOTrainer, TrainResult, train    dpo.trainer
    flow_dpo_loss, dpo_metrics            dpo.losses
    read_manifest, validate_pairs         dpo.data
    average_checkpoints                   dpo.average
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "FlowDPOConfig": "dpo.config",
    "ConfigError": "dpo.config",
    "FlowDPOTrainer": "dpo.trainer",
    "TrainResult": "dpo.trainer",
    "NonFiniteLossError": "dpo.trainer",
    "train": "dpo.trainer",
    "flow_dpo_loss": "dpo.losses",
    "dpo_metrics": "dpo.losses",
    "read_manifest": "dpo.data",
    "validate_pairs": "dpo.data",
    "ManifestError": "dpo.data",
    "average_checkpoints": "dpo.average",
    "merge_lora": "dpo.average",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'dpo' has no attribute {name!r}")
