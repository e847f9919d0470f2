"""Command line: ``python -m dpo {train,average,merge-lora,validate}``.

    python -m dpo train --config C.yaml --manifest pairs.parquet --init MODEL_ROOT --out DIR [--reference MODEL_ROOT]
                        [--resume] [--set k=v ...] [--report-to tensorboard|mlflow|wandb|all|none ...]
    torchrun --nproc_per_node 8 -m dpo train ...          (DDP; FSDP2 with `fsdp: full_shard` in the config)
    python -m dpo average --out DIR CKPT1 CKPT2 ... [--base MODEL_ROOT] [--dtype bfloat16|float32]
    python -m dpo merge-lora --base MODEL_ROOT --adapter DIR/checkpoints/step-N/adapter --out OUT_ROOT
    python -m dpo validate --manifest pairs.parquet       (checks every pair and file, prints a summary)
    python -m dpo reward train --manifest pairs.parquet --init MODEL_ROOT --out DIR [--aspects overall,ta] [--resume]
    python -m dpo reward eval --manifest pairs.parquet --init MODEL_ROOT --reward DIR
    python -m dpo reward score --init MODEL_ROOT --reward DIR --latent L.safetensors --text T.safetensors
    python -m dpo reward train --backbone vlm --videoalign videoalign.csv --vlm QWEN2_VL_DIR --out DIR [--lora-rank 16]
    python -m dpo reward eval --reward DIR --videoalign videoalign.csv
    python -m dpo reward score --reward DIR --video clip.mp4 --prompt "a red circle moving right"

Exit codes: 0 done (or stopped by SIGTERM/SIGINT after saving a checkpoint), 1 bad input, 2 non-finite loss.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path

from dpo.reward_config import RewardDataError


def _train(args: argparse.Namespace) -> int:
    from dpo.config import FlowDPOConfig, parse_override
    from dpo.trainer import FlowDPOTrainer, NonFiniteLossError

    overrides = dict(parse_override(s) for s in args.set or [])
    if args.report_to:
        overrides["report_to"] = args.report_to
    config = FlowDPOConfig.from_file(args.config, overrides) if args.config else FlowDPOConfig.from_dict(overrides)
    out = args.out or config.output_dir
    if out is None:
        raise SystemExit("dpo train: --out is required (or output_dir in the config)")
    trainer = FlowDPOTrainer(config, manifest=args.manifest, init=args.init, reference=args.reference,
                             out_dir=out, resume=args.resume,
                             progress=not args.no_progress)
    # SIGTERM (Celery revoke, k8s) / SIGINT: finish the current step, save a resumable checkpoint, exit 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: trainer.request_stop())
    try:
        result = trainer.run()
    except NonFiniteLossError as exc:
        logging.getLogger("dpo").error("%s", exc)
        return 2
    summary = {"steps": result.steps, "stopped": result.stopped,
               "final_dir": None if result.final_dir is None else str(result.final_dir),
               "last_checkpoint": None if result.last_checkpoint is None else str(result.last_checkpoint),
               "loss": result.metrics.get("loss"), "rewards/accuracies": result.metrics.get("rewards/accuracies")}
    if trainer.is_main:
        print(json.dumps(summary))
    return 0


def _average(args: argparse.Namespace) -> int:
    import torch

    from dpo.average import average_checkpoints

    folder = average_checkpoints(args.checkpoints, args.out, base=args.base, dtype=getattr(torch, args.dtype))
    print(json.dumps({"out": str(Path(args.out)), "transformer": str(folder), "num_checkpoints": len(args.checkpoints)}))
    return 0


def _merge(args: argparse.Namespace) -> int:
    import torch

    from dpo.average import merge_lora

    merge_lora(args.base, args.adapter, args.out, dtype=getattr(torch, args.dtype))
    print(json.dumps({"out": str(Path(args.out))}))
    return 0


def _validate(args: argparse.Namespace) -> int:
    from collections import Counter

    from dpo.data import read_manifest, validate_pairs

    records = read_manifest(args.manifest)
    shapes = validate_pairs(records, check_values=not args.headers_only)
    print(json.dumps({"num_pairs": len(records), "shapes": {str(k): v for k, v in Counter(shapes).items()}}))
    return 0


def _reward_dit(init: str):
    import torch

    from model.checkpoint import load_dit

    return load_dit(init, device="cpu", dtype=torch.float32)


def _reward_train(args: argparse.Namespace) -> int:
    if args.backbone == "vlm":
        return _reward_train_vlm(args)
    from dpo.data import read_manifest
    from dpo.reward import LatentRewardConfig, train_latent_reward

    _require(args, "--manifest", "--init", backbone="latent")
    fields = {k: v for k, v in {"t": args.t, "steps": args.steps, "holdout": args.holdout, "lr": args.lr,
                                "seed": args.seed, "noise_draws": args.noise_draws}.items() if v is not None}
    if args.aspects:
        fields["aspects"] = _aspects(args.aspects)
    cfg = LatentRewardConfig(**fields)
    records = read_manifest(args.manifest)
    run = train_latent_reward(records, _reward_dit(args.init), cfg, args.out, resume=args.resume,
                              progress=not args.no_progress,
                              lineage={"manifest": str(args.manifest), "init": str(args.init),
                                       "rounds": sorted({str(r.round) for r in records})})
    _print_training(run)
    return 0


def _reward_train_vlm(args: argparse.Namespace) -> int:
    from dpo.reward_config import VLMRewardConfig
    from dpo.reward_vlm import read_videoalign, train_vlm_reward

    _require(args, "--videoalign", "--vlm", backbone="vlm")
    fields = {k: v for k, v in {"steps": args.steps, "holdout": args.holdout, "lr": args.lr, "seed": args.seed,
                                "frames": args.frames, "lora_rank": args.lora_rank, "batch": args.batch}.items()
              if v is not None}
    if args.aspects:
        fields["aspects"] = _aspects(args.aspects)
    try:
        cfg = VLMRewardConfig(**fields)
    except ValueError as exc:
        raise RewardDataError(str(exc)) from exc
    pairs = read_videoalign(args.videoalign)
    run = train_vlm_reward(pairs, args.vlm, cfg, args.out, resume=args.resume, progress=not args.no_progress,
                           lineage={"videoalign": str(args.videoalign), "vlm": str(args.vlm)})
    _print_training(run)
    return 0


def _aspects(text: str) -> tuple[str, ...]:
    return tuple(a.strip() for a in text.split(",") if a.strip())


def _require(args: argparse.Namespace, *flags: str, backbone: str) -> None:
    missing = [f for f in flags if getattr(args, f[2:].replace("-", "_")) is None]
    if missing:
        raise RewardDataError(f"the {backbone} backbone needs {' and '.join(missing)}")


def _print_training(run) -> None:
    print(json.dumps({"out": str(run.out_dir), "train_pairs": run.train_pairs, "heldout_pairs": run.heldout_pairs,
                      "aspect_pairs": run.aspect_pairs, "metrics": run.metrics}))


def _reward_eval(args: argparse.Namespace) -> int:
    from dpo.reward import reward_kind

    if reward_kind(args.reward) == "vlm":
        from dpo.reward_vlm import VLMRewardModel, read_videoalign

        _require(args, "--videoalign", backbone="vlm")
        print(json.dumps(VLMRewardModel(args.reward, args.vlm).evaluate(read_videoalign(args.videoalign))))
        return 0
    from dpo.data import read_manifest
    from dpo.reward import LatentRewardModel

    _require(args, "--manifest", "--init", backbone="latent")
    model = LatentRewardModel(_reward_dit(args.init), args.reward)
    print(json.dumps(model.evaluate(read_manifest(args.manifest), progress=not args.no_progress)))
    return 0


def _reward_score(args: argparse.Namespace) -> int:
    from dpo.reward import reward_kind

    if reward_kind(args.reward) == "vlm":
        from dpo.reward_vlm import VLMRewardModel, read_clip

        _require(args, "--video", "--prompt", backbone="vlm")
        model = VLMRewardModel(args.reward, args.vlm)
        scores = model.score([read_clip(args.video, model.cfg.frames)], [args.prompt], names=[args.video])[0]
    else:
        from dpo.data import PairDataset
        from dpo.reward import LatentRewardModel, candidate_batch

        _require(args, "--init", "--latent", "--text", backbone="latent")
        model = LatentRewardModel(_reward_dit(args.init), args.reward)
        key = (args.latent, args.text)
        latents, text = candidate_batch([key], PairDataset([]))
        scores = model.score(latents, text, keys=[key])[0]
    print(json.dumps({a: round(float(s), 5) for a, s in zip(model.aspects, scores, strict=True)}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dpo", description="Flow-DPO for the Step-Video DiT")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a policy on a pair manifest")
    p.add_argument("--config", help="YAML or JSON FlowDPOConfig file")
    p.add_argument("--manifest", required=True, help="pair manifest (.parquet/.jsonl; path, file:// or s3://)")
    p.add_argument("--init", required=True, help="model root of the starting checkpoint")
    p.add_argument("--reference", help="model root of the frozen reference (default: --init); e.g. a fixed base "
                   "for a later round; needs reference_mode frozen_copy or cached and the same DiT architecture")
    p.add_argument("--out", help="run folder (metrics.jsonl, checkpoints/, final/)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable)")
    p.add_argument("--report-to", nargs="+", metavar="TRACKER",
                   help="experiment trackers that also get every step's metrics (TRL's report_to): tensorboard, "
                   "mlflow, wandb (several allowed), all (every one installed) or none; default: tensorboard when "
                   "installed (events in OUT/runs)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    p.set_defaults(func=_train)

    p = sub.add_parser("average", help="average DiT checkpoints into one model root")
    p.add_argument("--out", required=True)
    p.add_argument("--base", help="base model root (needed for LoRA checkpoints)")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("checkpoints", nargs="+")
    p.set_defaults(func=_average)

    p = sub.add_parser("merge-lora", help="merge a LoRA adapter folder into the base DiT")
    p.add_argument("--base", required=True)
    p.add_argument("--adapter", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.set_defaults(func=_merge)

    p = sub.add_parser("validate", help="check a manifest and every file it names")
    p.add_argument("--manifest", required=True)
    p.add_argument("--headers-only", action="store_true", help="skip the NaN scan (no tensor reads)")
    p.set_defaults(func=_validate)

    p = sub.add_parser("reward", help="a reward model from the pairs' labels (train, eval, score): latent (the DiT's "
                       "features, from a pair manifest) or vlm (a video language model, from a VideoAlign CSV)")
    rsub = p.add_subparsers(dest="reward_command", required=True)
    r = rsub.add_parser("train", help="fit a reward model (a share of prompts held out for the reported accuracy)")
    r.add_argument("--backbone", choices=["latent", "vlm"], default="latent")
    r.add_argument("--manifest", help="latent: the pair manifest")
    r.add_argument("--init", help="latent: model root whose DiT gives the features")
    r.add_argument("--videoalign", help="vlm: the VideoAlign CSV export (videos relative to its folder or URIs)")
    r.add_argument("--vlm", help="vlm: local Qwen2-VL / Qwen2.5-VL folder (config.json, safetensors, tokenizer)")
    r.add_argument("--out", required=True, help="reward model folder (reward.json, the head, state.pt)")
    r.add_argument("--aspects", help="comma-separated: overall, vq, mq, ta (latent default: all four; vlm: vq,mq,ta)")
    r.add_argument("--t", type=float, help="latent: noise level of the features, 0 = noise, 1 = data (0.75)")
    r.add_argument("--steps", type=int)
    r.add_argument("--lr", type=float)
    r.add_argument("--holdout", type=float, help="share of prompts held out for the reported accuracy (0.2)")
    r.add_argument("--noise-draws", type=int, help="latent: features per candidate")
    r.add_argument("--frames", type=int, help="vlm: frames sampled per clip (8)")
    r.add_argument("--lora-rank", type=int, help="vlm: LoRA rank (16)")
    r.add_argument("--batch", type=int, help="vlm: pairs per step (4)")
    r.add_argument("--seed", type=int)
    r.add_argument("--resume", action="store_true", help="continue from OUT/state.pt")
    r.add_argument("--no-progress", action="store_true")
    r.set_defaults(func=_reward_train)
    r = rsub.add_parser("eval", help="accuracy with and without ties, per aspect (the backbone from reward.json)")
    r.add_argument("--reward", required=True)
    r.add_argument("--manifest", help="latent")
    r.add_argument("--init", help="latent")
    r.add_argument("--videoalign", help="vlm")
    r.add_argument("--vlm", help="vlm: the VLM folder (default: the one it was trained from)")
    r.add_argument("--no-progress", action="store_true")
    r.set_defaults(func=_reward_eval)
    r = rsub.add_parser("score", help="one candidate's score per aspect")
    r.add_argument("--reward", required=True)
    r.add_argument("--init", help="latent")
    r.add_argument("--latent", help="latent: the candidate's latent file")
    r.add_argument("--text", help="latent: its text-embedding file")
    r.add_argument("--video", help="vlm: the video file (path or URI)")
    r.add_argument("--prompt", help="vlm: its prompt")
    r.add_argument("--vlm", help="vlm: the VLM folder (default: the one it was trained from)")
    r.set_defaults(func=_reward_score)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    from dpo.config import ConfigError
    from dpo.data import ManifestError
    from dpo.reward import RewardDataError
    from dpo.reward_vlm import VLMLoadError

    try:
        return args.func(args)
    except (ConfigError, ManifestError, RewardDataError, VLMLoadError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _exit(code: int) -> None:
    """Exit with ``code``. Under torchrun (WORLD_SIZE > 1) skip the interpreter's C++ teardown: with the gloo
    backend a rank sometimes aborts there ("terminate called without an active exception", no Python frame left,
    ~5% of 2-rank CPU runs) after all work is written and the process group destroyed, which would turn a finished
    run into a failed one."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    _exit(main())
