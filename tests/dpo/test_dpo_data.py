"""Manifest reading, validation errors (pair + file named), bucketing, S3 reads (moto)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from dpo.data import (
    ManifestError,
    PairDataset,
    ShapeBucketBatchSampler,
    collate_pairs,
    read_manifest,
    validate_pairs,
)


def _rewrite(manifest, mutate):
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    rows = mutate(rows)
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_manifest_formats_load_and_validate(manifest_factory, fmt):
    manifest = manifest_factory(num_pairs=3, fmt=fmt)
    records = read_manifest(manifest)
    assert [r.pair_id for r in records] == ["pair-0", "pair-1", "pair-2"]
    assert records[0].weight == 1.0 and records[0].source == "human"
    assert validate_pairs(records) == [(2, 4, 4, 4)] * 3
    item = PairDataset(records)[1]
    assert item["latent_chosen"].shape == (2, 4, 4, 4) and item["latent_chosen"].dtype == torch.bfloat16
    assert item["llm_mask"].dtype == torch.bool and item["clip_states"].shape[0] == 77


def test_missing_columns(manifest_factory):
    manifest = _rewrite(manifest_factory(num_pairs=2), lambda rows: [{k: v for k, v in r.items()
                                                                     if k != "text_embedding_uri"} for r in rows])
    with pytest.raises(ManifestError, match=r"missing required column\(s\) \['text_embedding_uri'\]"):
        read_manifest(manifest)


def test_empty_manifest(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("")
    with pytest.raises(ManifestError, match="is empty"):
        read_manifest(path)


def test_missing_file_names_pair_and_file(manifest_factory):
    manifest = manifest_factory(num_pairs=2)
    records = read_manifest(manifest)
    missing = records[1].rejected_latent_uri
    import os

    os.remove(missing)
    with pytest.raises(ManifestError, match=f"pair 'pair-1': rejected latent file not found: {missing}"):
        validate_pairs(records)


def test_shape_mismatch_names_pair_and_both_files(manifest_factory):
    manifest = manifest_factory(num_pairs=2)
    records = read_manifest(manifest)
    save_file({"latent": torch.zeros(2, 4, 4, 8, dtype=torch.bfloat16)}, records[0].rejected_latent_uri)
    with pytest.raises(ManifestError, match=r"pair 'pair-0': chosen latent shape \(2, 4, 4, 4\).*!= rejected latent "
                                            r"shape \(2, 4, 4, 8\)") as info:
        validate_pairs(records)
    assert records[0].rejected_latent_uri in str(info.value)


def test_nan_latent_names_pair_and_file(manifest_factory):
    records = read_manifest(manifest_factory(num_pairs=2))
    bad = torch.zeros(2, 4, 4, 4)
    bad[1, 2, 3, 0] = float("nan")
    save_file({"latent": bad.to(torch.bfloat16)}, records[1].rejected_latent_uri)
    with pytest.raises(ManifestError, match=f"pair 'pair-1': rejected latent 'latent' in "
                                            f"{records[1].rejected_latent_uri} contains 1 NaN/Inf"):
        validate_pairs(records)


def test_missing_tensor_and_bad_weight(manifest_factory):
    records = read_manifest(manifest_factory(num_pairs=2))
    save_file({"x": torch.zeros(1)}, records[0].chosen_latent_uri)
    with pytest.raises(ManifestError, match="pair 'pair-0': chosen latent file .* has no tensor 'latent'"):
        validate_pairs(records)
    manifest = manifest_factory(num_pairs=2, rows_override={1: {"weight": -1}})
    with pytest.raises(ManifestError, match="pair 'pair-1': weight must be"):
        read_manifest(manifest)
    manifest = manifest_factory(num_pairs=2, rows_override={1: {"pair_id": "pair-0"}})
    with pytest.raises(ManifestError, match="duplicate pair_id 'pair-0'"):
        read_manifest(manifest)


def test_bucketing_gives_one_shape_per_micro_batch(manifest_factory):
    shapes = [(2, 4, 4, 4), (1, 4, 4, 4), (2, 4, 8, 4)]
    records = read_manifest(manifest_factory(num_pairs=9, shapes=shapes))
    found = validate_pairs(records)
    sampler = ShapeBucketBatchSampler(found, batch_size=2, seed=3)
    batches = sampler.batches(0)
    assert sorted(i for b in batches for i in b) == list(range(9))
    ds = PairDataset(records)
    for b in batches:
        assert len({found[i] for i in b}) == 1
        batch = collate_pairs([ds[i] for i in b])
        assert batch["latent_chosen"].shape[0] == len(b)
    assert sampler.batches(0) == batches and sampler.batches(1) != batches  # deterministic per (seed, epoch)
    # two ranks: disjoint halves of the same global order, equal length
    r0 = ShapeBucketBatchSampler(found, 2, seed=3, rank=0, world_size=2).batches(0)
    r1 = ShapeBucketBatchSampler(found, 2, seed=3, rank=1, world_size=2).batches(0)
    assert len(r0) == len(r1) and not {tuple(b) for b in r0} & {tuple(b) for b in r1}


def test_per_pair_weights_reach_the_batch(manifest_factory):
    records = read_manifest(manifest_factory(num_pairs=2, rows_override={0: {"weight": 0.25}, 1: {"weight": None}}))
    ds = PairDataset(records)
    batch = collate_pairs([ds[0], ds[1]])
    torch.testing.assert_close(batch["weight"], torch.tensor([0.25, 1.0]))


def test_s3_objects_via_moto(monkeypatch, manifest_factory):
    moto = pytest.importorskip("moto")
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_S3_ENDPOINT_URL", raising=False)
    import dpo.storage as storage

    with moto.mock_aws():
        monkeypatch.setattr(storage, "_local", type(storage._local)())  # fresh per-thread client cache
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="videodpo")
        local = read_manifest(manifest_factory(num_pairs=2))
        rows = []
        for r in local:
            row = {"pair_id": r.pair_id, "round": 0, "prompt_id": r.prompt_id}
            for col in ("chosen_latent_uri", "rejected_latent_uri", "text_embedding_uri"):
                path = storage.parse_uri(getattr(r, col))[2]
                key = f"objects/{r.pair_id}/{col}.safetensors"
                s3.upload_file(path, "videodpo", key)
                row[col] = f"s3://videodpo/{key}"
            rows.append(row)
        s3.put_object(Bucket="videodpo", Key="runs/pairs.jsonl", Body="".join(json.dumps(r) + "\n" for r in rows))
        records = read_manifest("s3://videodpo/runs/pairs.jsonl")
        assert validate_pairs(records) == [(2, 4, 4, 4)] * 2
        item = PairDataset(records)[0]
        assert item["latent_chosen"].shape == (2, 4, 4, 4)
        records[1] = records[1].__class__(**{**records[1].__dict__, "chosen_latent_uri": "s3://videodpo/nope"})
        with pytest.raises(ManifestError, match="pair 'pair-1': chosen latent file not found: s3://videodpo/nope"):
            validate_pairs(records)
