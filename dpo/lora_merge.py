"""Merging LoRA adapters into DiT weights, on state dicts only (no live model is modified).

peft key formats handled:
- a wrapped model's full state dict: ``base_model.model.<module>.base_layer.weight`` and
  ``base_model.model.<module>.lora_A.<adapter>.weight`` / ``lora_B``;
- an adapter file (``adapter_model.safetensors`` / ``get_peft_model_state_dict``):
  ``base_model.model.<module>.lora_A.weight`` / ``lora_B.weight``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

_PREFIX = "base_model.model."
_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.(?P<adapter>[^.]+))?\.weight$")


def base_state_dict(peft_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Full state dict of a peft-wrapped DiT -> the plain DiT's state dict (adapters dropped, NOT merged)."""
    out = {}
    for key, value in peft_state.items():
        if ".lora_" in key:
            continue
        name = key[len(_PREFIX):] if key.startswith(_PREFIX) else key
        out[name.replace(".base_layer.", ".")] = value
    return out


def adapter_pairs(adapter_state: Mapping[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{module name in the plain DiT: (A (r, in), B (out, r))}."""
    halves: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in adapter_state.items():
        m = _LORA_KEY.match(key)
        if m is None:
            continue
        module = m["module"]
        module = module[len(_PREFIX):] if module.startswith(_PREFIX) else module
        halves.setdefault(module, {})[m["ab"]] = value
    return {k: (v["A"], v["B"]) for k, v in halves.items() if "A" in v and "B" in v}


def merge_lora_into(
    base: Mapping[str, torch.Tensor], adapter_state: Mapping[str, torch.Tensor], scale: float
) -> dict[str, torch.Tensor]:
    """W <- W + scale * B @ A for every adapted linear (computed in fp32, stored in W's dtype)."""
    merged = dict(base)
    pairs = adapter_pairs(adapter_state)
    if not pairs:
        raise ValueError("no LoRA A/B pairs found in the adapter state")
    for module, (a, b) in pairs.items():
        key = f"{module}.weight"
        if key not in merged:
            raise KeyError(f"adapter targets {module!r}, which has no weight in the base state dict")
        w = merged[key]
        # On CPU, one weight at a time: merging a 30B DiT must not need a second copy in GPU memory.
        merged[key] = (w.detach().float().cpu() + scale * (b.detach().float().cpu() @ a.detach().float().cpu())).to(w.dtype)
    return merged
