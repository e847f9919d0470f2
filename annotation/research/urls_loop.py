from django.urls import path

from annotation.research import views_loop as v
from annotation.research import views_reward as vr

urlpatterns = [
    path("", v.research_home, name="research-home"),
    path("prompts/import/", v.prompt_import, name="research-prompt-import"),
    path("prompts/import/<int:import_id>/", v.prompt_import_job, name="research-prompt-import-job"),
    path("rounds/new/", v.round_new, name="research-round-new"),
    path("rounds/<int:round_id>/", v.round_detail, name="research-round-detail"),
    path("rounds/<int:round_id>/retry-failed/", v.round_retry_failed, name="research-round-retry-failed"),
    path("rounds/<int:round_id>/refresh-groups/", v.round_groups_refresh, name="research-round-refresh-groups"),
    path("rounds/<int:round_id>/cancel/", v.round_cancel, name="research-round-cancel"),
    path("dpo-runs/new/", v.dpo_run_new, name="research-dpo-run-new"),
    path("dpo-runs/<int:run_id>/", v.dpo_run_detail, name="research-dpo-run-detail"),
    path("dpo-runs/<int:run_id>/cancel/", v.dpo_run_cancel_view, name="research-dpo-run-cancel"),
    path("reward-runs/new/", vr.reward_run_new, name="research-reward-run-new"),
    path("reward-runs/<int:run_id>/", vr.reward_run_detail, name="research-reward-run-detail"),
    path("reward-runs/<int:run_id>/cancel/", vr.reward_run_cancel_view, name="research-reward-run-cancel"),
    path("rounds/<int:round_id>/reward-scores/", vr.reward_scores_view, name="research-round-reward-scores"),
    path("rounds/<int:round_id>/select/", vr.round_select_view, name="research-round-select"),
    path("rounds/<int:round_id>/release-held/", vr.round_release_held_view, name="research-round-release-held"),
    path("checkpoints/<int:checkpoint_id>/", v.checkpoint_detail, name="research-checkpoint-detail"),
    path("checkpoints/<int:checkpoint_id>/evaluate/", v.checkpoint_evaluate, name="research-checkpoint-evaluate"),
    path("checkpoints/average/", v.checkpoint_average, name="research-checkpoint-average"),
]
