"""Plain-ORM builders for export and leaderboard tests: a small but complete loop (users with profiles, checkpoints,
rounds, prompts, groups, candidates with URIs, judgments with labels and flaws, pairs aggregated by the real service)."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

from django.utils import timezone

from annotation.models import (
    Assignment,
    Candidate,
    CandidateGroup,
    CandidateLabel,
    Category,
    Checkpoint,
    FlawMark,
    FlawTag,
    Judgment,
    Prompt,
    Round,
)
from annotation.services.accounts import user_create
from annotation.services.pairs import group_pairs_aggregate

_seq = itertools.count(1)


def checkpoint(name: str | None = None, **kw) -> Checkpoint:
    return Checkpoint.objects.create(name=name or f"ckpt-{next(_seq)}", uri="file:///nonexistent/ckpt", **kw)


def round_(policy: Checkpoint, *, kind: str = Round.Kind.GENERATION, reference: Checkpoint | None = None, **kw) -> Round:
    return Round.objects.create(
        name=kw.pop("name", f"round-{next(_seq)}"), kind=kind, policy_checkpoint=policy, reference_checkpoint=reference,
        status=Round.Status.ANNOTATING, num_steps=10, cfg_scale=5.0, shift=17.0, height=64, width=64, num_frames=50,
        fps=25, annotators_per_group=3, max_annotators_per_group=5, **kw,
    )


def prompt(text: str | None = None, category_slug: str | None = None) -> Prompt:
    n = next(_seq)
    category = Category.objects.filter(slug=category_slug).first() if category_slug else Category.objects.order_by("slug").first()
    return Prompt.objects.create(text=text or f"a red fox running through snow, take {n}", text_hash=f"{n:064x}",
                                 category=category)


def group(rnd: Round, pr: Prompt, *, checkpoints: list[Checkpoint], seeds: list[int], latents: bool = True) -> CandidateGroup:
    g = CandidateGroup.objects.create(round=rnd, prompt=pr, status=CandidateGroup.Status.READY, target_judgments=3)
    for ck in checkpoints:
        for seed in seeds:
            c = Candidate.objects.create(group=g, checkpoint=ck, seed=seed, status=Candidate.Status.READY,
                                         video_uri="placeholder", fps=25.0, num_frames=50, duration_s=2.0)
            base = f"s3://bucket/rounds/{rnd.pk}/groups/{g.pk}/candidates/{c.pk}"
            Candidate.objects.filter(pk=c.pk).update(
                video_uri=f"{base}/video.mp4",
                latent_uri=f"{base}/latent.safetensors" if latents else "",
                text_embedding_uri=f"s3://bucket/prompts/{pr.pk}/text-embeddings/v1.safetensors" if latents else "",
            )
    return g


def judge(g: CandidateGroup, annotator, *, preferred: list[int], non_preferred: list[int], outcome: str = "labelled",
          flaws: dict[int, list[str]] | None = None, skip_reason: str = "") -> Judgment:
    """One annotator's judgment on ``g`` (candidate ids; the others neutral), with optional flaw tags per candidate."""
    cands = list(g.candidates.order_by("id").values_list("id", flat=True))
    order = cands[:]
    random.Random(annotator.pk * 7919 + g.pk).shuffle(order)
    a = Assignment.objects.create(group=g, annotator=annotator, status=Assignment.Status.SUBMITTED, shown_order=order,
                                  expires_at=timezone.now(), submitted_at=timezone.now())
    j = Judgment.objects.create(assignment=a, group=g, annotator=annotator, outcome=outcome, skip_reason=skip_reason,
                                time_spent_ms=12_000)
    if outcome != "skipped":
        for pos, cid in enumerate(order):
            label = "preferred" if cid in preferred else ("non_preferred" if cid in non_preferred else "neutral")
            lab = CandidateLabel.objects.create(judgment=j, candidate_id=cid, label=label, shown_position=pos,
                                                playback_coverage=1.0)
            for slug in (flaws or {}).get(cid, []):
                FlawMark.objects.create(label=lab, tag=FlawTag.objects.get(slug=slug), time_s=0.5)
    CandidateGroup.objects.filter(pk=g.pk).update(judgments_count=g.judgments.count())
    return j


@dataclass
class Loop:
    annotators: list
    researcher: object
    base: Checkpoint
    dpo: Checkpoint
    gen_round: Round
    eval_round: Round
    groups: list[CandidateGroup] = field(default_factory=list)


def build_loop(*, n_prompts: int = 4, tag: str = "") -> Loop:
    """A generation round (base checkpoint, 3 seeds per prompt) and an evaluation round (base vs dpo, same seed),
    each prompt judged by three annotators; pairs aggregated by ``group_pairs_aggregate``."""
    annotators = [user_create(username=f"alice_annotator{i}_{next(_seq)}", password="pw-123456", roles=["annotator"])
                  for i in range(3)]
    researcher = user_create(username=f"rita_researcher_{next(_seq)}", password="pw-123456", roles=["researcher"])
    base = Checkpoint.objects.get_or_create(name="base-v1", defaults={"uri": "file:///nonexistent/ckpt"})[0]
    dpo = Checkpoint.objects.get_or_create(name="dpo-r1", defaults={"uri": "file:///nonexistent/ckpt", "kind": "dpo"})[0]
    gen = round_(base, name=f"gen-r1{tag}")
    ev = round_(dpo, kind=Round.Kind.EVALUATION, reference=base, name=f"eval-r1{tag}")
    loop = Loop(annotators, researcher, base, dpo, gen, ev)
    flaw = FlawTag.objects.order_by("order").first()
    for i in range(n_prompts):
        pr = prompt(f"prompt {i}{tag}: a cat surfing a wave, 日本語 {i}")
        g = group(gen, pr, checkpoints=[base], seeds=[1, 2, 3])
        c = list(g.candidates.order_by("seed").values_list("id", flat=True))
        judge(g, annotators[0], preferred=[c[0]], non_preferred=[c[2]], flaws={c[2]: [flaw.slug]} if flaw else None)
        judge(g, annotators[1], preferred=[c[0]], non_preferred=[c[1], c[2]])
        if i % 2 == 0:
            judge(g, annotators[2], preferred=[], non_preferred=[], outcome="all_good")
        else:
            judge(g, annotators[2], preferred=[c[1]], non_preferred=[c[2]])
        group_pairs_aggregate(group=g)
        loop.groups.append(g)
        # evaluation: dpo vs base from the same seed; dpo wins 3 of 4 prompts unanimously
        eg = group(ev, pr, checkpoints=[dpo, base], seeds=[7])
        d = eg.candidates.get(checkpoint=dpo).pk
        b = eg.candidates.get(checkpoint=base).pk
        w, lo = (d, b) if i % 4 != 3 else (b, d)
        for ann in annotators:
            judge(eg, ann, preferred=[w], non_preferred=[lo])
        group_pairs_aggregate(group=eg)
        loop.groups.append(eg)
    # one skipped judgment (raw export shows it)
    judge(loop.groups[0], user_create(username=f"sam_skipper_{next(_seq)}", password="pw-123456", roles=["annotator"]),
          preferred=[], non_preferred=[], outcome="skipped", skip_reason="broken")
    return loop
