"""Researcher pages of the loop: prompt import, rounds (launch, live progress, retry, cancel), DPO runs (launch,
live curves, overlays of several runs, cancel), checkpoints (lineage). Function views; htmx requests get the partial
that polls. Reads through ``selectors.research``; refused actions come back as messages (``errors.flash_result``)
or as the form's error list (``errors.error_messages``)."""

from __future__ import annotations

import json
import math

from django.contrib import messages
from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from annotation import charts
from annotation.errors import ApplicationError, error_messages, flash_result, is_int
from annotation.models import Checkpoint, PromptImport, Round
from annotation.permissions import researcher_required
from annotation.research.views_forms import prompt_ids_for_form
from annotation.selectors.candidates import candidate_list_for_round, round_generation_progress
from annotation.selectors.research import (
    CURVE_KEYS,
    category_list,
    checkpoint_lineage,
    checkpoint_list,
    checkpoint_produced_by,
    dpo_run_curves,
    dpo_run_get,
    dpo_runs_for_compare,
    research_overview,
    reward_runs_done,
    round_group_status_counts,
    round_groups_unusable,
    round_reward_scores,
    rounds_with_pairs,
)
from annotation.selectors.round_preview import annotators_available, default_annotators_per_group, round_preview
from annotation.selectors.scripted import round_scripted_scores
from annotation.services.candidates import candidates_retry_failed, groups_refresh, round_generation_cancel
from annotation.services.checkpoints import checkpoint_average_create, evaluation_round_create
from annotation.services.dpo_runs import CONFIG_PRESETS, dpo_run_cancel, dpo_run_create, dpo_run_warnings
from annotation.services.prompt_edits import prompt_set_by_name
from annotation.services.prompt_imports import import_is_big, prompt_import_start
from annotation.services.prompts import import_size_check, prompts_import
from annotation.services.rounds import prompts_select, round_create

ERR_INVALID_VALUE = "Invalid value: {detail}"
ERR_NO_PROMPT_MATCH = "No prompt matches this filter: change the category, search or tags (or import prompts first)."
MAX_COMPARED_RUNS = 8


def _form_errors(exc: Exception) -> list[str]:
    """The lines a form shows for a refused launch: the service's messages, or the value that did not parse."""
    if isinstance(exc, ApplicationError | ValidationError):
        return error_messages(exc)
    return [ERR_INVALID_VALUE.format(detail=exc)]


@researcher_required
@require_GET
def research_home(request: HttpRequest) -> HttpResponse:
    return render(request, "research/home.html", research_overview())


def _import_limits() -> dict:
    from django.conf import settings

    return {"async_mb": f"{settings.PROMPT_IMPORT_ASYNC_BYTES / 2**20:.3g}", "max_mb": f"{settings.PROMPT_IMPORT_MAX_BYTES / 2**20:.3g}"}


def _prompt_import_job_start(request: HttpRequest, upload, fmt: str) -> HttpResponse:
    post = request.POST
    try:
        job, repeated = prompt_import_start(
            file=upload, filename=upload.name, size=upload.size, fmt=fmt, actor=request.user,
            default_category=post.get("category", ""), dry_run=bool(post.get("dry_run")),
            prompt_set=prompt_set_by_name(post.get("prompt_set", "").strip()), held_out=bool(post.get("held_out")),
            default_tags=[t.strip() for t in post.get("tags", "").split(",") if t.strip()])
    except (ApplicationError, ValidationError, ValueError) as exc:
        messages.error(request, " ".join(_form_errors(exc)))
        return render(request, "research/prompt_import.html", {"report": None, "categories": category_list(),
                                                               "form": post, **_import_limits()})
    if repeated:
        messages.info(request, f"This file was already uploaded with the same options "
                               f"(import #{job.pk}, {job.created_at:%Y-%m-%d %H:%M}): nothing imported twice.")
    return redirect("research-prompt-import-job", import_id=job.pk)


