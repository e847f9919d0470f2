"""Pair manifest -> validated records -> dataset of (chosen, rejected, text) tensors, bucketed by latent shape.

Manifest (Parquet or JSONL, docs/contracts.md): ``pair_id, round, prompt_id, chosen_candidate, rejected_candidate,
chosen_latent_uri, rejected_latent_uri, text_embedding_uri, weight, source, agreement``.
Latent objects: safetensors with tensor ``latent`` (F, C, h, w) bf16. Text objects: safetensors with ``llm_states``
(L, C_llm), ``llm_mask`` (L,) int8, ``clip_states`` (77, C_clip), ``clip_mask`` (77,) int8.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter, OrderedDict, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dpo.losses import segment_frame_weights
from dpo.storage import load_safetensors, parse_uri, read_bytes, read_safetensors_header, uri_exists

REQUIRED_COLUMNS = (
    "pair_id",
    "round",
    "prompt_id",
    "chosen_latent_uri",
    "rejected_latent_uri",
    "text_embedding_uri",
)
OPTIONAL_COLUMNS = ("chosen_candidate", "rejected_candidate", "weight", "source", "agreement")
LATENT_KEY = "latent"
TEXT_KEYS = ("llm_states", "llm_mask", "clip_states", "clip_mask")


class ManifestError(ValueError):
    """Bad pair data; the message names the pair and the file."""


@dataclass(frozen=True)
class PairRecord:
    pair_id: str
    round: Any
    prompt_id: str
    chosen_latent_uri: str
    rejected_latent_uri: str
    text_embedding_uri: str
    weight: float = 1.0
    chosen_candidate: str | None = None
    rejected_candidate: str | None = None
    source: str | None = None
    agreement: float | None = None
    aspects: dict[str, str] = field(default_factory=dict)  # per-aspect outcome: chosen / rejected / same
    segments: tuple[str, ...] = ()  # per-segment outcome in time order: chosen / rejected / same


# ----------------------------------------------------------------------------------------------------------------
# 1. Manifest
# ----------------------------------------------------------------------------------------------------------------


def _manifest_rows(uri: str) -> list[dict[str, Any]]:
    kind, _, path = parse_uri(uri)
    if kind == "local" and not Path(path).is_file():
        raise ManifestError(f"manifest not found: {uri}")
    suffix = Path(path).suffix.lower()
    data = read_bytes(uri)
    if suffix == ".parquet":
        import io

        import pyarrow.parquet as pq

        return pq.read_table(io.BytesIO(data)).to_pylist()
    if suffix in (".jsonl", ".ndjson", ".json"):
        rows = []
        for i, line in enumerate(data.decode("utf-8").splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ManifestError(f"manifest {uri} line {i} is not valid JSON: {exc}") from exc
        return rows
    raise ManifestError(f"manifest must be .parquet or .jsonl: {uri}")


def read_manifest(uri: str | Path, *, base_dir: str | Path | None = None) -> list[PairRecord]:
    """Parse and check the manifest's columns and values (not the files: see ``validate_pairs``).

    Relative local URIs are resolved against ``base_dir`` (default: the manifest's folder).
    """
    uri = str(uri)
    rows = _manifest_rows(uri)
    if not rows:
        raise ManifestError(f"manifest {uri} is empty: no pairs to train on")
    columns = set().union(*(r.keys() for r in rows))
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ManifestError(f"manifest {uri} is missing required column(s) {missing}; has {sorted(columns)}")
    if base_dir is None and parse_uri(uri)[0] == "local":
        base_dir = Path(parse_uri(uri)[2]).resolve().parent
    records, seen = [], set()
    for i, row in enumerate(rows):
        pid = row.get("pair_id")
        if pid is None or str(pid) == "":
            raise ManifestError(f"manifest {uri} row {i}: empty pair_id")
        pid = str(pid)
        if pid in seen:
            raise ManifestError(f"manifest {uri}: duplicate pair_id {pid!r}")
        seen.add(pid)
        for col in ("chosen_latent_uri", "rejected_latent_uri", "text_embedding_uri"):
            if not row.get(col):
                raise ManifestError(f"pair {pid!r}: empty {col}")
        weight = row.get("weight")
        weight = 1.0 if weight is None else float(weight)
        if not math.isfinite(weight) or weight < 0:
            raise ManifestError(f"pair {pid!r}: weight must be a finite number >= 0, got {row.get('weight')!r}")
        if row["chosen_latent_uri"] == row["rejected_latent_uri"]:
            raise ManifestError(f"pair {pid!r}: chosen and rejected point to the same file {row['chosen_latent_uri']}")
        records.append(
            PairRecord(
                pair_id=pid,
                round=row.get("round"),
                prompt_id=str(row.get("prompt_id")),
                chosen_latent_uri=_resolve(row["chosen_latent_uri"], base_dir),
                rejected_latent_uri=_resolve(row["rejected_latent_uri"], base_dir),
                text_embedding_uri=_resolve(row["text_embedding_uri"], base_dir),
                weight=weight,
                chosen_candidate=_opt_str(row.get("chosen_candidate")),
                rejected_candidate=_opt_str(row.get("rejected_candidate")),
                source=_opt_str(row.get("source")),
                agreement=None if row.get("agreement") is None else float(row["agreement"]),
                aspects=_aspects(row.get("aspects"), pid),
                segments=_segments(row.get("segments"), pid),
            )
        )
    return records


ASPECT_OUTCOMES = ("chosen", "rejected", "same")


def _aspects(value: Any, pid: str) -> dict[str, str]:
    """The optional ``aspects`` column: a JSON object (or a dict) of aspect -> chosen / rejected / same."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"pair {pid!r}: aspects is not valid JSON: {exc}") from exc
    if not isinstance(value, dict) or any(v not in ASPECT_OUTCOMES for v in value.values()):
        raise ManifestError(f"pair {pid!r}: aspects must map aspect names to one of {ASPECT_OUTCOMES}, got {value!r}")
    return {str(k): v for k, v in value.items()}


def _segments(value: Any, pid: str) -> tuple[str, ...]:
    """The optional ``segments`` column: a JSON list (or a list) of chosen / rejected / same, one per segment."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"pair {pid!r}: segments is not valid JSON: {exc}") from exc
    if not isinstance(value, list) or any(v not in ASPECT_OUTCOMES for v in value):
        raise ManifestError(f"pair {pid!r}: segments must be a list of {ASPECT_OUTCOMES}, got {value!r}")
    return tuple(value)


def _opt_str(v: Any) -> str | None:
    return None if v is None else str(v)


def _resolve(uri: str, base_dir: str | Path | None) -> str:
    uri = str(uri)
    kind, _, path = parse_uri(uri)
    if kind == "local" and base_dir is not None and not Path(path).is_absolute():
        return str(Path(base_dir) / path)
    return uri


# ----------------------------------------------------------------------------------------------------------------
# 2. Validation before training
# ----------------------------------------------------------------------------------------------------------------


def _header_shape(header: dict[str, Any], key: str, pid: str, role: str, uri: str) -> tuple[int, ...]:
    if key not in header:
        found = sorted(k for k in header if k != "__metadata__")
        raise ManifestError(f"pair {pid!r}: {role} file {uri} has no tensor {key!r} (found {found})")
    return tuple(int(s) for s in header[key]["shape"])


def _check_finite(t: torch.Tensor, pid: str, role: str, uri: str, key: str) -> None:
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        n_bad = int((~torch.isfinite(t)).sum())
        raise ManifestError(f"pair {pid!r}: {role} {key!r} in {uri} contains {n_bad} NaN/Inf value(s)")


def validate_pairs(records: list[PairRecord], *, check_values: bool = True) -> list[tuple[int, ...]]:
    """Check every file before training starts; return each pair's latent shape (F, C, h, w).

    Errors name the pair and the file: missing file, missing tensor, wrong rank, chosen/rejected shape mismatch,
    NaN/Inf in a latent or text embedding (``check_values`` reads the tensors; headers alone give the shapes).
    """
    if not records:
        raise ManifestError("manifest is empty: no pairs to train on")
    shapes: list[tuple[int, ...]] = []
    text_checked: dict[str, tuple[int, ...]] = {}
    for rec in records:
        pid = rec.pair_id
        latent_shapes = {}
        for role, uri in (("chosen latent", rec.chosen_latent_uri), ("rejected latent", rec.rejected_latent_uri)):
            if not uri_exists(uri):
                raise ManifestError(f"pair {pid!r}: {role} file not found: {uri}")
            shape = _header_shape(read_safetensors_header(uri), LATENT_KEY, pid, role, uri)
            if len(shape) != 4:
                raise ManifestError(f"pair {pid!r}: {role} {uri} must have shape (F, C, h, w), got {shape}")
            latent_shapes[role] = shape
            if check_values:
                _check_finite(load_safetensors(uri)[LATENT_KEY], pid, role, uri, LATENT_KEY)
        if latent_shapes["chosen latent"] != latent_shapes["rejected latent"]:
            raise ManifestError(
                f"pair {pid!r}: chosen latent shape {latent_shapes['chosen latent']} ({rec.chosen_latent_uri}) "
                f"!= rejected latent shape {latent_shapes['rejected latent']} ({rec.rejected_latent_uri})"
            )
        shapes.append(latent_shapes["chosen latent"])
        uri = rec.text_embedding_uri
        if uri not in text_checked:
            if not uri_exists(uri):
                raise ManifestError(f"pair {pid!r}: text embedding file not found: {uri}")
            header = read_safetensors_header(uri)
            for key in TEXT_KEYS:
                _header_shape(header, key, pid, "text embedding", uri)
            if check_values:
                tensors = load_safetensors(uri)
                for key in ("llm_states", "clip_states"):
                    _check_finite(tensors[key], pid, "text embedding", uri, key)
            text_checked[uri] = ()
    return shapes


# ----------------------------------------------------------------------------------------------------------------
# 3. Dataset, bucketing sampler, collator
# ----------------------------------------------------------------------------------------------------------------


class PairDataset(torch.utils.data.Dataset):
    """Item i -> dict(latent_chosen (F,C,h,w), latent_rejected, llm_states (L,C), llm_mask (L,) bool,
    clip_states (77,C), clip_mask (77,) bool, weight (), pair_id, round)."""

    def __init__(self, records: list[PairRecord], *, text_cache_size: int = 256):
        self.records = records
        self._text_cache: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
        self._text_cache_size = text_cache_size

    def __len__(self) -> int:
        return len(self.records)

    def text_embedding(self, uri: str) -> dict[str, torch.Tensor]:
        """One text-embedding file's tensors (llm_states, llm_mask, clip_states, clip_mask), LRU-cached."""
        if uri in self._text_cache:
            self._text_cache.move_to_end(uri)
            return self._text_cache[uri]
        t = load_safetensors(uri)
        item = {
            "llm_states": t["llm_states"],
            "llm_mask": t["llm_mask"].bool(),
            "clip_states": t["clip_states"],
            "clip_mask": t["clip_mask"].bool(),
        }
        self._text_cache[uri] = item
        if len(self._text_cache) > self._text_cache_size:
            self._text_cache.popitem(last=False)
        return item

    def null_text(self, uri: str) -> dict[str, torch.Tensor]:
        """The empty prompt's text-encoder outputs (prompt dropout), checked against the manifest's embeddings."""
        from dpo.config import ConfigError

        try:
            null = self.text_embedding(uri)
        except Exception as exc:  # noqa: BLE001 - any read failure becomes a config error naming the file
            raise ConfigError(f"null_text_embedding_uri {uri}: cannot read it ({exc})") from exc
        sample_uri = self.records[0].text_embedding_uri
        sample = self.text_embedding(sample_uri)
        for key in ("llm_states", "clip_states"):
            if null[key].shape[-1] != sample[key].shape[-1]:
                raise ConfigError(
                    f"null_text_embedding_uri {uri}: {key} has {null[key].shape[-1]} channels, the manifest's text "
                    f"embeddings ({sample_uri}) have {sample[key].shape[-1]}"
                )
        return dict(null)

    def __getitem__(self, i: int) -> dict[str, Any]:
        rec = self.records[i]
        out: dict[str, Any] = {"pair_id": rec.pair_id, "round": rec.round, "weight": torch.tensor(rec.weight),
                               "segments": rec.segments}
        for role, uri in (("chosen", rec.chosen_latent_uri), ("rejected", rec.rejected_latent_uri)):
            latent = load_safetensors(uri)[LATENT_KEY]
            _check_finite(latent, rec.pair_id, f"{role} latent", uri, LATENT_KEY)
            out[f"latent_{role}"] = latent
        out.update(self.text_embedding(rec.text_embedding_uri))
        return out


def collate_pairs(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack a micro-batch (one latent shape). Text states of unequal length L are right-padded with mask False."""
    batch: dict[str, Any] = {
        "pair_id": [it["pair_id"] for it in items],
        "round": [it["round"] for it in items],
        "weight": torch.stack([it["weight"] for it in items]).float(),  # (B,)
        "latent_chosen": torch.stack([it["latent_chosen"] for it in items]),  # (B, F, C, h, w)
        "latent_rejected": torch.stack([it["latent_rejected"] for it in items]),  # (B, F, C, h, w)
    }
    if any(it.get("segments") for it in items):  # (B, F); without segment labels the plain mean (no key)
        frames = batch["latent_chosen"].shape[1]
        batch["frame_weights"] = torch.stack([segment_frame_weights(it.get("segments") or (), frames) for it in items])
    for states, mask in (("llm_states", "llm_mask"), ("clip_states", "clip_mask")):
        length = max(it[states].shape[0] for it in items)
        s = items[0][states]
        padded = s.new_zeros((len(items), length, s.shape[-1]))  # (B, L, C)
        pmask = torch.zeros((len(items), length), dtype=torch.bool)  # (B, L)
        for j, it in enumerate(items):
            n = it[states].shape[0]
            padded[j, :n] = it[states]
            pmask[j, :n] = it[mask]
        batch[states], batch[mask] = padded, pmask
    return batch


class ShapeBucketBatchSampler:
    """Micro-batches that each hold one latent shape; deterministic order per (seed, epoch).

    With several processes every rank computes the same global list of micro-batches and takes every
    ``world_size``-th one (trimmed so all ranks run the same number of steps).
    """

    def __init__(
        self,
        shapes: list[tuple[int, ...]],
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.buckets: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, s in enumerate(shapes):
            self.buckets[tuple(s)].append(i)
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        self.rank, self.world_size = rank, world_size

    def batches(self, epoch: int) -> list[list[int]]:
        rng = random.Random(self.seed * 1_000_003 + epoch)
        global_batches = []
        for shape in sorted(self.buckets):
            idx = list(self.buckets[shape])
            if self.shuffle:
                rng.shuffle(idx)
            global_batches += [idx[i : i + self.batch_size] for i in range(0, len(idx), self.batch_size)]
        if self.shuffle:
            rng.shuffle(global_batches)
        usable = len(global_batches) - len(global_batches) % self.world_size
        if usable == 0:
            raise ManifestError(
                f"{len(global_batches)} micro-batch(es) cannot feed {self.world_size} processes; add pairs"
            )
        return global_batches[self.rank : usable : self.world_size]

    def __len__(self) -> int:
        n = sum(math.ceil(len(v) / self.batch_size) for v in self.buckets.values())
        return n // self.world_size


def draw_index(n: int, config: Any) -> int:
    """Draw n (= epoch) of a pair; a cached reference has errors for draws 0..K-1 only, so it cycles through them."""
    return n % config.reference_cache_draws if config.reference_mode == "cached" else n


class PairStream:
    """This rank's micro-batches in order, with the data cursor (``epoch``, ``batch_pos``) a checkpoint saves.

    Epoch e gives the sampler's shape-bucketed batches of epoch e, each pair at draw ``draw_index(e)``; with
    ``prompt_dropout`` a pair's text is the empty prompt's (``null_text``) as a pure function of (seed, pair, draw)."""

    def __init__(self, dataset: PairDataset, sampler: ShapeBucketBatchSampler, config: Any,
                 null_text: dict[str, torch.Tensor] | None = None):
        self.dataset, self.sampler, self.config, self.null_text = dataset, sampler, config, null_text
        self.epoch = self.batch_pos = 0
        self._batches: list[list[int]] | None = None
        self._batches_for = -1

    def __len__(self) -> int:
        return len(self.sampler)

    def next(self) -> dict[str, Any]:
        if self._batches_for != self.epoch:
            self._batches, self._batches_for = self.sampler.batches(self.epoch), self.epoch
        if self.batch_pos >= len(self._batches):
            self.epoch, self.batch_pos = self.epoch + 1, 0
            return self.next()
        batch = self.collate(self._batches[self.batch_pos], draw_index(self.epoch, self.config))
        self.batch_pos += 1
        return batch

    def collate(self, indices: list[int], draw: int, items: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """A micro-batch of pairs (``items``: already loaded ``dataset[i]`` of ``indices``), tagged with its draw."""
        from dpo.losses import pair_seed

        items = [dict(it) for it in items] if items is not None else [self.dataset[i] for i in indices]
        p = self.config.prompt_dropout
        if p > 0:
            for item in items:
                if pair_seed(self.config.seed, f"{item['pair_id']}/prompt-dropout", draw) / 2.0**63 < p:
                    item.update(self.null_text)
        batch = collate_pairs(items)
        batch["draw"] = draw
        return batch

    def summary(self) -> dict[str, Any]:
        """Pairs per round / per source and latent-shape buckets (``data_summary.json``)."""
        records = self.dataset.records
        return {"num_pairs": len(records), "pairs_by_round": dict(Counter(str(r.round) for r in records)),
                "pairs_by_source": dict(Counter(str(r.source) for r in records)),
                "latent_shapes": {str(k): len(v) for k, v in self.sampler.buckets.items()}}
