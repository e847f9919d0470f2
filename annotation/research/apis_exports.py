"""DRF APIs of exports and the leaderboard: thin ``<Entity><Action>Api`` views with nested serializers; researchers
only (annotators and reviewers get 403). OpenAPI through drf-spectacular."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.errors import ApplicationError
from annotation.leaderboard import leaderboard
from annotation.models import Export, PreferencePair
from annotation.permissions import IsResearcher
from annotation.selectors.exports import EXPORT_LINK_TTL_S, export_download_url
from annotation.services.exports import export_create

ERR_ROUNDS = "rounds must be comma-separated integers."


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()


class ExportOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    format = serializers.CharField()
    version = serializers.IntegerField()
    status = serializers.CharField()
    progress = serializers.FloatField()
    row_count = serializers.IntegerField()
    content_hash = serializers.CharField()
    filter = serializers.JSONField()
    datasheet = serializers.JSONField()
    error = serializers.CharField()
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    status_url = serializers.CharField()
    download_url = serializers.CharField(allow_null=True, help_text="Time-limited URL (null until done).")
    download_ttl_s = serializers.IntegerField()


def _export_out(request, export: Export) -> dict:
    return ExportOutputSerializer({
        **{f: getattr(export, f) for f in ("id", "format", "version", "status", "progress", "row_count",
                                           "content_hash", "filter", "datasheet", "error", "created_at",
                                           "finished_at")},
        "status_url": request.build_absolute_uri(reverse("research-api-export-detail", args=[export.pk])),
        "download_url": export_download_url(export=export, user=request.user),
        "download_ttl_s": EXPORT_LINK_TTL_S,
    }).data


class ExportCreateApi(APIView):
    permission_classes = [IsAuthenticated, IsResearcher]

    class InputSerializer(serializers.Serializer):
        format = serializers.ChoiceField(choices=Export.Format.choices)
        rounds = serializers.ListField(child=serializers.IntegerField(), required=False)
        min_agreement = serializers.FloatField(required=False, allow_null=True)
        min_annotators = serializers.IntegerField(required=False, allow_null=True)
        source = serializers.ListField(child=serializers.ChoiceField(choices=PreferencePair.Source.choices), required=False)
        date_from = serializers.DateField(required=False, allow_null=True)
        date_to = serializers.DateField(required=False, allow_null=True)
        media = serializers.CharField(required=False, allow_null=True,
                                      help_text="none (server URIs), bundle (videos in the artifact) or links")
        media_ttl_s = serializers.JSONField(required=False, allow_null=True,
                                            help_text="links only: seconds the video links stay valid (1..604800)")

    @extend_schema(
        operation_id="research_export_create",
        request=InputSerializer,
        responses={201: ExportOutputSerializer, 400: ErrorSerializer, 403: ErrorSerializer},
        description="Validate the filter (an empty result is refused before anything is created), create the next "
        "version of the format and queue the export job. Poll the status URL for progress and the download URL.",
    )
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        if not data.is_valid():  # the documented error shape: a "detail" line, with the per-field errors
            detail = "; ".join(f"{field}: {' '.join(map(str, errs)) if isinstance(errs, list) else errs}"
                               for field, errs in data.errors.items())
            return Response({"detail": detail, **data.errors}, status=status.HTTP_400_BAD_REQUEST)
        values = dict(data.validated_data)
        fmt = values.pop("format")
        if values.get("media") == "links":  # local storage's signed links are made absolute with this address
            values["media_base_url"] = request.build_absolute_uri("/")
        export = export_create(format=fmt, filter=values, actor=request.user)
        return Response(_export_out(request, export), status=status.HTTP_201_CREATED)


class ExportDetailApi(APIView):
    permission_classes = [IsAuthenticated, IsResearcher]

    @extend_schema(operation_id="research_export_detail",
                   responses={200: ExportOutputSerializer, 403: ErrorSerializer, 404: ErrorSerializer})
    def get(self, request, export_id: int):
        export = get_object_or_404(Export, pk=export_id)
        return Response(_export_out(request, export))


class LeaderboardApi(APIView):
    permission_classes = [IsAuthenticated, IsResearcher]

    class FilterSerializer(serializers.Serializer):
        rounds = serializers.CharField(required=False, help_text="comma-separated round ids")
        category = serializers.CharField(required=False)
        bootstrap = serializers.IntegerField(required=False, min_value=0, max_value=2000, default=200)
        seed = serializers.IntegerField(required=False, default=0)

    class CheckpointSerializer(serializers.Serializer):
        checkpoint_id = serializers.IntegerField()
        name = serializers.CharField()
        strength = serializers.FloatField(help_text="centred BT log-strength")
        ci_low = serializers.FloatField()
        ci_high = serializers.FloatField()
        elo = serializers.FloatField()
        elo_low = serializers.FloatField()
        elo_high = serializers.FloatField()
        comparisons = serializers.FloatField()
        score = serializers.FloatField(allow_null=True, help_text="share of comparisons won, ties half")

    class OutputSerializer(serializers.Serializer):
        checkpoints = serializers.ListField(child=serializers.DictField())
        win_matrix = serializers.DictField()
        prompts = serializers.IntegerField()
        category = serializers.CharField(allow_null=True)
        rounds = serializers.ListField(child=serializers.IntegerField())
        judgments = serializers.IntegerField()
        comparisons = serializers.FloatField()
        tie_share = serializers.FloatField(allow_null=True)
        bootstrap = serializers.IntegerField()
        categories = serializers.ListField(child=serializers.DictField())

    @extend_schema(
        operation_id="research_leaderboard",
        parameters=[OpenApiParameter("rounds", str, description="comma-separated round ids"),
                    OpenApiParameter("category", str), OpenApiParameter("bootstrap", int),
                    OpenApiParameter("seed", int)],
        responses={200: OutputSerializer, 400: OpenApiResponse(description="bad parameters"), 403: ErrorSerializer},
        description="Bradley-Terry strengths of checkpoints from judgments on shared prompts (ties half), bootstrap "
        "95% intervals over prompts, observed win-rate matrix, per-category boards.",
    )
    def get(self, request):
        params = self.FilterSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        p = params.validated_data
        rounds = [r.strip() for r in p.get("rounds", "").split(",") if r.strip()]
        if not all(r.isdigit() for r in rounds):
            raise ApplicationError(ERR_ROUNDS)
        board = leaderboard(rounds=[int(r) for r in rounds] or None, category=p.get("category") or None, n_boot=p["bootstrap"],
                            seed=p["seed"])
        return Response(self.OutputSerializer(board).data)
