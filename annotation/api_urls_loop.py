"""URLs of the loop API (annotation.apis_loop), mounted under /api/ next to annotation.api_urls."""

from django.urls import path

from annotation import apis_loop as a

urlpatterns = [
    path("rounds/", a.RoundListApi.as_view(), name="round-list"),
    path("rounds/create/", a.RoundCreateApi.as_view(), name="round-create"),
    path("rounds/<int:round_id>/", a.RoundDetailApi.as_view(), name="round-detail"),
    path("rounds/<int:round_id>/cancel/", a.RoundCancelApi.as_view(), name="round-cancel"),
    path("dpo-runs/", a.DPORunListApi.as_view(), name="dpo-run-list"),
    path("dpo-runs/create/", a.DPORunCreateApi.as_view(), name="dpo-run-create"),
    path("dpo-runs/<int:run_id>/", a.DPORunDetailApi.as_view(), name="dpo-run-detail"),
    path("dpo-runs/<int:run_id>/cancel/", a.DPORunCancelApi.as_view(), name="dpo-run-cancel"),
    path("checkpoints/", a.CheckpointListApi.as_view(), name="checkpoint-list"),
    path("checkpoints/<int:checkpoint_id>/", a.CheckpointDetailApi.as_view(), name="checkpoint-detail"),
    path("checkpoints/<int:checkpoint_id>/evaluate/", a.CheckpointEvaluateApi.as_view(), name="checkpoint-evaluate"),
]
