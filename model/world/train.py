"""Train the tiny model on the shapes world: ``python -m model train-tiny-world --out DIR`` (deterministic, CPU).

Recipe (the project's own code paths; sizes and why in docs/world.md):

1. a tiny model root from :func:`model.tiny.write_tiny_checkpoint` (random text encoders, kept frozen), with both
   tokenizers re-trained on the grammar's English and Chinese text (:func:`model.world.grammar.corpus`) so its words
   really split into their own pieces;
2. the tiny Video-VAE (z = 8 latent channels, 16x spatial / 8x temporal: 17 x 64 x 64 -> 3 x 4 x 4 x 8) trained for
   reconstruction on whole 64 x 64 clips of training prompts (bf16 autocast, 2 norm groups, a fixed posterior std of
   0.1, a small penalty on the latent mean's scale) in two phases: structure (L1 + MSE on pixels, object pixels
   weighted 6x), then colour at a lower lr (plus an L1 on the opponent-colour axes: without it every object comes
   back in the clips' mean hue);
3. a fixed set of training clips encoded once (posterior samples), then the tiny DiT trained by flow matching on
   them with ``model.flow``'s convention (the one ``dpo/`` uses: t = 0 noise, x_t = (1 - t) x0 + t x1, target
   v = x1 - x0), conditioned on ``prompt + positive suffix`` through the text encoders, with the preset's negative
   prompt as the unconditional input 10% of the time (so the app's CFG works);
4. written in the official layout: transformer shards < 4 MB, ``vae/vae_v2.safetensors`` in bf16 (< 5 MB).

Held-out prompt combinations (:func:`model.world.grammar.is_held_out`) are never rendered for training. The DiT is
meant to be stopped where it follows prompts only partly (``dit_steps``); the committed root follows backgrounds and
partly the objects' colour, not yet their count and motion (figures and next steps in docs/world.md).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model.world import grammar
from model.world.render import render

WORLD_VAE = dict(z_channels=8, encoder_ch=8, decoder_ch=8, encoder_ch_mult=(1, 1, 2, 4), decoder_ch_mult=(1, 1, 2, 4),
                 norm_groups=2, encoder_num_res_blocks=1, decoder_num_res_blocks=1)


@dataclass(frozen=True)
class WorldTrainConfig:
    """Sizes and schedule (the defaults wrote the committed root). ``quick()`` is the reduced recipe of the tests."""

    seed: int = 0
    size: int = 64
    frames: int = 17
    vae_steps: int = 850  # phase 1: structure (positions, count, luminance)
    vae_batch: int = 4
    vae_crop: int = 64  # < size: phase-1 steps on random crops on the latent grid (4x cheaper at 32, but a crop's
    # per-frame GroupNorm statistics are not a frame's: TA 0.39 vs 0.63, docs/world.md)
    vae_fg_weight: float = 5.0
    vae_chroma_steps: int = 750  # phase 2: whole clips, lower lr, plus an L1 on the opponent-colour axes
    vae_chroma_lr: float = 1e-3
    vae_chroma: float = 16.0  # weight of that L1 (without phase 2 every object comes back in the clips' mean hue)
    vae_clips: int = 200  # pre-rendered pool the VAE steps draw from
    vae_lr: float = 3e-3
    vae_kl: float = 1e-3
    vae_noise: float = 0.1  # fixed posterior std during VAE training (the encoder's logvar is trained towards it)
    vae_bf16: bool = True  # bf16 autocast for the VAE's steps (fp32 weights and optimizer): ~1.6x faster on a CPU
    train_prompts: int = 300
    seeds_per_prompt: int = 2
    dit_steps: int = 800
    dit_layers: int = 2  # transformer blocks (the tiny preset has 2)
    dit_batch: int = 16
    dit_lr: float = 1e-3
    dit_t_sampling: str = "uniform"  # training t density (model.flow.sample_training_t)
    cfg_dropout: float = 0.1
    dit_rope_theta: float = 10000.0  # the DiT's RoPE base (the released model's 10000); positions here span 3 x 4 x 4
    dit_object_weight: float = 1.0  # flow-loss weight of the latent cells an object occupies (1: every cell alike;
    # the objects fill a few of a clip's 48 cells, so the plain loss is mostly the background's)
    caption_noise: float = 0.0  # share of training clips whose rendered value of each ``noisy_attributes`` is another
    # value than the caption states (web captions are often wrong: the base then follows those words only partly)
    noisy_attributes: tuple[str, ...] = ("colour", "background")
    threads: int = 2  # torch CPU threads; the weights depend on it (float reduction order)
    vae_from: str | None = None  # a trained root whose VAE is reused (VAE stage skipped)

    @classmethod
    def quick(cls, **kw) -> WorldTrainConfig:
        """The DiT stage only (the committed root's VAE), on 80 prompts: what the tests train."""
        from model.world import default_root

        return cls(**{**dict(vae_from=str(default_root()), train_prompts=80, seeds_per_prompt=1, dit_steps=300,
                             dit_batch=16), **kw})


def object_cell_weights(latents: torch.Tensor, object_weight: float) -> torch.Tensor:
    """Per-cell flow-loss weights (N, F, 1, H, W) of latents (N, F, C, H, W): ``object_weight`` for the cells an
    object occupies, 1 for the background, normalised to mean 1 per clip. A cell is an object's when its distance
    to the frame's median cell (the background's latent) is above the clip's median distance plus half of its
    range (the background cells of a frame are alike; an object's differ)."""
    if object_weight == 1.0:
        return torch.ones(latents.shape[0], latents.shape[1], 1, *latents.shape[3:])
    bg = latents.flatten(3).median(dim=-1).values[..., None, None]  # (N, F, C, 1, 1)
    dist = (latents - bg).pow(2).sum(2, keepdim=True).sqrt()  # (N, F, 1, H, W)
    flat = dist.flatten(1)
    lo, hi = flat.median(1).values, flat.max(1).values
    cut = (lo + 0.5 * (hi - lo)).view(-1, 1, 1, 1, 1)
    w = torch.where(dist > cut, torch.tensor(float(object_weight)), torch.tensor(1.0))
    return w / w.flatten(1).mean(1).view(-1, 1, 1, 1, 1)


def _video_tensor(clips: np.ndarray) -> torch.Tensor:
    """(B, T, H, W, 3) uint8 -> (B, T, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(clips).permute(0, 1, 4, 2, 3).float() / 127.5 - 1.0


def _cosine(step: int, total: int, warmup: int = 20) -> float:
    return min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / max(1, total)))


def _retrain_tokenizers(root: Path) -> None:
    """Both tokenizers from the grammar's bilingual text plus the positive / negative magic prompts."""
    from model.checkpoint import CLIP_TOKENIZER_DIR, LLM_DIR, LLM_TOKENIZER
    from model.config import NEG_MAGIC, POS_MAGIC
    from model.presets import get_preset
    from model.tiny import bert_vocab, train_sentencepiece

    text = grammar.corpus() + [POS_MAGIC, NEG_MAGIC]
    (root / LLM_DIR / LLM_TOKENIZER).write_bytes(train_sentencepiece(text, vocab_size=500))
    vocab = "\n".join(bert_vocab(text, get_preset("tiny").clip.vocab_size)) + "\n"
    for name in ("vocab.txt", "vocab_org.txt"):
        (root / CLIP_TOKENIZER_DIR / name).write_text(vocab, encoding="utf-8")


# RGB -> the two opponent-colour axes (red - green, yellow - blue): what tells the world's colours apart
_OPPONENT = torch.tensor([[1.0, -1.0, 0.0], [0.5, 0.5, -1.0]])


def _mislabel(spec: grammar.WorldSpec, cfg: WorldTrainConfig, rng: np.random.Generator) -> grammar.WorldSpec:
    """What a training clip of caption ``spec`` shows: each of ``cfg.noisy_attributes`` is, with probability
    ``cfg.caption_noise``, one of the other values (never a held-out combination, so the share is a little below
    ``caption_noise``; an unstated size stays unstated; the caption itself after 100 held-out draws)."""
    if not cfg.caption_noise:
        return spec
    for _ in range(100):
        shown = spec
        for name in cfg.noisy_attributes:
            if getattr(spec, name) is not None and rng.random() < cfg.caption_noise:
                others = [v for v in grammar.VALUES[name] if v != getattr(spec, name)]
                change = {name: others[int(rng.integers(len(others)))]}
                if change.get("motion", shown.motion) not in grammar.DIRECTIONS:
                    change["speed"] = None  # a speed is stated only for a moving object
                shown = dataclasses.replace(shown, **change)
        if not grammar.is_held_out(shown):
            return shown
    return spec


def _step(loss: torch.Tensor, module: torch.nn.Module, opt, sched) -> None:
    """One optimizer step of both stages: backward, clip the gradient norm to 1, step, advance the lr schedule."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
    opt.step()
    sched.step()


def _train_vae_phase(vae, pool: np.ndarray, cfg: WorldTrainConfig, g: torch.Generator, *, steps: int, lr: float,
                     crop: int, chroma: float, desc: str, progress: bool) -> list[float]:
    """One VAE phase: ``steps`` AdamW steps (cosine lr) on batches of ``pool`` (N, T, H, W, 3) uint8 clips, random
    ``crop`` x ``crop`` windows aligned to the latent grid when ``crop`` < the clip size. Loss: L1 + MSE with object
    pixels weighted ``1 + vae_fg_weight``, plus ``chroma`` x the same-weighted L1 on the opponent-colour axes, plus
    small penalties keeping the latent scale near the flow's unit noise and the posterior std at ``vae_noise``.
    Returns the per-step reconstruction loss (L1 + MSE)."""
    from tqdm import tqdm

    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: _cosine(i, steps))
    size = pool.shape[2]
    losses = []
    bar = tqdm(range(steps), desc=desc, disable=not progress)
    for _ in bar:
        clips = pool[torch.randint(len(pool), (cfg.vae_batch,), generator=g).numpy()]
        if crop < size:  # a random spatial crop (the VAE is convolutional)
            y0, x0 = (int(v) * 16 for v in torch.randint((size - crop) // 16 + 1, (2,), generator=g))
            clips = clips[:, :, y0:y0 + crop, x0:x0 + crop]
        x = _video_tensor(np.ascontiguousarray(clips))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.vae_bf16):
            mean, logvar = vae.encode_moments(x, chunks_per_batch=None)
            z = mean + cfg.vae_noise * torch.randn(mean.shape, generator=g)
            y = vae.decode(z, chunks_per_batch=None).float()
        # objects are a few % of the pixels: weight the pixels that differ from the clip's background colour
        bg = x[:, :, :, :1, :1]  # corners are always background in this world
        weight = 1.0 + cfg.vae_fg_weight * ((x - bg).abs().amax(2, keepdim=True) > 0.1).float()
        rec = ((y - x).abs() * weight).mean() + ((y - x).pow(2) * weight).mean()
        loss = rec + cfg.vae_kl * 0.5 * mean.pow(2).mean()  # keeps the latent scale near the flow's unit noise
        loss = loss + 1e-3 * (logvar - 2 * math.log(cfg.vae_noise)).pow(2).mean()  # the std the decoder trains with
        if chroma:  # hue is a small signal next to luminance: the decoder learns it late without this term
            loss = loss + chroma * (torch.einsum("ck,btkhw->btchw", _OPPONENT, y - x).abs() * weight).mean()
        _step(loss, vae, opt, sched)
        losses.append(rec.item())
        bar.set_postfix(rec=f"{rec.item():.4f}")
    return losses


def _move_root(built: Path, out: Path) -> None:
    """Move a finished root's entries into ``out`` (other files there stay), replacing those of the same name;
    model_index.json goes first out and last in, so a root caught half-moved is refused by the loader."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "model_index.json").unlink(missing_ok=True)
    for entry in sorted(built.iterdir(), key=lambda p: p.name == "model_index.json"):
        target = out / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        entry.rename(target)


def train_tiny_world(out: str | Path, cfg: WorldTrainConfig | None = None, *, progress: bool = True,
                     log=print) -> dict:
    """Write a trained tiny root to ``out``; returns a summary (losses, timings). Same config -> same weights."""
    from tqdm import tqdm

    from model.checkpoint import load_vae, save_dit, save_vae
    from model.config import VAEConfig
    from model.flow import flow_matching_loss, sample_training_t
    from model.presets import get_preset
    from model.text_encoder import TextEmbeddings, TextEncoders
    from model.tiny import write_tiny_checkpoint
    from model.transformer import StepVideoDiT
    from model.vae import VideoVAE

    cfg = cfg or WorldTrainConfig()
    out = Path(out)
    for name in ("dit_steps", "dit_layers", "seeds_per_prompt", "train_prompts"):  # checked before writing ``out``
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}")
    if not 1 <= cfg.threads <= 256:
        raise ValueError(f"threads must be from 1 to 256, got {cfg.threads}")
    if cfg.dit_layers > 48:  # the official DiT has 48 blocks; a tiny root with more would not fit its 5 MB files
        raise ValueError(f"dit-layers must be at most 48, got {cfg.dit_layers}")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file: give a folder (it is created, or rewritten when it holds a root)")
    if not 0.0 <= cfg.caption_noise < 1.0:
        raise ValueError(f"caption-noise must be in [0, 1), got {cfg.caption_noise}")
    if isinstance(cfg.noisy_attributes, str) or len(set(cfg.noisy_attributes)) != len(cfg.noisy_attributes):
        raise ValueError(f"noisy attributes must be a tuple of distinct names, got {cfg.noisy_attributes!r}")
    noisable = sorted(set(grammar.VALUES) - {"speed"})  # speed follows motion
    unknown = set(cfg.noisy_attributes) - set(noisable)
    if unknown:
        raise ValueError(f"noisy attributes must be among {noisable}, got {sorted(unknown)}")
    if cfg.vae_from:
        source = Path(cfg.vae_from)
        if not (source / "vae" / "vae_v2.safetensors").is_file() or not (source / "vae" / "config.json").is_file():
            raise ValueError(f"--vae-from {source}: no trained VAE there (needs {source / 'vae' / 'vae_v2.safetensors'} "
                             "and vae/config.json)")
        if source.resolve() == out.resolve():
            raise ValueError(f"--out {out} is the --vae-from root: the recipe rewrites its output root first, which "
                             "would replace the VAE it is asked to reuse; write to another folder")
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    t_start = time.time()
    summary: dict = {"config": dataclasses.asdict(cfg)}
    # built in a hidden sibling folder and moved into ``out`` only when complete: an interrupted or failed run leaves
    # ``out`` as it was (never a root that looks complete but holds the random weights it starts from)
    final, out = out, out.parent / f".{out.name}.partial"
    shutil.rmtree(out, ignore_errors=True)
    try:
        preset = get_preset("tiny")
        write_tiny_checkpoint(out, seed=cfg.seed)
        _retrain_tokenizers(out)

        def stage_seed(stage: int) -> tuple[torch.Generator, np.random.Generator]:
            # every stage starts from its own seeds, so the DiT stage on a ``vae_from`` root reproduces the full
            # recipe's DiT exactly (the VAE stage's draws do not shift it)
            torch.manual_seed(cfg.seed * 10 + stage)
            return torch.Generator().manual_seed(cfg.seed * 10 + stage), np.random.default_rng(cfg.seed * 10 + stage)

        g, rng = stage_seed(1)

        def training_specs(n: int) -> list[grammar.WorldSpec]:
            specs = []
            while len(specs) < n:
                spec = grammar.sample_spec(rng)
                if not grammar.is_held_out(spec):
                    specs.append(spec)
            return specs

        # -- 1. VAE ------------------------------------------------------------------------------------------
        if cfg.vae_from:
            from model.checkpoint import read_vae_config

            vae_cfg = read_vae_config(cfg.vae_from)
            vae = load_vae(cfg.vae_from, vae_cfg)
            steps = 0
        else:
            vae_cfg = dataclasses.replace(VAEConfig(), **WORLD_VAE)
            vae = VideoVAE(vae_cfg)
            vae.init_weights()
            steps = cfg.vae_steps
        pool = np.stack([render(s, i, size=cfg.size, frames=cfg.frames) for i, s in enumerate(
            tqdm(training_specs(1 if cfg.vae_from else cfg.vae_clips), desc="render", disable=not progress))])
        vae.train()
        losses = _train_vae_phase(vae, pool, cfg, g, steps=steps, lr=cfg.vae_lr, crop=cfg.vae_crop, chroma=0.0,
                                  desc="VAE 1/2", progress=progress)
        phase1 = len(losses)
        if not cfg.vae_from:
            losses += _train_vae_phase(vae, pool, cfg, g, steps=cfg.vae_chroma_steps, lr=cfg.vae_chroma_lr,
                                       crop=cfg.size, chroma=cfg.vae_chroma, desc="VAE 2/2", progress=progress)
        vae.eval().requires_grad_(False)
        k = max(1, len(losses) // 10)
        summary["vae"] = {"rec_first": float(np.mean(losses[:k])) if losses else None, "from": cfg.vae_from,
                          "rec_phase1_last": float(np.mean(losses[max(0, phase1 - k):phase1])) if phase1 else None,
                          "steps": [phase1, len(losses) - phase1],
                          "rec_last": float(np.mean(losses[-k:])) if losses else None,
                          "s": round(time.time() - t_start, 1)}
        save_vae(vae, out, vae_cfg, dtype=torch.bfloat16)
        vae = load_vae(out, vae_cfg).eval().requires_grad_(False)  # the saved (bf16-rounded) weights encode the data
        g, rng = stage_seed(2)

        # -- 2. encode the training set ------------------------------------------------------------------------
        t1 = time.time()
        encoders = TextEncoders.from_pretrained(out, device="cpu", llm_dtype=torch.float32,
                                                clip_max_length=preset.clip.max_length)
        specs = training_specs(cfg.train_prompts)
        prompts = [grammar.to_prompt(s, grammar.LANGUAGES[i % 2]) for i, s in enumerate(specs)]
        text = encoders.encode([p + preset.positive_suffix for p in prompts])
        negative = encoders.encode([preset.negative_prompt])
        latents, owner = [], []
        bar = tqdm(range(0, len(specs)), desc="encode", disable=not progress)
        mislabel_rng = np.random.default_rng(cfg.seed * 10 + 4)
        for i in bar:
            clips = np.stack([render(_mislabel(specs[i], cfg, mislabel_rng), 1000 + j, size=cfg.size,
                                     frames=cfg.frames) for j in range(cfg.seeds_per_prompt)])
            mean, logvar = vae.encode_moments(_video_tensor(clips), chunks_per_batch=None)
            latents.append(mean + cfg.vae_noise * torch.randn(mean.shape, generator=g))
            owner += [i] * cfg.seeds_per_prompt
        x1_all = torch.cat(latents)  # (N, 3, 8, 4, 4)
        owner = torch.tensor(owner)
        cell_weight = object_cell_weights(x1_all, cfg.dit_object_weight)  # (N, 3, 1, 4, 4), mean 1 per clip
        summary["latents"] = {"n": len(x1_all), "std": round(float(x1_all.std()), 3),
                              "mean": round(float(x1_all.mean()), 3), "s": round(time.time() - t1, 1)}

        # -- 3. DiT by flow matching ---------------------------------------------------------------------------
        t2 = time.time()
        g, _ = stage_seed(3)
        dit_cfg = dataclasses.replace(preset.dit, in_channels=vae_cfg.z_channels, out_channels=vae_cfg.z_channels,
                                      num_layers=cfg.dit_layers, rope_theta=cfg.dit_rope_theta)
        dit = StepVideoDiT(dit_cfg)
        dit.init_weights(zero_out=True)
        opt = torch.optim.AdamW(dit.parameters(), lr=cfg.dit_lr, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: _cosine(i, cfg.dit_steps, warmup=50))
        dit.train()
        losses = []
        bar = tqdm(range(cfg.dit_steps), desc="DiT", disable=not progress)
        for _ in bar:
            idx = torch.randint(len(x1_all), (cfg.dit_batch,), generator=g)
            x1 = x1_all[idx]
            emb_idx = owner[idx]
            drop = torch.rand(cfg.dit_batch, generator=g) < cfg.cfg_dropout
            cond = TextEmbeddings(text.llm_states[emb_idx], text.llm_mask[emb_idx], text.clip_states[emb_idx],
                                  text.clip_mask[emb_idx])
            neg = negative.expand(cfg.dit_batch)
            llm_states = torch.where(drop[:, None, None], neg.llm_states, cond.llm_states)
            llm_mask = torch.where(drop[:, None], neg.llm_mask, cond.llm_mask)
            clip_states = torch.where(drop[:, None, None], neg.clip_states, cond.clip_states)
            x0 = torch.randn(x1.shape, generator=g)
            t = sample_training_t(cfg.dit_batch, g, cfg.dit_t_sampling)
            loss = flow_matching_loss(lambda xt, tt, s=llm_states, m=llm_mask, c=clip_states: dit(xt, tt, s, m, c), x0, x1, t,
                                      weight=cell_weight[idx])
            _step(loss, dit, opt, sched)
            losses.append(loss.item())
            bar.set_postfix(loss=f"{loss.item():.4f}")
        dit.eval().requires_grad_(False)
        k = max(1, len(losses) // 10)
        summary["dit"] = {"loss_first": float(np.mean(losses[:k])), "loss_last": float(np.mean(losses[-k:])),
                          "s": round(time.time() - t2, 1)}
        shutil.rmtree(out / "transformer")  # the random 4-channel DiT's shards
        save_dit(dit, out, dit_cfg, max_shard_bytes=4 * 1024**2, dtype=torch.float32)
        summary["total_s"] = round(time.time() - t_start, 1)
        index = json.loads((out / "model_index.json").read_text())
        index["_stepvideo_world"] = {"world": "shapes", "recipe": summary["config"]}
        (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
        _move_root(out, final)
    finally:
        shutil.rmtree(out, ignore_errors=True)
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(False)
    if log:
        log(json.dumps(summary))
    return summary
