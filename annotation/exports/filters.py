"""The export filter: parsed from a form, the API or the command line, validated, stored canonically in
``Export.filter`` (so two exports with the same filter store the same JSON)."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field

from annotation.exports.media import MAX_TTL_S, MEDIA_MODES, MIN_TTL_S
from annotation.models import Export, PreferencePair, Round

ERR_UNKNOWN_KEYS = ("Unknown filter field(s): {keys}. Allowed: rounds, min_agreement, min_annotators, source, date_from, "
                    "date_to, weighting, include_evaluation, media, media_ttl_s, media_base_url.")
ERR_ROUNDS = "rounds must be a list of round ids (integers)."
ERR_UNKNOWN_ROUNDS = "Unknown round id(s): {ids}."
ERR_MIN_AGREEMENT = "min_agreement must be a number between 0 and 1."
ERR_MIN_ANNOTATORS = "min_annotators must be a whole number of at least 1."
ERR_SOURCE = "source must be one or more of: " + ", ".join(PreferencePair.Source.values) + "."
ERR_DATE = "{name} must be a date (YYYY-MM-DD)."
ERR_DATE_RANGE = "{name} ({value}) must be between {low} and {high}."
DATE_MIN, DATE_MAX = dt.date(1970, 1, 1), dt.date(2999, 12, 31)
ERR_DATE_ORDER = "date_from ({date_from}) is after date_to ({date_to})."
ERR_NOT_FOR_RAW = "{name} applies to preference pairs, not to raw judgments: remove it for the raw format."

# The ``weight`` column of pair formats: the weight stored at aggregation (default), the pair's agreement (what DPO
# runs use by default), or 1 for every pair.
WEIGHTINGS = ("stored", "agreement", "uniform")
ERR_WEIGHTING = "weighting must be one of: " + ", ".join(WEIGHTINGS) + "."

ALLOWED_KEYS = ("rounds", "min_agreement", "min_annotators", "source", "date_from", "date_to", "weighting",
                "include_evaluation", "media", "media_ttl_s", "media_base_url")
# The videos of the export (annotation.exports.media): none (server URIs), bundle (in the artifact), links (signed
# URLs valid media_ttl_s seconds). Stored with the filter: it is part of what the export is.
ERR_MEDIA = "media must be one of: " + ", ".join(MEDIA_MODES) + "."
ERR_MEDIA_MANIFEST = ("The DPO manifest is read by the trainer on the server: it names latents, not videos, so media "
                      "must be none for it.")
ERR_MEDIA_TTL = f"media_ttl_s must be a whole number of seconds from {MIN_TTL_S} to {MAX_TTL_S} (7 days)."
ERR_MEDIA_TTL_NOT_LINKS = "media_ttl_s applies to media=links only."
ERR_MEDIA_BASE_URL = "media_base_url must be an http:// or https:// address."
# Evaluation rounds (held-out prompts, policy vs reference) measure the model: their pairs stay out of an export that
# does not name its rounds unless the filter says include_evaluation (naming an evaluation round includes it).
WARN_EVALUATION = ("Includes evaluation rounds: their prompts are held out to measure the model, and training on them "
                   "leaks the evaluation into the model.")


class ExportFilterError(ValueError):
    """A filter the user must fix; the message says what."""


@dataclass(frozen=True)
class ExportFilter:
    rounds: list[int] = field(default_factory=list)
    min_agreement: float | None = None
    min_annotators: int | None = None
    source: list[str] = field(default_factory=list)
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    weighting: str | None = None  # None: "stored"
    include_evaluation: bool = False  # stored only when True (older filters keep their JSON)
    media: str | None = None  # None: "none"
    media_ttl_s: int | None = None  # links only
    media_base_url: str | None = None  # links on local storage: the app's address

    def as_json(self) -> dict:
        """Canonical JSON: only the fields that are set, dates as ISO strings, lists sorted."""
        out = {}
        for key, value in asdict(self).items():
            if value is False or value in (None, [], ""):  # not "in (False,)": 0.0 == False
                continue
            out[key] = value.isoformat() if isinstance(value, dt.date) else value
        return out

    def describe(self) -> str:
        parts = []
        if self.rounds:
            parts.append("rounds " + ", ".join(map(str, self.rounds)))
        elif not self.include_evaluation:
            parts.append("every round except evaluation rounds")
        if self.min_agreement is not None:
            parts.append(f"agreement >= {self.min_agreement:g}")
        if self.min_annotators is not None:
            parts.append(f"annotators >= {self.min_annotators}")
        if self.source:
            parts.append("source " + "/".join(self.source))
        if self.date_from or self.date_to:
            parts.append(f"dates {self.date_from or '...'} to {self.date_to or '...'}")
        if self.weighting:
            parts.append(f"weight = {self.weighting}")
        if self.include_evaluation:
            parts.append("every round, evaluation rounds included" if not self.rounds else "with evaluation rounds")
        if self.media == "bundle":
            parts.append("videos bundled")
        elif self.media == "links":
            parts.append(f"video links valid {self.media_ttl_s} s")
        return "; ".join(parts)


def _as_list(value) -> list:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple, set)):
        return list(value)
    return [value]


def _date(name: str, value) -> dt.date | None:
    if value in (None, ""):
        return None
    if isinstance(value, dt.datetime):
        value = value.date()
    elif not isinstance(value, dt.date):
        try:
            value = dt.date.fromisoformat(str(value))
        except ValueError as exc:
            raise ExportFilterError(ERR_DATE.format(name=name)) from exc
    if not DATE_MIN <= value <= DATE_MAX:  # year 1 or 9999 would overflow the day bounds (a 500, not a filter)
        raise ExportFilterError(ERR_DATE_RANGE.format(name=name, value=value, low=DATE_MIN, high=DATE_MAX))
    return value


def filter_parse(data: dict | None, *, format: str | None = None) -> ExportFilter:
    """Validate ``data`` (JSON-ish values, strings from forms accepted) into an ExportFilter; raises
    ExportFilterError with a message for the user. Round ids are checked against the database."""
    data = {k: v for k, v in (data or {}).items() if v not in (None, "", [])}
    unknown = sorted(set(data) - set(ALLOWED_KEYS))
    if unknown:
        raise ExportFilterError(ERR_UNKNOWN_KEYS.format(keys=", ".join(unknown)))
    try:
        rounds = sorted({int(r) for r in _as_list(data.get("rounds"))})
    except (TypeError, ValueError) as exc:
        raise ExportFilterError(ERR_ROUNDS) from exc
    if rounds:
        known = set(Round.objects.filter(id__in=rounds).values_list("id", flat=True))
        missing = [r for r in rounds if r not in known]
        if missing:
            raise ExportFilterError(ERR_UNKNOWN_ROUNDS.format(ids=", ".join(map(str, missing))))
    min_agreement = data.get("min_agreement")
    if min_agreement is not None:
        try:
            min_agreement = float(min_agreement)
        except (TypeError, ValueError) as exc:
            raise ExportFilterError(ERR_MIN_AGREEMENT) from exc
        if not 0.0 <= min_agreement <= 1.0:
            raise ExportFilterError(ERR_MIN_AGREEMENT)
    min_annotators = data.get("min_annotators")
    if min_annotators is not None:
        try:
            if isinstance(min_annotators, float) and not min_annotators.is_integer():
                raise ValueError
            min_annotators = int(min_annotators)
        except (TypeError, ValueError) as exc:
            raise ExportFilterError(ERR_MIN_ANNOTATORS) from exc
        if min_annotators < 1:
            raise ExportFilterError(ERR_MIN_ANNOTATORS)
    source = sorted({str(s) for s in _as_list(data.get("source"))})
    if any(s not in PreferencePair.Source.values for s in source):
        raise ExportFilterError(ERR_SOURCE)
    date_from, date_to = _date("date_from", data.get("date_from")), _date("date_to", data.get("date_to"))
    if date_from and date_to and date_from > date_to:
        raise ExportFilterError(ERR_DATE_ORDER.format(date_from=date_from, date_to=date_to))
    weighting = data.get("weighting")
    if weighting is not None and weighting not in WEIGHTINGS:
        raise ExportFilterError(ERR_WEIGHTING)
    weighting = None if weighting == "stored" else weighting  # canonical: the default is not stored
    if format == Export.Format.RAW:
        for name, value in (("min_agreement", min_agreement), ("source", source), ("weighting", weighting)):
            if value not in (None, []):
                raise ExportFilterError(ERR_NOT_FOR_RAW.format(name=name))
    include_evaluation = str(data.get("include_evaluation", "")).strip().lower() in ("1", "true", "on", "yes")
    media, media_ttl_s, media_base_url = _media(data, format=format)
    return ExportFilter(rounds, min_agreement, min_annotators, source, date_from, date_to, weighting, include_evaluation,
                        media, media_ttl_s, media_base_url)


def _media(data: dict, *, format: str | None) -> tuple[str | None, int | None, str | None]:
    from annotation.exports.media import DEFAULT_TTL_S

    media = str(data.get("media", "none")).strip().lower()
    if media not in MEDIA_MODES:
        raise ExportFilterError(ERR_MEDIA)
    if media != "none" and format == Export.Format.MANIFEST:
        raise ExportFilterError(ERR_MEDIA_MANIFEST)
    ttl = data.get("media_ttl_s")
    if media != "links":
        if ttl is not None:
            raise ExportFilterError(ERR_MEDIA_TTL_NOT_LINKS)
        return (None if media == "none" else media), None, None
    try:
        if isinstance(ttl, bool) or (isinstance(ttl, float) and not ttl.is_integer()):
            raise ValueError  # int(True) is 1: a boolean is no number of seconds
        ttl = DEFAULT_TTL_S if ttl is None else int(ttl)
    except (TypeError, ValueError) as exc:
        raise ExportFilterError(ERR_MEDIA_TTL) from exc
    if not MIN_TTL_S <= ttl <= MAX_TTL_S:
        raise ExportFilterError(ERR_MEDIA_TTL)
    base_url = data.get("media_base_url")
    if base_url is not None and not str(base_url).startswith(("http://", "https://")):
        raise ExportFilterError(ERR_MEDIA_BASE_URL)
    return media, ttl, (str(base_url).rstrip("/") if base_url else None)
