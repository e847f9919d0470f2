"""2-process CPU (gloo) runs of the tiny preset through ``torchrun -m dpo train`` (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


def _torchrun(tmp_path, tiny_root, manifest, name: str, nproc: int, extra: list[str], logs: list | None = None) -> Path:
    out = tmp_path / name
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "dpo",
           "train", "--manifest", str(manifest), "--init", str(tiny_root), "--out", str(out), "--no-progress",
           "--set", "beta=50", "--set", "learning_rate=1e-4", "--set", "bf16=false", "--set", "max_steps=2",
           "--set", "save_steps=0", "--set", "final_dtype=float32", *extra]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    (tmp_path / f"{name}.log").write_text(proc.stdout + proc.stderr)  # every rank's output, for a failure's cause
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    if logs is not None:
        logs.append(proc.stdout + proc.stderr)
    return out


LORA = ["--set", "use_lora=true", "--set", "lora_r=4", "--set", "lora_alpha=8"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "fsdp", "fsdp-cached", "fsdp-lora", "fsdp-lora-frozen"])
def test_two_process_gloo_equals_one_process(tmp_path, tiny_root, manifest_factory, mode):
    """2 ranks x 1 pair == 1 rank x 2 pairs (same pairs, same per-pair t/noise): same losses and weights.
    fsdp-cached: the 2-rank run precomputes its reference errors (rank-strided, an odd number of pairs so one
    rank pads) and then trains without a reference network; it must still equal the 1-rank live reference.
    fsdp-lora: rank 0 alone reads the base and draws the adapters' initial values (the same draws as one process)
    and broadcasts them; the reference is the base with adapters off. fsdp-lora-frozen: the reference is a sharded
    frozen copy of the base (what a separate ``--reference`` checkpoint takes), so it equals the adapters-off run."""
    from model.checkpoint import load_dit

    manifest = manifest_factory(num_pairs=5 if mode == "fsdp-cached" else 4)
    extra = ["--set", "fsdp=full_shard"] if mode.startswith("fsdp") else []
    if mode == "fsdp-cached":
        extra += ["--set", "reference_mode=cached", "--set", "reference_cache_draws=2"]
    lora = LORA if mode.startswith("fsdp-lora") else []
    if mode == "fsdp-lora-frozen":
        extra += ["--set", "reference_mode=frozen_copy"]
    logs: list[str] = []
    two = _torchrun(tmp_path, tiny_root, manifest, "two", 2, ["--set", "per_device_train_batch_size=1", *extra, *lora],
                    logs)
    if lora:  # the base once (not once per rank), and the frozen reference once
        assert logs[0].count("rank 0 read") == (2 if mode == "fsdp-lora-frozen" else 1), logs[0][-2000:]
    one = _torchrun(tmp_path, tiny_root, manifest, "one", 1, ["--set", "per_device_train_batch_size=1",
                                                               "--set", "gradient_accumulation_steps=2", *lora])
    m2 = [json.loads(x) for x in (two / "metrics.jsonl").read_text().splitlines()]
    m1 = [json.loads(x) for x in (one / "metrics.jsonl").read_text().splitlines()]
    assert [m["num_pairs"] for m in m2] == [2, 2]
    assert abs(m2[0]["loss"] - 0.693147) < 1e-5
    # The global micro-batch order is the same; rank r takes every 2nd micro-batch = what one process accumulates.
    for a, b in zip(m2, m1, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-3)
    w2, w1 = load_dit(two / "final", dtype=None).state_dict(), load_dit(one / "final", dtype=None).state_dict()
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.slow
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_fsdp_reads_weights_on_rank0_only_and_resumes_exactly(tmp_path, tiny_root, manifest_factory, lora):
    """FSDP: one rank reads each checkpoint (policy, reference; with LoRA the base and, on resume, the adapters)
    and broadcasts the shards; a run stopped after step 1 and resumed equals the uninterrupted run."""
    from model.checkpoint import load_dit

    manifest = manifest_factory(num_pairs=4)
    common = ["--set", "per_device_train_batch_size=1", "--set", "fsdp=full_shard", "--set", "save_steps=1",
              *(LORA if lora else [])]
    logs: list[str] = []
    full = _torchrun(tmp_path, tiny_root, manifest, "full", 2, common, logs)
    # full: policy and frozen reference, each read once (not once per rank); LoRA: the base, adapters off = reference
    assert logs[0].count("rank 0 read") == (1 if lora else 2)
    part = _torchrun(tmp_path, tiny_root, manifest, "part", 2, [*common, "--set", "max_steps=1"])
    part = _torchrun(tmp_path, tiny_root, manifest, "part", 2, [*common, "--resume"])
    mf = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    mp = [json.loads(x) for x in (part / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in mp] == [1, 2]
    for a, b in zip(mf, mp, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)
    wf, wp = load_dit(full / "final", dtype=None).state_dict(), load_dit(part / "final", dtype=None).state_dict()
    for k in wf:
        torch.testing.assert_close(wp[k], wf[k], rtol=1e-6, atol=1e-7, msg=k)
