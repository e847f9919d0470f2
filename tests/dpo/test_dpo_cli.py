"""`python -m dpo train / average / validate` end to end on a tiny manifest written by the test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "dpo", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          check=False, timeout=300)


def test_cli_train_resume_and_average(tmp_path, tiny_root, manifest_factory):
    from model.checkpoint import load_dit

    manifest = manifest_factory(num_pairs=4, fmt="parquet")
    config = tmp_path / "dpo.yaml"
    config.write_text("beta: 50\nlearning_rate: 1.0e-4\nmax_steps: 4\nsave_steps: 2\nbf16: false\n"
                      "per_device_train_batch_size: 2\nfinal_dtype: float32\n")
    out = tmp_path / "run"
    proc = _run("train", "--config", str(config), "--manifest", str(manifest), "--init", str(tiny_root),
                "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 4 and summary["final_dir"] == str(out / "final")
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2, 3, 4]
    assert abs(lines[0]["loss"] - 0.693147) < 1e-5
    assert json.loads((out / "resolved_config.json").read_text())["max_steps"] == 4
    assert json.loads((out / "run_status.json").read_text())["state"] == "completed"
    load_dit(out / "final")  # strict load

    # --resume on a finished run with a larger max_steps continues from step-4
    proc = _run("train", "--config", str(config), "--manifest", str(manifest), "--init", str(tiny_root),
                "--out", str(out), "--resume", "--set", "max_steps=5", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2, 3, 4, 5]

    # average step-2 and step-4 -> mean of the two weight sets
    avg = tmp_path / "avg"
    proc = _run("average", "--out", str(avg), "--dtype", "float32", str(out / "checkpoints/step-2"),
                str(out / "checkpoints/step-4"))
    assert proc.returncode == 0, proc.stderr
    a = load_dit(out / "checkpoints/step-2", dtype=None).state_dict()
    b = load_dit(out / "checkpoints/step-4", dtype=None).state_dict()
    m = load_dit(avg, dtype=None).state_dict()
    for k in m:
        torch.testing.assert_close(m[k], (a[k] + b[k]) / 2)


def test_cli_reports_bad_input_with_exit_code_1(tmp_path, tiny_root, manifest_factory):
    manifest = manifest_factory(num_pairs=2)
    config = tmp_path / "bad.yaml"
    config.write_text("max_length: 512\n")
    proc = _run("train", "--config", str(config), "--manifest", str(manifest), "--init", str(tiny_root),
                "--out", str(tmp_path / "run"))
    assert proc.returncode == 1 and "'max_length' is an LLM-only TRL DPOConfig field" in proc.stderr
    os.remove(Path(json.loads(manifest.read_text().splitlines()[0])["rejected_latent_uri"]))
    proc = _run("validate", "--manifest", str(manifest))
    assert proc.returncode == 1 and "pair 'pair-0': rejected latent file not found" in proc.stderr
