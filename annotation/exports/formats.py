"""One writer per ``Export.Format`` (column names exactly as in docs/annotation.md, "Export schemas",
and docs/contracts.md).

A writer consumes row chunks (tuples in ``PAIR_COLUMNS`` / ``JUDGMENT_COLUMNS`` order) and writes one artifact file
through a ``HashingWriter``: JSON/CSV lines as they come, Parquet one row group per chunk, multi-file layouts
(VideoDPO, Hugging Face) as an uncompressed-timestamp ZIP assembled from temporary files. Memory stays bounded by one
chunk whatever the number of rows.

Position of the winner: Pick-a-Pic and VideoAlign put each pair's two videos in columns 0/1 (A/B); the winner goes to
column 1 (B) for odd pair ids, so a model trained on the file cannot learn "the first one wins"."""

from __future__ import annotations

import csv
import io
import json
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from annotation.agreement import label_aspects, label_segments, pair_aspects, pair_segments
from annotation.exports.hashing import HashingWriter
from annotation.exports.media import ZIP_DATE, MediaResolver, zip_add_media
from annotation.models import Export
from annotation.selectors.exports import (
    JUDGMENT_INDEX,
    PAIR_INDEX,
    Pseudonyms,
    label_flaws,
    pair_annotator_ids,
)

PARQUET_COMPRESSION = "zstd"
# Row groups of a fixed size whatever the database chunk size, so the same rows always give the same bytes (and
# hash). 64k rows of pairs are ~10-20 MB in Arrow memory.
ROW_GROUP_ROWS = 65_536


