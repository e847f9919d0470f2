"""The DRF API: thin ``<Entity><Action>Api`` views with nested input/output serializers; the work is in services and
selectors. Token or session auth (settings.REST_FRAMEWORK); OpenAPI through drf-spectacular (/api/docs/)."""

from __future__ import annotations

import json

from django.contrib.auth import get_user_model
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.pagination import CursorPagination
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation import permissions
from annotation.agreement import label_aspects, label_segments, pair_aspects, pair_segments
from annotation.errors import ApplicationError, is_int
from annotation.models import CandidateLabel, Prompt, PromptImport
from annotation.permissions import IsAnnotator, IsResearcher
from annotation.selectors.groups import group_page_for_assignments
from annotation.selectors.judgments import judgment_list, pair_list, prompt_list
from annotation.selectors.stats import annotator_stats
from annotation.services.assignments import assignments_for_annotator
from annotation.services.judgments import FlawInput, LabelInput, judgment_submit
from annotation.services.prompt_edits import category_by_slug, prompt_delete, prompt_set_by_name, prompt_update
from annotation.services.prompt_imports import import_is_big, prompt_import_start_items
from annotation.services.prompts import import_size_check, prompt_create, prompts_import

ERR_STATS_FORBIDDEN = "You can only see your own statistics."
ERR_LABEL_TARGET = "Each label names its video by 'position' (0-based, in the order shown)."
ERR_IMPORT_ITEM = "Item {index}: expected an object or a string."


class IdCursorPagination(CursorPagination):
    """Keyset pagination (no COUNT, constant time per page whatever the table size)."""

    ordering = "-id"
    page_size = 100
    max_page_size = 1000
    page_size_query_param = "limit"

    def decode_cursor(self, request):
        """DRF's cursor, refused (404 "Invalid cursor", as DRF answers a cursor it cannot read) when its position is
        not an id: DRF passes the text on to the query, where "abc" or "1.5" was a 500."""
        cursor = super().decode_cursor(request)
        if cursor is not None and cursor.position is not None and not is_int(cursor.position):
            raise NotFound(self.invalid_cursor_message)
        return cursor

    @classmethod
    def respond(cls, view: APIView, queryset, serializer) -> Response:
        """One page of ``queryset`` serialized by ``serializer`` (a class), with next/previous links."""
        paginator = cls()
        page = paginator.paginate_queryset(queryset, view.request, view=view)
        return paginator.get_paginated_response(serializer(page, many=True).data)


class ShownCandidateSerializer(serializers.Serializer):
    position = serializers.IntegerField()
    number = serializers.IntegerField()
    video_url = serializers.CharField()
    poster_url = serializers.CharField()
    fps = serializers.FloatField()
    duration_s = serializers.FloatField(allow_null=True)


class GroupNextApi(APIView):
    """The caller's current group (reserving one when needed); blind: no seed, checkpoint or round."""

    permission_classes = [IsAuthenticated, IsAnnotator]
    throttle_scope = "annotate"
    renderer_classes = [JSONRenderer]  # the annotator hot path: JSON only (no browsable-API negotiation)

    class OutputSerializer(serializers.Serializer):
        assignment = serializers.CharField(source="handle", help_text="The reservation's public handle (random).")
        prompt = serializers.CharField(source="prompt_text")
        mode = serializers.CharField()
        aspects = serializers.ListField(child=serializers.CharField(), help_text="Aspects to mark per candidate "
                                        "(vq, mq, ta), empty when the round collects the overall answer only.")
        segment_count = serializers.IntegerField(help_text="Segments of the timeline to mark (0: no segment judgments).")
        segment_seconds = serializers.FloatField(allow_null=True, help_text=(
            "Length of each segment in seconds: the clip's length over segment_count (equal segments, the nearest "
            "to the round's segment setting); null without segment judgments."))
        require_full_playback = serializers.BooleanField()
        guidelines_html = serializers.CharField()
        candidates = ShownCandidateSerializer(many=True)
        prefetch = ShownCandidateSerializer(many=True)

    @extend_schema(responses={200: OutputSerializer, 204: OpenApiResponse(description="Nothing to judge now."),
                              403: OpenApiResponse(description="Paused or not an annotator.")})
    def get(self, request):
        page = group_page_for_assignments(assignments=assignments_for_annotator(annotator=request.user))
        if page is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(self.OutputSerializer(page).data)


class JudgmentOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    assignment = serializers.CharField(source="assignment.public_id", help_text="The reservation's public handle.")
    outcome = serializers.CharField()
    skip_reason = serializers.CharField()
    time_spent_ms = serializers.IntegerField()
    created_at = serializers.DateTimeField()


