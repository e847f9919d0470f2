"""DPO training on the workers: the multi-process (torchrun) path records metrics while the ranks run and honours a
cancel like the in-process path (the ranks finish a step, save a resumable checkpoint and stop)."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest

from generation_workers.training import MetricsTail, train_torchrun


def test_metrics_tail_reads_complete_lines_and_rereads_a_truncated_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    tail = MetricsTail(path)
    assert tail.read() == []  # not written yet
    path.write_text('{"step": 1}\n{"step": 2}\n{"st')
    assert [m["step"] for m in tail.read()] == [1, 2]  # the half-written line waits
    with open(path, "a") as fh:
        fh.write('ep": 3}\n')
    assert [m["step"] for m in tail.read()] == [3] and tail.read() == []
    path.write_text('{"step": 2}\n')  # a resumed trainer truncates to its checkpoint's step and writes again
    assert [m["step"] for m in tail.read()] == [2] and tail.last == {"step": 2}


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_torchrun_path_streams_metrics_live_and_stops_on_cancel(tiny_root, tmp_path, monkeypatch):
    from annotation.models import Checkpoint, DPOMetric, DPORun
    from annotation.services.dpo_runs import dpo_run_cancel
    from model.presets import get_preset
    from tests.dpo.conftest import make_manifest

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    manifest = make_manifest(tmp_path / "data", get_preset("tiny").dit, num_pairs=4)
    base = Checkpoint.objects.create(name=f"base-{uuid.uuid4().hex[:6]}", uri=str(tiny_root), preset="tiny")
    run = DPORun.objects.create(name=f"run-{uuid.uuid4().hex[:6]}", init_checkpoint=base, reference_checkpoint=base,
                                status=DPORun.Status.RUNNING, progress_total=100_000)
    config = {"beta": 50.0, "learning_rate": 1e-4, "bf16": False, "max_steps": 100_000, "save_steps": 0,
              "per_device_train_batch_size": 1, "final_dtype": "float32"}
    seen_live: list[int] = []

    def researcher() -> None:  # waits for curves while the ranks run, then cancels from the run page's service
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and DPOMetric.objects.filter(run=run).count() < 3:
            time.sleep(0.2)
        seen_live.append(DPOMetric.objects.filter(run=run).count())
        dpo_run_cancel(run_id=run.id)

    thread = threading.Thread(target=researcher)
    thread.start()
    out = tmp_path / "run"
    out.mkdir()
    started = time.monotonic()
    outcome = train_torchrun(run=run, config=config, manifest=manifest, init=tiny_root, reference=tiny_root,
                             out_dir=out, nproc=2)
    thread.join(10)
    assert seen_live and seen_live[0] >= 3  # recorded while the ranks were still training
    assert outcome.stopped and outcome.final_dir is None and time.monotonic() - started < 300
    assert outcome.last_checkpoint is not None and outcome.last_checkpoint.is_dir()  # resumable
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert 3 <= len(lines) < 100_000
    steps = list(DPOMetric.objects.filter(run=run).order_by("step").values_list("step", flat=True))
    assert steps == [m["step"] for m in lines]  # every step reached the database, none twice
    run.refresh_from_db()
    assert run.progress_step == lines[-1]["step"] and outcome.last_checkpoint.name == f"step-{lines[-1]['step']}"
    assert json.loads((out / "run_status.json").read_text())["state"] == "stopped"


@pytest.mark.django_db
def test_the_run_trains_on_its_manifest_export_artifact(tmp_path, monkeypatch):
    """The job runs the run's manifest export and hands the trainer a copy of exactly that artifact."""
    import hashlib

    from annotation.models import Export
    from annotation.services.dpo_runs import dpo_run_create
    from generation_workers.training import manifest_fetch
    from tests.exports.factories import build_loop

    monkeypatch.setattr("annotation.services.candidates.checkpoint_validate", lambda checkpoint: None)
    loop = build_loop(n_prompts=2)
    run = dpo_run_create(name="run", round_ids=[loop.gen_round.pk], init_checkpoint=loop.base, launch=False)
    assert run.manifest_export.status == Export.Status.QUEUED
    path = manifest_fetch(run=run, out_dir=tmp_path)
    run.manifest_export.refresh_from_db()
    assert run.manifest_export.status == Export.Status.DONE and run.manifest_export.row_count == run.pairs_count
    assert hashlib.sha256(path.read_bytes()).hexdigest() == run.manifest_export.content_hash
    from dpo.data import read_manifest

    assert len(read_manifest(path)) == run.pairs_count  # the trainer reads it (string pair ids from int64)
