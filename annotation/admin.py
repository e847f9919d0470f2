"""The researcher panel: every model, with the list columns and filters researchers use.

Statuses and counters that the state machines and services keep (round, group, candidate, DPO run, export) are
read-only here; transitions are admin actions that call the services (so their guards and events apply)."""

from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import ValidationError

from annotation import models
from annotation.errors import ApplicationError, error_messages


class ModelAdmin(admin.ModelAdmin):
    """No regular-expression lookups from the URL (``?text__regex=(`` was a database error, a 500): 400 instead."""

    def lookup_allowed(self, lookup, value, request=None):
        if lookup.rsplit("__", 1)[-1] in ("regex", "iregex"):
            return False
        return super().lookup_allowed(lookup, value, request)


def _run_action(modeladmin, request, queryset, fn, done: str) -> None:
    """Call ``fn(obj)`` for each selected object; report successes and refusals (never a 500)."""
    ok = 0
    for obj in queryset:
        try:
            fn(obj)
            ok += 1
        except (ApplicationError, ValidationError) as exc:
            modeladmin.message_user(request, f"{obj}: {' '.join(error_messages(exc))}", messages.ERROR)
    if ok:
        modeladmin.message_user(request, f"{ok} {done}.", messages.SUCCESS)


@admin.action(description="Cancel generation of the selected rounds")
def round_cancel(modeladmin, request, queryset):
    from annotation.services.candidates import round_generation_cancel

    _run_action(modeladmin, request, queryset, lambda r: round_generation_cancel(round_id=r.pk, actor=request.user),
                "round(s) cancelled")


@admin.action(description="Retry the failed candidates of the selected rounds")
def round_retry_failed(modeladmin, request, queryset):
    from annotation.services.candidates import candidates_retry_failed

    _run_action(modeladmin, request, queryset, lambda r: candidates_retry_failed(round_id=r.pk, actor=request.user),
                "round(s) retried")


@admin.action(description="Refresh the status of the selected groups from their candidates")
def group_refresh_action(modeladmin, request, queryset):
    from annotation.services.candidates import group_refresh

    _run_action(modeladmin, request, queryset, lambda g: group_refresh(group_id=g.pk), "group(s) refreshed")


@admin.action(description="Cancel the selected DPO runs")
def dpo_run_cancel_action(modeladmin, request, queryset):
    from annotation.services.dpo_runs import dpo_run_cancel

    _run_action(modeladmin, request, queryset, lambda r: dpo_run_cancel(run_id=r.pk, actor=request.user),
                "run(s) cancelled")


@admin.register(models.Category)
class CategoryAdmin(ModelAdmin):
    list_display = ["name", "slug"]
    search_fields = ["name", "slug"]


@admin.register(models.PromptSet)
class PromptSetAdmin(ModelAdmin):
    list_display = ["name", "created_at"]
    search_fields = ["name"]


def _prompts_action(description: str, **changes):
    """An admin bulk action on the selected prompts through ``services.prompt_bulk`` (not only delete)."""

    @admin.action(description=description)
    def action(modeladmin, request, queryset):
        from annotation.services.prompt_bulk import prompts_bulk_set

        n = prompts_bulk_set(prompt_ids=queryset.values_list("id", flat=True), **changes)
        modeladmin.message_user(request, f"{description}: {n} prompt(s).", messages.SUCCESS)

    action.__name__ = "prompts_" + "_".join(f"{k}_{v}" for k, v in changes.items()).lower()
    return action


def _prompts_form_action(name: str, description: str, field: str):
    """An admin bulk action with an intermediate page: the first POST shows the form (a tag, or a category) for the
    selected prompts; the second (``apply``) calls ``services.prompt_bulk`` and returns to the list."""

    @admin.action(description=description)
    def action(modeladmin, request, queryset):
        from django.template.response import TemplateResponse

        from annotation.services.prompt_bulk import prompts_bulk_set

        error = ""
        if "apply" in request.POST:
            value = request.POST.get(field, "").strip()
            try:
                if field == "category":
                    if value and not value.isdecimal():
                        raise ApplicationError(f"There is no category {value!r}.")
                    n = prompts_bulk_set(prompt_ids=queryset.values_list("id", flat=True),
                                         category_id=int(value) if value else None)
                else:
                    if not value:
                        raise ApplicationError("Type the tag.")
                    n = prompts_bulk_set(prompt_ids=queryset.values_list("id", flat=True), **{field: [value]})
            except (ApplicationError, ValidationError) as exc:
                error = " ".join(error_messages(exc))
            else:
                modeladmin.message_user(request, f"{description.rstrip('.…')}: {n} prompt(s) changed.",
                                        messages.SUCCESS)
                return None
        return TemplateResponse(request, "admin/annotation/prompt/bulk_form.html", {
            **modeladmin.admin_site.each_context(request), "title": description.rstrip("…"), "action": name,
            "field": field, "queryset": queryset, "opts": modeladmin.model._meta, "error": error,
            "categories": models.Category.objects.order_by("name") if field == "category" else (),
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
        }, status=400 if error else 200)

    action.__name__ = name
    return action


