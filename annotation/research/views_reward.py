"""Researcher pages of reward-model runs: launch (rounds, the backbone: the checkpoint whose DiT gives the features
or a video language model's folder, aspects), the run page (live loss curve, held-out accuracy per aspect with and
without ties, lineage), cancel."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from annotation import charts
from annotation.conf import videodpo
from annotation.errors import ApplicationError, is_int
from annotation.models import Checkpoint, RewardRun
from annotation.permissions import researcher_required
from annotation.research.views_loop import FormErrors, action_view
from annotation.selectors.research import checkpoint_list, reward_run_curve, reward_run_get, rounds_for_reward_runs
from annotation.services.reward_runs import (
    ERR_BACKBONE,
    reward_run_cancel,
    reward_run_create,
    reward_scores_request,
)
from annotation.services.selection import round_release_held, round_select_for_labels
from dpo.reward_config import ASPECT_NAMES, ASPECTS

REWARD_LABELS = {"name": "Name", "backbone": "Backbone", "init_checkpoint": "Features from",
                 "vlm_root": "VLM folder", "round_ids": "Pairs from rounds", "aspects": "Aspects", "config": "Settings",
                 "steps": "Steps", "t": "Noise level t", "frames": "Frames per clip", "lora_rank": "LoRA rank"}


@researcher_required
@require_http_methods(["GET", "POST"])
def reward_run_new(request: HttpRequest) -> HttpResponse:
    form = request.POST if request.method == "POST" else {}
    errors: list[str] = []
    if request.method == "POST":
        problems = FormErrors(form, REWARD_LABELS)
        backbone = form.get("backbone", RewardRun.Backbone.LATENT)
        vlm = backbone == RewardRun.Backbone.VLM
        if backbone not in RewardRun.Backbone.values:
            problems.add("backbone", ERR_BACKBONE.format(backbone=backbone[:40]))
        init_id = form.get("init_checkpoint", "")
        init = Checkpoint.objects.filter(id=int(init_id)).first() if is_int(init_id) else None
        if init is None and backbone == RewardRun.Backbone.LATENT:
            problems.add("init_checkpoint", "choose the checkpoint whose DiT gives the features")
        aspects = [a for a in form.getlist("aspects") if a in ASPECTS]
        if not aspects:
            problems.add("aspects", "tick at least one aspect")
        numbers = ({"steps": problems.number("steps"), "frames": problems.number("frames"),
                    "lora_rank": problems.number("lora_rank")} if vlm else
                   {"steps": problems.number("steps"), "t": problems.number("t", kind=float)})
        overrides = {k: v for k, v in numbers.items() if v is not None}
        if not problems.fields:
            try:
                run = reward_run_create(name=form.get("name", ""), round_ids=[int(r) for r in form.getlist("rounds")
                                                                              if is_int(r)],
                                        init_checkpoint=None if vlm else init, aspects=aspects,
                                        config_overrides=overrides, actor=request.user, backbone=backbone,
                                        vlm_root=form.get("vlm_root", ""))
            except (ApplicationError, ValidationError) as exc:
                problems.merge(exc)
            else:
                messages.success(request, f"Reward run {run.name} queued on {run.pairs_count} pairs.")
                return redirect("research-reward-run-detail", run_id=run.id)
        errors = problems.lines()
    context = {"checkpoints": checkpoint_list(), "rounds": rounds_for_reward_runs(), "errors": errors, "form": form,
               "aspects": [(a, ASPECT_NAMES[a]) for a in ASPECTS], "backbones": RewardRun.Backbone.choices,
               "backbone": form.get("backbone", RewardRun.Backbone.LATENT) if form else RewardRun.Backbone.LATENT,
               "vlm_root": form.get("vlm_root", "") if form else videodpo().reward_vlm_root,
               "selected_aspects": form.getlist("aspects") if form else list(ASPECTS),
               "selected_rounds": form.getlist("rounds") if form else [request.GET.get("round", "")]}
    return render(request, "research/reward_run_new.html", context)


def _accuracy_rows(summary: dict, aspects: list[str]) -> list[dict]:
    """Per aspect: held-out (and train) accuracy without and with ties, and the pair counts."""
    held, train = summary.get("heldout") or {}, summary.get("train") or {}
    rows = []
    for a in aspects:
        h, t = held.get(a) or {}, train.get(a) or {}
        rows.append({"aspect": a, "name": ASPECT_NAMES.get(a, a), "no_ties": h.get("accuracy_no_ties"),
                     "with_ties": h.get("accuracy_with_ties"), "pairs_no_ties": h.get("pairs_no_ties"),
                     "pairs": h.get("pairs"), "ties": h.get("ties"), "train_no_ties": t.get("accuracy_no_ties")})
    totals = {k: sum(r[k] or 0 for r in rows) for k in ("pairs_no_ties", "pairs", "ties")}  # labels over all aspects
    rows.append({"aspect": "all", "name": "all aspects", "no_ties": held.get("accuracy_no_ties"),
                 "with_ties": held.get("accuracy_with_ties"), **totals, "train_no_ties": train.get("accuracy_no_ties")})
    return rows


def _heldout_margin(summary: dict) -> float | None:
    """Half the width of a 95% interval of an accuracy near 0.5 on the held-out pairs (None without them): what a
    difference between two runs must exceed to mean anything."""
    n = summary.get("heldout_pairs") or 0
    return round(1.96 * 0.5 / n**0.5, 2) if n else None


@researcher_required
@require_GET
def reward_run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run = reward_run_get(run_id=run_id)
    if run is None:
        raise Http404("No such reward run.")
    curve = reward_run_curve(run_id=run.id)
    chart = charts.line_chart(title="loss (BTT negative log-likelihood)", series=[(run.name, [
        (step, values.get("loss")) for step, values in curve])], y_label="loss")
    context = {"run": run, "chart": chart, "steps": len(curve), "data_rounds": run.data_rounds.all(),
               "accuracy": _accuracy_rows(run.metrics_summary, run.config.get("aspects", [])),
               "margin": _heldout_margin(run.metrics_summary),
               "lineage": run.metrics_summary.get("lineage") or {}}
    template = "research/reward_run_progress.html" if request.htmx else "research/reward_run_detail.html"
    return render(request, template, context)


def _posted_run_id(request: HttpRequest) -> int:
    value = request.POST.get("reward_run", "")
    return int(value) if is_int(value) else 0  # 0: no such run (404)


reward_scores_view = action_view(
    lambda request, round_id: reward_scores_request(run_id=_posted_run_id(request), round_id=round_id),
    success="{} candidates queued for scoring; the scores appear here when the job is done.",
    back="research-round-detail")

def _select(request: HttpRequest, round_id: int) -> dict:
    budget = request.POST.get("budget", "")
    return round_select_for_labels(
        round_id=round_id, budget=int(budget) if is_int(budget) else -1, strategy=request.POST.get("strategy", ""),
        rest=request.POST.get("rest", "hold"), reward_run_id=_posted_run_id(request) or None, actor=request.user)


round_select_view = action_view(
    _select, success="Label selection applied: {0[to_annotators]} groups to annotators, {0[held]} held back, "
    "{0[pseudo_labelled]} pseudo-labelled.", back="research-round-detail")
round_release_held_view = action_view(
    lambda request, round_id: round_release_held(round_id=round_id, actor=request.user),
    success="{} held-back groups sent to annotators.", back="research-round-detail")

reward_run_cancel_view = action_view(
    lambda request, run_id: reward_run_cancel(run_id=run_id),
    success="Cancel requested; the run stops after the current step (its state is kept).",
    back="research-reward-run-detail")
