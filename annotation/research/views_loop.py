"""Researcher pages of the loop: prompt import, rounds (launch, live progress, retry, cancel), DPO runs (launch,
live curves, cancel), checkpoints (lineage). Function views; htmx requests get the partial that polls."""

from __future__ import annotations

import json
from functools import wraps

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from annotation import permissions
from annotation.models import Category, Checkpoint, DPOMetric, DPORun, Prompt, Round
from annotation.research.charts import line_chart_svg
from annotation.selectors.candidates import candidate_list_for_round, round_generation_progress
from annotation.services.candidates import candidates_retry_failed, round_generation_cancel
from annotation.services.checkpoints import checkpoint_average_create, evaluation_round_create
from annotation.services.dpo_runs import CONFIG_PRESETS, dpo_run_cancel, dpo_run_create
from annotation.services.prompts import prompts_import
from annotation.services.rounds import prompts_select, round_create

CURVE_KEYS = ("loss", "rewards/accuracies", "rewards/margins")


def researcher_required(view):
    @login_required
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if not permissions.is_researcher(request.user):
            raise PermissionDenied("Researchers only.")
        return view(request, *args, **kwargs)

    return wrapped


def _errors(exc: ValidationError) -> list[str]:
    if hasattr(exc, "message_dict"):
        return [f"{field}: {m}" for field, msgs in exc.message_dict.items() for m in msgs]
    return exc.messages


@researcher_required
def research_home(request: HttpRequest) -> HttpResponse:
    context = {
        "rounds": Round.objects.select_related("policy_checkpoint").order_by("-id")[:50],
        "runs": DPORun.objects.select_related("init_checkpoint", "output_checkpoint").order_by("-id")[:50],
        "checkpoints": Checkpoint.objects.select_related("parent").order_by("-id")[:50],
        "prompt_count": Prompt.objects.filter(is_active=True).count(),
    }
    return render(request, "research/home.html", context)


@researcher_required
@require_http_methods(["GET", "POST"])
def prompt_import(request: HttpRequest) -> HttpResponse:
    report = None
    if request.method == "POST":
        upload = request.FILES.get("file")
        if upload is None:
            messages.error(request, "Choose a CSV, JSONL or TXT file.")
        else:
            fmt = request.POST.get("format") or upload.name.rsplit(".", 1)[-1].lower()
            try:
                report = prompts_import(data=upload.read(), fmt=fmt, default_category=request.POST.get("category", ""),
                                        dry_run=bool(request.POST.get("dry_run")))
            except ValueError as exc:
                messages.error(request, str(exc))
            else:
                if report.ok and not request.POST.get("dry_run"):
                    messages.success(request, f"Imported {report.created} prompts ({report.duplicates} already in the pool).")
                elif not report.ok:
                    messages.error(request, f"Nothing imported: {len(report.rejected)} rows rejected.")
    return render(request, "research/prompt_import.html", {"report": report, "categories": Category.objects.all()})


