"""The reference model of Flow-DPO (docs/flow-dpo.md, "The reference") and LoRA wrapping.

- ``FrozenReference``: a copy of the round's starting DiT, ``requires_grad_(False)``, ``eval()``, no optimizer
  state, called under ``torch.no_grad()`` with exactly the policy's inputs. Optional TR-DPO soft sync
  ``ref <- a * policy + (1 - a) * ref`` (TRL ``SyncRefModelCallback`` semantics).
- ``AdapterOffReference``: with LoRA (peft) the reference is the policy network with its adapters disabled, so
  there is no second copy of the 30B weights in memory.
- ``CachedReference``: the reference errors of every pair for K fixed (t, noise) draws, computed once before
  training (:func:`cached_reference`, :func:`reference_errors`); no reference network stays in memory during training.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

logger = logging.getLogger("dpo")

REFERENCE_CACHE_FILE = "reference_cache.safetensors"


def unwrap(module: nn.Module) -> nn.Module:
    """Strip DDP / torch.compile wrappers (FSDP2 modules are the module itself)."""
    while True:
        if isinstance(module, nn.parallel.DistributedDataParallel):
            module = module.module
        elif hasattr(module, "_orig_mod"):
            module = module._orig_mod
        else:
            return module


class FrozenReference:
    """A frozen deep copy of the policy at construction time (or of ``module`` when given)."""

    def __init__(self, module: nn.Module):
        self.module = module.requires_grad_(False).eval()

    @classmethod
    def copy_of(cls, policy: nn.Module) -> FrozenReference:
        return cls(copy.deepcopy(unwrap(policy)))

    @torch.no_grad()
    def __call__(self, *args, **kwargs) -> torch.Tensor:
        return self.module(*args, **kwargs)

    def parameters(self):
        return self.module.parameters()

    @torch.no_grad()
    def soft_sync(self, policy: nn.Module, alpha: float) -> None:
        """TR-DPO: ref <- alpha * policy + (1 - alpha) * ref, parameter by parameter (works on FSDP2 shards)."""
        ref_params = dict(self.module.named_parameters())
        for name, p in unwrap(policy).named_parameters():
            ref = ref_params[name]
            ref.mul_(1 - alpha).add_(p.detach().to(ref.dtype), alpha=alpha)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state, strict=True)


class AdapterOffReference:
    """The peft-wrapped policy with adapters disabled: the base model, no extra memory."""

    def __init__(self, peft_model: nn.Module):
        self.peft_model = peft_model

    @torch.no_grad()
    def __call__(self, *args, **kwargs) -> torch.Tensor:
        model = unwrap(self.peft_model)
        with model.disable_adapter():
            return model(*args, **kwargs)

    def parameters(self):
        return (p for n, p in unwrap(self.peft_model).named_parameters() if "lora_" not in n)

    def soft_sync(self, policy: nn.Module, alpha: float) -> None:  # pragma: no cover - rejected by the config
        raise RuntimeError("soft sync is not defined for the adapters-off reference")


class CachedReference:
    """Precomputed reference errors: ``errors[i, k] = (e_ref(chosen), e_ref(rejected))`` of pair i under draw k.

    ``errors`` (N, K, 2) fp32 in manifest order; ``pair_ids`` the N pair ids in the same order."""

    def __init__(self, errors: torch.Tensor, pair_ids: Sequence[str]):
        if errors.dim() != 3 or errors.shape[0] != len(pair_ids) or errors.shape[2] != 2:
            raise ValueError(f"reference cache of shape {tuple(errors.shape)} does not match {len(pair_ids)} pairs")
        self.errors = errors
        self.index = {pid: i for i, pid in enumerate(pair_ids)}

    @property
    def num_draws(self) -> int:
        return self.errors.shape[1]

    def lookup(self, pair_ids: Sequence[str], draw: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(e_ref(w), e_ref(l)), each (B,), for the micro-batch's pairs under ``draw`` (mod K)."""
        rows = self.errors[[self.index[pid] for pid in pair_ids], draw % self.num_draws]  # (B, 2)
        return rows[:, 0], rows[:, 1]

    def parameters(self):
        return iter(())

    def soft_sync(self, policy: nn.Module, alpha: float) -> None:  # pragma: no cover - rejected by the config
        raise RuntimeError("soft sync is not defined for a cached reference")


class PolicyAsReference:
    """The policy itself under ``no_grad``: at step 0 of a fresh run it IS the reference (LoRA adapters start at
    zero), so the cached pass needs no second copy."""

    def __init__(self, policy: nn.Module):
        self.policy = policy

    @torch.no_grad()
    def __call__(self, *args, **kwargs) -> torch.Tensor:
        return self.policy(*args, **kwargs)


