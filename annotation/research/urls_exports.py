"""Exports and leaderboard: pages under /research/, APIs under /research/api/."""

from django.urls import path

from annotation.research import apis_exports as api
from annotation.research import views_exports as v

urlpatterns = [
    path("exports/", v.exports_page, name="research-exports"),
    path("exports/create/", v.export_create_view, name="research-export-create"),
    path("exports/<int:export_id>/", v.export_detail, name="research-export-detail"),
    path("exports/<int:export_id>/download/", v.export_download, name="research-export-download"),
    path("leaderboard/", v.leaderboard_page, name="research-leaderboard"),
    path("api/exports/", api.ExportCreateApi.as_view(), name="research-api-export-create"),
    path("api/exports/<int:export_id>/", api.ExportDetailApi.as_view(), name="research-api-export-detail"),
    path("api/leaderboard/", api.LeaderboardApi.as_view(), name="research-api-leaderboard"),
]