@researcher_required
@require_GET
def prompt_import_job(request: HttpRequest, import_id: int) -> HttpResponse:
    """A background import: its progress (htmx polls the status part), then the report by line number."""
    job = get_object_or_404(PromptImport.objects.select_related("created_by"), pk=import_id)
    if request.htmx:
        return render(request, "research/prompt_import_job_status.html", {"job": job})
    return render(request, "research/prompt_import_job.html", {"job": job})


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
            if import_is_big(upload.size):  # stored, then streamed by a worker: the job page shows its progress
                return _prompt_import_job_start(request, upload, fmt)
            try:
                import_size_check(upload.size)  # before reading it into memory
                post = request.POST  # the importer sets the prompt set, held-out and tags too (issue 18)
                report = prompts_import(data=upload.read(), fmt=fmt, default_category=post.get("category", ""),
                                        dry_run=bool(post.get("dry_run")),
                                        prompt_set=prompt_set_by_name(post.get("prompt_set", "").strip()),
                                        held_out=bool(post.get("held_out")),
                                        default_tags=[t.strip() for t in post.get("tags", "").split(",") if t.strip()])
            except (ApplicationError, ValidationError, ValueError) as exc:
                messages.error(request, " ".join(_form_errors(exc)))
            else:
                if report.ok and not request.POST.get("dry_run"):
                    messages.success(request, f"Imported {report.created} prompts ({report.duplicates} already in the pool).")
                elif not report.ok:
                    messages.error(request, f"Nothing imported: {len(report.rejected)} "
                                            f"row{'' if len(report.rejected) == 1 else 's'} rejected.")
                else:
                    messages.info(request, f"Valid, nothing imported (dry run): {report.would_create} new prompts, "
                                           f"{report.duplicates} already in the pool.")
    return render(request, "research/prompt_import.html", {"report": report, "categories": category_list(),
                                                           "form": request.POST if request.method == "POST" else {},
                                                           **_import_limits()})


ROUND_LABELS = {
    "name": "Name", "checkpoint": "Checkpoint", "policy_checkpoint": "Checkpoint", "preset": "Preset",
    "num_steps": "Steps", "cfg_scale": "CFG", "shift": "Shift", "height": "Height and width", "width": "Width",
    "num_frames": "Frames", "fps": "FPS", "sample_size": "Sample size", "seeds_per_prompt": "Seeds per prompt (K)",
    "base_seed": "Base seed", "annotators_per_group": "k annotators per group",
    "max_annotators_per_group": "At most, on disagreement", "gold_rate": "Gold rate",
    "annotation_mode": "Annotation mode", "prompts": "Prompts", "reference_checkpoint": "Reference",
    "segment_seconds": "Segment length",
}
DPO_LABELS = {
    "name": "Name", "init_checkpoint": "Start from", "reference_checkpoint": "Reference",
    "round_ids": "Pairs from rounds", "rounds": "Pairs from rounds", "min_agreement": "Min agreement",
    "min_annotators": "Min annotators", "weighting": "Weighting", "config_preset": "Trainer preset",
    "config": "Config overrides", "config_overrides": "Config overrides",
}
ERR_WHOLE_NUMBER = "enter a whole number"
ERR_NUMBER = "enter a number"
ERR_OVERRIDES_JSON = "Config overrides must be a JSON object, e.g. {\"max_steps\": 100}"


class FormErrors:
    """A form's problems field by field, shown all at once as ``Label: message`` (the labels the form shows)."""

    def __init__(self, form, labels: dict[str, str]):
        self.form, self.labels, self.fields = form, labels, {}

    def add(self, field: str, message: str) -> None:
        self.fields.setdefault(field, []).append(message)

    def merge(self, exc: ApplicationError | ValidationError) -> None:
        if isinstance(exc, ValidationError) and hasattr(exc, "message_dict"):
            for field, msgs in exc.message_dict.items():
                for m in msgs:
                    self.add(field, m)
        else:
            for m in error_messages(exc):
                self.add("__all__", m)

    def number(self, field: str, default=None, *, kind=int):
        """The field as a number (``default`` when blank), or ``default`` with a message when it does not parse."""
        raw = str(self.form.get(field, "") or "").strip()
        if not raw:
            return default
        try:
            value = kind(raw)
        except ValueError:
            self.add(field, ERR_WHOLE_NUMBER if kind is int else ERR_NUMBER)
            return default
        if kind is float and not math.isfinite(value):
            self.add(field, ERR_NUMBER)
            return default
        return value

    def lines(self) -> list[str]:
        out = []
        for field, msgs in self.fields.items():
            label = self.labels.get(field)
            for m in dict.fromkeys(msgs):
                if label is None or m.startswith(label):
                    out.append(m)
                    continue
                for prefix in (f"{field} and width ", f"{field} "):  # "num_frames must be ..." -> "must be ..."
                    m = m.removeprefix(prefix)
                out.append(f"{label}: {m}")
        return out