class ParquetSink:
    """A ParquetWriter that buffers Arrow tables and writes row groups of exactly ``row_group_rows`` rows (the last
    one shorter)."""

    def __init__(self, where, schema: pa.Schema, row_group_rows: int = ROW_GROUP_ROWS):
        self.schema, self.row_group_rows = schema, row_group_rows
        self.writer = pq.ParquetWriter(where, schema, compression=PARQUET_COMPRESSION)
        self.pending: list[pa.Table] = []
        self.pending_rows = 0

    def write(self, table: pa.Table) -> None:
        self.pending.append(table)
        self.pending_rows += table.num_rows
        if self.pending_rows >= self.row_group_rows:
            merged = pa.concat_tables(self.pending)
            full = (merged.num_rows // self.row_group_rows) * self.row_group_rows
            for start in range(0, full, self.row_group_rows):
                self.writer.write_table(merged.slice(start, self.row_group_rows), row_group_size=self.row_group_rows)
            rest = merged.slice(full)
            self.pending, self.pending_rows = ([rest] if rest.num_rows else []), rest.num_rows

    def close(self) -> None:
        if self.pending_rows:
            self.writer.write_table(pa.concat_tables(self.pending), row_group_size=self.row_group_rows)
        self.pending, self.pending_rows = [], 0
        self.writer.close()


@dataclass
class WriteContext:
    pseudonyms: Pseudonyms
    progress: Callable[[int], None] = lambda rows: None
    card: Callable[[], str] = lambda: ""  # the Hugging Face dataset card (README.md), built after the rows
    rows_per_shard: int = 500_000
    index: dict[str, int] = field(default_factory=lambda: dict(PAIR_INDEX))  # column name -> position in a row
    weighting: str = "stored"  # the filter's weighting of the ``weight`` column (annotation.exports.filters)
    extra: dict = field(default_factory=dict)
    media: MediaResolver | None = None  # bundle: the videos the rows name go into the artifact (annotation.exports.media)
    media_written: tuple[int, int] = (0, 0)  # (files, bytes) bundled


@dataclass(frozen=True)
class Artifact:
    filename: str
    content_type: str
    sha256: str
    size: int
    rows: int


def _col(rows: list[tuple], ctx: WriteContext, name: str) -> list:
    i = ctx.index[name]
    return [r[i] for r in rows]


def _weights(rows: list[tuple], ctx: WriteContext) -> list[float]:
    """The ``weight`` of each pair under the export's weighting: stored, the pair's agreement, or uniform (1)."""
    if ctx.weighting == "agreement":
        return [float(a) for a in _col(rows, ctx, "agreement")]
    if ctx.weighting == "uniform":
        return [1.0] * len(rows)
    return _col(rows, ctx, "weight")


def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None


# -- per-format columns ------------------------------------------------------------------------------------------------
TRL_SCHEMA = pa.schema([
    ("prompt", pa.string()), ("chosen", pa.string()), ("rejected", pa.string()),
    ("chosen_latent", pa.string()), ("rejected_latent", pa.string()),
    ("weight", pa.float64()), ("round", pa.int64()), ("checkpoint", pa.string()),
])


def trl_columns(rows: list[tuple], ctx: WriteContext) -> dict[str, list]:
    return {
        "prompt": _col(rows, ctx, "prompt"),
        "chosen": _col(rows, ctx, "chosen_video"),
        "rejected": _col(rows, ctx, "rejected_video"),
        "chosen_latent": _col(rows, ctx, "chosen_latent"),
        "rejected_latent": _col(rows, ctx, "rejected_latent"),
        "weight": _weights(rows, ctx),
        "round": _col(rows, ctx, "round_id"),
        "checkpoint": _col(rows, ctx, "policy_checkpoint"),
    }


HF_SCHEMA = pa.schema([
    ("pair_id", pa.int64()), ("prompt_id", pa.int64()), ("category", pa.string()),
    *[(f.name, f.type) for f in TRL_SCHEMA],
    ("agreement", pa.float64()), ("n_annotators", pa.int64()), ("source", pa.string()),
    ("annotators", pa.list_(pa.string())), ("created_at", pa.timestamp("us", tz="UTC")),
])


def hf_columns(rows: list[tuple], ctx: WriteContext) -> dict[str, list]:
    pair_ids = _col(rows, ctx, "pair_id")
    voters = pair_annotator_ids(pair_ids=pair_ids)
    ctx.pseudonyms.preload(u for ids in voters.values() for u in ids)
    return {
        "pair_id": pair_ids,
        "prompt_id": _col(rows, ctx, "prompt_id"),
        "category": _col(rows, ctx, "category"),
        **trl_columns(rows, ctx),
        "agreement": _col(rows, ctx, "agreement"),
        "n_annotators": _col(rows, ctx, "n_annotators"),
        "source": _col(rows, ctx, "source"),
        "annotators": [[ctx.pseudonyms(u) for u in voters.get(pid, [])] for pid in pair_ids],
        "created_at": _col(rows, ctx, "created_at"),
    }


PICKAPIC_SCHEMA = pa.schema([
    ("caption", pa.string()), ("video_0", pa.string()), ("video_1", pa.string()),
    ("label_0", pa.float64()), ("label_1", pa.float64()), ("model_0", pa.string()), ("model_1", pa.string()),
    ("user_id", pa.string()), ("ranking_id", pa.int64()), ("created_at", pa.timestamp("us", tz="UTC")),
])


def pickapic_columns(rows: list[tuple], ctx: WriteContext) -> dict[str, list]:
    """Winner at 0 for even pair ids, at 1 for odd ones; ``user_id`` = the pseudonyms of the annotators whose
    judgments imply the pair (comma-separated); ``ranking_id`` = the candidate group (one ranking)."""
    pair_ids = _col(rows, ctx, "pair_id")
    voters = pair_annotator_ids(pair_ids=pair_ids)
    ctx.pseudonyms.preload(u for ids in voters.values() for u in ids)
    out = {name: [] for name in PICKAPIC_SCHEMA.names}
    p = ctx.index
    for r in rows:
        pid = r[p["pair_id"]]
        w, lo = (r[p["chosen_video"]], r[p["rejected_video"]]), (r[p["chosen_checkpoint"]], r[p["rejected_checkpoint"]])
        swap = pid % 2 == 1
        out["caption"].append(r[p["prompt"]])
        out["video_0"].append(w[1] if swap else w[0])
        out["video_1"].append(w[0] if swap else w[1])
        out["label_0"].append(0.0 if swap else 1.0)
        out["label_1"].append(1.0 if swap else 0.0)
        out["model_0"].append(lo[1] if swap else lo[0])
        out["model_1"].append(lo[0] if swap else lo[1])
        out["user_id"].append(",".join(ctx.pseudonyms(u) for u in voters.get(pid, [])))
        out["ranking_id"].append(r[p["group_id"]])
        out["created_at"].append(r[p["created_at"]])
    return out


MANIFEST_SCHEMA = pa.schema([
    ("pair_id", pa.int64()), ("round", pa.int64()), ("prompt_id", pa.int64()),
    ("chosen_candidate", pa.int64()), ("rejected_candidate", pa.int64()),
    ("chosen_latent_uri", pa.string()), ("rejected_latent_uri", pa.string()), ("text_embedding_uri", pa.string()),
    ("weight", pa.float64()), ("source", pa.string()), ("agreement", pa.float64()),
    ("aspects", pa.string()), ("segments", pa.string()),
])


def manifest_columns(rows: list[tuple], ctx: WriteContext) -> dict[str, list]:
    return {
        "pair_id": _col(rows, ctx, "pair_id"),
        "round": _col(rows, ctx, "round_id"),
        "prompt_id": _col(rows, ctx, "prompt_id"),
        "chosen_candidate": _col(rows, ctx, "chosen_id"),
        "rejected_candidate": _col(rows, ctx, "rejected_id"),
        "chosen_latent_uri": _col(rows, ctx, "chosen_latent"),
        "rejected_latent_uri": _col(rows, ctx, "rejected_latent"),
        "text_embedding_uri": _col(rows, ctx, "text_embedding"),
        "weight": _weights(rows, ctx),
        "source": _col(rows, ctx, "source"),
        "agreement": _col(rows, ctx, "agreement"),
        # per-aspect outcomes as JSON ({"vq": "chosen" | "rejected" | "same", ...}; "{}" without): reward-model runs
        "aspects": [json.dumps(pair_aspects(a), sort_keys=True) for a in _col(rows, ctx, "aspects")],
        # per-segment outcomes as JSON (["chosen", "same", ...], one per segment; "[]" without): DenseDPO weighting
        "segments": [json.dumps(pair_segments(v)) for v in _col(rows, ctx, "segments")],
    }


VIDEOALIGN_HEADER = ["path_A", "path_B", "prompt", "VQ", "MQ", "TA", "fps_A", "num_frames_A", "fps_B", "num_frames_B"]


def videoalign_rows(rows: list[tuple], ctx: WriteContext) -> Iterable[list]:
    """VQ, MQ and TA in {A, B, same}: the pair's per-aspect outcomes where its round collected them; otherwise (and
    for an aspect nobody marked) the overall preference (the datasheet says how many pairs carry their own)."""
    p = ctx.index
    for r in rows:
        swap = r[p["pair_id"]] % 2 == 1
        a, b = ("rejected", "chosen") if swap else ("chosen", "rejected")
        letter = {"chosen": "B" if swap else "A", "rejected": "A" if swap else "B", "same": "same"}
        aspects = pair_aspects(r[p["aspects"]])
        vq, mq, ta = (letter[aspects.get(k, "chosen")] for k in ("vq", "mq", "ta"))
        yield [r[p[f"{a}_video"]], r[p[f"{b}_video"]], r[p["prompt"]], vq, mq, ta,
               r[p[f"{a}_fps"]], r[p[f"{a}_num_frames"]], r[p[f"{b}_fps"]], r[p[f"{b}_num_frames"]]]


RAW_FIELDS = ["judgment_id", "annotator", "round", "group_id", "prompt_id", "prompt", "is_gold", "outcome",
              "skip_reason", "time_spent_ms", "reviewer_decision", "created_at", "shown_order", "candidate_id",
              "checkpoint", "seed", "video_uri", "label", "rank", "shown_position", "playback_coverage", "aspects", "segments",
              "flaws"]


def raw_records(rows: list[tuple], ctx: WriteContext) -> Iterable[dict]:
    j = JUDGMENT_INDEX
    flaws = label_flaws(label_ids=[r[j["label_id"]] for r in rows if r[j["label_id"]] is not None])
    ctx.pseudonyms.preload(r[j["annotator_id"]] for r in rows)
    for r in rows:
        yield {
            "judgment_id": r[j["judgment_id"]],
            "annotator": ctx.pseudonyms(r[j["annotator_id"]]),
            "round": r[j["round_id"]],
            "group_id": r[j["group_id"]],
            "prompt_id": r[j["prompt_id"]],
            "prompt": r[j["prompt"]],
            "is_gold": r[j["is_gold"]],
            "outcome": r[j["outcome"]],
            "skip_reason": r[j["skip_reason"]],
            "time_spent_ms": r[j["time_spent_ms"]],
            "reviewer_decision": r[j["reviewer_decision"]],
            "created_at": _iso(r[j["created_at"]]),
            "shown_order": r[j["shown_order"]],
            "candidate_id": r[j["candidate_id"]],
            "checkpoint": r[j["checkpoint"]],
            "seed": r[j["seed"]],
            "video_uri": r[j["video_uri"]],
            "label": r[j["label"]],
            "rank": r[j["rank"]],
            "shown_position": r[j["shown_position"]],
            "playback_coverage": r[j["playback_coverage"]],
            "aspects": label_aspects(r[j["aspects"]]),
            "segments": label_segments(r[j["segments"]]),
            "flaws": flaws.get(r[j["label_id"]], []),
        }


def trl_records(rows: list[tuple], ctx: WriteContext) -> Iterable[dict]:
    cols = trl_columns(rows, ctx)
    names = TRL_SCHEMA.names
    for values in zip(*(cols[n] for n in names), strict=True):
        yield dict(zip(names, values, strict=True))


# -- containers -------------------------------------------------------------------------------------------------------
def _dumps(obj) -> str:
    # allow_nan=False: a NaN or infinite number fails the export instead of writing invalid JSON (NaN, Infinity)
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def write_jsonl(chunks, sink: io.BufferedWriter, ctx: WriteContext, records) -> int:
    n = 0
    for rows in chunks:
        sink.write(("".join(_dumps(rec) + "\n" for rec in records(rows, ctx))).encode("utf-8"))
        n += len(rows)
        ctx.progress(n)
    return n


def write_parquet(chunks, sink, ctx: WriteContext, schema: pa.Schema, columns) -> int:
    """Fixed-size row groups; an empty result still gives a valid file with the schema."""
    n = 0
    out = ParquetSink(sink, schema)
    try:
        for rows in chunks:
            out.write(pa.Table.from_pydict(columns(rows, ctx), schema=schema))
            n += len(rows)
            ctx.progress(n)
    finally:
        out.close()
    return n


# OWASP "CSV injection": a spreadsheet runs a cell that starts with one of these as a formula (=HYPERLINK(...)).
CSV_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value):
    """A text cell that a spreadsheet would read as a formula, prefixed with ``'`` so it stays text (numbers are
    written as they are)."""
    if isinstance(value, str) and value.startswith(CSV_FORMULA_PREFIXES):
        return "'" + value
    return value


