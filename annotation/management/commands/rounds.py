"""``python manage.py rounds ...``: the loop from a shell script, through the same services as the pages and the API
(``/api/rounds/``, ``/api/dpo-runs/``, ``/api/checkpoints/``). Every command prints JSON (one object) on stdout.

    rounds list | status ID | cancel ID | wait ID [--until annotating|done] [--timeout S]
    rounds create --name N --checkpoint ID [--prompt-ids 1,2 | --category C --tags a,b --search S --sample-size N]
                  [--seeds 4] [--annotators 3] [--max-annotators 5] [--mode labels] [--no-launch]
    rounds train --name N --rounds 1,2 --checkpoint ID [--reference ID] [--preset tiny-cpu] [--overrides JSON]
    rounds runs | run-status ID | run-cancel ID | run-wait ID [--timeout S]
    rounds checkpoints | evaluate CHECKPOINT_ID --name N [--seeds 2] [--sample-size N]

A script of a whole loop: create a round, ``wait`` until it is ready for annotation (and, after the annotators,
``train`` on it), ``run-wait`` for the DPO run, ``evaluate`` its output checkpoint."""

from __future__ import annotations

import json
import time

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from annotation.errors import ApplicationError, error_messages
from annotation.management.schema import schema_ensure
from annotation.models import Checkpoint, DPORun, Round
from annotation.selectors.loop import (
    TERMINAL_RUN,
    checkpoint_status,
    dpo_run_status,
    loop_checkpoints,
    loop_dpo_runs,
    loop_rounds,
    round_status,
)
from annotation.services.candidates import round_generation_cancel
from annotation.services.checkpoints import evaluation_round_create
from annotation.services.dpo_runs import CONFIG_PRESETS, dpo_run_cancel, dpo_run_create
from annotation.services.rounds import prompts_select, round_create

ERR_NO_PROMPTS = "No active prompt matches this filter: change --category, --tags or --search, or pass --prompt-ids."
ORDER = [Round.Status.DRAFT, Round.Status.GENERATING, Round.Status.ANNOTATING, Round.Status.TRAINING, Round.Status.DONE]


