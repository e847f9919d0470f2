"""``python -m model info --preset NAME [--json]``, ``python -m model make-tiny --out DIR [--seed 0]``,
``python -m model train-tiny-world --out DIR [--seed 0] [--quick]`` (the tiny model trained on the shapes world) and
``python -m model encode-text --root MODEL_ROOT --preset NAME --out FILE TEXT`` (text-encoder outputs in the stored
format, e.g. of the empty prompt for the DPO trainer's prompt dropout)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from model.presets import PRESET_NAMES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model", description="Step-Video-T2V model utilities")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="parameter counts per component (meta device) and the per-GPU memory plan")
    info.add_argument("--preset", required=True, choices=PRESET_NAMES)
    info.add_argument("--json", action="store_true", help="print {component: {params, keys: {name: shape}}} as JSON")
    info.add_argument("--frames", type=int, help="video frames for the memory plan (default: the preset's)")
    info.add_argument("--height", type=int, help="video height for the memory plan (default: the preset's)")
    info.add_argument("--width", type=int, help="video width for the memory plan (default: the preset's)")
    tiny = sub.add_parser("make-tiny", help="write a complete tiny model root (random weights) in the official layout")
    tiny.add_argument("--out", required=True, help="output folder (the model root)")
    tiny.add_argument("--seed", type=int, default=0)
    world = sub.add_parser("train-tiny-world", help="train the tiny model on the shapes world (docs/world.md), CPU")
    world.add_argument("--out", required=True, help="output folder (the model root)")
    world.add_argument("--seed", type=int, default=0)
    world.add_argument("--threads", type=int, default=2, help="torch CPU threads (the committed root: 2)")
    world.add_argument("--quick", action="store_true", help="the reduced recipe the tests use (about a minute)")
    world.add_argument("--vae-from", default=None, help="reuse this root's VAE (the DiT stage only; same DiT weights "
                       "as the full recipe when the root was written by it)")
    world.add_argument("--dit-steps", type=int, default=None, help="flow-matching steps of the DiT stage")
    world.add_argument("--dit-layers", type=int, default=None, help="transformer blocks of the DiT (default 2)")
    world.add_argument("--caption-noise", type=float, default=None,
                       help="in [0, 1): the chance that a training clip shows another colour (and, apart, another "
                       "background) than its caption says (default 0)")
    world.add_argument("--train-prompts", type=int, default=None,
                       help="training prompts of the DiT stage (default 300; 1500 with --dit-steps 2400 follows the "
                       "count word twice as often, docs/world.md)")
    world.add_argument("--seeds-per-prompt", type=int, default=None,
                       help="rendered training clips per training prompt of the DiT stage (default 2)")
    world.add_argument("--dit-rope-theta", type=float, default=None,
                       help="the DiT's RoPE base (default 10000, the released model's)")
    world.add_argument("--dit-object-weight", type=float, default=None,
                       help="flow-loss weight of the latent cells objects occupy (default 1: every cell alike)")
    enc = sub.add_parser("encode-text", help="write one prompt's text-encoder outputs in the stored format")
    enc.add_argument("--root", required=True, help="model root with the text encoders")
    enc.add_argument("--preset", default="tiny", choices=PRESET_NAMES)
    enc.add_argument("--out", required=True, help="output .safetensors file")
    enc.add_argument("text", help="the prompt, verbatim ('' for the empty prompt used by prompt dropout)")
    args = parser.parse_args(argv)

    if args.command == "info":
        from model.info import format_table, preset_info

        data = preset_info(args.preset)
        if args.json:
            json.dump({k: {"params": v["params"], "keys": v["keys"]} for k, v in data.items()}, sys.stdout)
            sys.stdout.write("\n")
        else:
            from model.memory import format_memory_plan

            print(format_table(args.preset, data))
            print()
            try:
                plan = format_memory_plan(args.preset, num_frames=args.frames, height=args.height, width=args.width)
            except ValueError as exc:  # a video size the VAE cannot encode
                parser.error(str(exc))
            print(plan)
        return 0
    if args.command == "encode-text":
        from model.pipeline import write_text_embedding_file

        size = write_text_embedding_file(args.root, args.text, args.out, preset=args.preset)
        print(f"wrote {args.out} ({size} bytes) for {args.text!r}")
        return 0
    if args.command == "train-tiny-world":
        from model.world.train import WorldTrainConfig, train_tiny_world

        given = {"vae_from": args.vae_from, "dit_steps": args.dit_steps, "dit_layers": args.dit_layers,
                 "caption_noise": args.caption_noise, "seeds_per_prompt": args.seeds_per_prompt,
                 "train_prompts": args.train_prompts,
                 "dit_object_weight": args.dit_object_weight, "dit_rope_theta": args.dit_rope_theta}
        extra = {k: v for k, v in given.items() if v is not None}
        cfg = (WorldTrainConfig.quick if args.quick else WorldTrainConfig)(seed=args.seed, threads=args.threads, **extra)
        try:
            summary = train_tiny_world(args.out, cfg, log=None)
        except ValueError as e:
            print(f"train-tiny-world: {e}", file=sys.stderr)
            return 2
        print(f"wrote tiny-world model root {args.out} in {summary['total_s']:.0f}s: {json.dumps(summary)}")
        return 0
    if args.command == "make-tiny":
        from model.tiny import write_tiny_checkpoint

        start = time.perf_counter()
        root = write_tiny_checkpoint(args.out, seed=args.seed)
        print(f"wrote tiny model root {root} (seed {args.seed}) in {time.perf_counter() - start:.1f}s")
        return 0
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
