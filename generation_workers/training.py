"""DPO training on the workers (queue ``train``): a run's manifest export -> the ``dpo`` trainer -> metrics in the
database -> the new model root published and registered; and checkpoint averaging. The tasks in ``tasks.py`` only
call these; every state change goes through the annotation services.

A run's data is its manifest export (``DPORun.manifest_export``): the job runs that export (idempotent: a finished one
returns at once) and trains on a copy of its artifact. One process trains in place (``dpo.trainer.train`` with a
metrics callback and a stop event); ``config["nproc_per_node"] > 1`` runs ``torchrun -m dpo train``, whose
``metrics.jsonl`` is tailed while it runs, and a cancel stops its ranks with SIGTERM (each finishes the current step
and saves a resumable checkpoint), so both paths stream their curves live and honour cancel alike.

Idempotent and resumable: a redelivered job (worker killed mid-run) resumes from the run folder's newest
``checkpoints/step-N``; a finished run is left alone.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from annotation import storage
from annotation.conf import videodpo
from annotation.models import Checkpoint, DPORun, RewardRun
from annotation.services.checkpoints import checkpoint_average_register
from annotation.services.dpo_runs import (
    dpo_run_cancel_requested,
    dpo_run_finish,
    dpo_run_mark_running,
    dpo_run_record_metrics,
)
from annotation.services.exports import export_artifact_key, export_run
from annotation.services.reward_runs import (
    reward_run_finish,
    reward_run_mark_running,
    reward_run_record_metrics,
    reward_scores_store,
    scorable_candidates,
)
from generation_workers.checkpoints import resolve_model_root

logger = logging.getLogger(__name__)

POLL_S = 1.0  # how often the torchrun path reads new metrics and checks for a cancel


@dataclass
class TrainOutcome:
    stopped: bool  # a cancel ended the run early (a resumable checkpoint was saved)
    final_dir: Path | None  # the final model root (None when stopped)
    last_checkpoint: Path | None
    summary: dict = field(default_factory=dict)  # the last step's metrics


def runs_dir() -> Path:
    return videodpo().runs_dir


def run_folder(run: DPORun) -> Path:
    """Unique per row (ids restart in another database) and the same on redelivery, so a killed run resumes."""
    return runs_dir() / f"run-{run.id}-{run.created_at:%Y%m%dT%H%M%S%f}"


def _newest_checkpoint(out_dir: Path) -> Path | None:
    steps = sorted((out_dir / "checkpoints").glob("step-*"), key=lambda p: int(p.name.rsplit("-", 1)[-1]))
    return steps[-1] if steps else None


# -- data and model roots ---------------------------------------------------------------------------------------------
def manifest_fetch(*, run: DPORun | RewardRun, out_dir: Path) -> Path:
    """Run the run's data export (a DPO or a latent reward run's manifest, a VLM reward run's VideoAlign CSV) and copy
    its artifact into the run folder (what the trainer reads)."""
    from annotation.exports.formats import artifact_name

    if run.manifest_export_id is None:
        raise ValueError(f"run {run.name!r} has no data export (runs are created by their services)")
    export = export_run(export_id=run.manifest_export_id)
    path = out_dir / artifact_name(format=export.format)[0]
    storage.object_download(key=export_artifact_key(export=export), path=path)
    return path


def model_root_publish(final_dir: Path, label: str) -> str:
    """Where a new model root lives: the local folder, or uploaded under ``checkpoints/<label>/`` on S3."""
    if not storage.is_s3():
        return str(final_dir.resolve())
    prefix = storage.checkpoint_prefix(checkpoint_id=label)
    for folder, _, files in os.walk(final_dir, followlinks=True):  # the VAE/text encoders are symlinks
        for name in sorted(files):
            path = Path(folder) / name
            storage.object_save_file(key=prefix + str(path.relative_to(final_dir)), path=path)
    return storage.uri_for(prefix.rstrip("/"))


def empty_prompt_embedding_ensure(*, run: DPORun, init: Path, out_dir: Path) -> None:
    """Prompt dropout with the app's default null embedding: encode the empty prompt once per checkpoint, on the
    worker's device (``VIDEODPO["DEVICE"]``: the GPU on a train box)."""
    key = storage.empty_prompt_embedding_key(checkpoint_id=run.init_checkpoint_id)
    if run.config.get("null_text_embedding_uri") != storage.uri_for(key) or storage.object_exists(key=key):
        return
    from generation_workers.pipeline_cache import resolve_device
    from model.pipeline import write_text_embedding_file

    path = out_dir / "empty-prompt.safetensors"
    write_text_embedding_file(init, "", path, preset=run.init_checkpoint.preset, device=resolve_device())
    storage.object_save_file(key=key, path=path)


