"""Run R full rounds of the loop on the CPU through real worker processes, with a scripted annotator.

    python manage.py simulate_loop --rounds 2 --prompts 4 --seeds 4

The model is the tiny model trained on the shapes world (``model/world``, docs/world.md) and the prompts come from
its grammar (English and Chinese). Each round: generate K seeds per prompt with the current checkpoint (the same seeds
every round, so the same initial noise) -> a scripted annotator judges text alignment (``model.world``'s detectors on
the decoded MP4: the fraction of the prompt's attributes the video shows; its policy turns the scores into the round's
annotation mode) through the real assignment and judgment services -> preference pairs -> a DPO run on queue
``train`` -> the new checkpoint generates the next round (``--reference base`` keeps the base as every run's frozen
reference; default: each run's reference is its starting checkpoint). Prints, per round, the text-alignment accuracy
of fresh samples and the win rate against round 0 on the same (prompt, seed) (ties half)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from tqdm import tqdm

from annotation.management.schema import schema_ensure
from annotation.models import Candidate, DPORun, Prompt, Round
from annotation.selectors.scripted import candidate_frames
from annotation.services.accounts import user_create
from annotation.services.assignments import assignment_reserve_next
from annotation.services.demo import demo_checkpoint_ensure
from annotation.services.dpo_runs import dpo_run_create
from annotation.services.judgments import LabelInput, judgment_submit
from annotation.services.prompts import prompts_import
from annotation.services.reference_data import reference_data_ensure
from annotation.services.rounds import round_create
from webapp.env import database_url_from_settings

REPO = Path(__file__).resolve().parents[3]


def clip_scores(candidate: Candidate):
    """The detectors' scores (model.world.detect.ClipScores) of the decoded MP4 for the candidate's prompt."""
    from model.world.detect import score_clip

    return score_clip(candidate.group.prompt.text, candidate_frames(candidate))


def text_alignment(candidate: Candidate) -> float:
    """Fraction of the prompt's attributes the video satisfies (0 when the prompt is outside the grammar)."""
    scores = clip_scores(candidate)
    return scores.ta if scores.scorable else 0.0


def brightness(candidate: Candidate) -> float:
    """Mean luma in [0, 1]: what the scripted annotator prefers for prompts outside the shapes grammar."""
    frames = candidate_frames(candidate).astype(np.float32)
    return float((0.299 * frames[..., 0] + 0.587 * frames[..., 1] + 0.114 * frames[..., 2]).mean() / 255.0)