PROMPT_ACTIONS = [
    _prompts_action("Activate", is_active=True),
    _prompts_action("Retire (keep, never sample again)", is_active=False),
    _prompts_action("Mark held out (evaluation only)", is_held_out=True),
    _prompts_action("Clear held out", is_held_out=False),
    _prompts_form_action("prompts_add_tag", "Add a tag…", "add_tags"),
    _prompts_form_action("prompts_remove_tag", "Remove a tag…", "remove_tags"),
    _prompts_form_action("prompts_set_category", "Set the category…", "category"),
]


@admin.register(models.Prompt)
class PromptAdmin(ModelAdmin):
    list_display = ["id", "short_text", "language", "category", "source", "is_active", "is_held_out", "created_at"]
    list_filter = ["is_active", "is_held_out", "language", "source", "category", "prompt_set"]
    search_fields = ["text"]
    list_select_related = ["category"]
    readonly_fields = ["text_hash"]
    actions = PROMPT_ACTIONS

    @admin.display(description="text")
    def short_text(self, obj):
        return obj.text[:100]


@admin.register(models.Checkpoint)
class CheckpointAdmin(ModelAdmin):
    list_display = ["name", "kind", "preset", "parent", "reference", "created_at"]
    list_filter = ["kind", "preset"]
    search_fields = ["name", "uri"]
    raw_id_fields = ["parent", "reference"]
    filter_horizontal = ["averaged_from"]


class RoundEventInline(admin.TabularInline):
    model = models.RoundEvent
    extra = 0
    readonly_fields = ["from_status", "to_status", "actor", "note", "at"]
    can_delete = False


@admin.register(models.Round)
class RoundAdmin(ModelAdmin):
    list_display = ["name", "kind", "status", "policy_checkpoint", "preset", "seeds_per_prompt", "annotators_per_group", "created_at"]
    list_filter = ["status", "kind", "preset"]
    search_fields = ["name"]
    inlines = [RoundEventInline]
    raw_id_fields = ["policy_checkpoint", "reference_checkpoint"]
    readonly_fields = ["status", "started_at", "finished_at"]
    actions = [round_cancel, round_retry_failed]

    def get_readonly_fields(self, request, obj=None):
        # what annotators answer is fixed once the round left draft: a page loaded before a switch would be stored
        # under the other setting (made-up "same" aspects, or a refusal)
        fixed = ["annotation_mode", "aspect_judgments", "segment_judgments", "segment_seconds"]
        if obj is None or obj.status == models.Round.Status.DRAFT:
            fixed = []
        return [*self.readonly_fields, *fixed]


@admin.register(models.RoundEvent)
class RoundEventAdmin(ModelAdmin):
    list_display = ["round", "from_status", "to_status", "actor", "at"]
    list_filter = ["to_status"]


@admin.register(models.CandidateGroup)
class CandidateGroupAdmin(ModelAdmin):
    list_display = ["id", "round", "prompt", "status", "is_gold", "judgments_count", "target_judgments"]
    list_filter = ["status", "is_gold", "round"]
    raw_id_fields = ["round", "prompt"]
    list_select_related = ["round", "prompt"]
    readonly_fields = ["status", "prompt_text", "target_judgments", "active_reservations", "judgments_count"]
    actions = [group_refresh_action]


@admin.register(models.Candidate)
class CandidateAdmin(ModelAdmin):
    list_display = ["id", "group", "seed", "status", "progress_step", "progress_total", "attempts", "screening_flags"]
    list_filter = ["status"]
    raw_id_fields = ["group", "checkpoint"]
    search_fields = ["error"]
    readonly_fields = ["status", "progress_step", "progress_total", "attempts", "started_at", "finished_at", "error"]


@admin.register(models.AnnotatorProfile)
class AnnotatorProfileAdmin(ModelAdmin):
    list_display = ["user", "pseudonym", "is_paused", "paused_at"]
    list_filter = ["is_paused"]


@admin.register(models.FlawTag)
class FlawTagAdmin(ModelAdmin):
    list_display = ["name", "slug", "is_active", "order"]
    list_editable = ["is_active", "order"]