# -- the two ways to train --------------------------------------------------------------------------------------------
def train_in_process(*, run: DPORun, config: dict, manifest: Path, init: Path, reference: Path,
                     out_dir: Path) -> TrainOutcome:
    from dpo.config import FlowDPOConfig
    from dpo.trainer import train

    stop = threading.Event()

    def on_metrics(metrics: dict) -> None:
        if dpo_run_record_metrics(run_id=run.id, metrics=metrics):
            stop.set()

    result = train(FlowDPOConfig.from_dict(config), manifest=manifest, init=init, reference=reference,
                   out_dir=out_dir, resume=True, on_metrics=on_metrics, stop_event=stop)
    return TrainOutcome(result.stopped, result.final_dir, result.last_checkpoint, dict(result.metrics or {}))


class MetricsTail:
    """New complete lines of a growing ``metrics.jsonl`` (one JSON object per optimizer step). A file that shrank (a
    resumed trainer truncates it to its checkpoint's step) is read again from the start."""

    def __init__(self, path: Path):
        self.path, self.offset, self.last = path, 0, {}

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        size = self.path.stat().st_size
        if size < self.offset:
            self.offset = 0
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            data = fh.read(size - self.offset)
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next read
        self.offset += end
        rows = [json.loads(line) for line in data[:end].decode("utf-8").splitlines() if line.strip()]
        if rows:
            self.last = rows[-1]
        return rows


def _stop_ranks(proc: subprocess.Popen) -> None:
    """SIGTERM to the trainer ranks under torchrun (not torchrun itself, which would kill them after 30 s): each
    finishes its step, the ranks agree to stop, save a resumable checkpoint and exit 0."""
    import psutil

    try:
        ranks = psutil.Process(proc.pid).children(recursive=False)
    except psutil.NoSuchProcess:
        return
    for rank in ranks:
        try:
            rank.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass


def train_torchrun(*, run: DPORun, config: dict, manifest: Path, init: Path, reference: Path, out_dir: Path,
                   nproc: int) -> TrainOutcome:
    """Several GPUs: ``torchrun -m dpo train`` (FSDP/DDP); metrics are recorded as the ranks write them."""
    config_path = out_dir / "config.json"
    config_path.write_text(json.dumps(config))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "dpo", "train",
           "--config", str(config_path), "--manifest", str(manifest), "--init", str(init), "--reference", str(reference),
           "--out", str(out_dir), "--resume", "--no-progress"]
    tail = MetricsTail(out_dir / "metrics.jsonl")
    cancelled = stop_sent = False
    proc = subprocess.Popen(cmd, env=dict(os.environ))
    try:
        while True:
            finished = proc.poll() is not None
            for metrics in tail.read():
                cancelled = dpo_run_record_metrics(run_id=run.id, metrics=metrics) or cancelled
            cancelled = cancelled or dpo_run_cancel_requested(run_id=run.id)
            if cancelled and not finished and not stop_sent:
                logger.info("DPO run %s: cancel requested, stopping the torchrun ranks", run.id)
                _stop_ranks(proc)
                stop_sent = True
            if finished:
                break
            time.sleep(POLL_S)
    finally:
        if proc.poll() is None:  # the job itself failed (e.g. the database went away): leave no orphan ranks
            proc.terminate()
            proc.wait(60)
    status_path = out_dir / "run_status.json"
    state = json.loads(status_path.read_text()) if status_path.is_file() else {}
    stopped = state.get("state") == "stopped"
    if proc.returncode == 0 and not stopped:
        return TrainOutcome(False, out_dir / "final", _newest_checkpoint(out_dir), tail.last)
    if stopped or cancelled:  # a rank stopped before it could save still leaves the newest checkpoint
        return TrainOutcome(True, None, _newest_checkpoint(out_dir), tail.last)
    raise RuntimeError(f"torchrun -m dpo train exited with {proc.returncode}"
                       + (f": {state['error']}" if state.get("error") else ""))


