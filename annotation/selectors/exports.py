"""Reads for exports: the filtered pair / judgment querysets, streamed in key-range chunks (constant memory, one
joined query per chunk, no N+1), the datasheet aggregates and the export list.

Chunks are key ranges (``group_id`` for pairs, ``judgment id`` for raw rows): a boundary query finds the key of the
``chunk_size``-th row after the last one, then one joined ``values_list`` reads every row up to it. Rows come in a
stable order (group, pair id), so the same data always gives the same file and the same content hash; pairs created
after the export started (id above the snapshot) are left out."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterator, Sequence

from django.db.models import Avg, Count, F, Max, Min, Q, QuerySet, TextField, Value
from django.db.models.functions import Coalesce, NullIf
from django.utils import timezone

from annotation.exports.filters import ExportFilter
from annotation.models import AnnotatorProfile, Export, FlawMark, Judgment, PreferencePair, Round
from annotation.services.accounts import pseudonym_for

# The text the group's annotators saw: its own copy when the prompt was edited since, else the prompt's text.
SHOWN_PROMPT_TEXT = Coalesce(NullIf(F("group__prompt_text"), Value("")), F("group__prompt__text"), output_field=TextField())

# (name in the writers, ORM path or expression): one joined SELECT per chunk.
PAIR_COLUMNS: tuple[tuple[str, str], ...] = (
    ("pair_id", "id"),
    ("round_id", "round_id"),
    ("round_name", "round__name"),
    ("policy_checkpoint", "round__policy_checkpoint__name"),
    ("group_id", "group_id"),
    ("prompt_id", "group__prompt_id"),
    ("prompt", SHOWN_PROMPT_TEXT),
    ("category", "group__prompt__category__slug"),
    ("chosen_id", "chosen_id"),
    ("rejected_id", "rejected_id"),
    ("chosen_video", "chosen__video_uri"),
    ("rejected_video", "rejected__video_uri"),
    ("chosen_latent", "chosen__latent_uri"),
    ("rejected_latent", "rejected__latent_uri"),
    ("text_embedding", "chosen__text_embedding_uri"),
    ("chosen_checkpoint", "chosen__checkpoint__name"),
    ("rejected_checkpoint", "rejected__checkpoint__name"),
    ("chosen_fps", "chosen__fps"),
    ("rejected_fps", "rejected__fps"),
    ("chosen_num_frames", "chosen__num_frames"),
    ("rejected_num_frames", "rejected__num_frames"),
    ("chosen_duration", "chosen__duration_s"),
    ("rejected_duration", "rejected__duration_s"),
    ("weight", "weight"),
    ("agreement", "agreement"),
    ("votes_for", "votes_for"),
    ("votes_against", "votes_against"),
    ("n_annotators", "n_annotators"),
    ("source", "source"),
    ("created_at", "created_at"),
    ("aspects", "aspects"),
    ("segments", "segments"),
)
PAIR_INDEX = {name: i for i, (name, _) in enumerate(PAIR_COLUMNS)}
PAIR_PATHS = dict(PAIR_COLUMNS)

JUDGMENT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("judgment_id", "id"),
    ("annotator_id", "annotator_id"),
    ("round_id", "group__round_id"),
    ("group_id", "group_id"),
    ("prompt_id", "group__prompt_id"),
    ("prompt", SHOWN_PROMPT_TEXT),
    ("is_gold", "group__is_gold"),
    ("outcome", "outcome"),
    ("skip_reason", "skip_reason"),
    ("time_spent_ms", "time_spent_ms"),
    ("reviewer_decision", "reviewer_decision"),
    ("created_at", "created_at"),
    ("shown_order", "assignment__shown_order"),
    ("label_id", "labels__id"),
    ("candidate_id", "labels__candidate_id"),
    ("checkpoint", "labels__candidate__checkpoint__name"),
    ("seed", "labels__candidate__seed"),
    ("video_uri", "labels__candidate__video_uri"),
    ("label", "labels__label"),
    ("rank", "labels__rank"),
    ("shown_position", "labels__shown_position"),
    ("playback_coverage", "labels__playback_coverage"),
    ("aspects", "labels__aspects"),
    ("segments", "labels__segments"),
)
JUDGMENT_INDEX = {name: i for i, (name, _) in enumerate(JUDGMENT_COLUMNS)}


def _day_start(day: dt.date) -> dt.datetime:
    return timezone.make_aware(dt.datetime.combine(day, dt.time.min))


def _date_q(flt: ExportFilter, field: str) -> Q:
    q = Q()
    if flt.date_from:
        q &= Q(**{f"{field}__gte": _day_start(flt.date_from)})
    if flt.date_to:  # inclusive: everything before the next day's midnight
        q &= Q(**{f"{field}__lt": _day_start(flt.date_to + dt.timedelta(days=1))})
    return q


def pair_queryset_for_export(*, flt: ExportFilter, format: str) -> QuerySet[PreferencePair]:
    qs = PreferencePair.objects.filter(_date_q(flt, "created_at"))
    if flt.rounds:
        qs = qs.filter(round_id__in=flt.rounds)
    elif not flt.include_evaluation:  # evaluation rounds stay out unless named or explicitly included
        qs = qs.exclude(round__kind=Round.Kind.EVALUATION)
    if flt.min_agreement is not None:
        qs = qs.filter(agreement__gte=flt.min_agreement)
    if flt.min_annotators is not None:  # a human-label filter: pseudo-labels (source model) have no annotators
        qs = qs.filter(Q(n_annotators__gte=flt.min_annotators) | Q(source=PreferencePair.Source.MODEL))
    if flt.source:
        qs = qs.filter(source__in=flt.source)
    if format == Export.Format.MANIFEST:
        # the trainer cannot use a pair without both latents and the prompt's text embedding
        qs = qs.exclude(chosen__latent_uri="").exclude(rejected__latent_uri="").exclude(chosen__text_embedding_uri="")
    elif format == Export.Format.VIDEOALIGN:  # a VideoAlign row names both videos
        qs = qs.exclude(chosen__video_uri="").exclude(rejected__video_uri="")
    return qs


def judgment_queryset_for_export(*, flt: ExportFilter) -> QuerySet[Judgment]:
    qs = Judgment.objects.filter(_date_q(flt, "created_at"))
    if flt.rounds:
        qs = qs.filter(group__round_id__in=flt.rounds)
    elif not flt.include_evaluation:
        qs = qs.exclude(group__round__kind=Round.Kind.EVALUATION)
    if flt.min_annotators is not None:
        qs = qs.filter(group__judgments_count__gte=flt.min_annotators)
    return qs


def export_queryset(*, flt: ExportFilter, format: str) -> QuerySet:
    if format == Export.Format.RAW:
        return judgment_queryset_for_export(flt=flt)
    return pair_queryset_for_export(flt=flt, format=format)


def _key_ranges(qs: QuerySet, key: str, chunk_size: int) -> Iterator[tuple[object, object]]:
    """(lo, hi] ranges of ``key`` holding about ``chunk_size`` rows each (hi None: to the end)."""
    lo = None
    while True:
        q = qs if lo is None else qs.filter(**{f"{key}__gt": lo})
        nxt = list(q.order_by(key).values_list(key, flat=True)[chunk_size - 1 : chunk_size])
        hi = nxt[0] if nxt else None
        yield lo, hi
        if hi is None:
            return
        lo = hi


def _chunks(qs: QuerySet, *, key: str, order: Sequence[str], paths: Sequence[str], chunk_size: int) -> Iterator[list[tuple]]:
    for lo, hi in _key_ranges(qs, key, chunk_size):
        q = qs
        if lo is not None:
            q = q.filter(**{f"{key}__gt": lo})
        if hi is not None:
            q = q.filter(**{f"{key}__lte": hi})
        rows = list(q.order_by(*order).values_list(*paths))
        if rows:
            yield rows


def snapshot(qs: QuerySet) -> tuple[QuerySet, int]:
    """The queryset bounded to the rows that exist now (id <= current max), and its row count (the progress total)."""
    top = qs.aggregate(m=Max("id"))["m"] or 0
    qs = qs.filter(id__lte=top)
    return qs, qs.count()


def pair_chunks(qs: QuerySet[PreferencePair], *, chunk_size: int = 20_000,
                columns: Sequence[str] = ()) -> Iterator[list[tuple]]:
    """Rows as tuples of ``columns`` (names of ``PAIR_COLUMNS``; all when empty: a format reads only what it writes,
    so fewer joins), ordered by (group, pair id), ``chunk_size`` at a time."""
    names = list(columns) or [n for n, _ in PAIR_COLUMNS]
    return _chunks(qs, key="group_id", order=("group_id", "id"), paths=[PAIR_PATHS[n] for n in names],
                   chunk_size=chunk_size)


def judgment_chunks(qs: QuerySet[Judgment], *, chunk_size: int = 20_000) -> Iterator[list[tuple]]:
    """One row per (judgment, candidate label), in ``JUDGMENT_COLUMNS`` order; a judgment without labels (a skip)
    gives one row with empty candidate fields."""
    return _chunks(
        qs, key="id", order=("id", "labels__shown_position", "labels__id"),
        paths=[p for _, p in JUDGMENT_COLUMNS], chunk_size=chunk_size,
    )


def pair_annotator_ids(*, pair_ids: Sequence[int]) -> dict[int, list[int]]:
    """pair id -> the ids of the annotators whose judgments imply it (one query for a whole chunk)."""
    through = PreferencePair.source_judgments.through
    out: dict[int, list[int]] = defaultdict(list)
    for pair_id, annotator_id in (
        through.objects.filter(preferencepair_id__in=pair_ids)
        .order_by("preferencepair_id", "judgment__annotator_id")
        .values_list("preferencepair_id", "judgment__annotator_id")
    ):
        out[pair_id].append(annotator_id)
    return out


def label_flaws(*, label_ids: Sequence[int]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = defaultdict(list)
    for label_id, slug, time_s in (
        FlawMark.objects.filter(label_id__in=label_ids).order_by("label_id", "id").values_list("label_id", "tag__slug", "time_s")
    ):
        out[label_id].append({"tag": slug, "time_s": time_s})
    return out


class Pseudonyms:
    """user id -> stable pseudonym (the profile's, else ``pseudonym_for``), looked up lazily and cached: bounded by
    the number of annotators, not rows."""

    def __init__(self):
        self._cache: dict[int, str] = {}

    def __call__(self, user_id: int | None) -> str | None:
        if user_id is None:
            return None
        if user_id not in self._cache:
            self._cache[user_id] = pseudonym_for(user_id=user_id)
        return self._cache[user_id]

    def preload(self, user_ids) -> None:
        missing = [u for u in set(user_ids) if u is not None and u not in self._cache]
        if missing:
            self._cache.update(AnnotatorProfile.objects.filter(user_id__in=missing).values_list("user_id", "pseudonym"))


# -- datasheet aggregates ----------------------------------------------------------------------------------------------
def pair_datasheet_stats(*, qs: QuerySet[PreferencePair]) -> dict:
    """Aggregates over the exported pairs (a handful of queries whatever the size)."""
    agg = qs.aggregate(
        n=Count("id"), mean_agreement=Avg("agreement"), min_agreement=Min("agreement"), mean_weight=Avg("weight"),
        mean_annotators=Avg("n_annotators"), first=Min("created_at"), last=Max("created_at"),
        unanimous=Count("id", filter=Q(agreement__gte=1.0)),
        split=Count("id", filter=Q(votes_against__gt=0)),
        with_aspects=Count("id", filter=~Q(aspects={})),
    )
    rounds = list(
        qs.order_by().values("round_id", "round__name", "round__kind", "round__policy_checkpoint__name")
        .annotate(pairs=Count("id")).order_by("round_id")
    )
    sources = dict(qs.order_by().values_list("source").annotate(n=Count("id")).order_by("source"))
    annotators = (
        Judgment.objects.filter(pairs__in=qs.values("id")).order_by().values("annotator_id").distinct().count()
    )
    judgments = Judgment.objects.filter(group_id__in=qs.values("group_id")).exclude(outcome=Judgment.Outcome.SKIPPED)
    tie = judgments.aggregate(
        n=Count("id"), ties=Count("id", filter=Q(outcome__in=[Judgment.Outcome.ALL_GOOD, Judgment.Outcome.ALL_BAD]))
    )
    return {
        "rounds": [
            {"id": r["round_id"], "name": r["round__name"], "kind": r["round__kind"],
             "policy_checkpoint": r["round__policy_checkpoint__name"], "pairs": r["pairs"]}
            for r in rounds
        ],
        "sources": sources,
        "annotators": annotators,
        "agreement": {
            "mean": agg["mean_agreement"], "min": agg["min_agreement"],
            "unanimous_share": agg["unanimous"] / agg["n"] if agg["n"] else None,
            "split_share": agg["split"] / agg["n"] if agg["n"] else None,
        },
        "pairs_with_aspects": agg["with_aspects"],
        "mean_weight": agg["mean_weight"],
        "mean_annotators_per_pair": agg["mean_annotators"],
        "judgments": tie["n"],
        "tie_rate": (tie["ties"] / tie["n"]) if tie["n"] else None,
        "created_from": agg["first"].isoformat() if agg["first"] else None,
        "created_to": agg["last"].isoformat() if agg["last"] else None,
    }


def judgment_datasheet_stats(*, qs: QuerySet[Judgment]) -> dict:
    agg = qs.aggregate(
        n=Count("id"), skipped=Count("id", filter=Q(outcome=Judgment.Outcome.SKIPPED)),
        ties=Count("id", filter=Q(outcome__in=[Judgment.Outcome.ALL_GOOD, Judgment.Outcome.ALL_BAD])),
        annotators=Count("annotator_id", distinct=True), first=Min("created_at"), last=Max("created_at"),
    )
    rounds = list(
        qs.order_by().values("group__round_id", "group__round__name", "group__round__kind")
        .annotate(n=Count("id")).order_by("group__round_id")
    )
    counted = agg["n"] - agg["skipped"]
    return {
        "rounds": [{"id": r["group__round_id"], "name": r["group__round__name"], "kind": r["group__round__kind"],
                    "judgments": r["n"]} for r in rounds],
        "annotators": agg["annotators"],
        "judgments": agg["n"],
        "skipped": agg["skipped"],
        "tie_rate": (agg["ties"] / counted) if counted else None,
        "created_from": agg["first"].isoformat() if agg["first"] else None,
        "created_to": agg["last"].isoformat() if agg["last"] else None,
    }


def export_list(*, limit: int = 100) -> QuerySet[Export]:
    return Export.objects.select_related("created_by").order_by("-created_at", "-id")[:limit]


# Export download links are short-lived (the download page itself needs a researcher): a link that leaks (a chat, a
# proxy log) stops working within minutes.
EXPORT_LINK_TTL_S = 300


def export_download_url(*, export: Export, user=None, ttl_s: int | None = None) -> str | None:
    """A fresh, short-lived (``EXPORT_LINK_TTL_S``) URL of a finished export's artifact (None while it is not done);
    the artifact's file name is in its datasheet. On local storage the link is bound to ``user``."""
    from annotation import storage

    if export.status != Export.Status.DONE or not export.uri or not export.datasheet.get("file"):
        return None
    return storage.object_url(key=storage.export_key(export_id=export.pk, filename=export.datasheet["file"]),
                              user=user, ttl_s=ttl_s or EXPORT_LINK_TTL_S)