def write_csv(chunks, sink: io.BufferedWriter, ctx: WriteContext) -> int:
    text = io.TextIOWrapper(sink, encoding="utf-8", newline="", write_through=True)
    writer = csv.writer(text)
    writer.writerow(VIDEOALIGN_HEADER)
    n = 0
    for rows in chunks:
        writer.writerows([csv_cell(v) for v in row] for row in videoalign_rows(rows, ctx))
        n += len(rows)
        ctx.progress(n)
    text.flush()
    text.detach()
    return n


def _zip_files(sink, files: list[tuple[str, Path]], compress: int, ctx: WriteContext | None = None) -> None:
    """The files, then (``bundle``) the videos the rows named, streamed from storage."""
    with zipfile.ZipFile(sink, "w") as zf:
        for name, path in files:
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.compress_type = compress
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as dst, open(path, "rb") as src:
                shutil.copyfileobj(src, dst, 1 << 20)
        if ctx is not None:
            ctx.media_written = zip_add_media(zf, ctx.media)


def write_videodpo(chunks, sink, ctx: WriteContext, tmp: Path) -> int:
    """``metadata.json`` (one item per candidate that appears in a pair) and ``pair.json`` (indices into it). A
    group's pairs are all in one chunk, so the candidate -> index map is per group."""
    p = ctx.index
    meta_path, pair_path = tmp / "metadata.json", tmp / "pair.json"
    n = next_index = 0
    with open(meta_path, "w", encoding="utf-8") as meta, open(pair_path, "w", encoding="utf-8") as pairs:
        meta.write("[\n")
        pairs.write("[\n")
        first_meta = first_pair = True
        for rows in chunks:
            index: dict[int, int] = {}
            group = None
            for r, weight in zip(rows, _weights(rows, ctx), strict=True):
                if r[p["group_id"]] != group:
                    group, index = r[p["group_id"]], {}
                for role in ("chosen", "rejected"):
                    cid = r[p[f"{role}_id"]]
                    if cid in index:
                        continue
                    index[cid] = next_index
                    next_index += 1
                    item = {"basic": {"clip_id": cid, "clip_path": r[p[f"{role}_video"]],
                                      "clip_duration": r[p[f"{role}_duration"]]},
                            "misc": {"frame_caption": r[p["prompt"]]}}
                    meta.write(("" if first_meta else ",\n") + _dumps(item))
                    first_meta = False
                pair = {"video1": index[r[p["chosen_id"]]], "video2": index[r[p["rejected_id"]]],
                        "frame_caption": r[p["prompt"]], "score": weight}
                pairs.write(("" if first_pair else ",\n") + _dumps(pair))
                first_pair = False
            n += len(rows)
            ctx.progress(n)
        meta.write("\n]\n")
        pairs.write("\n]\n")
    _zip_files(sink, [("metadata.json", meta_path), ("pair.json", pair_path)], zipfile.ZIP_DEFLATED, ctx)
    return n


