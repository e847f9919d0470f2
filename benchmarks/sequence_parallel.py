"""Sequence-parallel overhead: the tiny preset's DiT sampling on 1 process vs N ranks (gloo on CPU, NCCL on GPUs).

    OMP_NUM_THREADS=1 python benchmarks/sequence_parallel.py [--world-size 2] [--steps 8] [--sizes 17x64x64,17x256x256]
    python benchmarks/sequence_parallel.py --device cuda --world-size 4 --preset stepvideo-t2v --root ROOT --sizes ...

For each video size: seconds per denoising step (CFG batch 2) with one process and with ``--world-size`` ranks
(``model.parallel.ParallelPipeline``: rank 0 here, the others child processes), the ratio, and the largest latent
difference between the two. Each rank uses ``OMP_NUM_THREADS`` threads on the CPU. Prints a table, then one JSON line.
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

from model.parallel import ParallelPipeline  # noqa: E402
from model.pipeline import StepVideoPipeline  # noqa: E402
from model.tiny import write_tiny_checkpoint  # noqa: E402


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time_sample(pipe, text, negative, seeds, steps, size, device) -> tuple[float, torch.Tensor]:
    frames, height, width = size
    kwargs = dict(negative=negative, num_frames=frames, height=height, width=width)
    pipe.sample(text, seeds, num_steps=1, **kwargs)  # warm-up
    _sync(device)
    start = time.perf_counter()
    latents = pipe.sample(text, seeds, num_steps=steps, **kwargs)
    _sync(device)
    return (time.perf_counter() - start) / steps, latents.cpu()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", help="model root (default: write a tiny one to a temp dir)")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--world-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--sizes", default="17x64x64,17x256x256", help="FRAMESxHEIGHTxWIDTH, comma separated")
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root) if args.root else write_tiny_checkpoint(Path(tmp) / "tiny", seed=0)
        single = StepVideoPipeline.from_pretrained(root, args.preset, device=args.device)
        text = single.encode_text(["A ballet dancer practicing in the dance studio."])
        negative = single.encode_text([single.preset.negative_prompt])
        seeds = [0]
        one = {size: _time_sample(single, text, negative, seeds, args.steps, size, args.device) for size in sizes}
        del single
        start = time.perf_counter()
        with ParallelPipeline.launch(root, args.preset, device=args.device, world_size=args.world_size) as parallel:
            launch_s = time.perf_counter() - start
            for size in sizes:
                per_step, latents = _time_sample(parallel, text, negative, seeds, args.steps, size, args.device)
                base, ref = one[size]
                tokens = latents.shape[1] * latents.shape[3] * latents.shape[4]
                results.append({
                    "size": "x".join(map(str, size)), "tokens": tokens, "one_process_s_per_step": round(base, 5),
                    f"{args.world_size}_ranks_s_per_step": round(per_step, 5), "ratio": round(per_step / base, 3),
                    "max_abs_diff": float((latents - ref).abs().max()),
                })
    print(f"sequence parallel, preset {args.preset}, device {args.device}, {args.world_size} ranks, "
          f"{torch.get_num_threads()} thread(s) per rank, CFG batch 2, {args.steps} steps; launch {launch_s:.1f}s")
    print(f"{'size':>12} {'tokens':>7} {'1 proc s/step':>14} {f'{args.world_size} ranks s/step':>15} {'ratio':>6} "
          f"{'max|diff|':>10}")
    for r in results:
        print(f"{r['size']:>12} {r['tokens']:>7} {r['one_process_s_per_step']:>14.4f} "
              f"{r[f'{args.world_size}_ranks_s_per_step']:>15.4f} {r['ratio']:>6.2f} {r['max_abs_diff']:>10.2e}")
    print(json.dumps({"launch_s": round(launch_s, 2), "world_size": args.world_size, "device": args.device,
                      "results": results}))


if __name__ == "__main__":
    main()
