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
    from dpo.data import read_manifest
    from dpo.reward import LatentRewardConfig, train_latent_reward

    fields = {k: v for k, v in {"t": args.t, "steps": args.steps, "holdout": args.holdout, "lr": args.lr,
                                "seed": args.seed, "noise_draws": args.noise_draws}.items() if v is not None}
    if args.aspects:
        fields["aspects"] = tuple(a.strip() for a in args.aspects.split(",") if a.strip())
    cfg = LatentRewardConfig(**fields)
    records = read_manifest(args.manifest)
    run = train_latent_reward(records, _reward_dit(args.init), cfg, args.out, resume=args.resume,
                              progress=not args.no_progress,
                              lineage={"manifest": str(args.manifest), "init": str(args.init),
                                       "rounds": sorted({str(r.round) for r in records})})
    print(json.dumps({"out": str(run.out_dir), "train_pairs": run.train_pairs, "heldout_pairs": run.heldout_pairs,
                      "aspect_pairs": run.aspect_pairs, "metrics": run.metrics}))
    return 0


def _reward_eval(args: argparse.Namespace) -> int:
    from dpo.data import read_manifest
    from dpo.reward import LatentRewardModel

    model = LatentRewardModel(_reward_dit(args.init), args.reward)
    print(json.dumps(model.evaluate(read_manifest(args.manifest), progress=not args.no_progress)))
    return 0


def _reward_score(args: argparse.Namespace) -> int:
    from dpo.data import PairDataset
    from dpo.reward import LatentRewardModel, candidate_batch

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

    p = sub.add_parser("reward", help="a latent reward model from the pairs' labels (train, eval, score)")
    rsub = p.add_subparsers(dest="reward_command", required=True)
    r = rsub.add_parser("train", help="fit the reward head on a pair manifest (a share of prompts held out)")
    r.add_argument("--manifest", required=True)
    r.add_argument("--init", required=True, help="model root whose DiT gives the features")
    r.add_argument("--out", required=True, help="reward model folder (reward-head.safetensors, reward.json)")
    r.add_argument("--aspects", help="comma-separated: overall, vq, mq, ta (default: all four)")
    r.add_argument("--t", type=float, help="noise level of the features, 0 = noise, 1 = data (default 0.75)")
    r.add_argument("--steps", type=int)
    r.add_argument("--lr", type=float)
    r.add_argument("--holdout", type=float, help="share of prompts held out for the reported accuracy (0.2)")
    r.add_argument("--noise-draws", type=int)
    r.add_argument("--seed", type=int)
    r.add_argument("--resume", action="store_true", help="continue from OUT/state.pt")
    r.add_argument("--no-progress", action="store_true")
    r.set_defaults(func=_reward_train)
    r = rsub.add_parser("eval", help="accuracy with and without ties, per aspect, on a manifest")
    r.add_argument("--manifest", required=True)
    r.add_argument("--init", required=True)
    r.add_argument("--reward", required=True)
    r.add_argument("--no-progress", action="store_true")
    r.set_defaults(func=_reward_eval)
    r = rsub.add_parser("score", help="one candidate's score per aspect")
    r.add_argument("--init", required=True)
    r.add_argument("--reward", required=True)
    r.add_argument("--latent", required=True)
    r.add_argument("--text", required=True)
    r.set_defaults(func=_reward_score)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    from dpo.config import ConfigError
    from dpo.data import ManifestError
    from dpo.reward import RewardDataError

    try:
        return args.func(args)
    except (ConfigError, ManifestError, RewardDataError, FileNotFoundError) as exc:
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