@researcher_required
@require_http_methods(["GET", "POST"])
def round_new(request: HttpRequest) -> HttpResponse:
    from model.presets import PRESET_NAMES, get_preset

    checkpoints = checkpoint_list()
    form = request.POST if request.method == "POST" else {}
    errors: list[str] = []
    if request.method == "POST":
        problems = FormErrors(form, ROUND_LABELS)
        checkpoint_id = form.get("checkpoint", "")
        checkpoint = Checkpoint.objects.filter(id=int(checkpoint_id)).first() if is_int(checkpoint_id) else None
        if checkpoint is None:
            problems.add("checkpoint", "choose a checkpoint")
        sample_size = problems.number("sample_size", 0)
        base_seed = problems.number("base_seed", 0)
        prompt_ids: list[int] = []
        try:
            prompt_ids = prompts_select(category=form.get("category", ""), search=form.get("search", ""),
                                        tags=[t for t in form.get("tags", "").split(",") if t.strip()],
                                        sample_size=sample_size, sample_seed=base_seed)
            if not prompt_ids:
                problems.add("__all__", ERR_NO_PROMPT_MATCH)
        except ValidationError as exc:
            problems.merge(exc)
        preset_name = form.get("preset") or (checkpoint.preset if checkpoint else "")
        sampler = form.get("sampler", "standard")
        overrides = {}
        if sampler == "custom":
            overrides = {"num_steps": problems.number("num_steps"), "cfg_scale": problems.number("cfg_scale", kind=float),
                         "shift": problems.number("shift", kind=float)}
            for field, value in overrides.items():
                if value is None and field not in problems.fields:
                    problems.add(field, ERR_WHOLE_NUMBER if field == "num_steps" else ERR_NUMBER)
            overrides = {k: v for k, v in overrides.items() if v is not None}
        elif sampler == "turbo" and preset_name in PRESET_NAMES:
            turbo = get_preset("stepvideo-t2v-turbo").sampler
            overrides = {"num_steps": turbo.num_steps, "cfg_scale": turbo.cfg_scale, "shift": turbo.shift}
        sizes = {k: v for k in ("height", "width", "num_frames") if (v := problems.number(k)) is not None}
        kwargs = dict(
            seeds_per_prompt=problems.number("seeds_per_prompt", 4), base_seed=base_seed,
            annotators_per_group=problems.number("annotators_per_group", default_annotators_per_group()),
            max_annotators_per_group=problems.number("max_annotators_per_group"),
            gold_rate=problems.number("gold_rate", 0.0, kind=float),
            annotation_mode=form.get("annotation_mode") or Round.Mode.LABELS,
            aspect_judgments=form.get("aspect_judgments") == "1", segment_judgments=form.get("segment_judgments") == "1",
            exclude_flagged=form.get("exclude_flagged") == "1", segment_seconds=problems.number("segment_seconds", 1.0, kind=float), **overrides, **sizes)
        round = None
        if checkpoint is not None:
            try:  # with problems already found, the service only checks the rest (nothing is saved)
                round = round_create(name=form.get("name", "").strip(), policy_checkpoint=checkpoint,
                                     prompt_ids=prompt_ids, actor=request.user, preset=preset_name, launch=True,
                                     dry_run=bool(problems.fields), **kwargs)
            except (ApplicationError, ValidationError) as exc:
                problems.merge(exc)
                if not prompt_ids:  # said above in the filter's words
                    problems.fields.pop("prompts", None)
        if not problems.fields and round is not None:
            messages.success(request, f"Round {round.name} launched.")
            return redirect("research-round-detail", round_id=round.id)
        errors = problems.lines()
    context = {"checkpoints": checkpoints, "categories": category_list(), "presets": PRESET_NAMES,
               "modes": Round.Mode.choices, "errors": errors, "form": form,
               # the default k never exceeds the annotators who exist; the preview counts what the filter selects
               "default_k": default_annotators_per_group(), "annotators": annotators_available(),
               "samplers": [("standard", "standard (preset defaults)"), ("turbo", "turbo (CFG 5, shift 17)"),
                            ("custom", "custom")],
               "preview": round_preview(prompt_count=len(prompt_ids_for_form(form)),
                                        seeds_per_prompt=int(form.get("seeds_per_prompt") or 4)
                                        if str(form.get("seeds_per_prompt") or "4").isdigit() else 4)}
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
        "groups": round_group_status_counts(round=round),
        "unusable": round_groups_unusable(round=round),
        "pairs": round.pairs.count(),
        "scripted": round_scripted_scores(round_id=round_id) if request.GET.get("scripted") and not request.htmx else None,
        "reward_scores": round_reward_scores(round_id=round_id) if not request.htmx else [],
        "reward_runs": reward_runs_done()[:50] if not request.htmx else [],
    }
    template = "research/round_progress.html" if request.htmx else "research/round_detail.html"
    return render(request, template, context)


