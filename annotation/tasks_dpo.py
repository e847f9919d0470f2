"""The DPO-run task (queue ``train``): manifest -> ``dpo`` trainer -> metrics in the DB -> registered checkpoint.

Idempotent and resumable: a redelivered task (worker killed mid-epoch) resumes from the run folder's newest
``checkpoints/step-N``; a finished run is left alone."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from celery import shared_task
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from annotation import storage
from annotation.models import DPORun
from annotation.services.dpo_runs import dpo_run_finish, dpo_run_record_metrics, pair_weight, pairs_for_training

logger = logging.getLogger(__name__)

MANIFEST_SCHEMA = pa.schema([
    ("pair_id", pa.string()), ("round", pa.int64()), ("prompt_id", pa.int64()),
    ("chosen_candidate", pa.int64()), ("rejected_candidate", pa.int64()),
    ("chosen_latent_uri", pa.string()), ("rejected_latent_uri", pa.string()), ("text_embedding_uri", pa.string()),
    ("weight", pa.float64()), ("source", pa.string()), ("agreement", pa.float64()),
])


def runs_dir() -> Path:
    return Path(settings.VIDEODPO.get("RUNS_DIR") or Path(settings.VIDEODPO["MODEL_CACHE_DIR"]).parent / "dpo-runs")


def manifest_write(*, run: DPORun, path: Path, batch_size: int = 10_000) -> int:
    """The trainer manifest (docs/contracts.md) for the run's pair selection, written in row-group batches."""
    f = run.pair_filter
    pairs = pairs_for_training(round_ids=f["round_ids"], min_agreement=f.get("min_agreement", 0.0),
                               min_annotators=f.get("min_annotators", 1))
    rows = 0
    with pq.ParquetWriter(path, MANIFEST_SCHEMA) as writer:
        batch: list[dict] = []
        for pair in pairs.iterator(chunk_size=batch_size):
            batch.append({
                "pair_id": str(pair.id), "round": pair.round_id, "prompt_id": pair.group.prompt_id,
                "chosen_candidate": pair.chosen_id, "rejected_candidate": pair.rejected_id,
                "chosen_latent_uri": pair.chosen.latent_uri, "rejected_latent_uri": pair.rejected.latent_uri,
                "text_embedding_uri": pair.chosen.text_embedding_uri,
                "weight": pair_weight(pair, f.get("weighting", "agreement")), "source": pair.source,
                "agreement": float(pair.agreement),
            })
            if len(batch) >= batch_size:
                writer.write_table(pa.Table.from_pylist(batch, schema=MANIFEST_SCHEMA))
                rows, batch = rows + len(batch), []
        if batch:
            writer.write_table(pa.Table.from_pylist(batch, schema=MANIFEST_SCHEMA))
            rows += len(batch)
    return rows


def _publish(final_dir: Path, run: DPORun) -> str:
    return _publish_root(final_dir, f"dpo-run-{run.id}")


def _publish_root(final_dir: Path, label: str) -> str:
    """Where a new model root lives: the local folder, or uploaded under ``checkpoints/<label>/`` on S3."""
    if not storage.is_s3():
        return str(final_dir.resolve())
    prefix = storage.checkpoint_prefix(checkpoint_id=label)
    for folder, _, files in os.walk(final_dir, followlinks=True):  # the VAE/text encoders are symlinks
        for name in sorted(files):
            path = Path(folder) / name
            storage.object_save_file(key=prefix + str(path.relative_to(final_dir)), path=path)
    return storage.uri_for(prefix.rstrip("/"))


def _empty_prompt_embedding_ensure(run: DPORun, init: Path, out_dir: Path) -> None:
    """Prompt dropout with the app's default null embedding: encode the empty prompt once per checkpoint."""
    key = storage.empty_prompt_embedding_key(checkpoint_id=run.init_checkpoint_id)
    if run.config.get("null_text_embedding_uri") != storage.uri_for(key) or storage.object_exists(key=key):
        return
    from generation_workers.pipeline_cache import resolve_device
    from model.pipeline import write_text_embedding_file

    path = out_dir / "empty-prompt.safetensors"  # the worker's device (VIDEODPO_DEVICE): the GPU on a train box
    write_text_embedding_file(init, "", path, preset=run.init_checkpoint.preset, device=resolve_device())
    storage.object_save_file(key=key, path=path)


def _train_subprocess(run: DPORun, manifest: Path, init: Path, reference: Path, out_dir: Path, nproc: int) -> None:
    """Several GPUs: ``torchrun -m dpo train`` (FSDP); metrics are read back from metrics.jsonl afterwards."""
    import json

    config_path = out_dir / "config.json"
    config_path.write_text(json.dumps({k: v for k, v in run.config.items() if k != "nproc_per_node"}))
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "-m", "dpo", "train",
           "--config", str(config_path), "--manifest", str(manifest), "--init", str(init), "--reference", str(reference),
           "--out", str(out_dir), "--resume"]
    subprocess.run(cmd, check=True, env=dict(os.environ))
    for line in (out_dir / "metrics.jsonl").read_text().splitlines():
        dpo_run_record_metrics(run_id=run.id, metrics=json.loads(line))


