"""URLs of the DRF API (mounted under /api/), one per action, named "<entity>-<action>"."""

from django.urls import include, path

from annotation import apis

urlpatterns = [
    path("groups/next/", apis.GroupNextApi.as_view(), name="group-next"),
    path("judgments/submit/", apis.JudgmentSubmitApi.as_view(), name="judgment-submit"),
    path("judgments/", apis.JudgmentListApi.as_view(), name="judgment-list"),
    path("pairs/", apis.PairListApi.as_view(), name="pair-list"),
    path("prompts/", apis.PromptListApi.as_view(), name="prompt-list"),
    path("prompts/create/", apis.PromptCreateApi.as_view(), name="prompt-create"),
    path("prompts/import/", apis.PromptBulkImportApi.as_view(), name="prompt-import"),
    path("prompts/import/<int:import_id>/", apis.PromptImportJobApi.as_view(), name="prompt-import-job"),
    path("prompts/<int:prompt_id>/", apis.PromptDetailApi.as_view(), name="prompt-detail"),
    path("prompts/<int:prompt_id>/update/", apis.PromptUpdateApi.as_view(), name="prompt-update"),
    path("prompts/<int:prompt_id>/delete/", apis.PromptDeleteApi.as_view(), name="prompt-delete"),
    path("annotators/me/stats/", apis.AnnotatorStatsApi.as_view(), name="annotator-stats-me"),
    path("annotators/<int:user_id>/stats/", apis.AnnotatorStatsApi.as_view(), name="annotator-stats"),
    path("", include("annotation.api_urls_loop")),  # rounds, DPO runs, checkpoints (annotation.apis_loop)
]
