"""The researcher panel: every model, with the list columns and filters researchers use."""

from django.contrib import admin

from annotation import models


@admin.register(models.Category)
class CategoryAdmin(admin.ModelAdmin):
    list_display = ["name", "slug"]
    search_fields = ["name", "slug"]


@admin.register(models.PromptSet)
class PromptSetAdmin(admin.ModelAdmin):
    list_display = ["name", "created_at"]
    search_fields = ["name"]


@admin.register(models.Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ["id", "short_text", "language", "category", "source", "is_active", "is_held_out", "created_at"]
    list_filter = ["is_active", "is_held_out", "language", "source", "category", "prompt_set"]
    search_fields = ["text"]
    list_select_related = ["category"]
    readonly_fields = ["text_hash"]

    @admin.display(description="text")
    def short_text(self, obj):
        return obj.text[:100]


@admin.register(models.Checkpoint)
class CheckpointAdmin(admin.ModelAdmin):
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
class RoundAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "status", "policy_checkpoint", "preset", "seeds_per_prompt", "annotators_per_group", "created_at"]
    list_filter = ["status", "kind", "preset"]
    search_fields = ["name"]
    inlines = [RoundEventInline]
    raw_id_fields = ["policy_checkpoint", "reference_checkpoint"]


@admin.register(models.RoundEvent)
class RoundEventAdmin(admin.ModelAdmin):
    list_display = ["round", "from_status", "to_status", "actor", "at"]
    list_filter = ["to_status"]


@admin.register(models.CandidateGroup)
class CandidateGroupAdmin(admin.ModelAdmin):
    list_display = ["id", "round", "prompt", "status", "is_gold", "judgments_count", "target_judgments"]
    list_filter = ["status", "is_gold", "round"]
    raw_id_fields = ["round", "prompt"]
    list_select_related = ["round", "prompt"]


@admin.register(models.Candidate)
class CandidateAdmin(admin.ModelAdmin):
    list_display = ["id", "group", "seed", "status", "progress_step", "progress_total", "attempts", "screening_flags"]
    list_filter = ["status"]
    raw_id_fields = ["group", "checkpoint"]
    search_fields = ["error"]


@admin.register(models.AnnotatorProfile)
class AnnotatorProfileAdmin(admin.ModelAdmin):
    list_display = ["user", "pseudonym", "is_paused", "paused_at"]
    list_filter = ["is_paused"]


@admin.register(models.FlawTag)
class FlawTagAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "is_active", "order"]
    list_editable = ["is_active", "order"]


@admin.register(models.Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = ["id", "group", "annotator", "status", "reserved_at", "expires_at"]
    list_filter = ["status"]
    raw_id_fields = ["group", "annotator"]


class CandidateLabelInline(admin.TabularInline):
    model = models.CandidateLabel
    extra = 0
    raw_id_fields = ["candidate"]


@admin.register(models.Judgment)
class JudgmentAdmin(admin.ModelAdmin):
    list_display = ["id", "group", "annotator", "outcome", "time_spent_ms", "created_at"]
    list_filter = ["outcome", "reviewer_decision"]
    raw_id_fields = ["assignment", "group", "annotator"]
    inlines = [CandidateLabelInline]


@admin.register(models.CandidateLabel)
class CandidateLabelAdmin(admin.ModelAdmin):
    list_display = ["judgment", "candidate", "label", "rank", "shown_position", "playback_coverage"]
    raw_id_fields = ["judgment", "candidate"]


@admin.register(models.FlawMark)
class FlawMarkAdmin(admin.ModelAdmin):
    list_display = ["label", "tag", "time_s"]
    raw_id_fields = ["label"]


@admin.register(models.PreferencePair)
class PreferencePairAdmin(admin.ModelAdmin):
    list_display = ["id", "round", "chosen", "rejected", "weight", "agreement", "n_annotators", "source"]
    list_filter = ["source", "round"]
    raw_id_fields = ["round", "group", "chosen", "rejected", "source_judgments"]


@admin.register(models.ReviewItem)
class ReviewItemAdmin(admin.ModelAdmin):
    list_display = ["group", "status", "reason", "reviewer", "resolved_at"]
    list_filter = ["status"]
    raw_id_fields = ["group"]


@admin.register(models.Export)
class ExportAdmin(admin.ModelAdmin):
    list_display = ["id", "format", "version", "status", "row_count", "content_hash", "created_at"]
    list_filter = ["format", "status"]


class DPOMetricInline(admin.TabularInline):
    model = models.DPOMetric
    extra = 0
    readonly_fields = ["step", "values"]
    can_delete = False
    max_num = 0


@admin.register(models.DPORun)
class DPORunAdmin(admin.ModelAdmin):
    list_display = ["name", "status", "init_checkpoint", "reference_checkpoint", "output_checkpoint", "pairs_count", "progress_step"]
    list_filter = ["status"]
    raw_id_fields = ["init_checkpoint", "reference_checkpoint", "output_checkpoint"]


@admin.register(models.DPOMetric)
class DPOMetricAdmin(admin.ModelAdmin):
    list_display = ["run", "step"]
    list_filter = ["run"]