@shared_task(name="annotation.tasks_dpo.dpo_run_execute", acks_late=True)
def dpo_run_execute(run_id: int) -> str:
    from dpo.config import FlowDPOConfig
    from dpo.trainer import train
    from generation_workers.checkpoints import resolve_model_root

    run = DPORun.objects.select_related("init_checkpoint", "reference_checkpoint").get(id=run_id)
    if run.status in (DPORun.Status.DONE, DPORun.Status.FAILED, DPORun.Status.CANCELLED):
        return run.status
    if run.cancel_requested:
        return dpo_run_finish(run_id=run_id, status=DPORun.Status.CANCELLED, error="cancelled").status
    DPORun.objects.filter(id=run_id).update(status=DPORun.Status.RUNNING, started_at=run.started_at or timezone.now())
    # unique per row (ids restart in another database); the same on redelivery, so a killed run resumes
    out_dir = runs_dir() / f"run-{run.id}-{run.created_at:%Y%m%dT%H%M%S%f}"
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        manifest = out_dir / "manifest.parquet"
        manifest_write(run=run, path=manifest)
        init = resolve_model_root(run.init_checkpoint.uri)
        reference = resolve_model_root((run.reference_checkpoint or run.init_checkpoint).uri)
        _empty_prompt_embedding_ensure(run, init, out_dir)
        nproc = int(run.config.get("nproc_per_node", 1))
        if nproc > 1:
            _train_subprocess(run, manifest, init, reference, out_dir, nproc)
            final_dir, stopped, summary = out_dir / "final", False, {}
        else:
            config = FlowDPOConfig.from_dict({k: v for k, v in run.config.items() if k != "nproc_per_node"})
            stop = threading.Event()

            def on_metrics(metrics: dict) -> None:
                if dpo_run_record_metrics(run_id=run_id, metrics=metrics):
                    stop.set()

            result = train(config, manifest=manifest, init=init, reference=reference, out_dir=out_dir, resume=True,
                           on_metrics=on_metrics, stop_event=stop)
            final_dir, stopped, summary = result.final_dir, result.stopped, result.metrics
        if stopped:
            keep = str(result.last_checkpoint or "")
            return dpo_run_finish(run_id=run_id, status=DPORun.Status.CANCELLED, error="cancelled by a researcher",
                                  output_uri=keep, summary=summary).status
        uri = _publish(Path(final_dir), run)
        summary = {k: v for k, v in (summary or {}).items() if isinstance(v, (int, float, str))}
        return dpo_run_finish(run_id=run_id, status=DPORun.Status.DONE, output_uri=uri, summary=summary).status
    except Exception as exc:  # noqa: BLE001 - any failure is recorded on the run, with its last checkpoint kept
        logger.exception("DPO run %s failed", run_id)
        last = sorted((out_dir / "checkpoints").glob("step-*")) if (out_dir / "checkpoints").exists() else []
        return dpo_run_finish(run_id=run_id, status=DPORun.Status.FAILED, error=f"{type(exc).__name__}: {exc}",
                              output_uri=str(last[-1]) if last else "").status


@shared_task(name="annotation.tasks_dpo.checkpoint_average_run", acks_late=True)
def checkpoint_average_run(checkpoint_ids: list[int], name: str, actor_id: int | None = None) -> int:
    """Average the DiT weights of ``checkpoint_ids`` into a new model root (VAE and text encoders linked from the
    first); idempotent by name."""
    from annotation.models import Checkpoint
    from dpo.average import average_checkpoints
    from generation_workers.checkpoints import resolve_model_root

    existing = Checkpoint.objects.filter(name=name).first()
    if existing is not None:
        return existing.id
    sources = list(Checkpoint.objects.filter(id__in=checkpoint_ids).order_by("id"))
    roots = [resolve_model_root(c.uri) for c in sources]
    out = runs_dir() / f"average-{'-'.join(str(c.id) for c in sources)}-{name}"
    average_checkpoints(roots, out)
    for entry in roots[0].iterdir():
        if entry.name != "transformer" and not (out / entry.name).exists():
            (out / entry.name).symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
    uri = _publish_root(out, f"averaged-{name}")
    with transaction.atomic():  # the checkpoint appears complete (with its sources) or not at all
        checkpoint = Checkpoint.objects.create(
            name=name, uri=uri, preset=sources[0].preset, kind=Checkpoint.Kind.AVERAGED, parent=sources[0],
            reference=sources[0].reference, created_by_id=actor_id,
            config={"averaged_from": [c.name for c in sources], "method": "uniform mean of DiT weights"},
        )
        checkpoint.averaged_from.set(sources)
    return checkpoint.id
