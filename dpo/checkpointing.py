"""Checkpoint I/O of a run folder: resumable ``checkpoints/step-N/`` and the final model root ``final/``.

``checkpoints/step-N/`` (written to ``step-N.tmp`` and renamed, so a crash never leaves a half checkpoint):
``transformer/`` (exact fp32 weights, official DiT layout) or ``adapter/`` (LoRA, peft layout), ``reference.safetensors``
(a TR-DPO soft-synced reference) and ``trainer_state.pt``: nanoGPT's dict (``optimizer``, ``model_args``, ``config``,
``step``) with the scheduler, RNG state and data cursor (``epoch``, ``batch_pos``). Under FSDP every rank takes part
in gathering the full state dicts (``torch.distributed.checkpoint.state_dict``, CPU offload); rank 0 writes.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dpo.distributed import Distributed
from dpo.lora_merge import adapter_pairs, base_state_dict, merge_lora_into
from dpo.reference import FrozenReference, lora_state_dict, unwrap

logger = logging.getLogger("dpo")

STATE_FILE = "trainer_state.pt"
ADAPTER_DIR = "adapter"
ADAPTER_FILE = "adapter_model.safetensors"
REFERENCE_FILE = "reference.safetensors"


def checkpoints(out_dir: Path) -> list[Path]:
    """Complete ``step-N`` folders of ``out_dir/checkpoints``, oldest first."""
    folder = Path(out_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith("step-") and p.name[5:].isdigit()
             and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def latest_checkpoint(out_dir: Path) -> Path | None:
    found = checkpoints(out_dir)
    return found[-1] if found else None


def full_state_dict(module: nn.Module, dist: Distributed) -> dict[str, torch.Tensor]:
    """The unwrapped module's full state dict; under FSDP every rank must call it (rank 0 gets the tensors)."""
    if dist.fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return unwrap(module).state_dict()


def adapters_from_full(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """peft full state dict -> adapter-file keys (``...lora_A.weight``, adapter name dropped)."""
    out = {}
    for key, value in sd.items():
        if ".lora_" in key:
            parts = key.split(".")
            # ... lora_A . default . weight -> ... lora_A . weight
            if len(parts) >= 3 and parts[-3].startswith("lora_"):
                key = ".".join(parts[:-2] + parts[-1:])
            out[key] = value
    if not adapter_pairs(out):
        raise ValueError("no LoRA adapters in the policy state dict")
    return out


def merged_state_dict(policy: nn.Module, use_lora: bool, lora_scale: float, dist: Distributed) -> dict[str, torch.Tensor]:
    """The policy as a plain DiT state dict (LoRA merged: W + (alpha/r) B A); empty off rank 0 under FSDP."""
    sd = full_state_dict(policy, dist)
    if not use_lora or not sd:
        return sd
    return merge_lora_into(base_state_dict(sd), adapters_from_full(sd), lora_scale)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    out_dir: Path,
    *,
    dist: Distributed,
    config: Any,
    dit_config: Any,
    policy: nn.Module,
    reference: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: dict[str, Any],
) -> Path:
    """Write ``out_dir/checkpoints/step-{state['step']}`` atomically; ``state`` holds the step, data cursor and
    last metrics. Rotates old checkpoints past ``config.save_total_limit``."""
    from safetensors.torch import save_file

    from model.checkpoint import save_dit

    final = Path(out_dir) / "checkpoints" / f"step-{state['step']}"
    tmp = final.with_name(final.name + ".tmp")
    policy_sd = full_state_dict(policy, dist) if not config.use_lora or dist.fsdp else None
    if dist.fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        optim_sd = get_optimizer_state_dict(policy, optimizer,
                                            options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        optim_sd = optimizer.state_dict()
    ref_sd = None
    if config.sync_ref_model and isinstance(reference, FrozenReference):
        ref_sd = full_state_dict(reference.module, dist)
    if dist.is_main:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        if config.use_lora:
            adapter = lora_state_dict(policy) if policy_sd is None else adapters_from_full(policy_sd)
            (tmp / ADAPTER_DIR).mkdir()
            save_file({k: v.detach().cpu().contiguous() for k, v in adapter.items()},
                      str(tmp / ADAPTER_DIR / ADAPTER_FILE))
            unwrap(policy).peft_config["default"].save_pretrained(str(tmp / ADAPTER_DIR))
        else:
            save_dit(policy_sd, tmp, dit_config, dtype=None)  # exact (fp32) weights, loadable by load_dit
        if ref_sd is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in ref_sd.items()}, str(tmp / REFERENCE_FILE))
        torch.save({**state, "optimizer": optim_sd, "scheduler": scheduler.state_dict(), "rng": rng_state(),
                    "config": config.to_dict(), "model_args": dit_config.to_dict(), "world_size": dist.world_size},
                   tmp / STATE_FILE)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        if config.save_total_limit:
            for old in checkpoints(out_dir)[:-config.save_total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return final


def load_checkpoint(path: Path, *, dist: Distributed, policy: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any) -> dict[str, Any]:
    """Restore optimizer, scheduler and RNG from ``path`` (the weights were built from it by ``dpo.models``);
    returns the stored state (``step``, ``epoch``, ``batch_pos``, ``metrics``, ...)."""
    state = torch.load(Path(path) / STATE_FILE, map_location="cpu", weights_only=False)
    if state.get("world_size", 1) != dist.world_size and dist.is_main:
        logger.warning("resuming a %s-process run with %s processes", state.get("world_size"), dist.world_size)
    if dist.fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(policy, optimizer, state["optimizer"], options=StateDictOptions(full_state_dict=True))
    else:
        optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    if dist.is_main:
        logger.info("resumed from %s at step %d", path, state["step"])
    return state


def save_final(final: Path, state_dict: dict[str, torch.Tensor], *, dist: Distributed, dit_config: Any,
               dtype: torch.dtype | None, init: Path | None, adapter_from: Path | None, info: dict[str, Any]) -> Path:
    """``final/``: official DiT layout (``dtype``), ``lora_adapter/`` copied from ``adapter_from``, the other
    components of ``init`` symlinked (so ``final/`` is a full model root) and ``dpo_info.json``."""
    from model.checkpoint import save_dit

    if dist.is_main:
        if final.exists():
            shutil.rmtree(final)
        save_dit(state_dict, final, dit_config, dtype=dtype)
        if adapter_from is not None:
            shutil.copytree(adapter_from / ADAPTER_DIR, final / "lora_adapter")
        if init is not None and init.is_dir() and not (init / "config.json").is_file():  # a root, not transformer/
            for entry in init.iterdir():
                if entry.name != "transformer" and not (final / entry.name).exists():
                    (final / entry.name).symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
        (final / "dpo_info.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    dist.barrier()
    return final
