"""Per-segment labels in the trainer (DenseDPO): a pair's segments weight the velocity errors of the latent frames
they cover, the same for policy and reference, the live and the cached reference alike."""

from __future__ import annotations

import json

import pytest
import torch

from dpo.config import FlowDPOConfig
from dpo.data import ManifestError, read_manifest
from dpo.losses import segment_frame_weights, velocity_mse
from dpo.trainer import FlowDPOTrainer
from tests.dpo.test_dpo_trainer import FAST, _metrics


def test_segments_map_to_the_latent_frames_they_cover():
    assert segment_frame_weights([], 4).tolist() == [1, 1, 1, 1]
    assert segment_frame_weights(["chosen", "same"], 4).tolist() == [1, 1, 0, 0]
    assert segment_frame_weights(["rejected", "chosen", "chosen"], 6).tolist() == [0, 0, 1, 1, 1, 1]
    assert segment_frame_weights(["chosen", "same", "chosen", "same"], 2).tolist() == [0.5, 0.5]  # frames across
    assert segment_frame_weights(["chosen", "same"], 3).tolist() == pytest.approx([1, 0.5, 0])  # a boundary
    pred, target = torch.randn(3, 4, 2, 2, 2), torch.randn(3, 4, 2, 2, 2)
    assert torch.allclose(velocity_mse(pred, target, torch.ones(3, 4)), velocity_mse(pred, target))
    only_first = velocity_mse(pred, target, torch.tensor([[1.0, 0, 0, 0]] * 3))
    assert torch.allclose(only_first, (pred[:, 0] - target[:, 0]).pow(2).flatten(1).mean(1))


def _with_segments(manifest, segments):
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    for r in rows:
        r["segments"] = json.dumps(segments)
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def test_the_trainer_weights_by_segment_and_the_cache_follows(tmp_path, tiny_root, manifest_factory):
    def run(name, manifest, **cfg):
        config = FlowDPOConfig(**{**FAST, "max_steps": 3, "per_device_train_batch_size": 2, "learning_rate": 1e-3,
                                  **cfg})
        trainer = FlowDPOTrainer(config, manifest=manifest, init=tiny_root, out_dir=tmp_path / name, device="cpu")
        trainer.setup()
        trainer.train()
        return _metrics(tmp_path / name)

    plain = run("plain", manifest_factory(num_pairs=4))
    half = run("half", _with_segments(manifest_factory(num_pairs=4), ["chosen", "same"]))
    # the first segment's frames only: other errors than over the whole clip, the same starting loss (z = 0)
    assert half[0]["loss"] == pytest.approx(plain[0]["loss"], abs=1e-6)
    assert half[0]["mse/ref_chosen"] != pytest.approx(plain[0]["mse/ref_chosen"], rel=1e-4)
    cached = run("cached", _with_segments(manifest_factory(num_pairs=4), ["chosen", "same"]),
                 reference_mode="cached", reference_cache_draws=2)
    for x, y in zip(half, cached, strict=True):
        assert y["mse/ref_chosen"] == pytest.approx(x["mse/ref_chosen"], rel=1e-5)
    records = read_manifest(_with_segments(manifest_factory(num_pairs=1), ["chosen", "rejected"]))
    assert records[0].segments == ("chosen", "rejected")
    with pytest.raises(ManifestError, match="segments must be a list of"):
        read_manifest(_with_segments(manifest_factory(num_pairs=1), ["better"]))