class HFShardSink:
    """One shard in both layouts: Parquet (``load_dataset``) and an Arrow IPC stream (``load_from_disk``)."""

    def __init__(self, tmp: Path, i: int):
        self.parquet, self.arrow = tmp / f"shard-{i:05d}.parquet", tmp / f"shard-{i:05d}.arrow"
        self.pq = ParquetSink(self.parquet, HF_SCHEMA)
        self.arrow_file = pa.OSFile(str(self.arrow), "wb")
        self.ipc = pa.ipc.new_stream(self.arrow_file, HF_SCHEMA)

    def write(self, table: pa.Table) -> None:
        self.pq.write(table)
        self.ipc.write_table(table)

    def close(self) -> None:
        self.pq.close()
        self.ipc.close()
        self.arrow_file.close()


def _hf_disk_files(tmp: Path, arrow_names: list[str]) -> list[tuple[str, Path]]:
    """``DatasetDict.save_to_disk``'s files around the Arrow shards: ``dataset_dict.json`` (one split, ``train``) and
    the split's ``train/state.json`` and ``train/dataset_info.json``. A DatasetDict, not a bare Dataset: a
    ``state.json`` at the root would make ``load_dataset(<folder>)`` refuse the folder."""
    state = {"_data_files": [{"filename": name} for name in arrow_names], "_fingerprint": "videodpo-export",
             "_format_columns": None, "_format_kwargs": {}, "_format_type": None, "_output_all_columns": False,
             "_split": "train"}
    info = {"citation": "", "description": "Video-DPO preference pairs", "homepage": "", "license": ""}
    out = []
    for name, obj in (("dataset_dict.json", {"splits": ["train"]}), ("train/dataset_info.json", info),
                      ("train/state.json", state)):
        path = tmp / name.replace("/", "-")
        path.write_text(json.dumps(obj, indent=2, sort_keys=True), encoding="utf-8")
        out.append((name, path))
    return out


