"""Checkpoint averaging (Step §4.4/§8: averaging the last checkpoints beats EMA) and LoRA merging.

Inputs may be model roots, ``transformer/`` folders, or trainer checkpoints ``checkpoints/step-N`` (full
fine-tune: ``step-N/transformer``; LoRA: ``step-N/adapter`` merged onto ``base`` first). The average is taken in
fp32 over the plain DiT weights and written in the official layout with ``model.checkpoint.save_dit``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch

ADAPTER_DIR = "adapter"


def _read_dit_state(path: Path) -> dict[str, torch.Tensor]:
    from model.checkpoint import load_dit

    # Strict load through model/ (stored dtype kept): a checkpoint that does not fit the DiT fails here, by name.
    return load_dit(path, device="cpu", dtype=None).state_dict()


def _adapter_scale(adapter_dir: Path) -> float:
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    return float(cfg["lora_alpha"]) / float(cfg["r"])


def merge_lora(base: str | os.PathLike, adapter_dir: str | os.PathLike, out: str | os.PathLike | None = None,
               *, dtype: torch.dtype | None = None):
    """Merge a saved LoRA adapter (peft folder) onto the DiT of ``base``. Returns the state dict; writes ``out``."""
    from safetensors.torch import load_file

    from dpo.lora_merge import merge_lora_into
    from model.checkpoint import read_dit_config, save_dit

    adapter_dir = Path(adapter_dir)
    merged = merge_lora_into(_read_dit_state(Path(base)), load_file(str(adapter_dir / "adapter_model.safetensors")),
                             _adapter_scale(adapter_dir))
    if out is not None:
        save_dit(merged, out, read_dit_config(base), dtype=dtype)
    return merged


def _checkpoint_state(path: Path, base: Path | None) -> dict[str, torch.Tensor]:
    if (path / ADAPTER_DIR / "adapter_model.safetensors").is_file():
        if base is None:
            raise ValueError(f"{path} holds LoRA adapters: pass base= (the run's --init) to merge them first")
        return merge_lora(base, path / ADAPTER_DIR)
    return _read_dit_state(path)


def average_checkpoints(
    paths: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    base: str | os.PathLike | None = None,
    dtype: torch.dtype | None = torch.bfloat16,
) -> Path:
    """Uniform average of the DiT weights of ``paths``; writes ``out/transformer`` (returns that folder)."""
    from model.checkpoint import read_dit_config, save_dit, transformer_dir

    if len(paths) < 1:
        raise ValueError("give at least one checkpoint to average")
    paths = [Path(p) for p in paths]
    base = None if base is None else Path(base)
    cfg_source = next((p for p in paths if (transformer_dir(p) / "config.json").is_file()), base)
    if cfg_source is None:
        raise ValueError("cannot find a transformer/config.json among the checkpoints; pass base=")
    acc: dict[str, torch.Tensor] | None = None
    for p in paths:
        state = _checkpoint_state(p, base)
        if acc is None:
            acc = {k: v.detach().float().clone() for k, v in state.items()}
            continue
        if set(state) != set(acc):
            raise ValueError(f"{p}: keys differ from {paths[0]} ({len(set(state) ^ set(acc))} differences)")
        for k, v in state.items():
            if v.shape != acc[k].shape:
                raise ValueError(f"{p}: {k} has shape {tuple(v.shape)}, expected {tuple(acc[k].shape)}")
            acc[k] += v.float()
    averaged = {k: v / len(paths) for k, v in acc.items()}
    return save_dit(averaged, out, read_dit_config(cfg_source), dtype=dtype)
