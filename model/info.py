"""Parameter counts and state-dict shapes of a preset's components, built on the meta device (no memory used)."""

from __future__ import annotations

import torch

from model.presets import get_preset


def build_meta_components(preset_name: str) -> dict[str, torch.nn.Module]:
    """{"dit", "vae", "step_llm", "clip"} modules of the preset on the meta device."""
    from model.text_encoder import StepLLM, build_clip
    from model.transformer import StepVideoDiT
    from model.vae import VideoVAE

    preset = get_preset(preset_name)
    with torch.device("meta"):
        return {
            "dit": StepVideoDiT(preset.dit),
            "vae": VideoVAE(preset.vae),
            "step_llm": StepLLM(preset.step_llm),
            "clip": build_clip(preset.clip),
        }


def preset_info(preset_name: str) -> dict[str, dict]:
    """{component: {"params": N, "bf16_bytes": 2N, "keys": {name: shape}}}."""
    info = {}
    for name, module in build_meta_components(preset_name).items():
        state = module.state_dict()
        params = sum(t.numel() for t in state.values())
        info[name] = {"params": params, "bf16_bytes": 2 * params, "keys": {k: list(v.shape) for k, v in state.items()}}
    return info


def format_table(preset_name: str, info: dict[str, dict]) -> str:
    lines = [f"preset {preset_name}", f"{'component':<10} {'tensors':>8} {'params':>16} {'bf16 GiB':>10}"]
    total = 0
    for name, item in info.items():
        total += item["params"]
        lines.append(f"{name:<10} {len(item['keys']):>8} {item['params']:>16,} {item['bf16_bytes'] / 1024**3:>10.3f}")
    lines.append(f"{'total':<10} {'':>8} {total:>16,} {2 * total / 1024**3:>10.3f}")
    return "\n".join(lines)