def apply_lora(model: nn.Module, *, r: int, alpha: float, dropout: float, target_modules: Sequence[str]) -> nn.Module:
    """Wrap ``model`` with peft LoRA adapters on the named linears; only adapter weights stay trainable."""
    from peft import LoraConfig, get_peft_model

    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    matched = [n for n in names if any(n == t or n.endswith("." + t) for t in target_modules)]
    if not matched:
        raise ValueError(
            f"lora_target_modules {list(target_modules)} match no nn.Linear of the DiT; some linear names: {names[:12]}"
        )
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules), bias="none")
    return get_peft_model(model, config)


def lora_state_dict(peft_model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter tensors (what peft's ``save_pretrained`` writes)."""
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(unwrap(peft_model))


# ----------------------------------------------------------------------------------------------------------------
# Cached reference errors
# ----------------------------------------------------------------------------------------------------------------


def cache_fingerprint(records: Sequence[Any], config: Any, reference: str) -> str:
    """What the cached errors depend on: the pairs and their files, the draws (seed, t density), the reference
    checkpoint, the forward layout and prompt dropout."""
    pairs = "\n".join(f"{r.pair_id}|{r.chosen_latent_uri}|{r.rejected_latent_uri}|{r.text_embedding_uri}"
                      + (f"|{','.join(r.segments)}" if getattr(r, "segments", ()) else "") for r in records)
    return json.dumps({
        "pairs": hashlib.sha256(pairs.encode()).hexdigest(),
        "draws": config.reference_cache_draws, "seed": config.seed, "t_sampling": config.t_sampling,
        "logit_normal": [config.logit_normal_mean, config.logit_normal_std], "t_shift": config.t_shift,
        "reference": reference, "memory_saving_backward": config.memory_saving_backward,
        "prompt_dropout": [config.prompt_dropout, config.null_text_embedding_uri],
    }, sort_keys=True)


def cached_reference(path: Path, fingerprint: str, pair_ids: Sequence[str], compute: Callable[[], torch.Tensor],
                     *, is_main: bool, barrier: Callable[[], None]) -> CachedReference:
    """The errors stored at ``path`` when they were computed for ``fingerprint``, else ``compute()`` (on every rank)
    written there by rank 0."""
    from safetensors.torch import load_file, save_file

    if path.is_file():
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            stored = (f.metadata() or {}).get("fingerprint")
        if stored == fingerprint:
            logger.info("reference errors read from %s", path)
            return CachedReference(load_file(str(path))["errors"], pair_ids)
        logger.warning("%s was computed for other pairs or settings; recomputing it", path)
    errors = compute()
    if is_main:
        tmp = path.with_suffix(".tmp")
        save_file({"errors": errors.contiguous()}, str(tmp), metadata={"fingerprint": fingerprint})
        os.replace(tmp, path)
    barrier()
    return CachedReference(errors, pair_ids)


def reference_errors(reference: Callable, pair_errors: Callable, *, dataset: Sequence[Any], buckets: dict[Any, list[int]],
                     num_draws: int, batch_size: int, dist: Any, progress: bool = False) -> torch.Tensor:
    """(N, K, 2) fp32: ``pair_errors(reference, indices, draw, items)`` -> (e_ref(w), e_ref(l)) of every pair for
    draws 0..K-1, in micro-batches of one latent shape, rank-strided under torchrun and summed across ranks."""
    from tqdm.auto import tqdm

    chunks = [idx[i:i + batch_size] for _, idx in sorted(buckets.items()) for i in range(0, len(idx), batch_size)]
    mine = chunks[dist.rank::dist.world_size]
    calls = math.ceil(len(chunks) / dist.world_size)  # the same on every rank (FSDP forwards are collective)
    errors = torch.zeros(len(dataset), num_draws, 2, dtype=torch.float32)
    with tqdm(total=calls * num_draws, desc="reference cache", unit="draw", dynamic_ncols=True,
              disable=not (progress and dist.is_main)) as bar:
        for j in range(calls):
            chunk = mine[j] if j < len(mine) else chunks[0]  # padding call on ranks with fewer chunks
            items = [dataset[i] for i in chunk]  # read once, K draws
            for k in range(num_draws):
                e_w, e_l = pair_errors(reference, chunk, k, items)
                if j < len(mine):
                    errors[chunk, k, 0], errors[chunk, k, 1] = e_w.float().cpu(), e_l.float().cpu()
                bar.update(1)
    return dist.sum(errors)  # each entry was computed by exactly one rank