class Command(BaseCommand):
    help = __doc__.splitlines()[0]

    def add_arguments(self, parser):
        parser.add_argument("--rounds", type=int, default=2, help="DPO rounds (R + 1 generations)")
        parser.add_argument("--prompts", type=int, default=4)
        parser.add_argument("--seeds", type=int, default=4)
        parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the tiny preset's)")
        parser.add_argument("--train-config", default="{}", help="JSON overrides of the tiny-cpu trainer preset")
        parser.add_argument("--reference", choices=["previous", "base"], default="previous",
                            help="reference of round r > 1: the round's starting checkpoint (on-policy) or the fixed base")
        parser.add_argument("--aspects", action="store_true",
                            help="rounds with per-aspect judgments: the annotator also marks VQ / MQ / TA per video")
        parser.add_argument("--no-worker", action="store_true", help="use already running workers")
        parser.add_argument("--timeout", type=float, default=1800)

    def handle(self, *args, rounds: int, prompts: int, seeds: int, steps: int | None, train_config: str,
               no_worker: bool, timeout: float, reference: str = "previous", aspects: bool = False, **options):
        schema_ensure(stdout=self.stdout)
        tag = uuid.uuid4().hex[:6]
        self.deadline = time.monotonic() + timeout
        reference_data_ensure()
        annotator = user_create(username="sim-annotator", password=uuid.uuid4().hex, roles=["annotator"])
        data = (REPO / "annotation" / "fixtures" / "demo_prompts.jsonl").read_bytes()
        prompts_import(data=data, fmt="jsonl")  # the grammar's prompts (dedupe keeps a second import a no-op)
        pool = Prompt.objects.filter(is_active=True, is_held_out=False, tags__contains=["shapes-world"])
        prompt_ids = list(pool.order_by("id").values_list("id", flat=True)[:prompts])
        checkpoint = demo_checkpoint_ensure()
        base_checkpoint = checkpoint
        worker = None if no_worker else self._start_worker()
        results = []
        try:
            base: dict[tuple[int, int], float] = {}
            for r in range(rounds + 1):
                round = round_create(name=f"sim-{tag}-r{r}", policy_checkpoint=checkpoint, prompt_ids=prompt_ids,
                                     seeds_per_prompt=seeds, base_seed=1000, num_steps=steps, annotators_per_group=1,
                                     max_annotators_per_group=1, require_full_playback=False, exclude_flagged=False,
                                     aspect_judgments=aspects, launch=True)
                self._wait_generation(round)
                rewards = {(c.group.prompt_id, c.seed): text_alignment(c) for c in Candidate.objects.filter(
                    group__round=round, status="ready").select_related("group__prompt")}
                if r == 0:
                    base = rewards
                shared = [k for k in rewards if k in base]
                wins = [1.0 if rewards[k] > base[k] else 0.5 if rewards[k] == base[k] else 0.0 for k in shared]
                line = {"round": r, "checkpoint": checkpoint.name, "text_alignment": round_mean(rewards.values()),
                        "win_rate_vs_round0": round_mean(wins) if r else 0.5, "candidates": len(rewards)}
                results.append(line)
                self.stdout.write(json.dumps(line))
                if r == rounds:
                    break
                judged = self._annotate(annotator, round)
                run = dpo_run_create(name=f"sim-{tag}-dpo{r + 1}", round_ids=[round.id], init_checkpoint=checkpoint,
                                     reference_checkpoint=base_checkpoint if reference == "base" else None,
                                     config_preset="tiny-cpu", config_overrides=json.loads(train_config))
                self.stdout.write(f"round {r}: {judged} groups judged, {run.pairs_count} pairs -> DPO run {run.name}")
                checkpoint = self._wait_run(run).output_checkpoint
        finally:
            if worker is not None:
                worker.terminate()
                worker.wait(30)
        self.stdout.write(json.dumps({"rounds": rounds, "text_alignment": [x["text_alignment"] for x in results],
                                      "win_rate": results[-1]["win_rate_vs_round0"] if len(results) > 1 else None}))

    # -- steps -------------------------------------------------------------------------------------------------------
    def _start_worker(self) -> subprocess.Popen:
        log = open(Path(tempfile.gettempdir()) / f"simulate-loop-worker-{os.getpid()}.log", "wb")
        self.stdout.write(f"starting a worker (log: {log.name})")
        env = {**os.environ, "DATABASE_URL": database_url_from_settings(connection.settings_dict),
               "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "webapp.settings.local")}
        return subprocess.Popen([sys.executable, "-m", "celery", "-A", "webapp", "worker", "-Q", "gpu,train,default",
                                 "--pool=solo", "-n", f"simulate-{os.getpid()}@%h"], cwd=REPO, env=env, stdout=log,
                                stderr=subprocess.STDOUT)

    def _check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise CommandError("simulate_loop timed out (see --timeout)")

    def _wait_generation(self, round: Round) -> None:
        total = Candidate.objects.filter(group__round=round).count()
        with tqdm(total=total, desc=f"generate {round.name}", unit="video") as bar:
            while True:
                round.refresh_from_db()
                done = Candidate.objects.filter(group__round=round, status__in=["ready", "failed", "cancelled"]).count()
                bar.update(done - bar.n)
                if round.status != Round.Status.GENERATING:
                    break
                self._check_time()
                time.sleep(1)
        failed = Candidate.objects.filter(group__round=round, status="failed").first()
        if failed is not None:
            raise CommandError(f"candidate {failed.id} failed: {failed.error}")

    def _annotate(self, annotator, round: Round) -> int:
        """The scripted annotator (model.world.annotators) answers every group in the round's mode, seeing the
        candidates in the order the assignment shows them: text alignment first, then motion and picture (the
        guidelines' order: weights 1 / 0.1 / 0.1); for a prompt outside the shapes grammar, the brighter video."""
        from model.world.annotators import AnnotatorPolicy

        policy, rng, judged = AnnotatorPolicy(weights={"ta": 1.0, "mq": 0.1, "vq": 0.1}), np.random.default_rng(0), 0
        while (assignment := assignment_reserve_next(annotator=annotator)) is not None:
            candidates = {c.id: c for c in Candidate.objects.filter(id__in=assignment.shown_order)
                          .select_related("group__prompt")}
            shown = [cid for cid in assignment.shown_order if cid in candidates]
            scores = [clip_scores(candidates[cid]) for cid in shown]
            utilities = policy.utilities(scores) if any(s.scorable for s in scores) else [
                brightness(candidates[cid]) for cid in shown]
            j = policy.judge(utilities=utilities, mode=round.annotation_mode, rng=rng)
            aspects = policy.aspect_labels(scores, rng=rng) if round.aspect_judgments else [{} for _ in shown]
            labels = [LabelInput(candidate_id=cid, playback_coverage=1.0, label=j.labels[i] if j.labels else "neutral",
                                 rank=j.ranks[i] if j.ranks else None, aspects=aspects[i]) for i, cid in enumerate(shown)] \
                if j.outcome == "labelled" else []
            judgment_submit(annotator=annotator, assignment_id=assignment.id, outcome=j.outcome, labels=labels,
                            time_spent_ms=1000)
            judged += 1
        return judged

    def _wait_run(self, run: DPORun) -> DPORun:
        with tqdm(total=run.progress_total or None, desc=f"train {run.name}", unit="step") as bar:
            while True:
                run.refresh_from_db()
                bar.update(run.progress_step - bar.n)
                if run.status in (DPORun.Status.DONE, DPORun.Status.FAILED, DPORun.Status.CANCELLED):
                    break
                self._check_time()
                time.sleep(1)
        if run.status != DPORun.Status.DONE:
            raise CommandError(f"DPO run {run.name} {run.status}: {run.error}")
        return run


def round_mean(values) -> float:
    values = list(values)
    return round(sum(values) / len(values), 4) if values else float("nan")