@researcher_required
@require_http_methods(["GET", "POST"])
def round_new(request: HttpRequest) -> HttpResponse:
    from model.presets import PRESET_NAMES, get_preset

    checkpoints = Checkpoint.objects.order_by("-id")
    form = request.POST if request.method == "POST" else {}
    errors: list[str] = []
    if request.method == "POST":
        try:
            checkpoint = get_object_or_404(Checkpoint, id=int(form.get("checkpoint", 0)))
            prompt_ids = prompts_select(category=form.get("category", ""), search=form.get("search", ""),
                                        tags=[t for t in form.get("tags", "").split(",") if t.strip()],
                                        sample_size=int(form.get("sample_size") or 0), sample_seed=int(form.get("base_seed") or 0))
            preset_name = form.get("preset") or checkpoint.preset
            sampler = form.get("sampler", "standard")
            overrides = {}
            if sampler == "custom":
                overrides = {"num_steps": int(form["num_steps"]), "cfg_scale": float(form["cfg_scale"]), "shift": float(form["shift"])}
            elif sampler == "turbo" and preset_name in PRESET_NAMES:
                turbo = get_preset("stepvideo-t2v-turbo").sampler
                overrides = {"num_steps": turbo.num_steps, "cfg_scale": turbo.cfg_scale, "shift": turbo.shift}
            sizes = {k: int(form[k]) for k in ("height", "width", "num_frames") if form.get(k)}
            round = round_create(
                name=form.get("name", "").strip(), policy_checkpoint=checkpoint, prompt_ids=prompt_ids, actor=request.user,
                preset=preset_name, seeds_per_prompt=int(form.get("seeds_per_prompt") or 4),
                base_seed=int(form.get("base_seed") or 0), annotators_per_group=int(form.get("annotators_per_group") or 3),
                gold_rate=float(form.get("gold_rate") or 0), annotation_mode=form.get("annotation_mode") or Round.Mode.LABELS,
                launch=True, **overrides, **sizes,
            )
        except ValidationError as exc:
            errors = _errors(exc)
        except (ValueError, KeyError) as exc:
            errors = [f"Invalid value: {exc}"]
        else:
            messages.success(request, f"Round {round.name} launched.")
            return redirect("research-round-detail", round_id=round.id)
    context = {"checkpoints": checkpoints, "categories": Category.objects.all(), "presets": PRESET_NAMES,
               "modes": Round.Mode.choices, "errors": errors, "form": form}
    return render(request, "research/round_new.html", context)


@researcher_required
def round_detail(request: HttpRequest, round_id: int) -> HttpResponse:
    round = get_object_or_404(Round.objects.select_related("policy_checkpoint", "reference_checkpoint"), id=round_id)
    context = {
        "round": round,
        "progress": round_generation_progress(round_id=round_id),
        "failed": candidate_list_for_round(round_id=round_id, status="failed")[:20],
        "flagged": candidate_list_for_round(round_id=round_id, status="ready").exclude(screening_flags=[])[:20],
        "events": round.events.select_related("actor"),
        "groups": round.groups.values("status").annotate(n=Count("id")).order_by("status"),
        "pairs": round.pairs.count(),
    }
    template = "research/round_progress.html" if request.htmx else "research/round_detail.html"
    return render(request, template, context)


@researcher_required
@require_POST
def round_retry_failed(request: HttpRequest, round_id: int) -> HttpResponse:
    try:
        n = candidates_retry_failed(round_id=round_id, actor=request.user)
        messages.success(request, f"{n} failed candidates queued again.")
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    return redirect("research-round-detail", round_id=round_id)


@researcher_required
@require_POST
def round_cancel(request: HttpRequest, round_id: int) -> HttpResponse:
    try:
        n = round_generation_cancel(round_id=round_id, actor=request.user, note="cancelled from the round page")
        messages.success(request, f"Round cancelled; {n} pending candidates stopped.")
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    return redirect("research-round-detail", round_id=round_id)


@researcher_required
@require_http_methods(["GET", "POST"])
def dpo_run_new(request: HttpRequest) -> HttpResponse:
    form = request.POST if request.method == "POST" else {}
    errors: list[str] = []
    if request.method == "POST":
        try:
            init = get_object_or_404(Checkpoint, id=int(form.get("init_checkpoint", 0)))
            reference = (get_object_or_404(Checkpoint, id=int(form["reference_checkpoint"]))
                         if form.get("reference_checkpoint") else None)
            overrides = json.loads(form.get("config_overrides") or "{}")
            run = dpo_run_create(
                name=form.get("name", "").strip(), round_ids=[int(r) for r in form.getlist("rounds")], init_checkpoint=init,
                reference_checkpoint=reference,
                config_preset=form.get("config_preset", "tiny-cpu"), config_overrides=overrides,
                use_lora=bool(form.get("use_lora")), min_agreement=float(form.get("min_agreement") or 0),
                min_annotators=int(form.get("min_annotators") or 1), weighting=form.get("weighting", "agreement"),
                actor=request.user,
            )
        except ValidationError as exc:
            errors = _errors(exc)
        except (ValueError, json.JSONDecodeError) as exc:
            errors = [f"Invalid value: {exc}"]
        else:
            messages.success(request, f"DPO run {run.name} queued.")
            return redirect("research-dpo-run-detail", run_id=run.id)
    context = {"checkpoints": Checkpoint.objects.order_by("-id"), "presets": CONFIG_PRESETS, "errors": errors, "form": form,
               "rounds": Round.objects.filter(status__in=[Round.Status.ANNOTATING, Round.Status.DONE]).annotate(n_pairs=Count("pairs")).order_by("-id")}
    return render(request, "research/dpo_run_new.html", context)


