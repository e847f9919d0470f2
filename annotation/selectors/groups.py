"""What the annotator page shows for a reservation: blind (no seed, checkpoint, round or object key), in the stored
shown order, with time-limited media links. A fixed number of queries whatever the size of the database."""

from __future__ import annotations

from dataclasses import dataclass, field

from markdown_it import MarkdownIt

from annotation.agreement import ASPECT_NAMES, ASPECTS
from annotation.conf import conf
from annotation.media import MEDIA_KINDS, assignment_media_path
from annotation.models import Assignment, Candidate, FlawTag, PromptSet

_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")


def guidelines_html(markdown_text: str) -> str:
    """Markdown rendered safely: raw HTML is escaped and javascript:/data: links are refused (markdown-it defaults)."""
    return _markdown.render(markdown_text or "")


ASPECT_KEYS = {"vq": "V", "mq": "M", "ta": "A"}  # the workbench's keys: the letter = better, Shift + letter = worse


@dataclass
class ShownCandidate:
    position: int  # 0-based shown position
    number: int  # 1-based, the digit key
    video_url: str
    poster_url: str
    fps: float
    duration_s: float | None


@dataclass
class GroupPage:
    handle: str  # the reservation's public handle: the only name annotators see (its database id stays internal)
    prompt_text: str
    mode: str
    require_full_playback: bool
    candidates: list[ShownCandidate]
    aspects: list[str] = field(default_factory=list)  # aspects marked per candidate (empty: overall answer only)
    segment_count: int = 0  # segments of the timeline marked per candidate (0: no segment judgments)
    segment_seconds: float | None = None  # each (equal) segment's length: the clip over segment_count (None: none)
    guidelines_html: str = ""
    prefetch: list[ShownCandidate] = field(default_factory=list)

    @property
    def aspect_rows(self) -> list[tuple[str, str, str]]:
        """(aspect, its name, its key) for each aspect marked per candidate."""
        return [(a, ASPECT_NAMES[a], ASPECT_KEYS[a]) for a in self.aspects]

    @property
    def segment_indexes(self) -> range:
        return range(self.segment_count)

    @property
    def columns(self) -> int:
        return 2 if len(self.candidates) <= 4 else 3


def _media_url(assignment: Assignment, position: int, kind: str) -> str:
    expires = int(assignment.reserved_at.timestamp()) + conf("MEDIA_URL_TTL_S")
    return assignment_media_path(handle=str(assignment.public_id), position=position, kind=kind, expires=expires)


def _shown(assignment: Assignment, candidates: dict[int, Candidate]) -> list[ShownCandidate]:
    out = []
    for position, cid in enumerate(assignment.shown_order):
        cand = candidates.get(cid)
        if cand is None:
            continue
        out.append(
            ShownCandidate(
                position=position,
                number=position + 1,
                video_url=_media_url(assignment, position, "v"),
                poster_url=_media_url(assignment, position, "p") if cand.poster_uri else "",
                fps=cand.fps or float(assignment.group.round.fps or 25),
                duration_s=cand.duration_s,
            )
        )
    return out


def group_page_for_assignments(*, assignments: list[Assignment]) -> GroupPage | None:
    """The page of the first reservation, with the next one's media listed for prefetching (assignments come from
    ``assignments_for_annotator`` with group, round, prompt and prompt set already joined, and their candidates as
    ``shown_candidates``; other assignments cost one query for their candidates)."""
    if not assignments:
        return None
    shown = assignments[:2]
    if all(hasattr(a, "shown_candidates") for a in shown):  # read with the reservations: no query
        candidates = {cid: c for a in shown for cid, c in a.shown_candidates.items()}
    else:
        ids = [cid for a in shown for cid in a.shown_order]
        candidates = {
            c.pk: c for c in Candidate.objects.filter(pk__in=ids).only("id", "poster_uri", "fps", "duration_s", "video_uri")
        }
    current = assignments[0]
    group = current.group
    prompt_set: PromptSet | None = group.prompt.prompt_set
    return GroupPage(
        handle=str(current.public_id),
        prompt_text=group.prompt_text or group.prompt.text,  # the text of this group (prompt edits keep it)
        mode=group.round.annotation_mode,
        require_full_playback=group.round.require_full_playback,
        candidates=_shown(current, candidates),
        aspects=list(ASPECTS) if group.round.aspect_judgments else [],
        segment_count=group.round.segment_count, segment_seconds=group.round.segment_length,
        guidelines_html=guidelines_html(prompt_set.guidelines_md) if prompt_set else "",
        prefetch=_shown(assignments[1], candidates) if len(assignments) > 1 else [],
    )


def flaw_tags_active() -> list[FlawTag]:
    return list(FlawTag.objects.filter(is_active=True).order_by("order", "name"))


def media_key_for_token(*, handle: str, position: int, kind: str) -> tuple[str, int, float] | None:
    """What a blind media link grants (two primary-key lookups): (object key, the annotator it belongs to, the unix
    time until which it may be used: the reservation's end, or its submit, plus ``RESERVATION_GRACE_S``); None when
    it names nothing."""
    from annotation.media import RESERVATION_GRACE_S
    from annotation.storage import key_from_uri

    row = (Assignment.objects.filter(public_id=handle)
           .values_list("shown_order", "annotator_id", "status", "expires_at", "submitted_at").first())
    if row is None:
        return None
    order, annotator_id, status, expires_at, submitted_at = row
    if not order or not 0 <= position < len(order):
        return None
    uri = Candidate.objects.filter(pk=order[position]).values_list(MEDIA_KINDS[kind], flat=True).first()
    if not uri:
        return None
    ended = submitted_at if status == Assignment.Status.SUBMITTED and submitted_at else expires_at
    return key_from_uri(uri), annotator_id, ended.timestamp() + RESERVATION_GRACE_S
