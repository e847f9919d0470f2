"""The latent reward model (``dpo.reward``) on the shapes world: does it predict held-out scripted preferences?

The tiny-world model (the committed root, or ``--root``) generates K seeds for each of P training-split prompts with the
app's sampler; three scripted annotators (``model.world.annotators``, noise 0.05) judge each group (overall: text
alignment, the closed loop's annotator) and mark the per-aspect judgments of the app's round setting (VQ / MQ / TA:
better / same / worse than the group's median score); the app's pure pair logic makes the pairs
(``annotation.agreement``: implied pairs, the 2/3 majority, ``aspect_outcomes`` per aspect); latents and text
embeddings are stored as the contracts say and ``dpo.reward.train_latent_reward`` fits the head on the DiT's features
with a share of the prompts held out. Prints per aspect the held-out accuracy without ties (pairs whose label is A or
B) and with ties (VideoGen-RewardBench's two conventions), then one JSON line with ``accuracy_no_ties``,
``accuracy_with_ties``, ``per_aspect`` and ``active_label_ratio`` (null: active selection is not built yet).

    python benchmarks/reward_model.py [--prompts 160] [--seeds 4] [--steps 400] [--t 0.75] [--seed 0] [--root DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dpo_closed_loop import ShapesGenerator, _save_text, store_latents  # noqa: E402


def build_pairs(gen: ShapesGenerator, prompts: list[str], seeds: list[int], store: Path, *, annotators: int,
                noise: float, rng: np.random.Generator, min_majority: float = 2 / 3) -> tuple[Path, dict]:
    from annotation.agreement import LabelRow, aggregate, aspect_outcomes, implied_pairs
    from model.world.annotators import AnnotatorPolicy

    policy = AnnotatorPolicy(noise=noise)
    rows, outcomes = [], {"chosen": 0, "rejected": 0, "same": 0}
    for pi, prompt in enumerate(prompts):
        text_path = store / f"prompts/{pi}/text-embeddings/tiny.safetensors"
        _save_text(gen, prompt, text_path)
        latents, scores = gen.run(gen.base_dit, prompt, seeds)
        uris = store_latents(store, 1, pi, seeds, latents)
        utilities = policy.utilities(scores)
        judgments, aspect_votes = [], []
        for a in range(annotators):
            shown = list(rng.permutation(len(seeds)))
            j = policy.judge(utilities=[utilities[i] for i in shown], mode="labels", rng=rng)
            labels = [LabelRow(candidate_id=int(shown[p]), label=j.labels[p] if j.labels else "neutral")
                      for p in range(len(shown))]
            judgments.append((a, implied_pairs(outcome=j.outcome, mode="labels", labels=labels), True))
            aspects = policy.aspect_labels([scores[i] for i in shown], rng=rng)
            aspect_votes.append({int(shown[p]): aspects[p] for p in range(len(shown))})
        for pair in aggregate(judgments=judgments, min_majority=min_majority).pairs:
            if pair.agreement < min_majority:
                continue
            w, lo = pair.chosen, pair.rejected
            per_aspect = aspect_outcomes(chosen=w, rejected=lo, judgments=aspect_votes)
            for v in per_aspect.values():
                outcomes[v] += 1
            rows.append({"pair_id": f"p{pi}-{seeds[w]}-{seeds[lo]}", "round": 1, "prompt_id": str(pi),
                         "chosen_candidate": str(seeds[w]), "rejected_candidate": str(seeds[lo]),
                         "chosen_latent_uri": uris[w], "rejected_latent_uri": uris[lo],
                         "text_embedding_uri": str(text_path), "weight": 1.0, "source": "model",
                         "agreement": round(pair.agreement, 3), "aspects": json.dumps(per_aspect, sort_keys=True)})
    manifest = store / "pairs.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest, {"pairs": len(rows), "aspect_outcomes": outcomes}


def main(argv: list[str] | None = None) -> None:
    from dpo.data import read_manifest
    from dpo.reward import LatentRewardConfig, train_latent_reward
    from model.world import default_root
    from model.world.grammar import sample_prompts

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=None, help="model root (default: the committed tiny-world)")
    ap.add_argument("--prompts", type=int, default=160)
    ap.add_argument("--seeds", type=int, default=4, help="K candidates per prompt")
    ap.add_argument("--annotators", type=int, default=3)
    ap.add_argument("--annotator-noise", type=float, default=0.05)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--t", type=float, default=0.75, help="noise level of the features (0 = noise, 1 = data)")
    ap.add_argument("--holdout", type=float, default=0.25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(0)
    t0 = time.time()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="reward-model-"))
    gen = ShapesGenerator(args.root or default_root(), num_steps=8, cfg_scale=5.0)
    prompts = sample_prompts(args.prompts, seed=1000 + args.seed, held_out=False)
    seeds = list(range(500 + 100 * args.seed, 500 + 100 * args.seed + args.seeds))
    manifest, data = build_pairs(gen, prompts, seeds, work / "store", annotators=args.annotators,
                                 noise=args.annotator_noise, rng=np.random.default_rng(args.seed))
    gen_s = time.time() - t0
    print(f"{data['pairs']} pairs from {args.prompts} prompts x {args.seeds} seeds ({gen_s:.0f} s); per-aspect "
          f"outcomes {data['aspect_outcomes']}")
    cfg = LatentRewardConfig(t=args.t, steps=args.steps, holdout=args.holdout, seed=args.seed)
    run = train_latent_reward(read_manifest(manifest), gen.base_dit, cfg, work / "reward", progress=True,
                              lineage={"benchmark": "reward_model", "prompts": args.prompts, "seeds": args.seeds})
    held = run.metrics.get("heldout", {})
    for aspect in cfg.aspects:
        m = held.get(aspect, {})
        print(f"  {aspect:8s} held-out accuracy without ties {m.get('accuracy_no_ties')} ({m.get('pairs_no_ties')} "
              f"pairs), with ties {m.get('accuracy_with_ties')} ({m.get('pairs')} pairs, {m.get('ties')} ties)")
    result = {
        "accuracy_no_ties": held.get("accuracy_no_ties"), "accuracy_with_ties": held.get("accuracy_with_ties"),
        "per_aspect": {a: {k: held.get(a, {}).get(k) for k in ("accuracy_no_ties", "accuracy_with_ties", "pairs_no_ties",
                                                                "pairs", "ties")} for a in cfg.aspects},
        "train": {a: run.metrics["train"][a]["accuracy_no_ties"] for a in cfg.aspects},
        "active_label_ratio": None, "pairs": data["pairs"], "train_pairs": run.train_pairs,
        "heldout_pairs": run.heldout_pairs, "generation_s": round(gen_s, 1), "reward_s": run.metrics["total_s"],
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
