"""Policy and reference of a run, built once for every layout: 1 process, DDP, FSDP2; full fine-tuning or LoRA.

Where the weights come from (the same for every layout):
- policy: the checkpoint's exact fp32 weights when resuming a full fine-tune, else ``init`` (LoRA: the frozen base,
  its adapters fresh or the checkpoint's);
- reference (``frozen_copy``): a soft-synced reference saved in the checkpoint, else ``--reference``, else the
  starting weights (a copy of the policy before its adapters, or ``init`` read again when the policy is no longer
  it); ``lora_adapters_off``: the policy with adapters disabled; ``cached``: none during training
  (:func:`reference_for_cache` gives the network that fills the cache once).

How they get into memory: one process / DDP reads a checkpoint straight onto the device; FSDP builds the DiT (with
LoRA: the peft-wrapped DiT) on the meta device on every rank, shards it, and only rank 0 reads the weights, which
``set_model_state_dict(broadcast_from_rank0=True)`` sends shard by shard (host memory holds one full copy at a time).
Precision: full fine-tuning keeps fp32 master weights (bf16 autocast on CUDA); LoRA keeps the frozen base in bf16 on
CUDA (adapters fp32, peft's default) so a 30B base fits one GPU.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dpo.checkpointing import ADAPTER_DIR, ADAPTER_FILE, REFERENCE_FILE
from dpo.config import ConfigError, FlowDPOConfig
from dpo.distributed import Distributed
from dpo.reference import AdapterOffReference, FrozenReference, PolicyAsReference, apply_lora, unwrap

logger = logging.getLogger("dpo")


def find_dit(module: nn.Module) -> nn.Module:
    from model.transformer import StepVideoDiT

    for m in unwrap(module).modules():
        if isinstance(m, StepVideoDiT):
            return m
    raise TypeError("no StepVideoDiT inside the policy module")


def with_lora(module: nn.Module, config: FlowDPOConfig, resume_dir: Path | None = None) -> nn.Module:
    """Freeze ``module`` and wrap it with peft LoRA adapters (fresh, or the checkpoint's on resume)."""
    module.requires_grad_(False)
    module = apply_lora(module, r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout,
                        target_modules=config.lora_target_modules)
    if resume_dir is not None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        device = next(module.parameters()).device
        adapters = load_file(str(resume_dir / ADAPTER_DIR / ADAPTER_FILE), device=str(device))
        result = set_peft_model_state_dict(module, adapters)
        if getattr(result, "unexpected_keys", None):
            raise RuntimeError(f"{resume_dir}: unexpected adapter keys {result.unexpected_keys[:5]}")
    return module


def check_reference_architecture(reference_root: Path, dit_config: Any) -> None:
    from model.checkpoint import RUNTIME_FIELDS, read_dit_config

    ref_config = read_dit_config(reference_root)
    diff = sorted(k for k in vars(ref_config)
                  if k not in RUNTIME_FIELDS and getattr(ref_config, k) != getattr(dit_config, k, None))
    if diff:
        raise ConfigError(
            f"reference {reference_root} is not the policy's architecture (DiT config differs in {diff}); "
            "a reference must be a checkpoint of the same model"
        )


class DiTLoader:
    """Puts a DiT checkpoint (a model root, or a flat ``.safetensors`` state dict) into memory for this layout."""

    def __init__(self, dist: Distributed, dit_config: Any, dtype: torch.dtype, sharded: bool):
        self.dist, self.dit_config, self.dtype, self.sharded = dist, dit_config, dtype, sharded

    def read(self, source: Path, device: torch.device | str) -> nn.Module:
        from model.checkpoint import load_dit, load_into_meta_module
        from model.transformer import StepVideoDiT

        if source.suffix == ".safetensors":
            from safetensors.torch import load_file

            with torch.device("meta"):
                module = StepVideoDiT(self.dit_config)
            return load_into_meta_module(module, load_file(str(source), device=str(device)), str(source)).to(self.dtype)
        return load_dit(source, device=device, dtype=self.dtype)

    def load(self, source: Path, lora: Callable[[nn.Module, Path | None], nn.Module] | None = None,
             adapters_from: Path | None = None) -> nn.Module:
        """``source`` on this process (sharded: the meta-built module filled from rank 0's read). ``lora(module,
        adapters_from)`` wraps the module before it is filled, with fresh adapters on the meta module and on rank 0
        those of ``adapters_from`` (a checkpoint) when given (only for a sharded load: one process adds adapters
        after the reference copy)."""
        if not self.sharded:
            return self.read(source, self.dist.device)
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        from model.transformer import StepVideoDiT

        with torch.device("meta"), torch.random.fork_rng(devices=[]):  # peft draws adapter inits on the CPU RNG
            module = StepVideoDiT(self.dit_config).to(self.dtype)
            if lora is not None:
                module = lora(module, None)
        self.dist.shard(module, find_dit(module).transformer_blocks)
        module.to_empty(device=self.dist.device)
        state = {}
        if self.dist.is_main:  # rank 0 builds the adapters (the same RNG draws as one process), then broadcasts
            full = self.read(source, "cpu")
            state = (lora(full, adapters_from) if lora is not None else full).state_dict()
            logger.info("rank 0 read %d tensors; broadcasting them to %d ranks' shards", len(state),
                        self.dist.world_size)
        set_model_state_dict(module, state, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
        return module


@dataclass
class Models:
    policy: nn.Module  # trainable; DDP-wrapped or FSDP2-sharded under torchrun
    reference: FrozenReference | AdapterOffReference | None  # None for reference_mode 'cached'
    dit_config: Any
    loader: DiTLoader


def build_models(config: FlowDPOConfig, dist: Distributed, *, init: Path | None, reference_root: Path | None = None,
                 resume_dir: Path | None = None, policy: nn.Module | None = None,
                 dit_config: Any | None = None) -> Models:
    """Policy and reference for this run (``policy``/``dit_config``: an in-memory DiT instead of ``init``)."""
    from model.checkpoint import read_dit_config

    lora = config.use_lora
    dtype = torch.bfloat16 if (lora and dist.mixed_precision) else torch.float32
    given = policy is not None
    if not given and init is None:
        raise ValueError("init (a model root) is required")
    dit_config = dit_config or (policy.cfg if given else read_dit_config(init))
    sharded = dist.fsdp and not given  # an in-memory policy is built here, then sharded
    loader = DiTLoader(dist, dit_config, dtype, sharded)
    add_lora = (lambda module, adapters_from: with_lora(module, config, adapters_from)) if lora else None

    # 1. Policy
    if given:
        policy = policy.to(dist.device)
    else:
        source = resume_dir if resume_dir is not None and not lora else init  # a checkpoint holds exact fp32 weights
        policy = loader.load(source, lora=add_lora if sharded else None, adapters_from=resume_dir)
        if source != init:
            logger.info("policy weights from %s", source)

    # 2. Reference (before adapters: the starting weights)
    reference: Any = None
    if config.reference_mode == "frozen_copy":
        synced = resume_dir / REFERENCE_FILE if resume_dir is not None else None
        if synced is not None and synced.is_file():
            source = synced  # a TR-DPO soft-synced reference
        elif reference_root is not None:
            check_reference_architecture(reference_root, dit_config)
            logger.info("reference weights from %s", reference_root)
            source = reference_root
        elif sharded or (resume_dir is not None and not lora and not given):
            source = init  # the policy is sharded, or no longer the starting weights
        else:
            source = None
        reference = FrozenReference(loader.load(source) if source is not None else copy.deepcopy(unwrap(policy)))

    # 3. Trainable parameters
    if lora and not sharded:
        policy = with_lora(policy, config, resume_dir)
    elif not lora:
        policy.requires_grad_(True)
    if config.reference_mode == "lora_adapters_off":
        reference = AdapterOffReference(policy)
    find_dit(policy).gradient_checkpointing = config.gradient_checkpointing
    policy.train()

    # 4. Data parallelism
    if dist.fsdp and not sharded:
        dist.shard(policy, find_dit(policy).transformer_blocks)
        if isinstance(reference, FrozenReference):
            dist.shard(reference.module, find_dit(reference.module).transformer_blocks)
    policy = dist.wrap_ddp(policy)
    return Models(policy, reference, dit_config, loader)


def reference_for_cache(models: Models, *, init: Path | None, reference_root: Path | None, fresh: bool) -> Callable:
    """The network whose errors fill a cached reference: at step 0 of a fresh run without ``--reference`` the policy
    itself (it IS the reference: LoRA adapters start at zero), else the reference checkpoint (or ``init``) read for
    this one pass, never the trained policy."""
    if reference_root is None and fresh:
        return PolicyAsReference(unwrap(models.policy))  # an FSDP2 module is the module itself
    if init is None and reference_root is None:
        raise ConfigError("reference_mode 'cached' cannot rebuild its cache without an init checkpoint")
    if reference_root is not None:
        check_reference_architecture(reference_root, models.dit_config)
    return FrozenReference(models.loader.load(reference_root or init))
