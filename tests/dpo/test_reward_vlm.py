"""The VLM reward model (dpo.reward_vlm): the vision tower's input laid out exactly as transformers' Qwen2-VL
processor lays it out, a tiny random Qwen2-VL written here trained with LoRA from a VideoAlign CSV through the CLI
(held-out accuracy, exact resume, scoring), and the refusals that name the file, the keys or the cell."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from dpo import reward_vlm as V
from dpo.__main__ import main
from dpo.reward_config import VLMRewardConfig
from generation_workers.video import encode_mp4
from model.world import grammar
from model.world.render import render

SPECIAL = ["<pad>", "<unk>", "<|vision_start|>", "<|video_pad|>", "<|vision_end|>", "<|image_pad|>"]


def write_tiny_vlm(root, kind: str = "qwen2_vl") -> None:
    """A random Qwen2-VL or Qwen2.5-VL (one or two vision blocks, one language layer, width 32) and a word-level
    tokenizer over the instruction's and the shapes grammar's English words, saved as a Hugging Face folder."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = set(V.INSTRUCTION.replace("{prompt}", "").replace(".", " ").replace(":", " ").split())
    for text in grammar.sample_prompts(200, seed=0, lang="en"):
        words.update(text.replace(",", " ").split())
    vocab = {tok: i for i, tok in enumerate(SPECIAL + sorted(words))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>")
    fast.add_special_tokens({"additional_special_tokens": SPECIAL[2:]})
    fast.save_pretrained(str(root))
    vision = {"depth": 1, "embed_dim": 32, "hidden_size": 32, "num_heads": 2, "mlp_ratio": 2, "patch_size": 14,
              "spatial_merge_size": 2, "temporal_patch_size": 2}
    if kind == "qwen2_5_vl":  # windowed attention in all blocks but the full-attention ones
        vision = {"depth": 2, "hidden_size": 32, "out_hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
                  "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 56,
                  "fullatt_block_indexes": [1]}
    prefix = {"qwen2_vl": "Qwen2VL", "qwen2_5_vl": "Qwen2_5_VL"}[kind]
    config = getattr(transformers, f"{prefix}Config")(
        text_config={"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 1024,
                     "rope_scaling": {"type": "mrope", "mrope_section": [4, 2, 2]},
                     "bos_token_id": None, "eos_token_id": None, "pad_token_id": 0},
        vision_config=vision,
        video_token_id=vocab["<|video_pad|>"], image_token_id=vocab["<|image_pad|>"],
        vision_start_token_id=vocab["<|vision_start|>"], vision_end_token_id=vocab["<|vision_end|>"])
    torch.manual_seed(0)
    getattr(transformers, f"{prefix}ForConditionalGeneration")(config).save_pretrained(str(root))


@pytest.fixture(scope="module")
def videoalign(tmp_path_factory):
    """A VideoAlign CSV of world clips: on VQ the undimmed clip of each pair wins (a planted, learnable preference),
    MQ is always "same", TA is a coin flip (nothing to learn); the winner's column alternates like the export's."""
    d = tmp_path_factory.mktemp("videoalign")
    rng = np.random.default_rng(0)
    rows = []
    for i, prompt in enumerate(grammar.sample_prompts(40, seed=3, lang="en")):
        clip = render(prompt, seed=i, size=64)
        encode_mp4(clip, d / f"{i}-bright.mp4", fps=8)
        encode_mp4((clip * 0.45).astype(np.uint8), d / f"{i}-dim.mp4", fps=8)
        swap = i % 2 == 1
        a, b = (f"{i}-dim.mp4", f"{i}-bright.mp4") if swap else (f"{i}-bright.mp4", f"{i}-dim.mp4")
        rows.append({"path_A": a, "path_B": b, "prompt": prompt, "VQ": "B" if swap else "A", "MQ": "same",
                     "TA": rng.choice(["A", "B"]), "fps_A": 8, "num_frames_A": 17, "fps_B": 8, "num_frames_B": 17})
    path = d / "videoalign.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


# -- the vision tower's input ------------------------------------------------------------------------------------
def test_patches_match_the_transformers_qwen2_vl_processor_layout():
    """transformers' PIL image processor tiles one image over the two frames of a tubelet; our video layout must give
    the same numbers for each frame's slot of the tubelet, and put later tubelets after earlier ones."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (4, 70, 90, 3), dtype=np.uint8)
    ip = Qwen2VLImageProcessorPil(size={"shortest_edge": 56 * 56, "longest_edge": 448 * 448})
    ours, grid = V.video_patches(frames, min_pixels=56 * 56, max_pixels=448 * 448)
    per_frame = [ip(images=f, return_tensors="pt") for f in frames]
    _, gh, gw = per_frame[0]["image_grid_thw"][0].tolist()
    assert grid == (2, gh, gw) and ours.shape == (2 * gh * gw, 3 * 2 * 14 * 14)
    ours = ours.view(2, gh * gw, 3, 2, 14, 14)
    for k, out in enumerate(per_frame):
        theirs = out["pixel_values"].view(gh * gw, 3, 2, 14, 14)
        assert torch.allclose(ours[k // 2, :, :, k % 2], theirs[:, :, k % 2], atol=1e-5)


def test_frames_are_sampled_evenly_and_padded_to_whole_tubelets():
    clip = np.arange(17)[:, None, None, None].repeat(2, 1).repeat(2, 2).repeat(3, 3).astype(np.uint8)
    assert V.sample_frames(clip, 8)[:, 0, 0, 0].tolist() == [0, 2, 5, 7, 9, 11, 14, 16]
    assert V.sample_frames(clip[:5], 8)[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 4, 4]  # the last frame repeated
    with pytest.raises(ValueError, match="multiple of 2"):
        V.video_patches(clip[:3], min_pixels=3136, max_pixels=448 * 448)


# -- training through the CLI --------------------------------------------------------------------------------------
def test_train_eval_score_through_the_cli_and_resume_exactly(tiny_vlm, videoalign, tmp_path, capsys):
    out = tmp_path / "vlm-rm"
    args = ["reward", "train", "--backbone", "vlm", "--videoalign", str(videoalign), "--vlm", str(tiny_vlm),
            "--out", str(out), "--frames", "4", "--lora-rank", "4", "--batch", "8", "--lr", "3e-3", "--steps", "60",
            "--no-progress"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["train_pairs"] + result["heldout_pairs"] == 40 and result["heldout_pairs"] >= 4
    metrics = result["metrics"]
    assert metrics["loss_last"] < metrics["loss_first"]
    assert metrics["train"]["vq"]["accuracy_no_ties"] >= 0.9 and metrics["heldout"]["vq"]["accuracy_no_ties"] >= 0.75
    assert metrics["train"]["mq"]["pairs_no_ties"] == 0 and metrics["train"]["mq"]["accuracy_with_ties"] >= 0.9
    meta = json.loads((out / "reward.json").read_text())
    assert meta["kind"] == "vlm" and meta["lineage"]["videoalign"] == str(videoalign)
    assert (out / V.ADAPTER_DIR / "adapter_model.safetensors").is_file()

    # interrupted at step 25 and resumed: the same adapters and heads, bit for bit
    half = tmp_path / "vlm-rm-resumed"
    short = [*args[:9], str(half), *args[10:18], "--steps", "25", "--no-progress"]
    assert main(short) == 0
    assert torch.load(half / "state.pt", weights_only=False)["step"] == 25
    assert main([*args[:9], str(half), *args[10:], "--resume"]) == 0
    from safetensors.torch import load_file

    for name in (V.HEAD_FILE, f"{V.ADAPTER_DIR}/adapter_model.safetensors"):
        a, b = load_file(str(out / name)), load_file(str(half / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    capsys.readouterr()

    assert main(["reward", "eval", "--reward", str(out), "--videoalign", str(videoalign)]) == 0
    ev = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert ev["vq"]["pairs_no_ties"] == 40 and ev["vq"]["accuracy_no_ties"] >= 0.85
    scores = {}
    for name in ("0-bright.mp4", "0-dim.mp4"):
        assert main(["reward", "score", "--reward", str(out), "--video", str(videoalign.parent / name),
                     "--prompt", "a red circle"]) == 0
        scores[name] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(scores["0-bright.mp4"]) == {"vq", "mq", "ta"}
    assert scores["0-bright.mp4"]["vq"] > scores["0-dim.mp4"]["vq"]


def test_qwen2_5_vl_trains_and_scores_behind_the_same_interface(videoalign, tmp_path, capsys):
    root = tmp_path / "tiny-qwen2.5-vl"
    write_tiny_vlm(root, kind="qwen2_5_vl")
    assert json.loads((root / "config.json").read_text())["model_type"] == "qwen2_5_vl"
    out = tmp_path / "rm"
    assert main(["reward", "train", "--backbone", "vlm", "--videoalign", str(videoalign), "--vlm", str(root),
                 "--out", str(out), "--frames", "4", "--steps", "3", "--holdout", "0", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["reward", "score", "--reward", str(out), "--video", str(videoalign.parent / "1-dim.mp4"),
                 "--prompt", "a blue square"]) == 0
    scores = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(scores) == {"vq", "mq", "ta"} and all(np.isfinite(list(scores.values())))


# -- refusals ------------------------------------------------------------------------------------------------------
def test_a_vlm_root_that_does_not_load_names_the_file_and_the_missing_keys(tiny_vlm, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    with pytest.raises(V.VLMLoadError, match="config.json is missing"):
        V.load_vlm(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(tiny_vlm, broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(V.VLMLoadError, match=r"model\.safetensors.*is missing"):
        V.load_vlm(broken)
    # a sharded folder whose index names a pickle or a file outside the folder: refused before transformers reads it
    index = broken / "model.safetensors.index.json"
    for shard in ("pytorch_model.bin", "../outside.safetensors"):
        index.write_text(json.dumps({"metadata": {}, "weight_map": {"lm_head.weight": shard}}))
        with pytest.raises(V.VLMLoadError, match="shards must be .safetensors files in the folder"):
            V.load_vlm(broken)
    index.unlink()
    state = load_file(str(tiny_vlm / "model.safetensors"))
    dropped = sorted(k for k in state if "layers.0.mlp" in k)
    save_file({k: v for k, v in state.items() if k not in dropped}, str(broken / "model.safetensors"),
              metadata={"format": "pt"})
    with pytest.raises(V.VLMLoadError, match=r"model\.safetensors: missing keys .*mlp") as err:
        V.load_vlm(broken)
    assert "down_proj" in str(err.value)
    state[dropped[0]] = torch.zeros(3, 3)
    save_file(state, str(broken / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(V.VLMLoadError, match=rf"wrong shape .*{dropped[0]} \(3, 3\) \(expected \(32, 64\)\)"):
        V.load_vlm(broken)
    (broken / "model.safetensors").write_bytes(b"\0" * 1000)
    with pytest.raises(V.VLMLoadError, match="does not load .*SafetensorError"):
        V.load_vlm(broken)
    (broken / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(V.VLMLoadError, match="'llama' is not a supported video language model"):
        V.load_vlm(broken)
    (broken / "config.json").write_text("[1, 2]")
    with pytest.raises(V.VLMLoadError, match="must hold a JSON object, got list"):
        V.load_vlm(broken)


def _edited_copy(src, dst, edit):
    import shutil

    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    edit(config)
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def test_a_vlm_config_or_tokenizer_that_does_not_fit_is_refused_before_training(tiny_vlm, tmp_path):
    """transformers fills missing token ids with Qwen's own (outside a smaller vocabulary) and builds nothing from a
    config whose sizes do not divide; a folder without tokenizer files used to train on a tokenizer made up from
    the config. Each is refused by name."""
    no_ids = _edited_copy(tiny_vlm, tmp_path / "no-ids", lambda c: c.pop("video_token_id"))
    with pytest.raises(V.VLMLoadError, match="video_token_id must be set"):
        V.load_vlm(no_ids)
    big_id = _edited_copy(tiny_vlm, tmp_path / "big-id", lambda c: c.update(vision_end_token_id=10**6))
    with pytest.raises(V.VLMLoadError, match="vision_end_token_id 1000000 outside the model's vocabulary of 5"):
        V.load_vlm(big_id)
    heads = _edited_copy(tiny_vlm, tmp_path / "heads", lambda c: c["text_config"].update(num_attention_heads=3))
    with pytest.raises(V.VLMLoadError, match=r"heads does not load \(config.json, model.safetensors\)"):
        V.load_vlm(heads)
    no_tok = _edited_copy(tiny_vlm, tmp_path / "no-tok", lambda c: None)
    (no_tok / "tokenizer.json").unlink()
    with pytest.raises(V.VLMLoadError, match="tokenizer files are missing"):
        V.load_vlm(no_tok)


def test_bad_videoalign_files_and_settings_are_refused_in_words(videoalign, tiny_vlm, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("path_A,path_B,prompt,VQ\nx.mp4,y.mp4,p,A\n")
    with pytest.raises(V.RewardDataError, match=r"missing columns \['MQ', 'TA'\]"):
        V.read_videoalign(bad)
    bad.write_text("path_A,path_B,prompt,VQ,MQ,TA\nx.mp4,y.mp4,p,A,tie,B\n")
    with pytest.raises(V.RewardDataError, match="line 2: MQ must be A, B or same, got 'tie'"):
        V.read_videoalign(bad)
    with pytest.raises(ValueError, match="no overall column"):
        VLMRewardConfig(aspects=("overall", "ta"))
    # through the CLI: exit 1 with the message, never a traceback
    assert main(["reward", "train", "--backbone", "vlm", "--videoalign", str(videoalign), "--out",
                 str(tmp_path / "o")]) == 1
    assert "the vlm backbone needs --vlm" in capsys.readouterr().err
    assert main(["reward", "train", "--backbone", "vlm", "--videoalign", str(videoalign), "--vlm", str(tiny_vlm),
                 "--aspects", "overall", "--out", str(tmp_path / "o")]) == 1
    assert "no overall column" in capsys.readouterr().err
    bad.write_text("path_A,path_B,prompt,VQ,MQ,TA\n" + f"{bad},{bad},p,A,B,same\n" * 10)
    assert main(["reward", "train", "--backbone", "vlm", "--videoalign", str(bad), "--vlm", str(tiny_vlm),
                 "--holdout", "0", "--out", str(tmp_path / "o")]) == 1
    assert "is not a readable video" in capsys.readouterr().err


@pytest.fixture(scope="module")
def trained(tiny_vlm, videoalign, tmp_path_factory):
    out = tmp_path_factory.mktemp("rm") / "vlm-rm"
    assert main(["reward", "train", "--backbone", "vlm", "--videoalign", str(videoalign), "--vlm", str(tiny_vlm),
                 "--out", str(out), "--frames", "4", "--steps", "3", "--holdout", "0", "--no-progress"]) == 0
    return out


def test_bad_csv_text_videos_and_output_folders_are_refused_in_words(trained, tiny_vlm, videoalign, tmp_path,
                                                                     capsys):
    import subprocess

    capsys.readouterr()
    train = ["reward", "train", "--backbone", "vlm", "--vlm", str(tiny_vlm), "--frames", "4", "--steps", "3",
             "--holdout", "0", "--no-progress"]
    latin = tmp_path / "latin.csv"
    latin.write_bytes("path_A,path_B,prompt,VQ,MQ,TA\na.mp4,b.mp4,caf\xe9,A,B,same\n".encode("latin-1"))
    header = tmp_path / "header.csv"
    header.write_text("path_A,path_B,prompt,VQ,MQ,TA\n")
    thin = tmp_path / "thin.mp4"  # 404 x 2: an aspect ratio the vision tower refuses
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "color=c=red:s=404x2:d=1",
                    "-pix_fmt", "yuv444p", str(thin)], check=True)
    thin_csv = tmp_path / "thin.csv"
    thin_csv.write_text("path_A,path_B,prompt,VQ,MQ,TA\n" + f"thin.mp4,{videoalign.parent / '0-dim.mp4'},p,A,B,same\n" * 9)
    (tmp_path / "a-file").write_text("x")
    cases = [
        ([*train, "--videoalign", str(latin), "--out", str(tmp_path / "o")], "latin.csv is not UTF-8 text (byte 45)"),
        (["reward", "eval", "--reward", str(trained), "--videoalign", str(header)], "no pairs (a header and no rows)"),
        ([*train, "--videoalign", str(thin_csv), "--out", str(tmp_path / "o")],
         f"video {thin}: aspect ratio over 200: 2x404"),
        (["reward", "score", "--reward", str(trained), "--video", str(thin), "--prompt", "p"],
         f"video {thin}: aspect ratio over 200"),
        ([*train, "--videoalign", str(videoalign), "--out", str(tmp_path / "a-file")], "a-file is a file"),
        ([*train, "--videoalign", str(videoalign), "--out", str(tmp_path / "a-file" / "sub")], "cannot be created"),
    ]
    for args, message in cases:
        assert main(args) == 1, args
        assert message in capsys.readouterr().err, message


def test_a_damaged_reward_folder_is_refused_in_words(trained, videoalign, tmp_path, capsys):
    import shutil

    def damaged(name, edit_meta=None, head=None):
        d = tmp_path / name
        shutil.copytree(trained, d)
        if edit_meta is not None:
            meta = json.loads((d / "reward.json").read_text())
            (d / "reward.json").write_text(edit_meta(meta) if isinstance(edit_meta(dict(meta)), str)
                                           else json.dumps(edit_meta(meta)))
        if head is not None:
            (d / V.HEAD_FILE).write_bytes(head)
        return d

    cases = [
        (damaged("json", lambda m: "{"), "reward.json is not valid JSON"),
        (damaged("list", lambda m: [1]), "reward.json must hold a JSON object, got list"),
        (damaged("kind", lambda m: {**m, "kind": "foo"}), "unknown reward model kind 'foo'"),
        (damaged("extra", lambda m: {**m, "config": {**m["config"], "zzz": 1}}),
         "config does not fit VLMRewardConfig: VLMRewardConfig.__init__() got an unexpected keyword argument 'zzz'"),
        (damaged("aspects", lambda m: {**m, "config": {**m["config"], "aspects": ["vq"]}}),
         "head.weight (3, 32) (expected (1, 32))"),
        (damaged("head", head=b"garbage"), "vlm-head.safetensors does not load"),
        (damaged("root", lambda m: {k: v for k, v in m.items() if k != "vlm_root"}), "names no vlm_root; pass --vlm"),
    ]
    capsys.readouterr()
    for folder, message in cases:
        assert main(["reward", "eval", "--reward", str(folder), "--videoalign", str(videoalign)]) == 1, folder
        assert message in capsys.readouterr().err, message


def test_resume_checks_the_settings_and_a_new_run_clears_the_old_one(tiny_vlm, videoalign, tmp_path, capsys):
    out = tmp_path / "rm"
    train = ["reward", "train", "--backbone", "vlm", "--videoalign", str(videoalign), "--vlm", str(tiny_vlm),
             "--out", str(out), "--frames", "4", "--holdout", "0", "--no-progress"]
    assert main([*train, "--steps", "2"]) == 0
    capsys.readouterr()
    assert main([*train, "--steps", "4", "--lora-rank", "4", "--lr", "1e-3", "--resume"]) == 1
    assert "was saved with other settings (lora_rank 16 -> 4; lr 0.0002 -> 0.001)" in capsys.readouterr().err
    assert main([*train, "--steps", "4", "--resume"]) == 0  # only steps changed: trains on from step 2
    assert torch.load(out / "state.pt", weights_only=False)["step"] == 4
    # a new run (no --resume) into the folder removes the finished model's reward.json and state.pt first, so a
    # run that fails leaves no model that looks finished and no state for --resume to pick up
    (out / "state.pt").write_bytes(b"not a state")
    assert main([*train, "--steps", "2", "--lora-rank", "2", "--frames", "0"]) == 1  # refused before training
    assert (out / "reward.json").is_file()  # a refused command changes nothing
    seen = []
    from dpo.reward import fit_btt  # noqa: F401 (the loop the CLI runs)

    def on_step(metrics):
        seen.append(sorted(p.name for p in out.iterdir()))
        return False

    from dpo.reward_vlm import read_videoalign, train_vlm_reward

    train_vlm_reward(read_videoalign(videoalign), tiny_vlm, VLMRewardConfig(frames=4, steps=2, holdout=0.0), out,
                     progress=False, on_step=on_step)
    assert "reward.json" not in seen[0] and "state.pt" not in seen[0]
    assert (out / "reward.json").is_file() and torch.load(out / "state.pt", weights_only=False)["step"] == 2


def test_a_long_video_is_read_as_the_sampled_frames_only(tmp_path):
    from model.media import read_video_frames

    clip = np.arange(40)[:, None, None, None].repeat(16, 1).repeat(16, 2).repeat(3, 3).astype(np.uint8) * 6
    encode_mp4(clip, tmp_path / "long.mp4", fps=8)
    every = read_video_frames(tmp_path / "long.mp4")
    some = read_video_frames(tmp_path / "long.mp4", 8)
    assert len(every) == 40 and len(some) == 8
    assert np.array_equal(some, V.sample_frames(every, 8))  # the frames the model would have sampled
    assert len(read_video_frames(tmp_path / "long.mp4", 100)) == 40
