"""Text-to-video pipeline: prompts + seeds + preset -> uint8 frames, plus the clean latents and text embeddings used.

    pipe = StepVideoPipeline.from_pretrained(root, preset="tiny", device="cpu")
    out = pipe.generate(["a cat"], seeds=[0, 1, 2])      # one prompt, three seeds
    out.frames   # (3, 17, 64, 64, 3) uint8
    out.latents  # (3, 3, 4, 4, 4) fp32, the clean latents x1

Stages (each usable alone, see docs/contracts.md): ``encode_text`` -> ``sample`` -> ``decode``. The text encoders and
the VAE can live on other devices than the DiT (``text_device``, ``vae_device``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from model import flow
from model.checkpoint import load_dit, read_step_llm_config, read_vae_config
from model.checkpoint import load_vae as load_vae_weights
from model.config import ModelPreset
from model.presets import get_preset
from model.text_encoder import TextEmbeddings, TextEncoders
from model.vae import check_video_size, latent_shape

logger = logging.getLogger(__name__)

__all__ = ["GenerationOutput", "StepVideoPipeline", "TextEmbeddings", "frames_to_uint8"]


@dataclass
class GenerationOutput:
    """frames (B, T, H, W, 3) uint8 CPU (None for ``output_type="latent"``); latents (B, t, C, h, w) fp32 CPU; the
    text embeddings used (CPU)."""

    frames: torch.Tensor | None
    latents: torch.Tensor
    text: TextEmbeddings
    negative: TextEmbeddings | None
    seeds: list[int]
    fps: int


def frames_to_uint8(video: torch.Tensor) -> torch.Tensor:
    """(B, T, 3, H, W) in [-1, 1] -> (B, T, H, W, 3) uint8 with the official ``(clamp(x, -1, 1) + 1) * 127.5``."""
    x = (video.float().clamp(-1.0, 1.0) + 1.0) * 127.5
    return x.to(torch.uint8).permute(0, 1, 3, 4, 2).contiguous()


def _default_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


class StepVideoPipeline:
    """Holds the DiT, the VAE and the text encoders, and the preset's sampling defaults."""

    def __init__(
        self,
        dit,
        vae,
        text_encoders: TextEncoders | None,
        preset: ModelPreset,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
    ):
        self.dit, self.vae, self.text_encoders, self.preset = dit, vae, text_encoders, preset
        self.device = torch.device(device)
        self.dtype = dtype or _default_dtype(self.device)

    @classmethod
    def from_pretrained(
        cls,
        root: str | os.PathLike,
        preset: str | ModelPreset = "tiny",
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
        text_device: torch.device | str | None = None,
        vae_device: torch.device | str | None = None,
        vae_dtype: torch.dtype | None = None,
        llm_dtype: torch.dtype | None = None,
        attention_backend: str | None = None,
        load_text_encoders: bool = True,
        load_vae: bool = True,
        dit_fp8: bool = False,
    ) -> StepVideoPipeline:
        """Load a model root (official layout). Network sizes come from the root's config files when present
        (``transformer/config.json``, ``step_llm/config.json``, ``vae/config.json``), else from the preset;
        sampling defaults (steps, CFG, shift, size, fps) come from the preset.

        dtype: DiT dtype (default bf16 on CUDA, fp32 on CPU). The VAE and Step-LLM default to the dtype of their device
        the same way; CLIP always runs in fp32. ``load_vae=False`` / ``load_text_encoders=False`` leave those out
        (latent-only sampling from given text embeddings, e.g. a DiT-only card or a sequence-parallel rank).
        ``dit_fp8=True``: FP8 weight-only DiT blocks (:func:`model.memory.quantize_dit_fp8`; torchao, Ada/Hopper).
        """
        preset = get_preset(preset) if isinstance(preset, str) else preset
        root = Path(root)
        device = torch.device(device)
        text_device = torch.device(text_device) if text_device is not None else device
        vae_device = torch.device(vae_device) if vae_device is not None else device
        dtype = dtype or _default_dtype(device)
        dit = load_dit(root, device=device, dtype=dtype, attention_backend=attention_backend)
        if dit_fp8:
            from model.memory import quantize_dit_fp8

            quantize_dit_fp8(dit)
        vae = None
        if load_vae:
            vae_cfg = read_vae_config(root) or preset.vae
            vae = load_vae_weights(root, vae_cfg, device=vae_device, dtype=vae_dtype or _default_dtype(vae_device))
        text_encoders = None
        if load_text_encoders:
            llm_cfg = read_step_llm_config(root) if (root / "step_llm" / "config.json").is_file() else preset.step_llm
            text_encoders = TextEncoders.from_pretrained(
                root,
                device=text_device,
                llm_dtype=llm_dtype or _default_dtype(text_device),
                llm_cfg=llm_cfg,
                clip_max_length=preset.clip.max_length,
            )
        index = root / "model_index.json"
        if index.is_file():
            stored = json.loads(index.read_text()).get("_stepvideo_preset")
            if stored and stored != preset.name:
                logger.warning("model root %s was written for preset %r, loading it with %r", root, stored, preset.name)
        return cls(dit, vae, text_encoders, preset, device=device, dtype=dtype)

    # -----------------------------------------------------------------------------------------------------------
    # Stages
    # -----------------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> TextEmbeddings:
        """Encode prompts verbatim (no suffix added) -> TextEmbeddings on the text encoders' device."""
        if self.text_encoders is None:
            raise RuntimeError("this pipeline was loaded without text encoders (load_text_encoders=False)")
        return self.text_encoders.encode(list(prompts))

    @property
    def vae_cfg(self):
        """The VAE's size rules: the loaded VAE's config, else the preset's (latent-only pipelines)."""
        return self.vae.cfg if self.vae is not None else self.preset.vae

    def _sample_shape(self, seeds, latents, num_frames, height, width) -> tuple[int, tuple[int, int, int, int]]:
        """(batch, (t, C, h, w)) of a sampling request, validated; raises ValueError naming the sizes."""
        p, C = self.preset, self.dit.cfg.in_channels
        if latents is not None:
            if latents.ndim != 5 or latents.shape[2] != C:
                raise ValueError(f"latents must be (B, t, {C}, h, w) initial noise, got {tuple(latents.shape)}")
            B, shape = latents.shape[0], tuple(latents.shape[1:])
            if seeds is not None and len(seeds) != B:
                raise ValueError(f"latents has batch {B} but {len(seeds)} seeds were given")
            if num_frames is not None or height is not None or width is not None:
                expected = latent_shape(num_frames or p.num_frames, height or p.height, width or p.width, self.vae_cfg)
                expected = (expected[0], C, expected[2], expected[3])
                if shape != expected:
                    raise ValueError(f"latents have shape {shape} per sample, the requested video size needs {expected}")
            t_lat, _, h, w = shape
            if t_lat != 1 and t_lat % self.vae_cfg.latent_len:
                raise ValueError(f"latents have {t_lat} frames; must be 1 or a multiple of {self.vae_cfg.latent_len}")
        else:
            if not seeds:
                raise ValueError("give seeds or latents")
            B = len(seeds)
            nf, hh, ww = num_frames or p.num_frames, height or p.height, width or p.width
            check_video_size(nf, hh, ww, self.vae_cfg)
            t_lat, _, h, w = latent_shape(nf, hh, ww, self.vae_cfg)
            shape = (t_lat, C, h, w)
        sp = getattr(self.dit, "sequence_parallel", None)
        if sp is not None:
            from model.parallel import video_tokens

            sp.check(self.dit.cfg.num_attention_heads, video_tokens(t_lat, h, w, self.dit.cfg.patch_size))
        return B, shape

    def check_sample_request(self, text: TextEmbeddings, seeds=None, *, latents=None, num_frames=None, height=None,
                             width=None, negative=None, **_) -> None:
        """Validate a :meth:`sample` request without running it (sizes, batch of text/negative, parallel split)."""
        B, _ = self._sample_shape(seeds, latents, num_frames, height, width)
        for name, emb in (("text", text), ("negative", negative)):
            if emb is not None and emb.llm_states.shape[0] not in (1, B):
                raise ValueError(f"{name} embeddings have batch {emb.llm_states.shape[0]}; expected 1 or {B}")

    @torch.no_grad()
    def sample(
        self,
        text: TextEmbeddings,
        seeds: list[int] | None = None,
        *,
        latents: torch.Tensor | None = None,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        num_steps: int | None = None,
        cfg_scale: float | None = None,
        shift: float | None = None,
        negative: TextEmbeddings | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """Denoise from the initial noise to clean latents (B, t, C, h, w) fp32 on the DiT device.

        The initial noise is ``latents`` (B, t, C, h, w) when given (as the official and diffusers pipelines accept
        ``latents=``; its shape sets the video size and no VAE is needed), else sample i starts from
        ``flow.initial_noise(seeds[i], (t, C, h, w))`` with the size from num_frames/height/width (preset defaults).
        ``text`` has batch B or 1 (shared by every sample). ``negative`` (batch 1 or B) is used when cfg_scale != 1;
        if None, the preset's negative prompt is encoded. Unset settings take the preset defaults.
        """
        s = self.preset.sampler
        num_steps = num_steps or s.num_steps
        cfg_scale = s.cfg_scale if cfg_scale is None else cfg_scale
        shift = s.shift if shift is None else shift
        self.check_sample_request(text, seeds, latents=latents, num_frames=num_frames, height=height, width=width,
                                  negative=negative)
        B, shape = self._sample_shape(seeds, latents, num_frames, height, width)

        cond = text.expand(B).to(self.device, self.dtype)
        use_cfg = cfg_scale != 1.0
        if use_cfg:
            if negative is None:
                negative = self.encode_text([self.preset.negative_prompt])
            both = TextEmbeddings.concat([cond, negative.expand(B).to(self.device, self.dtype)])  # (2B, ...)
        else:
            both = cond

        def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            x_in = torch.cat([x, x]) if use_cfg else x  # (2B | B, t, C, h, w)
            t_in = torch.cat([t, t]) if use_cfg else t
            v = self.dit(x_in.to(self.dtype), t_in, both.llm_states, both.llm_mask, both.clip_states).float()
            if not use_cfg:
                return v
            v_cond, v_uncond = v.chunk(2)
            return flow.cfg_combine(v_cond, v_uncond, cfg_scale)

        if latents is not None:
            x0 = latents.to(self.device, torch.float32)
        else:
            x0 = flow.batch_noise(seeds, shape).to(self.device)  # (B, t, C, h, w) fp32
        return flow.euler_sample(velocity, x0, flow.timesteps(num_steps, shift), progress=progress)

    @torch.no_grad()
    def decode(
        self,
        latents: torch.Tensor,
        *,
        tile_size: int | None = None,
        tile_stride: int | None = None,
        mix: bool = True,
        out_device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """latents (B, t, C, h, w) -> uint8 frames (B, T, H, W, 3) on CPU.

        ``mix=False`` returns the frames before the chunk-border mix (see :meth:`model.vae.VideoVAE.decode`);
        ``out_device="cpu"`` assembles the decoded video in host memory tile by tile (smaller cards).
        """
        if self.vae is None:
            raise RuntimeError("this pipeline was loaded without a VAE (load_vae=False); only latents are available")
        vae_device = next(self.vae.parameters()).device
        video = self.vae.decode(latents.to(vae_device), tile_size=tile_size, tile_stride=tile_stride, mix=mix,
                                out_device=out_device)
        return frames_to_uint8(video).cpu()

    def generate(
        self,
        prompts: list[str],
        seeds: list[int] | None,
        *,
        negative_prompt: str | None = None,
        positive_suffix: str | None = None,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        num_steps: int | None = None,
        cfg_scale: float | None = None,
        shift: float | None = None,
        progress: Callable[[int, int], None] | None = None,
        tile_size: int | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "frames",
    ) -> GenerationOutput:
        """encode_text -> sample -> decode. One prompt with several seeds, or one prompt per seed.

        ``latents``: the initial noise instead of the seeds' (``seeds`` may then be None). ``output_type="latent"``
        skips the VAE (``frames`` is None; works on a pipeline loaded with ``load_vae=False``).

        The official pipeline appends ``positive_suffix`` (default: the preset's, the official "pos_magic") to
        every prompt and uses ``negative_prompt`` (default: the official "neg_magic") alone as the negative.
        """
        if output_type not in ("frames", "latent"):
            raise ValueError(f"output_type must be 'frames' or 'latent', got {output_type!r}")
        if isinstance(prompts, str):
            prompts = [prompts]
        if seeds is None and latents is None:
            raise ValueError("give seeds or latents")
        count = len(seeds) if seeds is not None else latents.shape[0]
        if len(prompts) not in (1, count):
            raise ValueError(f"give one prompt or one prompt per sample; got {len(prompts)} prompts, {count} samples")
        suffix = self.preset.positive_suffix if positive_suffix is None else positive_suffix
        negative_prompt = self.preset.negative_prompt if negative_prompt is None else negative_prompt
        cfg = self.preset.sampler.cfg_scale if cfg_scale is None else cfg_scale
        text = self.encode_text([prompt + suffix for prompt in prompts])
        negative = self.encode_text([negative_prompt]) if cfg != 1.0 else None
        latents = self.sample(
            text,
            list(seeds) if seeds is not None else None,
            latents=latents,
            num_frames=num_frames,
            height=height,
            width=width,
            num_steps=num_steps,
            cfg_scale=cfg,
            shift=shift,
            negative=negative,
            progress=progress,
        )
        frames = self.decode(latents, tile_size=tile_size) if output_type == "frames" else None
        return GenerationOutput(
            frames=frames,
            latents=latents.cpu(),
            text=text.to("cpu"),
            negative=negative.to("cpu") if negative is not None else None,
            seeds=list(seeds) if seeds is not None else [],
            fps=self.preset.fps,
        )


def write_text_embedding_file(root: str | os.PathLike, text: str, out: str | os.PathLike, *, preset: str = "tiny",
                              device: torch.device | str = "cpu") -> int:
    """Encode ``text`` verbatim with the root's text encoders and write it in the stored format (contracts.md),
    e.g. the empty prompt for the DPO trainer's prompt dropout. Returns the file size in bytes."""
    from model.text_encoder import text_embeddings_to_bytes

    root, spec, device = Path(root), get_preset(preset), torch.device(device)
    llm_cfg = read_step_llm_config(root) if (root / "step_llm" / "config.json").is_file() else spec.step_llm
    encoders = TextEncoders.from_pretrained(root, device=device, llm_dtype=_default_dtype(device), llm_cfg=llm_cfg,
                                            clip_max_length=spec.clip.max_length)
    data = text_embeddings_to_bytes(encoders.encode([text]), version=f"{spec.name}:{root.name}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    return len(data)