def action_view(action, *, success: str, back: str):
    """A researcher's POST that runs ``action(request, **url_kwargs)``, flashes its outcome and goes ``back`` (a URL
    name taking the same kwargs)."""

    @researcher_required
    @require_POST
    def view(request: HttpRequest, **kwargs) -> HttpResponse:
        try:
            flash_result(request, lambda: action(request, **kwargs), success=success)
        except ObjectDoesNotExist:  # no such round / run: 404, not a 500
            raise Http404("No such object.") from None
        return redirect(back, **kwargs)

    return view


round_retry_failed = action_view(
    lambda request, round_id: candidates_retry_failed(round_id=round_id, actor=request.user),
    success="{} failed candidates queued again.", back="research-round-detail")
round_groups_refresh = action_view(
    lambda request, round_id: groups_refresh(round_id=get_object_or_404(Round, id=round_id).id),
    success="Groups re-checked against their candidates; {} changed status.", back="research-round-detail")
round_cancel = action_view(
    lambda request, round_id: round_generation_cancel(round_id=round_id, actor=request.user,
                                                      note="cancelled from the round page"),
    success="Round cancelled; {} pending candidates stopped.", back="research-round-detail")


@researcher_required
@require_http_methods(["GET", "POST"])
def dpo_run_new(request: HttpRequest) -> HttpResponse:
    form = request.POST if request.method == "POST" else {}
    errors: list[str] = []
    if request.method == "POST":
        problems = FormErrors(form, DPO_LABELS)
        init_id, reference_id = form.get("init_checkpoint", ""), form.get("reference_checkpoint", "")
        init = Checkpoint.objects.filter(id=int(init_id)).first() if is_int(init_id) else None
        if init is None:
            problems.add("init_checkpoint", "choose the checkpoint to start from")
        reference = Checkpoint.objects.filter(id=int(reference_id)).first() if is_int(reference_id) else None
        if reference_id and reference is None:
            problems.add("reference_checkpoint", "no such checkpoint")
        round_ids = [int(r) for r in form.getlist("rounds") if is_int(r)]
        overrides = {}
        try:
            overrides = json.loads(form.get("config_overrides") or "{}")
        except ValueError:
            overrides = None
        if not isinstance(overrides, dict):
            problems.add("config_overrides", ERR_OVERRIDES_JSON)
            overrides = {}
        min_agreement = problems.number("min_agreement", 0.0, kind=float)
        min_annotators = problems.number("min_annotators", 1)
        if not problems.fields:
            try:
                run = dpo_run_create(
                    name=form.get("name", "").strip(), round_ids=round_ids, init_checkpoint=init,
                    reference_checkpoint=reference, config_preset=form.get("config_preset", "tiny-cpu"),
                    config_overrides=overrides, use_lora=bool(form.get("use_lora")), min_agreement=min_agreement,
                    min_annotators=min_annotators, weighting=form.get("weighting", "agreement"), actor=request.user,
                    include_evaluation=bool(form.get("include_evaluation")),
                    include_pseudo_labels=bool(form.get("include_pseudo_labels")))
            except (ApplicationError, ValidationError) as exc:
                problems.merge(exc)
            else:
                pairs = f"{run.pairs_count} pair{'' if run.pairs_count == 1 else 's'}"
                messages.success(request, f"DPO run {run.name} queued on {pairs}.")
                for warning in dpo_run_warnings(run=run):
                    messages.warning(request, warning)
                return redirect("research-dpo-run-detail", run_id=run.id)
        errors = problems.lines()
    context = {"checkpoints": checkpoint_list(), "presets": CONFIG_PRESETS, "errors": errors, "form": form,
               "rounds": rounds_with_pairs(),  # the form keeps every choice after a refusal (issue 18)
               "weightings": [("agreement", "by agreement"), ("uniform", "uniform"), ("stored", "stored weight")],
               "selected_rounds": form.getlist("rounds") if form else [request.GET.get("round", "")]}
    return render(request, "research/dpo_run_new.html", context)