# -- the jobs ---------------------------------------------------------------------------------------------------------
def dpo_run_execute(*, run_id: int) -> str:
    """Train one DPO run end to end; returns the run's final status (every failure is recorded on the run, with its
    last checkpoint kept)."""
    run = dpo_run_mark_running(run_id=run_id)
    if run is None:
        return DPORun.objects.values_list("status", flat=True).get(id=run_id)
    out_dir = run_folder(run)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        manifest = manifest_fetch(run=run, out_dir=out_dir)
        init = resolve_model_root(run.init_checkpoint.uri)
        reference = resolve_model_root((run.reference_checkpoint or run.init_checkpoint).uri)
        empty_prompt_embedding_ensure(run=run, init=init, out_dir=out_dir)
        config = {k: v for k, v in run.config.items() if k != "nproc_per_node"}
        nproc = int(run.config.get("nproc_per_node", 1))
        train = train_torchrun if nproc > 1 else train_in_process
        kwargs = {"nproc": nproc} if nproc > 1 else {}
        outcome = train(run=run, config=config, manifest=manifest, init=init, reference=reference, out_dir=out_dir,
                        **kwargs)
        summary = {k: v for k, v in outcome.summary.items() if isinstance(v, (int, float, str))}
        if outcome.stopped:
            return dpo_run_finish(run_id=run_id, status=DPORun.Status.CANCELLED, error="cancelled by a researcher",
                                  output_uri=str(outcome.last_checkpoint or ""), summary=summary).status
        uri = model_root_publish(Path(outcome.final_dir), f"dpo-run-{run.id}")
        return dpo_run_finish(run_id=run_id, status=DPORun.Status.DONE, output_uri=uri, summary=summary).status
    except Exception as exc:  # noqa: BLE001 - any failure is recorded on the run, with its last checkpoint kept
        logger.exception("DPO run %s failed", run_id)
        last = _newest_checkpoint(out_dir)
        return dpo_run_finish(run_id=run_id, status=DPORun.Status.FAILED, error=f"{type(exc).__name__}: {exc}",
                              output_uri=str(last) if last else "").status