@admin.register(models.Assignment)
class AssignmentAdmin(ModelAdmin):
    list_display = ["id", "group", "annotator", "status", "reserved_at", "expires_at"]
    list_filter = ["status"]
    raw_id_fields = ["group", "annotator"]
    readonly_fields = ["status", "shown_order", "submitted_at"]


class CandidateLabelInline(admin.TabularInline):
    model = models.CandidateLabel
    extra = 0
    raw_id_fields = ["candidate"]


@admin.register(models.Judgment)
class JudgmentAdmin(ModelAdmin):
    list_display = ["id", "group", "annotator", "outcome", "time_spent_ms", "created_at"]
    list_filter = ["outcome", "reviewer_decision"]
    raw_id_fields = ["assignment", "group", "annotator"]
    inlines = [CandidateLabelInline]


@admin.register(models.CandidateLabel)
class CandidateLabelAdmin(ModelAdmin):
    list_display = ["judgment", "candidate", "label", "rank", "shown_position", "playback_coverage"]
    raw_id_fields = ["judgment", "candidate"]


@admin.register(models.FlawMark)
class FlawMarkAdmin(ModelAdmin):
    list_display = ["label", "tag", "time_s"]
    raw_id_fields = ["label"]


@admin.register(models.PreferencePair)
class PreferencePairAdmin(ModelAdmin):
    list_display = ["id", "round", "chosen", "rejected", "weight", "agreement", "n_annotators", "source"]
    list_filter = ["source", "round"]
    raw_id_fields = ["round", "group", "chosen", "rejected", "source_judgments"]


@admin.register(models.ReviewItem)
class ReviewItemAdmin(ModelAdmin):
    list_display = ["group", "status", "reason", "reviewer", "resolved_at"]
    list_filter = ["status"]
    raw_id_fields = ["group"]


@admin.register(models.Export)
class ExportAdmin(ModelAdmin):
    list_display = ["id", "format", "version", "status", "row_count", "content_hash", "created_at"]
    list_filter = ["format", "status"]
    readonly_fields = ["status", "version", "progress", "row_count", "content_hash", "uri", "datasheet", "error",
                       "finished_at"]


class DPOMetricInline(admin.TabularInline):
    model = models.DPOMetric
    extra = 0
    readonly_fields = ["step", "values"]
    can_delete = False
    max_num = 0


@admin.register(models.DPORun)
class DPORunAdmin(ModelAdmin):
    list_display = ["name", "status", "init_checkpoint", "reference_checkpoint", "output_checkpoint", "pairs_count", "progress_step"]
    list_filter = ["status"]
    raw_id_fields = ["init_checkpoint", "reference_checkpoint", "output_checkpoint"]
    readonly_fields = ["status", "pairs_count", "progress_step", "progress_total", "output_uri", "error",
                       "cancel_requested", "started_at", "finished_at", "metrics_summary"]
    actions = [dpo_run_cancel_action]


@admin.register(models.DPOMetric)
class DPOMetricAdmin(ModelAdmin):
    list_display = ["run", "step"]
    list_filter = ["run"]


@admin.action(description="Cancel the selected reward-model runs")
def reward_run_cancel_action(modeladmin, request, queryset):
    from annotation.services.reward_runs import reward_run_cancel

    _run_action(modeladmin, request, queryset, lambda r: reward_run_cancel(run_id=r.pk), "run(s) cancelled")


@admin.register(models.RewardRun)
class RewardRunAdmin(ModelAdmin):
    """Reward-model runs are launched from the research page (``/research/reward-runs/new/``: the data check, the
    manifest export and the job); here they are listed, renamed and cancelled."""

    list_display = ["name", "status", "backbone", "init_checkpoint", "pairs_count", "progress_step", "progress_total",
                    "created_at"]
    list_filter = ["status"]
    search_fields = ["name"]
    raw_id_fields = ["init_checkpoint", "manifest_export"]
    readonly_fields = ["status", "backbone", "init_checkpoint", "vlm_root", "data_rounds", "manifest_export", "pairs_count",
                       "aspect_pairs",
                       "config", "metrics_summary", "progress_step", "progress_total", "output_uri", "error",
                       "cancel_requested", "created_by", "started_at", "finished_at"]
    actions = [reward_run_cancel_action]

    def has_add_permission(self, request):
        return False


@admin.register(models.RewardScore)
class RewardScoreAdmin(ModelAdmin):
    """Scores written by the round-scoring job; read-only."""

    list_display = ["run", "candidate", "scores", "created_at"]
    list_filter = ["run"]
    raw_id_fields = ["candidate"]
    readonly_fields = ["run", "candidate", "scores", "created_at"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
