"""Memory for smaller cards: the per-GPU memory plan of a preset, and the optional FP8 weight-only DiT.

The plan (``python -m model info --preset NAME``) is an estimate from the tensors alive at the DiT's peak, not a
measurement (measured figures, when a GPU run exists, are in docs/model.md):

- **DiT weights** are replicated on every sequence-parallel rank (Ulysses splits tokens and heads, not weights):
  2 bytes per parameter in bf16, 1 in FP8 weight-only (:func:`quantize_dit_fp8`; norms, embedders and tables stay
  bf16, about 0.1% of the parameters).
- **DiT activations** per rank at inference, for T = batch (2 with CFG) x N/P local tokens of width D: the residual
  stream, the modulated input, q/k/v with their fp32 QK-norm/RoPE temporaries and the all-to-all buffers at the
  attention peak, or the 4D-wide FFN hidden state (bf16, before and after GELU) at the FFN peak: about 24 T D bytes
  either way (``ACTIVATION_BYTES_PER_TOKEN_DIM``). Flash / SDPA attention needs O(N) memory, so no N x N term.
- **Text encoders** (Step-LLM bf16, Hunyuan-CLIP fp32) and the **VAE** (fp32 weights; decoding tiled in time, one
  3-latent chunk at a time, and optionally in space, output assembled in host memory) either share rank 0's card or
  run on another card through the split queues ``text`` / ``vae`` (``VIDEODPO_SPLIT_QUEUES=true``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from model.presets import get_preset
from model.vae import latent_shape

GIB = 1024**3
ACTIVATION_BYTES_PER_TOKEN_DIM = 24
CARD_SIZES_GB = (80, 141)  # H100/A100 80 GB, H200 141 GB
GPU_COUNTS = (1, 2, 4, 8)
CUDA_CONTEXT_GIB = 1.0  # CUDA context, cuBLAS workspaces, allocator slack


@dataclass(frozen=True)
class MemoryRow:
    gpus: int
    dit_weights_gib: float
    activations_gib: float
    text_vae_gib: float  # on rank 0 when not split off
    fp8: bool

    @property
    def rank0_gib(self) -> float:
        return self.dit_weights_gib + self.activations_gib + self.text_vae_gib + CUDA_CONTEXT_GIB

    @property
    def dit_only_gib(self) -> float:
        return self.dit_weights_gib + self.activations_gib + CUDA_CONTEXT_GIB


def memory_plan(preset_name: str, *, num_frames: int | None = None, height: int | None = None,
                width: int | None = None, cfg: bool = True, text_vae_on_dit_card: bool = False) -> list[MemoryRow]:
    """Per-GPU memory of the preset's DiT for each GPU count in :data:`GPU_COUNTS` (bf16 and FP8 weights)."""
    from model.info import preset_info
    from model.parallel import SequenceParallelError, check_sequence_parallel, video_tokens

    preset = get_preset(preset_name)
    info = preset_info(preset_name)
    frames, h, w = num_frames or preset.num_frames, height or preset.height, width or preset.width
    t_lat, _, lh, lw = latent_shape(frames, h, w, preset.vae)
    tokens = video_tokens(t_lat, lh, lw, preset.dit.patch_size)
    batch = 2 if cfg else 1
    text_vae = (2 * info["step_llm"]["params"] + 4 * info["clip"]["params"] + 4 * info["vae"]["params"]) / GIB
    rows = []
    for gpus in GPU_COUNTS:
        try:
            check_sequence_parallel(gpus, preset.dit.num_attention_heads, tokens)
        except SequenceParallelError:
            continue
        act = ACTIVATION_BYTES_PER_TOKEN_DIM * batch * tokens / gpus * preset.dit.inner_dim / GIB
        for fp8 in (False, True):
            weights = (1 if fp8 else 2) * info["dit"]["params"] / GIB
            rows.append(MemoryRow(gpus, weights, act, text_vae if text_vae_on_dit_card else 0.0, fp8))
    return rows


def format_memory_plan(preset_name: str, **kwargs) -> str:
    preset = get_preset(preset_name)
    frames = kwargs.get("num_frames") or preset.num_frames
    h, w = kwargs.get("height") or preset.height, kwargs.get("width") or preset.width
    shared = memory_plan(preset_name, text_vae_on_dit_card=True, **kwargs)
    lines = [
        f"memory plan per GPU (estimate), {frames} frames at {h}x{w}, CFG batch 2, Ulysses sequence parallel",
        f"{'GPUs':>4} {'DiT':>8} {'weights':>8} {'activ.':>8} {'DiT card':>9} {'+text+VAE':>10}  "
        + "  ".join(f"{c} GB card" for c in CARD_SIZES_GB),
    ]
    for row in shared:
        fits = []
        for card in CARD_SIZES_GB:
            capacity = card * 1e9 / GIB
            if row.rank0_gib <= capacity:
                fits.append("fits with text+VAE")
            elif row.dit_only_gib <= capacity:
                fits.append("fits, split queues")
            else:
                fits.append("does not fit")
        lines.append(
            f"{row.gpus:>4} {'fp8' if row.fp8 else 'bf16':>8} {row.dit_weights_gib:>8.1f} {row.activations_gib:>8.1f} "
            f"{row.dit_only_gib:>9.1f} {row.rank0_gib:>10.1f}  " + "  ".join(f"{f:<18}" for f in fits)
        )
    lines.append("GiB. 'DiT card': DiT weights + activations + CUDA context on every rank; '+text+VAE': rank 0 also "
                 "holding the text encoders and the VAE. 'split queues': VIDEODPO_SPLIT_QUEUES=true puts text encoding "
                 "and VAE decoding on another card. fp8: quantize_dit_fp8 (torchao, Hopper/Ada).")
    return "\n".join(lines)


def quantize_dit_fp8(dit: torch.nn.Module) -> torch.nn.Module:
    """FP8 (e4m3) weight-only quantization of the DiT blocks' Linear layers with torchao, in place; returns ``dit``.

    Halves the DiT's weight memory (58.7 GB -> about 29 GB for the released model). Needs torchao (the ``gpu``
    extra) and a CUDA device with FP8 support (compute capability >= 8.9: Ada, Hopper). Activations stay bf16.
    """
    device = next(dit.parameters()).device
    if device.type != "cuda":
        raise RuntimeError(f"the FP8 weight-only DiT needs a CUDA device with FP8 support; the DiT is on {device}")
    capability = torch.cuda.get_device_capability(device)
    if capability < (8, 9):
        raise RuntimeError(
            f"FP8 needs compute capability >= 8.9 (Ada/Hopper); {device} has {capability[0]}.{capability[1]}"
        )
    try:
        from torchao.quantization import Float8WeightOnlyConfig, quantize_
    except ImportError as exc:
        raise RuntimeError(
            "the FP8 weight-only DiT needs torchao: pip install -c constraints.txt torchao (it is in the gpu extra); "
            f"import failed: {exc}"
        ) from None
    quantize_(dit.transformer_blocks, Float8WeightOnlyConfig())
    return dit