class StrictSerializer(serializers.Serializer):
    """A serializer that refuses fields it does not have (400 naming them) instead of dropping them: a misspelt
    ``segmnts`` or ``flaw`` would otherwise be an answer stored without what the annotator marked."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(str(key)[:64] for key in data if key not in self.fields)
            if unknown:
                raise serializers.ValidationError({key: ["Unknown field."] for key in unknown[:10]})
        return super().to_internal_value(data)


class JudgmentSubmitApi(APIView):
    """Submit the answer for one reserved group. Repeating the same answer returns the first result (200); another
    answer for a submitted group is a 409. Unknown fields are refused (400), never dropped."""

    permission_classes = [IsAuthenticated, IsAnnotator]
    throttle_scope = "annotate"
    renderer_classes = [JSONRenderer]

    class InputSerializer(StrictSerializer):
        class LabelSerializer(StrictSerializer):
            class FlawSerializer(StrictSerializer):
                tag = serializers.CharField(max_length=64)
                time_s = serializers.FloatField(required=False, allow_null=True, min_value=0)

            # the shown position only: annotators never see nor send candidate ids (blind evaluation)
            position = serializers.IntegerField(required=False, min_value=0, max_value=1000)
            label = serializers.CharField(required=False, default=CandidateLabel.Label.NEUTRAL, max_length=32)
            rank = serializers.IntegerField(required=False, allow_null=True, min_value=1)
            playback_coverage = serializers.FloatField(required=False, default=0.0, min_value=0, max_value=1)
            flaws = FlawSerializer(many=True, required=False, default=list)
            aspects = serializers.DictField(
                child=serializers.CharField(max_length=32), required=False, default=dict,
                help_text="Rounds with aspect judgments: {'vq' | 'mq' | 'ta': 'preferred' | 'neutral' | 'non_preferred'}"
                " (visual quality, motion quality, text alignment; unmarked aspects are neutral).",
            )
            segments = serializers.ListField(
                child=serializers.CharField(max_length=32), required=False, default=list, max_length=1000,
                help_text="Rounds with segment judgments: one label per segment of the timeline (preferred / neutral /"
                " non_preferred), from the start; unlabelled segments are neutral.",
            )

        assignment = serializers.CharField(max_length=64, help_text="The public handle from /api/groups/next/.")
        outcome = serializers.CharField(max_length=32)
        skip_reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)
        time_spent_ms = serializers.IntegerField(required=False, default=0, min_value=0, max_value=24 * 3600 * 1000)
        labels = LabelSerializer(many=True, required=False, default=list)

    @extend_schema(request=InputSerializer, responses={201: JudgmentOutputSerializer, 200: JudgmentOutputSerializer})
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        d = data.validated_data
        labels = []
        for lab in d["labels"]:
            if "position" not in lab:
                raise ApplicationError(ERR_LABEL_TARGET)
            labels.append(
                LabelInput(position=lab["position"], label=lab["label"],
                           rank=lab.get("rank"), playback_coverage=lab["playback_coverage"],
                           flaws=tuple(FlawInput(tag=f["tag"], time_s=f.get("time_s")) for f in lab["flaws"]),
                           aspects=dict(lab["aspects"]), segments=tuple(lab["segments"]))
            )
        judgment, created = judgment_submit(
            annotator=request.user, public_id=d["assignment"], outcome=d["outcome"], labels=labels,
            skip_reason=d["skip_reason"], time_spent_ms=d["time_spent_ms"],
        )
        return Response(JudgmentOutputSerializer(judgment).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class JudgmentListApi(APIView):
    """Judgments with their labels: researchers and reviewers see all (filter by round, annotator), annotators
    only their own."""

    permission_classes = [IsAuthenticated]
    throttle_scope = "annotate"
    pagination_class = IdCursorPagination  # so the schema documents the page (results, next, previous)

    class FilterSerializer(serializers.Serializer):
        round = serializers.IntegerField(required=False, help_text="Reviewers and researchers only (ignored otherwise).")
        annotator = serializers.IntegerField(required=False, help_text="Reviewers and researchers only (ignored otherwise).")

    class OutputSerializer(serializers.Serializer):
        """``group`` and each label's ``candidate`` id: for reviewers and researchers only (an annotator's own list
        names videos by shown position: ids follow creation order, which would break blind evaluation)."""

        class LabelSerializer(serializers.Serializer):
            candidate = serializers.IntegerField(source="candidate_id", required=False)
            label = serializers.CharField()
            rank = serializers.IntegerField(allow_null=True)
            shown_position = serializers.IntegerField()
            playback_coverage = serializers.FloatField()
            aspects = serializers.SerializerMethodField(help_text="Per-aspect labels (rounds with aspect judgments).")
            segments = serializers.SerializerMethodField(help_text="Per-segment labels (rounds with segment judgments).")
            flaws = serializers.SerializerMethodField()

            def get_aspects(self, obj) -> dict[str, str]:
                return label_aspects(obj.aspects)

            def get_segments(self, obj) -> list[str]:
                return label_segments(obj.segments)

            def get_flaws(self, obj) -> list[dict]:
                return [{"tag": f.tag.slug, "time_s": f.time_s} for f in obj.flaws.all()]

        id = serializers.IntegerField()
        group = serializers.IntegerField(source="group_id", required=False)
        annotator = serializers.IntegerField(source="annotator_id")
        outcome = serializers.CharField()
        skip_reason = serializers.CharField()
        time_spent_ms = serializers.IntegerField()
        created_at = serializers.DateTimeField()
        labels = LabelSerializer(many=True)

    @extend_schema(parameters=[FilterSerializer], responses={200: OutputSerializer(many=True)})
    def get(self, request):
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        f = filters.validated_data
        qs = judgment_list(user=request.user, round_id=f.get("round"), annotator_id=f.get("annotator"))
        blind = not permissions.is_reviewer(request.user)
        return IdCursorPagination.respond(self, qs, self.BlindOutputSerializer if blind else self.OutputSerializer)


class _BlindLabelSerializer(JudgmentListApi.OutputSerializer.LabelSerializer):
    candidate = None


class _BlindJudgmentSerializer(JudgmentListApi.OutputSerializer):
    group = None
    labels = _BlindLabelSerializer(many=True)


JudgmentListApi.BlindOutputSerializer = _BlindJudgmentSerializer


class PairListApi(APIView):
    """Aggregated preference pairs (researchers)."""

    permission_classes = [IsAuthenticated, IsResearcher]
    throttle_scope = "research"
    pagination_class = IdCursorPagination  # so the schema documents the page (results, next, previous)

    class FilterSerializer(serializers.Serializer):
        round = serializers.IntegerField(required=False)
        min_agreement = serializers.FloatField(required=False, min_value=0, max_value=1)

    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        round = serializers.IntegerField(source="round_id")
        group = serializers.IntegerField(source="group_id")
        prompt = serializers.CharField(source="prompt_shown")  # the text the annotators saw (edits keep it)
        chosen = serializers.IntegerField(source="chosen_id")
        rejected = serializers.IntegerField(source="rejected_id")
        weight = serializers.FloatField()
        agreement = serializers.FloatField()
        votes_for = serializers.IntegerField()
        votes_against = serializers.IntegerField()
        n_annotators = serializers.IntegerField()
        source = serializers.CharField()
        aspects = serializers.SerializerMethodField(help_text="Per-aspect outcome (vq, mq, ta: chosen, rejected or "
                                                    "same) for rounds with aspect judgments.")

        segments = serializers.SerializerMethodField(help_text="Per-segment outcome (chosen, rejected or same per "
                                                     "segment) for rounds with segment judgments.")

        def get_aspects(self, obj) -> dict[str, str]:
            return pair_aspects(obj.aspects)

        def get_segments(self, obj) -> list[str]:
            return pair_segments(obj.segments)

    @extend_schema(parameters=[FilterSerializer], responses={200: OutputSerializer(many=True)})
    def get(self, request):
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        f = filters.validated_data
        qs = pair_list(round_id=f.get("round"), min_agreement=f.get("min_agreement"))
        return IdCursorPagination.respond(self, qs, self.OutputSerializer)


class PromptOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    text = serializers.CharField()
    language = serializers.CharField()
    category = serializers.CharField(source="category.slug", allow_null=True)
    prompt_set = serializers.CharField(source="prompt_set.name", allow_null=True)
    source = serializers.CharField()
    tags = serializers.ListField(child=serializers.CharField())
    is_active = serializers.BooleanField()
    is_held_out = serializers.BooleanField()
    created_at = serializers.DateTimeField()


class PromptInputSerializer(serializers.Serializer):
    text = serializers.CharField(trim_whitespace=True)
    category = serializers.CharField(required=False, allow_null=True, allow_blank=True)
    prompt_set = serializers.CharField(required=False, allow_null=True, allow_blank=True)
    language = serializers.ChoiceField(choices=Prompt.Language.choices, required=False)
    source = serializers.ChoiceField(choices=Prompt.Source.choices, required=False)
    tags = serializers.ListField(child=serializers.CharField(max_length=64), required=False)
    is_held_out = serializers.BooleanField(required=False)


class PromptListApi(APIView):
    permission_classes = [IsAuthenticated, IsResearcher]
    throttle_scope = "research"
    pagination_class = IdCursorPagination  # so the schema documents the page (results, next, previous)

    class FilterSerializer(serializers.Serializer):
        category = serializers.CharField(required=False)
        is_active = serializers.BooleanField(required=False, allow_null=True, default=None)

    @extend_schema(parameters=[FilterSerializer], responses={200: PromptOutputSerializer(many=True)})
    def get(self, request):
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        qs = prompt_list(category=filters.validated_data.get("category"), is_active=filters.validated_data["is_active"])
        return IdCursorPagination.respond(self, qs, PromptOutputSerializer)


class PromptCreateApi(APIView):
    permission_classes = [IsAuthenticated, IsResearcher]
    throttle_scope = "research"

    @extend_schema(request=PromptInputSerializer, responses={201: PromptOutputSerializer})
    def post(self, request):
        data = PromptInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        d = dict(data.validated_data)
        d["category"] = category_by_slug(d.get("category"))
        d["prompt_set"] = prompt_set_by_name(d.get("prompt_set"))
        held_out = d.pop("is_held_out", False)
        prompt = prompt_create(**d)
        if held_out:
            prompt = prompt_update(prompt=prompt, is_held_out=True)
        return Response(PromptOutputSerializer(prompt).data, status=status.HTTP_201_CREATED)


class PromptDetailApi(APIView):
    permission_classes = [IsAuthenticated, IsResearcher]
    throttle_scope = "research"

    @extend_schema(responses={200: PromptOutputSerializer})
    def get(self, request, prompt_id: int):
        prompt = get_object_or_404(prompt_list(), pk=prompt_id)
        return Response(PromptOutputSerializer(prompt).data)


class PromptUpdateApi(APIView):
    permission_classes = [IsAuthenticated, IsResearcher]
    throttle_scope = "research"

    class InputSerializer(PromptInputSerializer):
        text = serializers.CharField(required=False)
        is_active = serializers.BooleanField(required=False)

    @extend_schema(request=InputSerializer, responses={200: PromptOutputSerializer})
    def post(self, request, prompt_id: int):
        prompt = get_object_or_404(Prompt, pk=prompt_id)
        data = self.InputSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        prompt = prompt_update(prompt=prompt, **data.validated_data)
        return Response(PromptOutputSerializer(prompt).data)


class PromptDeleteApi(APIView):
    permission_classes = [IsAuthenticated, IsResearcher]
    throttle_scope = "research"

    @extend_schema(request=None, responses={204: None})
    def post(self, request, prompt_id: int):
        prompt = get_object_or_404(Prompt, pk=prompt_id)
        prompt_delete(prompt=prompt)
        return Response(status=status.HTTP_204_NO_CONTENT)


PROMPT_IMPORT_JOB = inline_serializer("PromptImportJob", {
    "id": serializers.IntegerField(), "status": serializers.CharField(), "progress": serializers.FloatField(),
    "lines_done": serializers.IntegerField(), "content_hash": serializers.CharField(),
    "repeated": serializers.BooleanField(), "report": serializers.DictField(allow_null=True),
    "error": serializers.CharField(), "status_url": serializers.URLField()})


class PromptBulkImportApi(APIView):
    """Import a JSON list of prompts (objects like the create input, or plain strings): all or nothing when an item
    is invalid (400 with a per-item report; ``line`` = 1-based item number); prompts already in the pool are skipped.
    A body over ``VIDEODPO_IMPORT_ASYNC_BYTES`` runs as a background job: 202 with its ``status_url``."""

    permission_classes = [IsAuthenticated, IsResearcher]
    throttle_scope = "research"

    class InputSerializer(serializers.Serializer):
        prompt_set = serializers.CharField(required=False, allow_null=True, allow_blank=True)
        prompts = serializers.ListField(child=serializers.JSONField(), allow_empty=False, max_length=100_000)

    @extend_schema(
        request=InputSerializer,
        responses={201: inline_serializer("PromptImportResult", {
            "total": serializers.IntegerField(), "created": serializers.IntegerField(),
            "duplicates": serializers.IntegerField(), "rejected": serializers.ListField(child=serializers.DictField()),
            "ok": serializers.BooleanField(), "ids": serializers.ListField(child=serializers.IntegerField())}),
            202: PROMPT_IMPORT_JOB},
    )
    def post(self, request):
        length = str(request.META.get("CONTENT_LENGTH") or "")
        length = int(length) if length.isdigit() else 0
        import_size_check(length)  # 413 before the body is parsed
        body = {"prompts": request.data} if isinstance(request.data, list) else request.data
        data = self.InputSerializer(data=body)
        data.is_valid(raise_exception=True)
        items = []
        for index, item in enumerate(data.validated_data["prompts"]):
            if isinstance(item, str):
                item = {"text": item}
            if not isinstance(item, dict):
                raise ApplicationError(ERR_IMPORT_ITEM.format(index=index))
            items.append(item)
        prompt_set = prompt_set_by_name(data.validated_data.get("prompt_set"))
        if import_is_big(length):  # a background job: 202 and where to look
            job, repeated = prompt_import_start_items(items=items, actor=request.user, prompt_set=prompt_set)
            return Response(PromptImportJobApi.body(job, request, repeated=repeated), status=status.HTTP_202_ACCEPTED)
        jsonl = "\n".join(json.dumps(item, ensure_ascii=False) for item in items).encode()
        report = prompts_import(data=jsonl, fmt="jsonl", prompt_set=prompt_set)
        body = {**report.as_dict(), "ids": report.created_ids}
        return Response(body, status=status.HTTP_201_CREATED if report.ok else status.HTTP_400_BAD_REQUEST)


class PromptImportJobApi(APIView):
    """A background prompt import (a bulk import over ``VIDEODPO_IMPORT_ASYNC_BYTES`` answers 202 with this URL):
    its status and progress, then the report (``rejected`` by line = item number, at most 1,000 of
    ``rejected_count``); nothing is imported when a row is rejected."""

    permission_classes = [IsAuthenticated, IsResearcher]
    throttle_scope = "research"

    @staticmethod
    def body(job: PromptImport, request, *, repeated: bool = False) -> dict:
        from django.urls import reverse

        return {"id": job.pk, "status": job.status, "progress": job.progress, "lines_done": job.lines_done,
                "content_hash": job.content_hash, "repeated": repeated, "report": job.report or None,
                "error": job.error, "status_url": request.build_absolute_uri(reverse("prompt-import-job", args=[job.pk]))}

    @extend_schema(responses={200: PROMPT_IMPORT_JOB})
    def get(self, request, import_id: int):
        return Response(self.body(get_object_or_404(PromptImport, pk=import_id), request))


class AnnotatorStatsApi(APIView):
    """Per-annotator statistics: your own, or anyone's for reviewers and researchers."""

    permission_classes = [IsAuthenticated]
    throttle_scope = "annotate"

    class OutputSerializer(serializers.Serializer):
        judgments = serializers.IntegerField()
        today = serializers.IntegerField()
        skipped = serializers.IntegerField()
        median_time_s = serializers.FloatField(allow_null=True)
        mean_coverage = serializers.FloatField(allow_null=True)
        gold_n = serializers.IntegerField()
        gold_accuracy = serializers.FloatField(allow_null=True)
        peer_n = serializers.IntegerField()
        peer_agreement = serializers.FloatField(allow_null=True)
        position_n = serializers.IntegerField()
        position_bias = serializers.FloatField(allow_null=True)

    @extend_schema(responses={200: OutputSerializer})
    def get(self, request, user_id: int | None = None):
        if user_id is not None and user_id != request.user.pk:
            if not permissions.is_reviewer(request.user):
                raise PermissionDenied(ERR_STATS_FORBIDDEN)
            get_object_or_404(get_user_model(), pk=user_id)
        # annotators see their gold accuracy only as a delayed aggregate (never which group was gold)
        stats = annotator_stats(annotator_id=user_id or request.user.pk, own=not permissions.is_reviewer(request.user))
        return Response(self.OutputSerializer(stats).data)


def _name_nested_serializers() -> None:
    """Unique OpenAPI component names for the nested serializers (``<Entity><Action><Role>``)."""
    import inspect

    for api_name, api in list(globals().items()):
        if not (inspect.isclass(api) and api_name.endswith("Api")):
            continue
        stack = [(api_name.removesuffix("Api"), api)]
        while stack:
            prefix, owner = stack.pop()
            for attr, value in list(vars(owner).items()):
                if inspect.isclass(value) and issubclass(value, serializers.Serializer):
                    name = prefix + attr.removesuffix("Serializer")
                    value.Meta = type("Meta", (), {"ref_name": name})
                    stack.append((name, value))


_name_nested_serializers()
