"""CPU benchmark: one full tiny-preset generation (text encode + denoising + VAE decode), time per stage.

    python benchmarks/model_cpu.py [--root DIR] [--steps N] [--seeds 2]

Without --root a tiny model root is written to a temporary folder first (``model.tiny``). Prints a table and, last,
one JSON line with ``total_s`` (encode + sample + decode, excluding model loading).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from model.pipeline import StepVideoPipeline  # noqa: E402
from model.presets import get_preset  # noqa: E402
from model.tiny import write_tiny_checkpoint  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", help="tiny model root (default: write one to a temp dir)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the tiny preset's)")
    parser.add_argument("--seeds", type=int, default=1, help="videos generated in one batch")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    preset = get_preset("tiny")
    timings: dict[str, float] = {}

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root) if args.root else None
        if root is None:
            start = time.perf_counter()
            root = write_tiny_checkpoint(Path(tmp) / "tiny", seed=0)
            timings["make_tiny_s"] = time.perf_counter() - start

        start = time.perf_counter()
        pipe = StepVideoPipeline.from_pretrained(root, preset="tiny", device="cpu")
        timings["load_s"] = time.perf_counter() - start

        prompts = ["A ballet dancer practicing in the dance studio." + preset.positive_suffix]
        seeds = list(range(args.seeds))
        with torch.inference_mode():
            start = time.perf_counter()
            text = pipe.encode_text(prompts)
            negative = pipe.encode_text([preset.negative_prompt])
            timings["text_encode_s"] = time.perf_counter() - start

            start = time.perf_counter()
            latents = pipe.sample(text, seeds, negative=negative, num_steps=args.steps)
            timings["sample_s"] = time.perf_counter() - start

            start = time.perf_counter()
            frames = pipe.decode(latents)
            timings["vae_decode_s"] = time.perf_counter() - start

    steps = args.steps or preset.sampler.num_steps
    timings["step_s"] = timings["sample_s"] / steps
    timings["total_s"] = timings["text_encode_s"] + timings["sample_s"] + timings["vae_decode_s"]
    print(
        f"tiny preset on CPU ({torch.get_num_threads()} threads): {len(seeds)} video(s) of "
        f"{preset.num_frames}x{preset.height}x{preset.width}, {steps} steps, CFG {preset.sampler.cfg_scale}"
    )
    print(f"latents {tuple(latents.shape)}  frames {tuple(frames.shape)} {frames.dtype}")
    print(f"{'stage':<16}{'seconds':>10}")
    for name, value in timings.items():
        print(f"{name:<16}{value:>10.3f}")
    result = {k: round(v, 4) for k, v in timings.items()}
    result.update({"frames": list(frames.shape), "steps": steps})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