def reward_run_execute(*, run_id: int) -> str:
    """Train one reward-model run: its data export -> ``dpo.reward`` on the starting checkpoint's DiT (latent) or
    ``dpo.reward_vlm`` on the run's VLM (vlm) -> the curve in RewardMetric rows -> the reward folder published (local,
    or under ``checkpoints/reward-run-<id>/`` on S3) with its accuracies. Idempotent: a redelivered job resumes from
    the run folder's saved state; a closed run is left alone; a cancel stops it at the next step (its state saved)."""
    run = reward_run_mark_running(run_id=run_id)
    if run is None:
        return RewardRun.objects.values_list("status", flat=True).get(id=run_id)
    out_dir = runs_dir() / f"reward-{run.id}-{run.created_at:%Y%m%dT%H%M%S%f}"
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        data = manifest_fetch(run=run, out_dir=out_dir)
        every = max(1, int(run.config["steps"]) // 100)  # about 100 points on the curve

        def on_step(metrics: dict) -> bool:
            if metrics["step"] % every and metrics["step"] != int(run.config["steps"]):
                return False
            return reward_run_record_metrics(run_id=run_id, metrics=metrics)

        lineage = {"reward_run": run.id, "data_rounds": list(run.data_rounds.values_list("id", flat=True)),
                   **({"init_checkpoint": run.init_checkpoint.name} if run.init_checkpoint else {}),
                   **({"vlm_root": run.vlm_root} if run.vlm_root else {})}
        train = _train_vlm_reward if run.backbone == RewardRun.Backbone.VLM else _train_latent_reward
        outcome = train(run, data, out_dir / "reward", on_step=on_step, lineage=lineage)
        if outcome.stopped:
            return reward_run_finish(run_id=run_id, status=RewardRun.Status.CANCELLED,
                                     error="cancelled by a researcher").status
        uri = model_root_publish(out_dir / "reward", f"reward-run-{run.id}")
        summary = {"train_pairs": outcome.train_pairs, "heldout_pairs": outcome.heldout_pairs, **outcome.metrics}
        return reward_run_finish(run_id=run_id, status=RewardRun.Status.DONE, output_uri=uri, summary=summary).status
    except Exception as exc:  # noqa: BLE001 - any failure is recorded on the run
        logger.exception("reward run %s failed", run_id)
        return reward_run_finish(run_id=run_id, status=RewardRun.Status.FAILED,
                                 error=f"{type(exc).__name__}: {exc}").status


def _train_latent_reward(run: RewardRun, manifest: Path, out: Path, **kw):
    import torch

    from dpo.data import read_manifest
    from dpo.reward import LatentRewardConfig, train_latent_reward
    from generation_workers.pipeline_cache import resolve_device
    from model.checkpoint import load_dit

    cfg = LatentRewardConfig(**{**run.config, "aspects": tuple(run.config["aspects"])})
    dit = load_dit(resolve_model_root(run.init_checkpoint.uri), device=resolve_device(), dtype=torch.float32)
    return train_latent_reward(read_manifest(str(manifest)), dit, cfg, out, resume=True, progress=False, **kw)


def _vlm_config(run: RewardRun):
    from dpo.reward_config import VLMRewardConfig

    return VLMRewardConfig(**{**run.config, "aspects": tuple(run.config["aspects"]),
                              "lora_targets": tuple(run.config["lora_targets"])})


def _train_vlm_reward(run: RewardRun, videoalign: Path, out: Path, **kw):
    from dpo.reward_vlm import read_videoalign, train_vlm_reward

    return train_vlm_reward(read_videoalign(videoalign), resolve_model_root(run.vlm_root), _vlm_config(run), out,
                            resume=True, progress=False, **kw)


def reward_scores_round(*, run_id: int, round_id: int, batch: int = 16) -> int:
    """Score a round's ready candidates with a finished reward run and store the scores; returns how many. A latent
    run reads each candidate's stored latent and text embedding (its head on its checkpoint's DiT, no decode); a VLM
    run reads the video (the sampled frames) and the prompt."""
    from model.layout import is_s3

    run = RewardRun.objects.select_related("init_checkpoint").get(id=run_id)
    folder = resolve_model_root(run.output_uri) if is_s3(run.output_uri) else Path(run.output_uri)
    score = _vlm_scores if run.backbone == RewardRun.Backbone.VLM else _latent_scores
    return reward_scores_store(run_id=run_id, scores=score(run, folder, round_id, batch))


def _latent_scores(run: RewardRun, folder: Path, round_id: int, batch: int) -> dict[int, dict[str, float]]:
    import torch

    from dpo.data import PairDataset
    from dpo.reward import LatentRewardModel, candidate_batch
    from generation_workers.pipeline_cache import resolve_device
    from model.checkpoint import load_dit

    dit = load_dit(resolve_model_root(run.init_checkpoint.uri), device=resolve_device(), dtype=torch.float32)
    model = LatentRewardModel(dit, folder)
    candidates = list(scorable_candidates(round_id=round_id).order_by("id").values_list(
        "id", "latent_uri", "text_embedding_uri"))
    texts, scores = PairDataset([]), {}
    for start in range(0, len(candidates), batch):
        chunk = candidates[start : start + batch]
        keys = [(lat, txt) for _, lat, txt in chunk]
        latents, text = candidate_batch(keys, texts)
        out = model.score(latents, text, keys=keys)  # (b, A)
        for (cid, _, _), row in zip(chunk, out.tolist(), strict=True):
            scores[cid] = {a: round(v, 5) for a, v in zip(model.aspects, row, strict=True)}
    return scores


def _vlm_scores(run: RewardRun, folder: Path, round_id: int, batch: int) -> dict[int, dict[str, float]]:
    from dpo.reward_vlm import VLMRewardModel, read_clip

    model = VLMRewardModel(folder, vlm_root=resolve_model_root(run.vlm_root))
    candidates = list(scorable_candidates(round_id=round_id, backbone=run.backbone).order_by("id").values_list(
        "id", "video_uri", "group__prompt__text"))
    batch = min(batch, model.cfg.batch)
    scores = {}
    for start in range(0, len(candidates), batch):
        chunk = candidates[start : start + batch]
        clips = [read_clip(uri, model.cfg.frames) for _, uri, _ in chunk]
        out = model.score(clips, [text for _, _, text in chunk], names=[uri for _, uri, _ in chunk])  # (b, A)
        for (cid, _, _), row in zip(chunk, out.tolist(), strict=True):
            scores[cid] = {a: round(v, 5) for a, v in zip(model.aspects, row, strict=True)}
    return scores


def checkpoint_average(*, checkpoint_ids: list[int], name: str, actor_id: int | None = None) -> int:
    """Average the DiT weights of ``checkpoint_ids`` into a new model root (VAE and text encoders linked from the
    first), publish it and register it; idempotent by name."""
    from dpo.average import average_checkpoints

    existing = Checkpoint.objects.filter(name=name).values_list("id", flat=True).first()
    if existing is not None:
        return existing
    sources = list(Checkpoint.objects.filter(id__in=checkpoint_ids).order_by("id"))
    roots = [resolve_model_root(c.uri) for c in sources]
    out = runs_dir() / f"average-{'-'.join(str(c.id) for c in sources)}-{name}"
    average_checkpoints(roots, out)
    for entry in roots[0].iterdir():
        if entry.name != "transformer" and not (out / entry.name).exists():
            (out / entry.name).symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
    uri = model_root_publish(out, f"averaged-{name}")
    return checkpoint_average_register(checkpoint_ids=[c.id for c in sources], name=name, uri=uri,
                                       actor_id=actor_id).id
