"""The loop through the API, for scripts (issue 18: control without the browser): rounds, DPO runs, checkpoints and
evaluation rounds (list, create, status, cancel). Researchers only; ``Authorization: Token <token>`` from
``POST /api/auth/token/``. Thin views: the work is in the services (the same ones the research pages call), reads in
``selectors.loop``; refusals are ``ApplicationError`` / ``ValidationError`` -> ``{"detail": ...}`` 4xx."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.errors import ApplicationError
from annotation.models import Checkpoint, DPORun, Round
from annotation.permissions import IsResearcher
from annotation.selectors.loop import (
    checkpoint_status,
    dpo_run_status,
    loop_checkpoints,
    loop_dpo_runs,
    loop_rounds,
    round_status,
)
from annotation.services.candidates import round_generation_cancel
from annotation.services.checkpoints import evaluation_round_create
from annotation.services.dpo_runs import CONFIG_PRESETS, dpo_run_cancel, dpo_run_create, dpo_run_warnings
from annotation.services.rounds import MAX_SAMPLE_SIZE, prompts_select, round_create

ERR_NO_PROMPTS = "No active prompt matches this filter: change the category, tags or search, or list prompt ids."
ERR_NOT_CANCELLABLE = "Round {name} is {status}: only a draft or generating round can be cancelled."


class _ResearcherApi(APIView):
    permission_classes = [IsResearcher]
    throttle_scope = "research"


def _checkpoint(pk: int) -> Checkpoint:
    return get_object_or_404(Checkpoint, pk=pk)


class RoundListApi(_ResearcherApi):
    @extend_schema(operation_id="round_list", summary="Rounds, newest first", responses={200: dict})
    def get(self, request):
        return Response({"results": loop_rounds()})


class RoundCreateApi(_ResearcherApi):
    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=128)
        checkpoint = serializers.IntegerField(min_value=1)
        prompt_ids = serializers.ListField(child=serializers.IntegerField(min_value=1), required=False,
                                           max_length=100_000)
        category = serializers.CharField(required=False, allow_blank=True, default="")
        tags = serializers.ListField(child=serializers.CharField(max_length=64), required=False, default=list)
        search = serializers.CharField(required=False, allow_blank=True, default="")
        sample_size = serializers.IntegerField(min_value=0, max_value=MAX_SAMPLE_SIZE, required=False, default=0)
        sample_seed = serializers.IntegerField(min_value=0, required=False, default=0)
        held_out = serializers.BooleanField(required=False, default=False)
        seeds_per_prompt = serializers.IntegerField(min_value=2, max_value=16, required=False, default=4)
        base_seed = serializers.IntegerField(min_value=0, required=False, default=0)
        annotators_per_group = serializers.IntegerField(min_value=1, max_value=20, required=False, default=3)
        max_annotators_per_group = serializers.IntegerField(min_value=1, max_value=40, required=False)
        annotation_mode = serializers.ChoiceField(choices=Round.Mode.choices, required=False, default=Round.Mode.LABELS)
        require_full_playback = serializers.BooleanField(required=False, default=True)
        aspect_judgments = serializers.BooleanField(
            required=False, default=False, help_text="Annotators also mark VQ / MQ / TA per candidate.")
        segment_judgments = serializers.BooleanField(
            required=False, default=False, help_text="Annotators also mark the better candidates per segment.")
        segment_seconds = serializers.FloatField(required=False, default=1.0, min_value=0.2, max_value=60)
        launch = serializers.BooleanField(required=False, default=True)

        class Meta:
            ref_name = "LoopRoundCreateInput"

    @extend_schema(summary="Create (and by default launch) a generation round", request=InputSerializer,
                   responses={201: dict})
    def post(self, request):
        s = self.InputSerializer(data=request.data)
        s.is_valid(raise_exception=True)
        d = s.validated_data
        prompt_ids = d.get("prompt_ids") or prompts_select(
            category=d["category"], tags=d["tags"] or None, search=d["search"], sample_size=d["sample_size"],
            sample_seed=d["sample_seed"], exclude_held_out=not d["held_out"], held_out_only=d["held_out"])
        if not prompt_ids:
            raise ApplicationError(ERR_NO_PROMPTS)
        rnd = round_create(
            name=d["name"], policy_checkpoint=_checkpoint(d["checkpoint"]), prompt_ids=prompt_ids, actor=request.user,
            seeds_per_prompt=d["seeds_per_prompt"], base_seed=d["base_seed"],
            annotators_per_group=d["annotators_per_group"], max_annotators_per_group=d.get("max_annotators_per_group"),
            annotation_mode=d["annotation_mode"], require_full_playback=d["require_full_playback"],
            aspect_judgments=d["aspect_judgments"], segment_judgments=d["segment_judgments"],
            segment_seconds=d["segment_seconds"], launch=d["launch"],
        )
        return Response(round_status(round_id=rnd.pk), status=status.HTTP_201_CREATED)


class RoundDetailApi(_ResearcherApi):
    @extend_schema(summary="A round's status: candidates and groups per status, pairs", responses={200: dict})
    def get(self, request, round_id: int):
        get_object_or_404(Round, pk=round_id)
        return Response(round_status(round_id=round_id))


class RoundCancelApi(_ResearcherApi):
    @extend_schema(summary="Cancel a round's generation", request=None, responses={200: dict})
    def post(self, request, round_id: int):
        rnd = get_object_or_404(Round, pk=round_id)
        if rnd.status not in (Round.Status.DRAFT, Round.Status.GENERATING):
            raise ApplicationError(ERR_NOT_CANCELLABLE.format(name=rnd.name, status=rnd.status), status=409)
        round_generation_cancel(round_id=round_id, actor=request.user, note="cancelled through the API")
        return Response(round_status(round_id=round_id))


class DPORunListApi(_ResearcherApi):
    @extend_schema(operation_id="dpo_run_list", summary="DPO runs, newest first", responses={200: dict})
    def get(self, request):
        return Response({"results": loop_dpo_runs()})


class DPORunCreateApi(_ResearcherApi):
    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=128)
        round_ids = serializers.ListField(child=serializers.IntegerField(min_value=1), min_length=1, max_length=1000)
        init_checkpoint = serializers.IntegerField(min_value=1)
        reference_checkpoint = serializers.IntegerField(min_value=1, required=False)
        config_preset = serializers.ChoiceField(choices=sorted(CONFIG_PRESETS), required=False, default="tiny-cpu")
        config_overrides = serializers.DictField(required=False, default=dict)
        use_lora = serializers.BooleanField(required=False, default=False)
        min_agreement = serializers.FloatField(min_value=0, max_value=1, required=False, default=0.0)
        min_annotators = serializers.IntegerField(min_value=1, required=False, default=1)
        weighting = serializers.ChoiceField(choices=["agreement", "uniform"], required=False, default="agreement")
        include_evaluation = serializers.BooleanField(required=False, default=False,
                                                      help_text="train on evaluation rounds too (leaks held-out data)")

        class Meta:
            ref_name = "LoopDPORunCreateInput"

    @extend_schema(summary="Create and queue a DPO run on rounds' pairs", request=InputSerializer, responses={201: dict})
    def post(self, request):
        s = self.InputSerializer(data=request.data)
        s.is_valid(raise_exception=True)
        d = s.validated_data
        run = dpo_run_create(
            name=d["name"], round_ids=d["round_ids"], init_checkpoint=_checkpoint(d["init_checkpoint"]),
            reference_checkpoint=_checkpoint(d["reference_checkpoint"]) if d.get("reference_checkpoint") else None,
            config_preset=d["config_preset"], config_overrides=d["config_overrides"], use_lora=d["use_lora"],
            min_agreement=d["min_agreement"], min_annotators=d["min_annotators"], weighting=d["weighting"],
            actor=request.user, include_evaluation=d["include_evaluation"],
        )
        # warnings: what the researcher should know about an accepted run (e.g. very few pairs)
        return Response({**dpo_run_status(run_id=run.pk), "warnings": dpo_run_warnings(run=run)},
                        status=status.HTTP_201_CREATED)


class DPORunDetailApi(_ResearcherApi):
    @extend_schema(summary="A DPO run's status, progress and output checkpoint", responses={200: dict})
    def get(self, request, run_id: int):
        get_object_or_404(DPORun, pk=run_id)
        return Response(dpo_run_status(run_id=run_id))


class DPORunCancelApi(_ResearcherApi):
    @extend_schema(summary="Cancel a queued or running DPO run", request=None, responses={200: dict})
    def post(self, request, run_id: int):
        get_object_or_404(DPORun, pk=run_id)
        dpo_run_cancel(run_id=run_id, actor=request.user)
        return Response(dpo_run_status(run_id=run_id))


class CheckpointListApi(_ResearcherApi):
    @extend_schema(operation_id="checkpoint_list", summary="Checkpoints with their lineage", responses={200: dict})
    def get(self, request):
        return Response({"results": loop_checkpoints()})


class CheckpointDetailApi(_ResearcherApi):
    @extend_schema(summary="A checkpoint", responses={200: dict})
    def get(self, request, checkpoint_id: int):
        return Response(checkpoint_status(checkpoint=_checkpoint(checkpoint_id)))


class CheckpointEvaluateApi(_ResearcherApi):
    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=128)
        seeds_per_prompt = serializers.IntegerField(min_value=1, max_value=16, required=False, default=2)
        sample_size = serializers.IntegerField(min_value=0, max_value=MAX_SAMPLE_SIZE, required=False, default=0)
        # default: 3, or fewer when fewer annotators can judge now
        annotators_per_group = serializers.IntegerField(min_value=1, max_value=20, required=False)

        class Meta:
            ref_name = "LoopEvaluateInput"

    @extend_schema(summary="Launch an evaluation round: the checkpoint vs its reference on held-out prompts",
                   request=InputSerializer, responses={201: dict})
    def post(self, request, checkpoint_id: int):
        s = self.InputSerializer(data=request.data)
        s.is_valid(raise_exception=True)
        rnd = evaluation_round_create(checkpoint=_checkpoint(checkpoint_id), actor=request.user, **s.validated_data)
        return Response(round_status(round_id=rnd.pk), status=status.HTTP_201_CREATED)