def _ids(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise CommandError(f"Expected comma-separated ids, got {text!r}.") from exc


class Command(BaseCommand):
    help = "Rounds, DPO runs, checkpoints and evaluations from the command line (JSON output)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("list")
        for name in ("status", "cancel"):
            sub.add_parser(name).add_argument("id", type=int)
        wait = sub.add_parser("wait")
        wait.add_argument("id", type=int)
        wait.add_argument("--until", choices=["annotating", "done"], default="annotating")
        wait.add_argument("--timeout", type=float, default=3600)
        wait.add_argument("--every", type=float, default=2.0)
        create = sub.add_parser("create")
        create.add_argument("--name", required=True)
        create.add_argument("--checkpoint", type=int, required=True)
        create.add_argument("--prompt-ids", default="")
        create.add_argument("--category", default="")
        create.add_argument("--tags", default="")
        create.add_argument("--search", default="")
        create.add_argument("--sample-size", type=int, default=0)
        create.add_argument("--sample-seed", type=int, default=0)
        create.add_argument("--seeds", type=int, default=4)
        create.add_argument("--base-seed", type=int, default=0)
        create.add_argument("--annotators", type=int, default=3)
        create.add_argument("--max-annotators", type=int, default=None)
        create.add_argument("--mode", choices=Round.Mode.values, default=Round.Mode.LABELS)
        create.add_argument("--no-launch", action="store_true")
        train = sub.add_parser("train")
        train.add_argument("--name", required=True)
        train.add_argument("--rounds", required=True)
        train.add_argument("--checkpoint", type=int, required=True)
        train.add_argument("--reference", type=int, default=None)
        train.add_argument("--preset", choices=sorted(CONFIG_PRESETS), default="tiny-cpu")
        train.add_argument("--overrides", default="{}", help="JSON object of trainer settings")
        train.add_argument("--min-agreement", type=float, default=0.0)
        train.add_argument("--min-annotators", type=int, default=1)
        train.add_argument("--include-evaluation", action="store_true",
                           help="train on evaluation rounds too (their held-out prompts then measure nothing)")
        sub.add_parser("runs")
        for name in ("run-status", "run-cancel"):
            sub.add_parser(name).add_argument("id", type=int)
        run_wait = sub.add_parser("run-wait")
        run_wait.add_argument("id", type=int)
        run_wait.add_argument("--timeout", type=float, default=3600)
        run_wait.add_argument("--every", type=float, default=2.0)
        sub.add_parser("checkpoints")
        evaluate = sub.add_parser("evaluate")
        evaluate.add_argument("id", type=int)
        evaluate.add_argument("--name", required=True)
        evaluate.add_argument("--seeds", type=int, default=2)
        evaluate.add_argument("--sample-size", type=int, default=0)
        evaluate.add_argument("--annotators", type=int, default=3)
        parser.add_argument("--user", default=None, help="username recorded as the actor")

    def handle(self, *args, **o):
        schema_ensure(stdout=self.stderr)
        actor = None
        if o.get("user"):
            actor = get_user_model().objects.filter(username=o["user"]).first()
            if actor is None:
                raise CommandError(f"No user {o['user']!r}.")
        try:
            result = getattr(self, "do_" + o["action"].replace("-", "_"))(o, actor)
        except (ApplicationError, ValidationError) as exc:
            raise CommandError(" ".join(error_messages(exc))) from exc
        except (Round.DoesNotExist, DPORun.DoesNotExist, Checkpoint.DoesNotExist) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(json.dumps(result, default=str))

    # -- rounds
    def do_list(self, o, actor):
        return {"results": loop_rounds()}

    def do_status(self, o, actor):
        return round_status(round_id=o["id"])

    def do_cancel(self, o, actor):
        round_generation_cancel(round_id=Round.objects.get(pk=o["id"]).pk, actor=actor, note="cancelled from the CLI")
        return round_status(round_id=o["id"])

    def do_wait(self, o, actor):
        target = ORDER.index(o["until"])
        deadline = time.monotonic() + o["timeout"]
        while True:
            status = round_status(round_id=o["id"])
            if status["status"] in (Round.Status.FAILED, Round.Status.CANCELLED):
                raise CommandError(f"Round {status['name']} is {status['status']}.")
            if ORDER.index(status["status"]) >= target:
                return status
            if time.monotonic() > deadline:
                raise CommandError(f"Round {status['name']} is still {status['status']} after {o['timeout']:.0f} s.")
            time.sleep(o["every"])

    def do_create(self, o, actor):
        prompt_ids = _ids(o["prompt_ids"]) or prompts_select(
            category=o["category"], tags=[t for t in o["tags"].split(",") if t.strip()] or None, search=o["search"],
            sample_size=o["sample_size"], sample_seed=o["sample_seed"])
        if not prompt_ids:
            raise CommandError(ERR_NO_PROMPTS)
        rnd = round_create(name=o["name"], policy_checkpoint=Checkpoint.objects.get(pk=o["checkpoint"]),
                           prompt_ids=prompt_ids, actor=actor, seeds_per_prompt=o["seeds"], base_seed=o["base_seed"],
                           annotators_per_group=o["annotators"], max_annotators_per_group=o["max_annotators"],
                           annotation_mode=o["mode"], launch=not o["no_launch"])
        return round_status(round_id=rnd.pk)

    # -- DPO runs
    def do_train(self, o, actor):
        try:
            overrides = json.loads(o["overrides"])
        except json.JSONDecodeError as exc:
            raise CommandError(f"--overrides is not JSON: {exc}") from exc
        if not isinstance(overrides, dict):
            raise CommandError("--overrides must be a JSON object.")
        run = dpo_run_create(
            name=o["name"], round_ids=_ids(o["rounds"]), init_checkpoint=Checkpoint.objects.get(pk=o["checkpoint"]),
            reference_checkpoint=Checkpoint.objects.get(pk=o["reference"]) if o["reference"] else None,
            config_preset=o["preset"], config_overrides=overrides, min_agreement=o["min_agreement"],
            min_annotators=o["min_annotators"], actor=actor, include_evaluation=o["include_evaluation"])
        return dpo_run_status(run_id=run.pk)

    def do_runs(self, o, actor):
        return {"results": loop_dpo_runs()}

    def do_run_status(self, o, actor):
        return dpo_run_status(run_id=o["id"])

    def do_run_cancel(self, o, actor):
        dpo_run_cancel(run_id=DPORun.objects.get(pk=o["id"]).pk, actor=actor)
        return dpo_run_status(run_id=o["id"])

    def do_run_wait(self, o, actor):
        deadline = time.monotonic() + o["timeout"]
        while True:
            status = dpo_run_status(run_id=o["id"])
            if status["status"] in TERMINAL_RUN:
                return status
            if time.monotonic() > deadline:
                raise CommandError(f"DPO run {status['name']} is still {status['status']} after {o['timeout']:.0f} s.")
            time.sleep(o["every"])

    # -- checkpoints
    def do_checkpoints(self, o, actor):
        return {"results": loop_checkpoints()}

    def do_evaluate(self, o, actor):
        rnd = evaluation_round_create(checkpoint=Checkpoint.objects.get(pk=o["id"]), name=o["name"],
                                      seeds_per_prompt=o["seeds"], sample_size=o["sample_size"],
                                      annotators_per_group=o["annotators"], actor=actor)
        return round_status(round_id=rnd.pk) | {"checkpoint": checkpoint_status(checkpoint=rnd.policy_checkpoint)}