def _compared_runs(request: HttpRequest, run_id: int, others: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """The runs named by ``?compare=<id>`` (repeatable, or comma-separated) that exist, in the order given."""
    names = dict(others)
    wanted = [int(p) for v in request.GET.getlist("compare") for p in v.split(",") if is_int(p.strip())]
    return [(i, names[i]) for i in dict.fromkeys(wanted) if i in names and i != run_id][:MAX_COMPARED_RUNS]


def _curve_charts(runs: list[tuple[int, str]], curves: dict[int, list[tuple[int, dict]]]) -> list[tuple[str, dict]]:
    """One line chart per metric, one line per run: [(element id, chart spec)]."""
    out = []
    for key in CURVE_KEYS:
        series = [(name, [(step, values.get(key)) for step, values in curves[run_id]]) for run_id, name in runs]
        out.append((f"curve-{key.replace('/', '-')}", charts.line_chart(title=key, series=series, y_label=key)))
    return out


def _rounded_values(values: dict) -> list[tuple[str, object]]:
    """A step's metrics for the last-values table: numbers rounded, unset ones (e.g. ``round`` outside a round's
    data) left out."""
    return [(k, charts.rounded(v) if isinstance(v, int | float) and not isinstance(v, bool) else v)
            for k, v in values.items() if v is not None]


@researcher_required
@require_GET
def dpo_run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run = dpo_run_get(run_id=run_id)
    if run is None:
        raise Http404("No such DPO run.")
    others = dpo_runs_for_compare(exclude_id=run.id)
    runs = [(run.id, run.name), *_compared_runs(request, run.id, others)]
    curves = dpo_run_curves(run_ids=[run_id for run_id, _ in runs])
    rows = curves[run.id]
    context = {"run": run, "warnings": dpo_run_warnings(run=run), "curve_charts": _curve_charts(runs, curves), "last": _rounded_values(rows[-1][1]) if rows else [],
               "steps": len(rows), "data_rounds": run.data_rounds.all(), "compare_choices": others,
               "compared": [run_id for run_id, _ in runs[1:]]}
    template = "research/dpo_run_progress.html" if request.htmx else "research/dpo_run_detail.html"
    return render(request, template, context)


dpo_run_cancel_view = action_view(
    lambda request, run_id: dpo_run_cancel(run_id=run_id, actor=request.user),
    success="Cancel requested; the trainer stops after the current step and keeps its checkpoint.",
    back="research-dpo-run-detail")


@researcher_required
@require_GET
def checkpoint_detail(request: HttpRequest, checkpoint_id: int) -> HttpResponse:
    checkpoint = get_object_or_404(Checkpoint.objects.select_related("parent", "reference"), id=checkpoint_id)
    context = {"checkpoint": checkpoint, "lineage": checkpoint_lineage(checkpoint=checkpoint),
               "produced_by": checkpoint_produced_by(checkpoint=checkpoint),
               "children": checkpoint.children.all(), "rounds": checkpoint.policy_rounds.all(),
               "config_json": json.dumps(checkpoint.config, indent=2, ensure_ascii=False),
               "metrics_json": json.dumps(checkpoint.metrics, indent=2, ensure_ascii=False)}
    return render(request, "research/checkpoint_detail.html", context)


@researcher_required
@require_POST
def checkpoint_evaluate(request: HttpRequest, checkpoint_id: int) -> HttpResponse:
    checkpoint = get_object_or_404(Checkpoint, id=checkpoint_id)
    seeds = request.POST.get("seeds_per_prompt") or "2"
    round = flash_result(
        request, lambda: evaluation_round_create(
            checkpoint=checkpoint, name=request.POST.get("name") or f"eval-{checkpoint.name}",
            seeds_per_prompt=int(seeds) if is_int(seeds) else 0, actor=request.user),
        success="Evaluation round {.name} launched (same initial noise for both checkpoints).")
    if round is None:
        return redirect("research-checkpoint-detail", checkpoint_id=checkpoint_id)
    return redirect("research-round-detail", round_id=round.id)


@researcher_required
@require_POST
def checkpoint_average(request: HttpRequest) -> HttpResponse:
    flash_result(request, lambda: checkpoint_average_create(
        checkpoint_ids=[int(i) for i in request.POST.getlist("checkpoints") if is_int(i)],
        name=request.POST.get("name", "").strip(), actor=request.user),
        success="Averaging queued; the new checkpoint appears here when it is done.")
    return redirect("research-home")