@researcher_required
def dpo_run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(DPORun.objects.select_related("init_checkpoint", "reference_checkpoint", "output_checkpoint"), id=run_id)
    rows = list(DPOMetric.objects.filter(run=run).order_by("step").values_list("step", "values"))
    charts = {key: line_chart_svg([(s, v.get(key)) for s, v in rows if isinstance(v.get(key), (int, float))], title=key)
              for key in CURVE_KEYS}
    context = {"run": run, "charts": charts, "last": rows[-1][1] if rows else {}, "steps": len(rows),
               "data_rounds": run.data_rounds.all()}
    template = "research/dpo_run_progress.html" if request.htmx else "research/dpo_run_detail.html"
    return render(request, template, context)


@researcher_required
@require_POST
def dpo_run_cancel_view(request: HttpRequest, run_id: int) -> HttpResponse:
    try:
        dpo_run_cancel(run_id=run_id, actor=request.user)
        messages.success(request, "Cancel requested; the trainer stops after the current step and keeps its checkpoint.")
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    return redirect("research-dpo-run-detail", run_id=run_id)


@researcher_required
def checkpoint_detail(request: HttpRequest, checkpoint_id: int) -> HttpResponse:
    checkpoint = get_object_or_404(Checkpoint.objects.select_related("parent", "reference"), id=checkpoint_id)
    lineage = []
    node = checkpoint
    while node is not None and len(lineage) < 50:
        lineage.append(node)
        node = node.parent
    context = {"checkpoint": checkpoint, "lineage": lineage, "produced_by": DPORun.objects.filter(output_checkpoint=checkpoint).first(),
               "children": checkpoint.children.all(), "rounds": checkpoint.policy_rounds.all(),
               "config_json": json.dumps(checkpoint.config, indent=2, ensure_ascii=False),
               "metrics_json": json.dumps(checkpoint.metrics, indent=2, ensure_ascii=False)}
    return render(request, "research/checkpoint_detail.html", context)


@researcher_required
@require_POST
def checkpoint_evaluate(request: HttpRequest, checkpoint_id: int) -> HttpResponse:
    checkpoint = get_object_or_404(Checkpoint, id=checkpoint_id)
    try:
        round = evaluation_round_create(checkpoint=checkpoint, name=request.POST.get("name") or f"eval-{checkpoint.name}",
                                        seeds_per_prompt=int(request.POST.get("seeds_per_prompt") or 2), actor=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(_errors(exc)))
        return redirect("research-checkpoint-detail", checkpoint_id=checkpoint_id)
    messages.success(request, f"Evaluation round {round.name} launched (same initial noise for both checkpoints).")
    return redirect("research-round-detail", round_id=round.id)


@researcher_required
@require_POST
def checkpoint_average(request: HttpRequest) -> HttpResponse:
    try:
        checkpoint_average_create(checkpoint_ids=[int(i) for i in request.POST.getlist("checkpoints")],
                                  name=request.POST.get("name", "").strip(), actor=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(_errors(exc)))
    else:
        messages.success(request, "Averaging queued; the new checkpoint appears here when it is done.")
    return redirect("research-home")