def write_hf_datasets(chunks, sink, ctx: WriteContext, tmp: Path) -> int:
    """``data/train-0000i-of-0000n.parquet`` shards of at most ``rows_per_shard`` rows + ``README.md`` (the card,
    with the ``configs`` YAML that ``datasets.load_dataset`` reads), and the same rows in ``save_to_disk``'s layout
    (``dataset_dict.json``, ``train/data-0000i-of-0000n.arrow``...: ``datasets.load_from_disk`` reads it),
    zipped stored (Parquet is already compressed; Arrow files stay memory-mappable)."""
    shards: list[HFShardSink] = []
    writer, in_shard, n = None, 0, 0
    try:
        for rows in chunks:
            table = pa.Table.from_pydict(hf_columns(rows, ctx), schema=HF_SCHEMA)
            start = 0
            while start < table.num_rows:
                if writer is None:
                    writer, in_shard = HFShardSink(tmp, len(shards)), 0
                    shards.append(writer)
                take = min(ctx.rows_per_shard - in_shard, table.num_rows - start)
                writer.write(table.slice(start, take))
                start, in_shard = start + take, in_shard + take
                if in_shard >= ctx.rows_per_shard:
                    writer.close()
                    writer = None
            n += len(rows)
            ctx.progress(n)
        if writer is None and not shards:  # no rows: one empty shard keeps the schema
            writer = HFShardSink(tmp, 0)
            shards.append(writer)
    finally:
        if writer is not None:
            writer.close()
    card = tmp / "README.md"
    card.write_text(ctx.card(), encoding="utf-8")
    k = len(shards)
    arrow_names = [f"data-{i:05d}-of-{k:05d}.arrow" for i in range(k)]
    files = [("README.md", card)] + [
        (f"data/train-{i:05d}-of-{k:05d}.parquet", s.parquet) for i, s in enumerate(shards)
    ] + [(f"train/{name}", s.arrow) for name, s in zip(arrow_names, shards, strict=True)] + _hf_disk_files(tmp, arrow_names)
    _zip_files(sink, files, zipfile.ZIP_STORED, ctx)
    return n


