"""Experiment trackers (``--report-to``, TRL's ``report_to``): what a researcher's tool reads back matches
``metrics.jsonl``, step for step, under TRL's metric names."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dpo.config import ConfigError, FlowDPOConfig
from dpo.tracking import resolve_report_to
from dpo.trainer import FlowDPOTrainer

REPO = Path(__file__).resolve().parents[2]
FAST = dict(beta=50.0, learning_rate=1e-4, bf16=False, per_device_train_batch_size=2, final_dtype="float32")
TRL_NAMES = ["loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "grad_norm",
             "learning_rate", "epoch", "mse/policy_chosen", "mse/ref_rejected", "dpo/grad_weight"]


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_cli_report_to_tensorboard_writes_trl_named_scalars_and_resume_purges(tmp_path, tiny_root, manifest_factory):
    manifest = manifest_factory(num_pairs=4)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "dpo", "train", "--manifest", str(manifest), "--init", str(tiny_root), "--out",
           str(out), "--no-progress", "--report-to", "tensorboard", *(f"--set={k}={v}" for k, v in FAST.items()),
           "--set", "max_steps=3", "--set", "save_steps=1"]
    proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = _metrics(out)
    scalars = _scalars(out / "runs")
    for name in TRL_NAMES:  # transformers' TensorBoard callback convention: train/<TRL name>
        got = scalars[f"train/{name}"]
        assert [s for s, _ in got] == [1, 2, 3], name
        assert [v for _, v in got] == pytest.approx([m[name] for m in lines], rel=1e-6, abs=1e-7), name
    assert "train/step" not in scalars

    # A run that died after step 3 but before its checkpoint: resuming from step-2 logs step 3 again, and
    # TensorBoard shows it once (purge_step), as metrics.jsonl is truncated to the resumed step.
    shutil.rmtree(out / "checkpoints" / "step-3")
    config = FlowDPOConfig.from_file(out / "resolved_config.json")
    FlowDPOTrainer(config, manifest=manifest, init=tiny_root, out_dir=out, resume=True, device="cpu").run()
    assert [m["step"] for m in _metrics(out)] == [1, 2, 3]
    again = _scalars(out / "runs")
    assert [s for s, _ in again["train/loss"]] == [1, 2, 3]
    assert [v for _, v in again["train/loss"]] == pytest.approx([m["loss"] for m in _metrics(out)], rel=1e-6)


def test_default_is_tensorboard_none_writes_nothing_and_a_missing_package_is_named(tmp_path, tiny_root,
                                                                                    manifest_factory, monkeypatch):
    assert resolve_report_to(None) == ["tensorboard"]  # a dependency of the project: installed
    assert resolve_report_to(["none"]) == [] and resolve_report_to(("tensorboard", "tensorboard")) == ["tensorboard"]
    assert FlowDPOConfig.from_dict({"report_to": "tensorboard, wandb"}).report_to == ("tensorboard", "wandb")
    with pytest.raises(ConfigError, match="'report_to' has unknown tracker.*'comet'"):
        FlowDPOConfig.from_dict({"report_to": ["comet"]})

    manifest = manifest_factory(num_pairs=2)
    quiet = FlowDPOConfig(**FAST, max_steps=1, save_steps=0, report_to=("none",))
    FlowDPOTrainer(quiet, manifest=manifest, init=tiny_root, out_dir=tmp_path / "quiet", device="cpu").run()
    assert (tmp_path / "quiet/metrics.jsonl").is_file() and not (tmp_path / "quiet/runs").exists()

    monkeypatch.setitem(sys.modules, "wandb", None)  # what the import system says when the package is absent
    with pytest.raises(ConfigError, match=r"report_to 'wandb' needs the wandb package.*pip install wandb"):
        FlowDPOTrainer(quiet.replace(report_to=["tensorboard", "wandb"]), manifest=manifest, init=tiny_root,
                       out_dir=tmp_path / "w", device="cpu")
    assert not (tmp_path / "w").exists()  # refused before anything was written


@pytest.mark.slow
def test_mlflow_local_store_and_wandb_offline_get_every_step(tmp_path, tiny_root, manifest_factory, monkeypatch):
    pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    pytest.importorskip("sqlalchemy")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "dpo-test")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    manifest = manifest_factory(num_pairs=4)
    out = tmp_path / "tracked"
    config = FlowDPOConfig(**FAST, max_steps=2, save_steps=0, report_to=("mlflow", "wandb"))
    FlowDPOTrainer(config, manifest=manifest, init=tiny_root, out_dir=out, device="cpu").run()
    lines = _metrics(out)

    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("dpo-test").experiment_id])
    assert run.info.run_name == "tracked" and run.data.params["beta"] == "50.0"
    for name in ("loss", "rewards/margins", "grad_norm"):  # MLflow gets TRL's names as they are
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, name))
        assert history == [(m["step"], pytest.approx(m[name], rel=1e-9)) for m in lines], name

    (record,) = list((out / "wandb").glob("offline-run-*/run-*.wandb"))  # W&B's offline run, for `wandb sync`
    data = record.read_bytes()
    for name in ("train/loss", "train/rewards/accuracies", "train/grad_norm"):
        assert name.encode() in data, name
    assert json.dumps(lines[-1]["loss"]).encode() in data
