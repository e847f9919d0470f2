"""Every format re-read with its own reader: exact columns, row counts, pseudonyms only (no user names)."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from annotation import storage
from annotation.models import Export, PreferencePair
from annotation.services.exports import export_artifact_key, export_create, export_run

pytestmark = pytest.mark.django_db

N_PAIRS = 14  # build_loop(n_prompts=4): 10 generation pairs + 4 evaluation pairs
N_LABEL_ROWS = 4 * 3 * 3 + 4 * 3 * 2 + 1  # gen: 3 judgments x 3 candidates; eval: 3 x 2; one skip without labels


def run(format: str, filter: dict | None = None, actor=None, chunk_size: int = 20_000) -> tuple[Export, bytes]:
    # by default every pair, evaluation rounds included (a default export leaves them out: test_evaluation_kept_out)
    export = export_create(format=format, filter=filter or {"include_evaluation": True}, actor=actor, enqueue=False)
    export = export_run(export_id=export.pk, chunk_size=chunk_size)
    assert export.status == Export.Status.DONE, export.error
    return export, storage.object_read(key=export_artifact_key(export=export))


def assert_no_usernames(loop, data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    for user in [*loop.annotators, loop.researcher]:
        assert user.username not in text
        assert user.annotator_profile.pseudonym not in text or user in loop.annotators


def pseudonyms(loop) -> set[str]:
    return {u.annotator_profile.pseudonym for u in loop.annotators}


def test_trl_jsonl(loop):
    export, data = run("trl", actor=loop.researcher)
    rows = [json.loads(line) for line in data.decode().splitlines()]
    assert len(rows) == N_PAIRS == export.row_count
    assert list(rows[0]) == ["prompt", "chosen", "rejected", "chosen_latent", "rejected_latent", "weight", "round",
                             "checkpoint"]
    pair = PreferencePair.objects.select_related("chosen", "rejected", "group__prompt").order_by("group_id", "id").first()
    assert rows[0]["chosen"] == pair.chosen.video_uri and rows[0]["rejected"] == pair.rejected.video_uri
    assert rows[0]["chosen_latent"] == pair.chosen.latent_uri and rows[0]["prompt"] == pair.group.prompt.text
    assert {r["checkpoint"] for r in rows} == {"base-v1", "dpo-r1"}
    assert_no_usernames(loop, data)
    sheet = export.datasheet
    assert sheet["rows"] == N_PAIRS and sheet["annotators"] == 3
    assert {r["name"]: r["pairs"] for r in sheet["rounds"]} == {"gen-r1": 10, "eval-r1": 4}
    assert sheet["tie_rate"] == pytest.approx(2 / 24)  # two "all good" among 24 non-skipped judgments
    assert sheet["created_by"] == loop.researcher.annotator_profile.pseudonym
    assert len(export.content_hash) == 64 and export.content_hash == sheet["content_hash"]


@pytest.mark.parametrize("format", ["trl_parquet", "manifest", "pickapic"])
def test_parquet_formats(loop, format):
    export, data = run(format)
    table = pq.read_table(io.BytesIO(data))
    expected = {
        "trl_parquet": ["prompt", "chosen", "rejected", "chosen_latent", "rejected_latent", "weight", "round", "checkpoint"],
        "manifest": ["pair_id", "round", "prompt_id", "chosen_candidate", "rejected_candidate", "chosen_latent_uri",
                     "rejected_latent_uri", "text_embedding_uri", "weight", "source", "agreement", "aspects",
                     "segments"],
        "pickapic": ["caption", "video_0", "video_1", "label_0", "label_1", "model_0", "model_1", "user_id",
                     "ranking_id", "created_at"],
    }[format]
    assert table.column_names == expected
    assert table.num_rows == N_PAIRS == export.row_count
    assert_no_usernames(loop, data)
    if format == "pickapic":
        rows = table.to_pylist()
        assert all({r["label_0"], r["label_1"]} == {0.0, 1.0} for r in rows)
        assert {r["label_0"] for r in rows} == {0.0, 1.0}  # the winner is not always in column 0
        users = {u for r in rows for u in r["user_id"].split(",")}
        assert users <= pseudonyms(loop) and users
        for r in rows:
            win, lose = (r["video_0"], r["video_1"]) if r["label_0"] == 1.0 else (r["video_1"], r["video_0"])
            pair = PreferencePair.objects.get(chosen__video_uri=win, rejected__video_uri=lose)
            assert r["ranking_id"] == pair.group_id
    if format == "manifest":
        from dpo.data import read_manifest

        assert set(table.column("aspects").to_pylist()) == {"{}"}  # the loop's rounds collect no aspects

        path = Path(storage.object_download(key=export_artifact_key(export=export), path=Path(export.datasheet["file"]).resolve()))
        try:
            records = read_manifest(str(path))
        finally:
            path.unlink()
        assert len(records) == N_PAIRS and all(r.chosen_latent_uri.startswith("s3://") for r in records)


def test_manifest_carries_the_per_aspect_outcomes_to_the_reward_trainer(loop):
    from dpo.data import read_manifest

    pair = PreferencePair.objects.order_by("id").first()
    PreferencePair.objects.filter(pk=pair.pk).update(aspects={"ta": "rejected", "vq": "same"})
    export, _ = run("manifest")
    path = Path(storage.object_download(key=export_artifact_key(export=export), path=Path(export.datasheet["file"]).resolve()))
    try:
        records = {r.pair_id: r for r in read_manifest(str(path))}
    finally:
        path.unlink()
    assert records[str(pair.pk)].aspects == {"ta": "rejected", "vq": "same"}
    assert sum(1 for r in records.values() if r.aspects) == 1


def test_manifest_leaves_out_pairs_without_latents(loop):
    from annotation.services.pairs import group_pairs_aggregate
    from tests.exports.factories import group, judge, prompt

    g = group(loop.gen_round, prompt(), checkpoints=[loop.base], seeds=[1, 2], latents=False)
    a, b = g.candidates.order_by("seed").values_list("id", flat=True)
    judge(g, loop.annotators[0], preferred=[a], non_preferred=[b])
    group_pairs_aggregate(group=g)
    assert run("trl_parquet")[0].row_count == N_PAIRS + 1
    assert run("manifest")[0].row_count == N_PAIRS


def test_videoalign_csv(loop):
    export, data = run("videoalign")
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"))))
    assert list(rows[0]) == ["path_A", "path_B", "prompt", "VQ", "MQ", "TA", "fps_A", "num_frames_A", "fps_B",
                             "num_frames_B"]
    assert len(rows) == N_PAIRS
    assert {r["VQ"] for r in rows} == {"A", "B"} and all(r["VQ"] == r["MQ"] == r["TA"] for r in rows)
    winners = {r["path_A"] if r["VQ"] == "A" else r["path_B"] for r in rows}
    assert winners == set(PreferencePair.objects.values_list("chosen__video_uri", flat=True))
    assert rows[0]["fps_A"] == "25.0" and rows[0]["num_frames_B"] == "50"


def test_videoalign_csv_writes_per_aspect_outcomes_where_pairs_have_them(loop):
    pairs = list(PreferencePair.objects.order_by("id")[:2])
    PreferencePair.objects.filter(pk=pairs[0].pk).update(aspects={"vq": "chosen", "mq": "same", "ta": "rejected"})
    PreferencePair.objects.filter(pk=pairs[1].pk).update(aspects={"vq": "rejected"})  # mq, ta unmarked: the overall
    export, data = run("videoalign")
    rows = {(r["path_A"], r["path_B"]): r for r in csv.DictReader(io.StringIO(data.decode("utf-8")))}
    assert export.datasheet["pairs_with_aspects"] == 2

    def row_of(pair):
        c, r = pair.chosen.video_uri, pair.rejected.video_uri
        row = rows.get((c, r)) or rows[(r, c)]
        letters = ("A", "B") if row["path_A"] == c else ("B", "A")  # (chosen's letter, rejected's letter)
        return row, letters

    row, (won, lost) = row_of(pairs[0])
    assert (row["VQ"], row["MQ"], row["TA"]) == (won, "same", lost)
    row, (won, lost) = row_of(pairs[1])
    assert (row["VQ"], row["MQ"], row["TA"]) == (lost, won, won)
    others = [r for key, r in rows.items() if r is not row_of(pairs[0])[0] and r is not row]
    assert len(others) == N_PAIRS - 2 and all(r["VQ"] == r["MQ"] == r["TA"] != "same" for r in others)


def test_videodpo_zip(loop):
    export, data = run("videodpo")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert sorted(zf.namelist()) == ["metadata.json", "pair.json"]
        meta = json.loads(zf.read("metadata.json"))
        pairs = json.loads(zf.read("pair.json"))
    assert len(pairs) == N_PAIRS == export.row_count
    assert len(meta) == 4 * 3 + 4 * 2  # every candidate that appears in a pair, once
    assert set(meta[0]) == {"basic", "misc"} and {"clip_path", "clip_duration"} <= set(meta[0]["basic"])
    assert set(pairs[0]) == {"video1", "video2", "frame_caption", "score"}
    chosen = set(PreferencePair.objects.values_list("chosen__video_uri", "rejected__video_uri"))
    got = {(meta[p["video1"]]["basic"]["clip_path"], meta[p["video2"]]["basic"]["clip_path"]) for p in pairs}
    assert got == chosen
    assert all(meta[p["video1"]]["misc"]["frame_caption"] == p["frame_caption"] for p in pairs)


def test_hf_datasets_layout_loads(loop, tmp_path):
    import datasets

    export, data = run("hf_datasets")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = sorted(zf.namelist())
        zf.extractall(tmp_path / "ds")
        assert_no_usernames(loop, b"".join(zf.read(n) for n in names))
    assert names == ["README.md", "data/train-00000-of-00001.parquet", "dataset_dict.json",
                     "train/data-00000-of-00001.arrow", "train/dataset_info.json", "train/state.json"]
    card = (tmp_path / "ds" / "README.md").read_text()
    assert card.startswith("---\nconfigs:") and "rows: 14" in card
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "ds" / "data" / "*.parquet"),
                               cache_dir=str(tmp_path / "cache"))["train"]
    assert ds.num_rows == N_PAIRS
    assert {"prompt", "chosen", "rejected", "chosen_latent", "rejected_latent", "weight", "round", "checkpoint",
            "annotators"} <= set(ds.column_names)
    assert {a for row in ds["annotators"] for a in row} == pseudonyms(loop)
    ds2 = datasets.load_dataset(str(tmp_path / "ds"), cache_dir=str(tmp_path / "cache2"))["train"]
    assert ds2.num_rows == N_PAIRS
    ds3 = datasets.load_from_disk(str(tmp_path / "ds"))["train"]  # the save_to_disk layout: the same rows
    assert ds3.num_rows == N_PAIRS and sorted(ds3["chosen"]) == sorted(ds["chosen"])


def test_hf_datasets_shards(loop, monkeypatch):
    monkeypatch.setattr("annotation.services.exports.HF_ROWS_PER_SHARD", 5)
    export, data = run("hf_datasets", chunk_size=4)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        shards = sorted(n for n in zf.namelist() if n.startswith("data/"))
        assert shards == [f"data/train-0000{i}-of-00003.parquet" for i in range(3)]
        assert sum(pq.read_metadata(io.BytesIO(zf.read(n))).num_rows for n in shards) == N_PAIRS


def test_raw_judgments(loop):
    export, data = run("raw")
    rows = [json.loads(line) for line in data.decode().splitlines()]
    assert len(rows) == N_LABEL_ROWS == export.row_count
    assert {"judgment_id", "annotator", "shown_order", "shown_position", "flaws", "time_spent_ms", "label",
            "playback_coverage", "outcome", "skip_reason"} <= set(rows[0])
    annotators = {r["annotator"] for r in rows}
    assert pseudonyms(loop) <= annotators and all(a.startswith("ann-") for a in annotators)
    assert_no_usernames(loop, data)
    assert any(r["flaws"] for r in rows)
    skip = [r for r in rows if r["outcome"] == "skipped"]
    assert len(skip) == 1 and skip[0]["candidate_id"] is None and skip[0]["skip_reason"] == "broken"
    labelled = [r for r in rows if r["candidate_id"] is not None]
    assert all(r["candidate_id"] == r["shown_order"][r["shown_position"]] for r in labelled)
    assert all(r["aspects"] == {} for r in rows)  # the loop's rounds collect the overall answer only


def test_raw_judgments_carry_per_aspect_labels(loop):
    from annotation.models import CandidateLabel

    label = CandidateLabel.objects.order_by("id").first()
    CandidateLabel.objects.filter(pk=label.pk).update(aspects={"vq": "preferred", "mq": "neutral", "ta": "non_preferred"})
    _, data = run("raw")
    rows = [json.loads(line) for line in data.decode().splitlines()]
    (row,) = [r for r in rows if r["judgment_id"] == label.judgment_id and r["candidate_id"] == label.candidate_id]
    assert row["aspects"] == {"vq": "preferred", "mq": "neutral", "ta": "non_preferred"}
