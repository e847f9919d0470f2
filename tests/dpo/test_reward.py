"""The latent reward model (dpo.reward): the tie-aware Bradley-Terry model, training from a manifest through the CLI
(held-out accuracy with and without ties, exact resume), scoring, and the refusals that name what is wrong."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import save_file

from dpo import reward as R
from dpo.__main__ import main
from dpo.data import ManifestError, read_manifest
from model.world import default_root

LATENT_SHAPE = (3, 8, 4, 4)  # the tiny world's (t, C, h, w)


# -- the BTT model ------------------------------------------------------------------------------------------------
def test_btt_probabilities_are_a_distribution_symmetric_and_stable():
    nu = torch.tensor([0.5, 2.0])
    d = torch.tensor([[-50.0, 0.0], [0.0, 3.0], [50.0, -3.0]])
    p = R.btt_log_probs(d, nu).exp()  # (3, 2, 3)
    assert torch.allclose(p.sum(-1), torch.ones(3, 2), atol=1e-6)
    assert torch.isclose(p[1, 0, R.A_WINS], p[1, 0, R.B_WINS])  # d = 0: no side favoured
    assert p[2, 0, R.A_WINS] > 0.999 and p[0, 0, R.B_WINS] > 0.999  # |d| large: a win, almost surely
    # the tie is most likely at d = 0 and more likely with a larger nu: sigmoid(nu) - sigmoid(-nu)
    assert math.isclose(float(p[0, 1, R.TIE]), math.tanh(1.0), rel_tol=1e-5)
    assert float(p[1, 0, R.TIE]) == pytest.approx(math.tanh(0.25), rel=1e-5)
    # the mirrored pair has the mirrored probabilities
    assert torch.allclose(p[1, 1, [R.A_WINS, R.B_WINS, R.TIE]], p[2, 1, [R.B_WINS, R.A_WINS, R.TIE]], atol=1e-6)
    d = torch.tensor([[80.0, -80.0]], requires_grad=True)
    loss = R.btt_loss(d, torch.tensor([[R.TIE, R.A_WINS]]), nu)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(d.grad).all()
    # an unlabelled aspect (-1) does not count
    assert float(R.btt_loss(torch.tensor([[0.0, 9.0]]), torch.tensor([[R.A_WINS, R.NO_LABEL]]), nu)) == pytest.approx(
        -float(R.btt_log_probs(torch.tensor([0.0]), nu[:1])[0, R.A_WINS]), rel=1e-5)


def test_accuracy_conventions_without_and_with_ties():
    nu = torch.tensor([1.0])
    d = torch.tensor([[2.0], [-2.0], [0.1], [3.0]])
    labels = torch.tensor([[R.A_WINS], [R.A_WINS], [R.TIE], [R.TIE]])
    acc = R.accuracies(d, labels, nu, ("ta",))["ta"]
    # without ties: two decided pairs, one right; with ties: 0.1 is inside the tie band (right), 3.0 is not
    assert (acc["accuracy_no_ties"], acc["pairs_no_ties"]) == (0.5, 2)
    assert (acc["accuracy_with_ties"], acc["pairs"], acc["ties"]) == (0.5, 4, 2)


# -- training from a manifest -------------------------------------------------------------------------------------
def write_pairs(tmp_path, n_prompts=40, seeds=4, *, aspects=True):
    """A manifest whose chosen latents carry more of one latent direction (a planted, learnable preference): ``ta``
    follows it, ``vq`` is the same for every pair (a tie), ``mq`` is left out when ``aspects`` is False."""
    cfg = json.loads((default_root() / "transformer/config.json").read_text())
    llm_dim, clip_dim = cfg["caption_channels"]
    g = torch.Generator().manual_seed(0)
    direction = torch.randn(LATENT_SHAPE, generator=g)
    direction /= direction.pow(2).mean().sqrt()
    rows = []
    for p in range(n_prompts):
        text = tmp_path / f"text-{p}.safetensors"
        save_file({"llm_states": torch.randn(12, llm_dim, generator=g).to(torch.bfloat16),
                   "llm_mask": torch.ones(12, dtype=torch.int8),
                   "clip_states": torch.randn(77, clip_dim, generator=g).to(torch.bfloat16),
                   "clip_mask": torch.ones(77, dtype=torch.int8)}, str(text))
        amounts = torch.linspace(-1.5, 1.5, seeds)
        uris = []
        for k in range(seeds):
            latent = 0.6 * torch.randn(LATENT_SHAPE, generator=g) + amounts[k] * direction
            path = tmp_path / f"latent-{p}-{k}.safetensors"
            save_file({"latent": latent.to(torch.bfloat16)}, str(path))
            uris.append(str(path))
        for hi in range(seeds):
            for lo in range(hi):
                rows.append({"pair_id": f"{p}-{hi}-{lo}", "round": 1, "prompt_id": str(p),
                             "chosen_latent_uri": uris[hi], "rejected_latent_uri": uris[lo],
                             "text_embedding_uri": str(text), "weight": 1.0,
                             "aspects": json.dumps({"ta": "chosen", "vq": "same"}) if aspects else "{}"})
    manifest = tmp_path / "pairs.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return write_pairs(tmp_path_factory.mktemp("reward-pairs"))


def test_train_eval_score_through_the_cli_and_resume_exactly(pairs, tmp_path, capsys):
    root = str(default_root())
    out = tmp_path / "rm"
    args = ["reward", "train", "--manifest", str(pairs), "--init", root, "--out", str(out), "--aspects", "overall,ta,vq",
            "--steps", "120", "--no-progress"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    held = result["metrics"]["heldout"]
    assert result["heldout_pairs"] > 20 and result["aspect_pairs"] == {"overall": 240, "ta": 240, "vq": 240}
    assert held["ta"]["accuracy_no_ties"] >= 0.9 and held["overall"]["accuracy_no_ties"] >= 0.9
    assert held["vq"]["pairs_no_ties"] == 0 and held["vq"]["accuracy_with_ties"] >= 0.9  # learned "the same"
    meta = json.loads((out / R.META_FILE).read_text())
    assert meta["lineage"]["init"] == root and meta["config"]["aspects"] == ["overall", "ta", "vq"]

    # the same run interrupted at step 50 and resumed ends with the same head, bit for bit
    half = tmp_path / "rm-resumed"
    assert main([*args[:7], str(half), *args[8:10], "--steps", "50", "--no-progress"]) == 0
    state = torch.load(half / R.STATE_FILE, weights_only=False)
    assert state["step"] == 50
    state_cfg = json.loads((half / R.META_FILE).read_text())["config"]
    assert state_cfg["steps"] == 50
    assert main([*args[:7], str(half), *args[8:], "--resume"]) == 0
    from safetensors.torch import load_file

    a, b = load_file(str(out / R.HEAD_FILE)), load_file(str(half / R.HEAD_FILE))
    assert all(torch.equal(a[k], b[k]) for k in a)
    capsys.readouterr()

    assert main(["reward", "eval", "--manifest", str(pairs), "--init", root, "--reward", str(out), "--no-progress"]) == 0
    ev = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert ev["ta"]["accuracy_no_ties"] >= 0.9 and ev["ta"]["pairs_no_ties"] == 240
    records = read_manifest(pairs)
    best, worst = records[5].chosen_latent_uri, records[5].rejected_latent_uri  # seeds 3 and 0 of prompt 0
    scores = {}
    for uri in (best, worst):
        assert main(["reward", "score", "--init", root, "--reward", str(out), "--latent", uri,
                     "--text", records[5].text_embedding_uri]) == 0
        scores[uri] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(scores[best]) == {"overall", "ta", "vq"} and scores[best]["ta"] > scores[worst]["ta"]


def test_an_aspect_the_pairs_lack_is_refused_with_the_count(tmp_path, capsys):
    manifest = write_pairs(tmp_path, n_prompts=3, seeds=3, aspects=False)
    code = main(["reward", "train", "--manifest", str(manifest), "--init", str(default_root()), "--out",
                 str(tmp_path / "rm"), "--aspects", "overall,mq", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "aspect 'mq' (motion quality): 0 of 9 pairs carry it" in err and "(aspects overall)" in err
    assert not (tmp_path / "rm" / R.HEAD_FILE).exists()


def test_bad_inputs_name_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="aspects must be distinct names"):
        R.LatentRewardConfig(aspects=("ta", "beauty"))
    with pytest.raises(ValueError, match="t must be in"):
        R.LatentRewardConfig(t=1.0)
    with pytest.raises(ValueError, match="steps must be from 1 to 100000"):
        R.LatentRewardConfig(steps=2**31 - 1)
    with pytest.raises(FileNotFoundError, match="reward.json is missing"):
        R.LatentRewardModel(torch.nn.Identity(), tmp_path)
    manifest = write_pairs(tmp_path, n_prompts=1, seeds=2)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    rows[0]["aspects"] = json.dumps({"ta": "winner"})
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ManifestError, match="aspects must map aspect names to one of"):
        read_manifest(manifest)
