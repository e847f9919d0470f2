"""Smoke runs of ``benchmarks/dpo_closed_loop.py`` at toy size. ``--world shapes`` (default): the trained tiny-world
model, scripted text-alignment judgments through ``annotation.agreement``, two DPO rounds, the random-label control,
the final JSON keys. ``--world latent``: the synthetic-taste loop (generate -> scripted labels -> manifest -> train ->
held-out comparison, two rounds, the opposite taste as control)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_closed_loop_benchmark_runs_both_tastes_and_reports_the_target(tmp_path):
    cmd = [sys.executable, "benchmarks/dpo_closed_loop.py", "--world", "latent", "--prompts", "2", "--seeds", "3", "--eval-seeds", "2",
           "--steps", "2", "--batch", "2", "--size", "32", "--num-steps", "2", "--reference", "base",
           "--pretrain-steps", "3", "--workdir", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["control"]["taste"] == "bottom-lit"
    for run in (result, result["control"]):
        assert [r["round"] for r in run["rounds"]] == [1, 2]
        assert [r["reference"] for r in run["rounds"]] == ["base", "base"]
        assert all(r["pairs"] == 2 * 3 and 0.0 <= r["win_rate_vs_base"] <= 1.0 for r in run["rounds"])
        assert [r["trained_on"] for r in run["rounds"]] == [6, 12]  # round 2 trains on the pairs of rounds 1 and 2
        assert 0.0 <= run["rounds"][1]["win_rate_vs_previous"] <= 1.0
        assert set(run["target"]) == {"round1_ok", "holds", "met"}
        assert run["win_rate"] == run["rounds"][-1]["win_rate_vs_base"]
    assert "top-lit: win rate vs base by round" in proc.stdout
    # the pretrained base's synthetic data make the taste visible: its factor predicts the decoded taste score
    pretraining = result["base_pretraining"]
    assert pretraining["steps"] == 3 and pretraining["factor_taste_r"] > 0.5, pretraining
    for taste in ("top-lit", "bottom-lit"):  # each taste's runs and round-2 data live in their own folder
        assert (tmp_path / taste / "run-2" / "final" / "dpo_info.json").is_file()
        info = json.loads((tmp_path / taste / "run-2" / "final" / "dpo_info.json").read_text())
        assert info["reference"] == str(tmp_path / "base") and info["init"].endswith("run-1/final")


@pytest.mark.slow
def test_closed_loop_on_the_shapes_world_reports_text_alignment_and_the_random_label_control(tmp_path):
    cmd = [sys.executable, "benchmarks/dpo_closed_loop.py", "--prompts", "2", "--seeds", "3", "--eval-prompts", "2",
           "--eval-seeds", "2", "--steps", "2", "--batch", "2", "--num-steps", "2", "--in-sample", "--oracle",
           "--workdir", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["world"] == "shapes"
    # round 1's own prompts x seeds, scored again after each round; the base's score there is the same every round
    assert {r["ta_in_sample_base"] for r in result["rounds"]} == {result["oracle"]["ta_in_sample_base"]}
    assert all(0.0 <= r["ta_in_sample"] <= 1.0 for r in result["rounds"])
    assert result["oracle"]["clips"] == 2 * 3  # every (prompt, seed) of round 1 has its rendered ground truth
    oracle_rows = [json.loads(line) for line in (tmp_path / "oracle" / "store" / "oracle.jsonl").read_text().splitlines()]
    assert {row["chosen_candidate"] for row in oracle_rows} == {f"truth-{s}" for s in (100, 101, 102)}
    for key in ("ta_base", "ta_round1", "ta_round2", "win_rate", "mq_delta", "vq_delta", "random_label_ta_delta"):
        assert isinstance(result[key], float), key
    assert 0.0 <= result["ta_base"] <= 1.0 and 0.0 <= result["win_rate"] <= 1.0
    assert [r["round"] for r in result["rounds"]] == [1, 2] and [r["round"] for r in result["control"]] == [1, 2]
    assert set(result["target"]) == {"ta_gain_15", "win_rate_70", "random_within_3", "mq_vq_not_lower", "met"}
    r1, r2 = result["rounds"]
    assert r2["trained_on"] == r1["pairs"] + r2["pairs"]  # round 2 trains on the pairs of rounds 1 and 2
    rows = [json.loads(line) for line in (tmp_path / "scripted" / "store" / "round-1.jsonl").read_text().splitlines()]
    assert len(rows) == r1["pairs"] and all(0.5 < row["agreement"] <= 1.0 for row in rows)
    assert "held-out TA: base" in proc.stdout