@dataclass(frozen=True)
class FormatSpec:
    format: str
    filename: str
    content_type: str
    rows: str  # "pairs" or "judgments"
    write: Callable  # (chunks, sink, ctx, tmp) -> rows written
    columns: tuple[str, ...] = ()  # the PAIR_COLUMNS it reads (fewer columns, fewer joins); () = all


TRL_READS = ("prompt", "chosen_video", "rejected_video", "chosen_latent", "rejected_latent", "weight", "agreement",
             "round_id", "policy_checkpoint")

FORMATS: dict[str, FormatSpec] = {
    Export.Format.TRL: FormatSpec(
        Export.Format.TRL, "trl.jsonl", "application/x-ndjson", "pairs",
        lambda chunks, sink, ctx, tmp: write_jsonl(chunks, sink, ctx, trl_records),
        columns=TRL_READS,
    ),
    Export.Format.TRL_PARQUET: FormatSpec(
        Export.Format.TRL_PARQUET, "trl.parquet", "application/vnd.apache.parquet", "pairs",
        lambda chunks, sink, ctx, tmp: write_parquet(chunks, sink, ctx, TRL_SCHEMA, trl_columns),
        columns=TRL_READS,
    ),
    Export.Format.PICKAPIC: FormatSpec(
        Export.Format.PICKAPIC, "pickapic.parquet", "application/vnd.apache.parquet", "pairs",
        lambda chunks, sink, ctx, tmp: write_parquet(chunks, sink, ctx, PICKAPIC_SCHEMA, pickapic_columns),
        columns=("pair_id", "group_id", "prompt", "chosen_video", "rejected_video", "chosen_checkpoint", "rejected_checkpoint", "created_at"),
    ),
    Export.Format.VIDEOALIGN: FormatSpec(
        Export.Format.VIDEOALIGN, "videoalign.csv", "text/csv", "pairs",
        lambda chunks, sink, ctx, tmp: write_csv(chunks, sink, ctx),
        columns=("pair_id", "prompt", "chosen_video", "rejected_video", "chosen_fps", "rejected_fps", "chosen_num_frames",
                 "rejected_num_frames", "aspects"),
    ),
    Export.Format.VIDEODPO: FormatSpec(
        Export.Format.VIDEODPO, "videodpo.zip", "application/zip", "pairs", write_videodpo,
        columns=("group_id", "prompt", "chosen_id", "rejected_id", "chosen_video", "rejected_video", "chosen_duration",
                 "rejected_duration", "weight", "agreement"),
    ),
    Export.Format.HF_DATASETS: FormatSpec(
        Export.Format.HF_DATASETS, "hf_dataset.zip", "application/zip", "pairs", write_hf_datasets,
        columns=(*TRL_READS, "pair_id", "prompt_id", "category", "n_annotators", "source", "created_at"),
    ),
    Export.Format.RAW: FormatSpec(
        Export.Format.RAW, "judgments.jsonl", "application/x-ndjson", "judgments",
        lambda chunks, sink, ctx, tmp: write_jsonl(chunks, sink, ctx, raw_records),
    ),
    Export.Format.MANIFEST: FormatSpec(
        Export.Format.MANIFEST, "manifest.parquet", "application/vnd.apache.parquet", "pairs",
        lambda chunks, sink, ctx, tmp: write_parquet(chunks, sink, ctx, MANIFEST_SCHEMA, manifest_columns),
        columns=("pair_id", "round_id", "prompt_id", "chosen_id", "rejected_id", "chosen_latent", "rejected_latent",
                 "text_embedding", "weight", "source", "agreement", "aspects", "segments"),
    ),
}


