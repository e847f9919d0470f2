"""Generation throughput: candidates per minute and where the time goes (text encoding, denoising, decoding, ffmpeg,
upload), through the same services the Celery GPU worker runs (``generation_workers.services``), without the broker
and the database (their per-candidate cost is a few row updates).

    # CPU, tiny preset (what CI can run): 2 prompts x 3 seeds, 32x32, 17 frames, 4 steps
    python benchmarks/generation.py
    # GPU (the lead runs it): full-size random weights, 544x992, 68 frames, peak GPU memory
    python benchmarks/generation.py --preset stepvideo-t2v --random-weights --height 544 --width 992 --frames 68 \
        --steps 50 --prompts 1 --seeds 2

Storage is a local temporary folder unless ``STORAGE_BACKEND=s3`` and the ``AWS_*`` variables are set. The pipeline
load is reported separately (``load_s``): a worker pays it once. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def django_setup(tmp: Path) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings.test")
    os.environ.setdefault("DATABASE_URL", "postgresql://unused@127.0.0.1:1/unused")  # never connected to
    os.environ.setdefault("STORAGE_BACKEND", "local")
    os.environ.setdefault("DJANGO_MEDIA_ROOT", str(tmp / "media"))
    os.environ.setdefault("VIDEODPO_TEST_TMP", str(tmp))
    import django

    django.setup()


def random_pipeline(preset_name: str, tokenizer_root: Path, device: str):
    """A full-size pipeline with random bf16 weights materialised on ``device`` (no checkpoint), tokenizers borrowed
    from a tiny root (their ids are valid in the full vocabularies)."""
    import torch

    from model.checkpoint import LLM_DIR, LLM_TOKENIZER
    from model.pipeline import StepVideoPipeline
    from model.presets import get_preset
    from model.text_encoder import StepLLM, StepLLMTokenizer, TextEncoders, build_clip
    from model.transformer import StepVideoDiT
    from model.vae import VideoVAE

    preset = get_preset(preset_name)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32

    def make(cls, cfg, dt):
        with torch.device("meta"):
            module = cls(cfg)
        module = module.to(dt).to_empty(device=device)
        torch.manual_seed(0)
        if isinstance(module, StepVideoDiT):
            module.init_weights(zero_out=False)
        elif isinstance(module, VideoVAE):
            module.init_weights(std=0.02)
        else:
            module.init_weights()
        return module.eval()

    dit = make(StepVideoDiT, preset.dit, dtype)
    vae = make(VideoVAE, preset.vae, dtype)
    llm = make(StepLLM, preset.step_llm, dtype)
    clip = build_clip(preset.clip).to(device).eval()
    _, clip_tokenizer = _tiny_clip_tokenizer(tokenizer_root)
    llm_tokenizer = StepLLMTokenizer(tokenizer_root / LLM_DIR / LLM_TOKENIZER, preset.step_llm)
    encoders = TextEncoders(llm, llm_tokenizer, clip, clip_tokenizer, preset.clip.max_length)
    return StepVideoPipeline(dit, vae, encoders, preset, device=device, dtype=dtype)


def _tiny_clip_tokenizer(root: Path):
    from transformers import BertTokenizer

    from model.checkpoint import CLIP_TOKENIZER_DIR

    return None, BertTokenizer.from_pretrained(str(root / CLIP_TOKENIZER_DIR))


PROMPTS = [
    "a red ball rolls across green grass in the afternoon sun",
    "a cat jumps onto a wooden table and knocks over a cup",
    "waves crash on a rocky shore at dusk, slow motion",
    "a chef flips a pancake in a busy kitchen",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--root", help="model root (default: a fresh tiny root)")
    parser.add_argument("--random-weights", action="store_true", help="full-size random weights on the device")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--height", type=int, default=32)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--cfg", type=float, default=5.0)
    parser.add_argument("--shift", type=float, default=13.0)
    parser.add_argument("--fps", type=int, default=None)
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--no-batch-seeds", action="store_true", help="one sampling call per seed")
    parser.add_argument("--x264-preset", default="medium")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--keep-text-encoders", action="store_true",
                        help="on CUDA, keep the text encoders on the GPU while sampling (default: encode every prompt "
                             "first, then free them, as a split text queue would)")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-generation-"))
    django_setup(tmp)
    import torch
    from django.conf import settings

    from annotation.models import Candidate, CandidateGroup, Checkpoint, Prompt, Round
    from generation_workers import screening, services
    from generation_workers.pipeline_cache import LoadedPipeline, PipelineCache, resolve_device
    from model.presets import get_preset
    from model.tiny import write_tiny_checkpoint

    if args.threads:
        torch.set_num_threads(args.threads)
    settings.VIDEODPO = {**settings.VIDEODPO, "X264_PRESET": args.x264_preset}
    device = resolve_device(args.device)
    preset = get_preset(args.preset)
    fps = args.fps or preset.fps
    root = Path(args.root) if args.root else write_tiny_checkpoint(tmp / "tiny-root", seed=0)
    cuda = device.startswith("cuda")

    start = time.perf_counter()
    if args.random_weights:
        pipeline = random_pipeline(args.preset, root, device)
        loaded = LoadedPipeline((str(root), args.preset, device), pipeline, root, args.preset, device,
                                f"{args.preset}-random", 0.0)
    else:
        loaded = PipelineCache().get(uri=str(root), preset=args.preset, device=device)
    if cuda:
        torch.cuda.synchronize()
    load_s = time.perf_counter() - start

    checkpoint = Checkpoint(id=1, name="bench", uri=str(root), preset=args.preset)
    rnd = Round(id=1, name="bench", preset=args.preset, num_steps=args.steps, cfg_scale=args.cfg, shift=args.shift,
                height=args.height, width=args.width, num_frames=args.frames, fps=fps, seeds_per_prompt=args.seeds,
                policy_checkpoint=checkpoint)
    timings = services.Timings()
    flagged = 0
    n = 0
    peaks: dict[str, float] = {}
    wall_start = time.perf_counter()
    jobs = []
    for p in range(args.prompts):  # 1. text encoding (every prompt, and the negative prompt once)
        prompt = Prompt(id=1000 + p, text=PROMPTS[p % len(PROMPTS)] + f" (take {p})")
        group = CandidateGroup(id=100 + p, round=rnd, prompt=prompt)
        cands = [Candidate(id=10_000 + p * 100 + k, group=group, checkpoint=checkpoint, seed=k) for k in range(args.seeds)]
        job = services.Job(rnd, group, prompt, checkpoint, cands)
        jobs.append((job, services.text_embeddings_ensure(loaded=loaded, prompt=prompt, timings=timings)))
    if args.cfg != 1.0:
        with timings.stage("text_encoding"):
            loaded.negative(loaded.pipeline.preset.negative_prompt)
    if cuda:
        peaks["text_encoding"] = round(torch.cuda.max_memory_allocated() / 1024**3, 2)
        if not args.keep_text_encoders:
            loaded.pipeline.text_encoders = None
            torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    for job, text in jobs:  # 2. sampling, 3. per candidate: latent, decode, screen, encode, upload
        batches = [[c] for c in job.candidates] if args.no_batch_seeds else [job.candidates]
        for batch in batches:
            latents = services.latents_sample(loaded=loaded, job=job, text=text, candidates=batch, timings=timings)
            if cuda:
                peaks["denoising"] = max(peaks.get("denoising", 0.0), round(torch.cuda.max_memory_allocated() / 1024**3, 2))
                torch.cuda.reset_peak_memory_stats()
            for cand, latent in zip(batch, latents, strict=True):
                services.latent_store(job=job, candidate=cand, latent=latent, loaded=loaded, timings=timings)
                frames = services.frames_decode(loaded=loaded, latent=latent, job=job, timings=timings)
                with timings.stage("screening"):
                    flags, _ = screening.screen_frames(frames)
                flagged += bool(flags)
                services.candidate_render(job=job, candidate=cand, frames=frames, timings=timings)
                n += 1
                print(f"candidate {n}: {time.perf_counter() - wall_start:.1f}s", file=sys.stderr)
            if cuda:
                peaks["decoding"] = max(peaks.get("decoding", 0.0), round(torch.cuda.max_memory_allocated() / 1024**3, 2))
                torch.cuda.reset_peak_memory_stats()
    wall = time.perf_counter() - wall_start

    split = timings.as_dict()
    accounted = sum(split.values())
    result = {
        "benchmark": "generation",
        "preset": args.preset,
        "device": device,
        "random_weights": args.random_weights,
        "size": {"frames": args.frames, "height": args.height, "width": args.width},
        "steps": args.steps,
        "cfg_scale": args.cfg,
        "prompts": args.prompts,
        "seeds": args.seeds,
        "batch_seeds": not args.no_batch_seeds,
        "candidates": n,
        "wall_s": round(wall, 3),
        "candidates_per_min": round(60.0 * n / wall, 3),
        "s_per_candidate": round(wall / n, 3),
        "load_s": round(load_s, 3),
        "split_s": split,
        "split_frac": {k: round(v / wall, 4) for k, v in split.items()},
        "other_s": round(wall - accounted, 3),
        "flagged": flagged,
        "torch_threads": torch.get_num_threads(),
        "storage": settings.STORAGE_BACKEND,
    }
    if cuda:
        result["peak_gpu_gb"] = max(peaks.values())
        result["peak_gpu_gb_by_stage"] = peaks
        result["text_encoders_freed"] = not args.keep_text_encoders
        result["gpu"] = torch.cuda.get_device_name()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