ZIPPED_FORMATS = (Export.Format.VIDEODPO, Export.Format.HF_DATASETS)


def artifact_name(*, format: str, media: str = "none") -> tuple[str, str]:
    """(file name, content type) of the artifact: a single-file format with bundled media becomes a ZIP of the file
    and ``media/`` (``trl.jsonl`` -> ``trl.jsonl.zip``)."""
    spec = FORMATS[format]
    if media == "bundle" and format not in ZIPPED_FORMATS:
        return f"{spec.filename}.zip", "application/zip"
    return spec.filename, spec.content_type


def artifact_write(*, format: str, chunks: Iterable[list[tuple]], path: Path, ctx: WriteContext) -> Artifact:
    """Write the artifact of ``format`` at ``path``, hashing while writing (the bundled videos included)."""
    spec = FORMATS[format]
    mode = ctx.media.mode if ctx.media is not None else "none"
    filename, content_type = artifact_name(format=format, media=mode)
    if ctx.media is not None:
        chunks = ctx.media.rows(chunks, ctx.index if spec.rows == "pairs" else JUDGMENT_INDEX)
    with open(path, "wb") as raw, tempfile.TemporaryDirectory(prefix="export-") as tmp:
        hashing = HashingWriter(raw)
        sink = io.BufferedWriter(hashing, buffer_size=1 << 20)
        if filename != spec.filename:  # the single file first, then the ZIP of it and its videos
            inner = Path(tmp) / spec.filename
            with open(inner, "wb") as fh:
                rows = spec.write(chunks, fh, ctx, Path(tmp))
            _zip_files(sink, [(spec.filename, inner)], zipfile.ZIP_DEFLATED, ctx)
        else:
            rows = spec.write(chunks, sink, ctx, Path(tmp))
        sink.close()  # flushes into the hash; the file itself is closed by the ``with``
        return Artifact(filename, content_type, hashing.hexdigest, hashing.size, rows)
