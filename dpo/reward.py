"""A reward model trained from the app's preference labels: the **latent** reward model.

It scores a candidate from the generator's own DiT features at one noise level (no VAE decode: cheap enough to score
every candidate of a round and every RL sample), one score per aspect, and is fitted with the tie-aware Bradley-Terry
model (Rao-Kupper, the "BTT" of VideoAlign):

    P(A > B) = sigmoid(d - nu),  P(B > A) = sigmoid(-d - nu),  P(tie) = 1 - both,   d = r_A - r_B,  nu = log(theta) > 0

with one learned ``nu`` per aspect. A pair's A side is its chosen candidate; its per-aspect outcomes come from the
manifest's ``aspects`` column (chosen / rejected / same), the ``overall`` aspect from the pair itself (chosen wins).

Time convention as everywhere (``model.flow``): t = 0 noise, t = 1 data, x_t = (1 - t) x0 + t x1.

    features = dit_features(dit, latents, text, t=0.75, seeds=[...])   # (B, N, D): the last block's tokens
    head = RewardHead(dim=D, hidden=128, aspects=("overall", "ta"))      # (B, N, D) -> (B, A) scores
    run = train_latent_reward(records, dit, cfg, out_dir)                 # -> RewardTraining (metrics, held-out accuracy)

The DiT stays frozen; features are computed once per (candidate, noise draw) and cached in memory, so training the
head costs seconds on a CPU for the tiny model. Accuracy follows VideoGen-RewardBench's two conventions: without ties
(pairs whose label is A or B; correct when the sign of d agrees) and with ties (every pair; the predicted class is
the most likely of the three).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from dpo.data import LATENT_KEY, PairDataset, PairRecord, collate_pairs
from dpo.reward_config import (  # noqa: F401 (re-exported: the reward model's whole API in one place)
    ASPECT_NAMES,
    ASPECTS,
    MIN_PAIRS_PER_ASPECT,
    LatentRewardConfig,
    RewardDataError,
    aspect_shortfall,
)

logger = logging.getLogger(__name__)

A_WINS, B_WINS, TIE = 0, 1, 2
OUTCOME_CLASS = {"chosen": A_WINS, "rejected": B_WINS, "same": TIE}
NO_LABEL = -1
HEAD_FILE, STATE_FILE, META_FILE = "reward-head.safetensors", "state.pt", "reward.json"
REWARD_KINDS = ("latent", "vlm")
RESUMABLE_FIELDS = ("steps",)  # the settings a resumed run may change (train longer); every other one must match


# -- the tie-aware Bradley-Terry model (pure) ----------------------------------------------------------------------
def btt_log_probs(diff: torch.Tensor, nu: torch.Tensor) -> torch.Tensor:
    """diff (..., A) = r_A - r_B, nu (A,) > 0 -> (..., A, 3) log P(A wins), log P(B wins), log P(tie).

    P(tie) = sigmoid(d + nu) - sigmoid(d - nu), computed in log space (stable for large |d|)."""
    log_a = F.logsigmoid(diff - nu)
    log_b = F.logsigmoid(-diff - nu)
    upper = F.logsigmoid(diff + nu)  # log sigmoid(d + nu) >= log sigmoid(d - nu)
    log_tie = upper + torch.log1p(-torch.exp((log_a - upper).clamp(max=-1e-7)))
    return torch.stack([log_a, log_b, log_tie], dim=-1)


def btt_loss(diff: torch.Tensor, labels: torch.Tensor, nu: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood over the labelled entries. diff (B, A); labels (B, A) in {0, 1, 2} or -1 (no
    label on that aspect: left out)."""
    logp = btt_log_probs(diff, nu)  # (B, A, 3)
    mask = labels >= 0
    picked = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (B, A)
    return -(picked * mask).sum() / mask.sum().clamp(min=1)


def accuracies(diff: torch.Tensor, labels: torch.Tensor, nu: torch.Tensor, aspects: tuple[str, ...]) -> dict[str, Any]:
    """Per aspect and over all: accuracy without ties (labels A / B: the sign of d), with ties (every label: the most
    likely BTT class), and the counts."""
    pred = btt_log_probs(diff, nu).argmax(-1)  # (B, A)
    out: dict[str, Any] = {}
    totals = {"no_ties": [0, 0], "with_ties": [0, 0]}
    for k, aspect in enumerate(aspects):
        lab, d = labels[:, k], diff[:, k]
        decided = (lab == A_WINS) | (lab == B_WINS)
        right_sign = ((d > 0) & (lab == A_WINS)) | ((d < 0) & (lab == B_WINS))
        labelled = lab >= 0
        n_nt, c_nt = int(decided.sum()), int((right_sign & decided).sum())
        n_wt, c_wt = int(labelled.sum()), int(((pred[:, k] == lab) & labelled).sum())
        out[aspect] = {"accuracy_no_ties": c_nt / n_nt if n_nt else None, "pairs_no_ties": n_nt,
                       "accuracy_with_ties": c_wt / n_wt if n_wt else None, "pairs": n_wt,
                       "ties": int((lab == TIE).sum())}
        totals["no_ties"][0] += c_nt
        totals["no_ties"][1] += n_nt
        totals["with_ties"][0] += c_wt
        totals["with_ties"][1] += n_wt
    out["accuracy_no_ties"] = totals["no_ties"][0] / totals["no_ties"][1] if totals["no_ties"][1] else None
    out["accuracy_with_ties"] = totals["with_ties"][0] / totals["with_ties"][1] if totals["with_ties"][1] else None
    return out


# -- the model ----------------------------------------------------------------------------------------------------
class RewardHead(nn.Module):
    """DiT tokens (B, N, D) -> per-aspect scores (B, A): a projection, one learned query per aspect (attention pooling:
    VideoAlign's one token per aspect), a linear score per aspect; and the BTT tie parameter nu (A,) = softplus(raw)."""

    def __init__(self, dim: int, hidden: int, n_aspects: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, hidden)
        self.query = nn.Parameter(torch.randn(n_aspects, hidden) / hidden**0.5)
        self.weight = nn.Parameter(torch.zeros(n_aspects, hidden))
        self.bias = nn.Parameter(torch.zeros(n_aspects))
        self.raw_nu = nn.Parameter(torch.full((n_aspects,), math.log(math.expm1(1.0))))  # nu starts at 1

    @property
    def nu(self) -> torch.Tensor:
        return F.softplus(self.raw_nu)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.proj(self.norm(tokens.float())))  # (B, N, H)
        attn = torch.softmax(torch.einsum("bnh,ah->bna", h, self.query) / h.shape[-1] ** 0.5, dim=1)  # (B, N, A)
        pooled = torch.einsum("bna,bnh->bah", attn, h)  # (B, A, H)
        return (pooled * self.weight).sum(-1) + self.bias  # (B, A)


@torch.no_grad()
def dit_features(dit: nn.Module, latents: torch.Tensor, text: dict[str, torch.Tensor], *, t: float,
                 seeds: list[int]) -> torch.Tensor:
    """The last transformer block's tokens (B, N, D), on the CPU, for the clean latents (B, F, C, H, W) noised to x_t with the
    seeds' noise (``model.flow.batch_noise``: the same draw for the same seed), conditioned on ``text``
    (llm_states, llm_mask, clip_states, clip_mask, batched like the latents)."""
    from dpo.models import find_dit
    from model import flow

    core = find_dit(dit)
    captured: list[torch.Tensor] = []
    hook = core.transformer_blocks[-1].register_forward_hook(lambda _m, _i, out: captured.append(out))
    device, dtype = core.proj_out.weight.device, core.proj_out.weight.dtype
    try:
        latents = latents.to(device)
        noise = flow.batch_noise(seeds, latents.shape[1:]).to(device)
        x_t = flow.interpolate(noise, latents, t)
        core(x_t.to(dtype), torch.full((len(latents),), t, device=device), text["llm_states"].to(device, dtype),
             text["llm_mask"].to(device), text["clip_states"].to(device, dtype), text["clip_mask"].to(device))
    finally:
        hook.remove()
    return captured[-1].float().cpu()  # (B, N, D) on the CPU, where the head trains


def pair_labels(record: PairRecord, aspects: tuple[str, ...]) -> list[int]:
    """The BTT class per aspect for a pair (A = chosen): overall -> A wins; others from ``record.aspects``."""
    return [A_WINS if a == "overall" else OUTCOME_CLASS.get(record.aspects.get(a, ""), NO_LABEL) for a in aspects]


def check_aspects(records: list[PairRecord], aspects: tuple[str, ...]) -> dict[str, int]:
    """Pairs labelled per asked aspect; raises RewardDataError naming an aspect with too few."""
    counts = {a: sum(1 for r in records if a == "overall" or a in r.aspects) for a in aspects}
    problem = aspect_shortfall(counts, total=len(records))
    if problem:
        raise RewardDataError(problem)
    return counts


def heldout_split(records: list, share: float, seed: int,
                  prompt: Callable[[Any], str] = lambda r: r.prompt_id) -> tuple[list, list]:
    """(train, held out): a fixed hash split by prompt (``prompt(record)``: the manifest's prompt id, a VideoAlign
    row's prompt text), so no prompt is on both sides."""
    if share <= 0:
        return records, []

    def held(record: Any) -> bool:
        h = hashlib.sha256(f"{seed}:{prompt(record)}".encode()).digest()
        return int.from_bytes(h[:8], "big") / 2**64 < share

    train = [r for r in records if not held(r)]
    test = [r for r in records if held(r)]
    return train, test


def candidate_batch(keys: list[tuple[str, str]], data: PairDataset) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Stored candidates, each named by (latent uri, text-embedding uri) -> latents (B, F, C, H, W) and the batched
    text kwargs of the DiT (the pair collator's padding; ``data`` caches the text files)."""
    from dpo.storage import load_safetensors

    items = []
    for latent_uri, text_uri in keys:
        latent = load_safetensors(latent_uri)[LATENT_KEY]
        items.append({"latent_chosen": latent, "latent_rejected": latent, "weight": torch.tensor(1.0),
                      "pair_id": latent_uri, "round": None, **data.text_embedding(text_uri)})
    batch = collate_pairs(items)
    return batch["latent_chosen"], {k: batch[k] for k in ("llm_states", "llm_mask", "clip_states", "clip_mask")}


class FeatureCache:
    """Features of every candidate the pairs name: (latent uri, text uri) -> (draws, N, D), computed in batches."""

    def __init__(self, dit: nn.Module, cfg: LatentRewardConfig, batch: int = 16):
        self.dit, self.cfg, self.batch = dit, cfg, batch
        self.index: dict[tuple[str, str], int] = {}
        self.features: list[torch.Tensor] = []

    def add(self, records: list[PairRecord], progress: bool = False) -> None:
        from tqdm import tqdm

        todo: list[tuple[str, str]] = []
        for r in records:
            for uri in (r.chosen_latent_uri, r.rejected_latent_uri):
                key = (uri, r.text_embedding_uri)
                if key not in self.index and key not in todo:
                    todo.append(key)
        data = PairDataset([])
        for start in tqdm(range(0, len(todo), self.batch), desc="features", disable=not progress):
            keys = todo[start : start + self.batch]
            latents, text = candidate_batch(keys, data)
            draws = []
            for d in range(self.cfg.noise_draws):
                seeds = [_seed(self.cfg.seed, d, key) for key in keys]
                draws.append(dit_features(self.dit, latents, text, t=self.cfg.t, seeds=seeds))
            feats = torch.stack(draws, dim=1)  # (b, draws, N, D)
            for key, f in zip(keys, feats, strict=True):
                self.index[key] = len(self.features)
                self.features.append(f)

    def pair_tensors(self, records: list[PairRecord]) -> tuple[torch.Tensor, torch.Tensor]:
        """(chosen feature ids (P,), rejected feature ids (P,))."""
        c = torch.tensor([self.index[(r.chosen_latent_uri, r.text_embedding_uri)] for r in records], dtype=torch.long)
        j = torch.tensor([self.index[(r.rejected_latent_uri, r.text_embedding_uri)] for r in records], dtype=torch.long)
        return c, j

    def stacked(self) -> torch.Tensor:
        return torch.stack(self.features)  # (U, draws, N, D)


def _seed(seed: int, draw: int, key: tuple[str, str]) -> int:
    """The noise seed of one (candidate, draw): fixed by the candidate's files, not by its position in a manifest."""
    h = hashlib.sha256(f"{seed}:{draw}:{key[0]}:{key[1]}".encode()).digest()
    return int.from_bytes(h[:4], "big")


@dataclass
class RewardTraining:
    """What a training call did: where it wrote, on how many pairs, its metrics; ``stopped`` when ``on_step`` asked
    it to stop early (the state is saved: a later call with ``resume=True`` continues)."""

    out_dir: Path
    cfg: Any  # LatentRewardConfig or VLMRewardConfig
    train_pairs: int
    heldout_pairs: int
    aspect_pairs: dict[str, int]
    metrics: dict[str, Any] = field(default_factory=dict)
    stopped: bool = False


def _diffs(head: RewardHead, feats: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor,
           draw: torch.Tensor | None = None) -> torch.Tensor:
    """Score differences (P, A): chosen minus rejected, on one draw per pair (``draw``) or averaged over draws."""
    if draw is None:
        sc = torch.stack([head(feats[chosen, d]) for d in range(feats.shape[1])]).mean(0)
        sr = torch.stack([head(feats[rejected, d]) for d in range(feats.shape[1])]).mean(0)
    else:
        sc, sr = head(feats[chosen, draw]), head(feats[rejected, draw])
    return sc - sr


def fit_btt(module: nn.Module, opt: torch.optim.Optimizer,
            batch: Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor]], *, cfg: Any, state_path: Path,
            resume: bool, save_every: int, desc: str, progress: bool,
            on_step: Callable[[dict[str, Any]], bool] | None) -> tuple[list[float], int | None]:
    """The optimisation loop both reward models share: ``cfg.steps`` steps of the BTT loss on ``batch(gen)`` ->
    (score differences (B, A), labels (B, A)), with ``module.nu`` the tie parameters. Saves the trainable
    parameters, the optimizer and the sampler's generator to ``state_path`` every ``save_every`` steps, at the end
    and when ``on_step`` asks to stop; ``resume`` continues from it exactly. Returns (loss per step, the step it
    stopped at or None when it ran to the end)."""
    from tqdm import tqdm

    gen = torch.Generator().manual_seed(cfg.seed)
    start, history = 0, []
    settings = dataclasses.asdict(cfg)
    if resume and state_path.is_file():
        try:
            state = torch.load(state_path, weights_only=False)
        except Exception as exc:  # noqa: BLE001 (a damaged file: any unpickling error)
            raise RewardDataError(f"{state_path} does not load ({exc}): train without --resume") from exc
        _check_resume(state_path, state.get("config"), settings)
        module.load_state_dict(state["trainable"], strict=False)
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        start, history = state["step"], state["history"]
    bar = tqdm(range(start, cfg.steps), desc=desc, disable=not progress, initial=start, total=cfg.steps)
    for step in bar:
        diff, labels = batch(gen)
        loss = btt_loss(diff, labels, module.nu)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append(round(float(loss.detach()), 5))
        bar.set_postfix(loss=f"{history[-1]:.4f}")
        stop = on_step is not None and bool(on_step({"step": step + 1, "loss": history[-1], **{
            f"nu/{a}": round(float(v), 4) for a, v in zip(cfg.aspects, module.nu.detach(), strict=True)}}))
        if stop or (step + 1) % save_every == 0 or step + 1 == cfg.steps:
            trainable = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}
            tmp = state_path.with_name(state_path.name + ".partial")
            torch.save({"trainable": trainable, "opt": opt.state_dict(), "gen": gen.get_state(), "step": step + 1,
                        "history": history, "config": settings}, tmp)
            os.replace(tmp, state_path)
        if stop:
            return history, step + 1
    return history, None


def _check_resume(state_path: Path, saved: dict[str, Any] | None, settings: dict[str, Any]) -> None:
    """Refuse to resume a state saved with other settings (all but ``RESUMABLE_FIELDS``), naming each that differs."""
    if saved is None:  # a state written before the settings were saved with it
        return
    norm = json.loads(json.dumps(settings))  # tuples -> lists, as saved
    differ = [f"{k} {saved.get(k)!r} -> {norm.get(k)!r}" for k in sorted(set(saved) | set(norm))
              if k not in RESUMABLE_FIELDS and json.loads(json.dumps(saved.get(k))) != norm.get(k)]
    if differ:
        raise RewardDataError(f"{state_path} was saved with other settings ({'; '.join(differ)}): resume with the "
                              f"same ones, or train without --resume")


# -- reward model folders -----------------------------------------------------------------------------------------
def begin_reward_dir(out_dir: str | Path, *, resume: bool) -> Path:
    """The folder a training run writes. A new (not resumed) run clears what an earlier run left (reward.json first,
    so the folder is never taken for a finished model while it trains, and state.pt, so --resume cannot pick up
    the earlier run's state)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise RewardDataError(f"{out} is a file: the reward model needs a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RewardDataError(f"{out} cannot be created: {exc}") from exc
    if not resume:
        for name in (META_FILE, STATE_FILE):
            (out / name).unlink(missing_ok=True)
    return out


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """safetensors written beside ``path`` and moved over it (a reader never sees half a file)."""
    tmp = path.with_name(path.name + ".partial")
    save_file(tensors, str(tmp))
    os.replace(tmp, path)


def write_reward_meta(out: Path, meta: dict[str, Any]) -> None:
    """reward.json, written last and moved into place: its presence marks a complete reward model folder."""
    tmp = out / (META_FILE + ".partial")
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, out / META_FILE)


def read_reward_meta(reward_dir: str | Path, kind: str | None = None) -> dict[str, Any]:
    """A reward model folder's reward.json, checked: a JSON object of a known ``kind`` (the one asked, if given)
    with a ``config`` object. Raises FileNotFoundError / RewardDataError naming the file."""
    path = Path(reward_dir) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"not a reward model directory: {path} is missing")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RewardDataError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise RewardDataError(f"{path} must hold a JSON object, got {type(meta).__name__}")
    found = meta.get("kind", "latent")
    if found not in REWARD_KINDS:
        raise RewardDataError(f"{path}: unknown reward model kind {found!r} (one of {list(REWARD_KINDS)})")
    if kind is not None and found != kind:
        raise RewardDataError(f"{path}: kind {found!r}, not a {kind} reward model")
    if not isinstance(meta.get("config"), dict):
        raise RewardDataError(f"{path}: config must be a JSON object")
    return meta


def config_from_meta(cls: type, meta: dict[str, Any], reward_dir: str | Path) -> Any:
    """The training settings recorded in reward.json as ``cls`` (RewardDataError when they do not fit it)."""
    try:
        return cls(**meta["config"])
    except (TypeError, ValueError) as exc:
        raise RewardDataError(f"{Path(reward_dir) / META_FILE}: config does not fit {cls.__name__}: {exc}") from exc


def load_weights(path: Path, expected: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    """A safetensors file whose tensors must be exactly ``expected`` (name -> shape); the refusal names the file
    and the keys that are missing or shaped otherwise."""
    try:
        state = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 (safetensors raises its own error type for a damaged file)
        raise RewardDataError(f"{path} does not load: {exc}") from exc
    missing = sorted(set(expected) - set(state))
    if missing:
        raise RewardDataError(f"{path}: missing keys {missing}")
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(v)})" for k, v in expected.items()
             if tuple(state[k].shape) != tuple(v)]
    if wrong:
        raise RewardDataError(f"{path}: tensors of the wrong shape for the settings in reward.json: {', '.join(wrong)}")
    return state


def train_latent_reward(records: list[PairRecord], dit: nn.Module, cfg: LatentRewardConfig, out_dir: str | Path, *,
                        lineage: dict[str, Any] | None = None, resume: bool = False, progress: bool = True,
                        on_step: Callable[[dict[str, Any]], bool] | None = None) -> RewardTraining:
    """Fit the head on the pairs (held-out prompts kept aside), save it under ``out_dir`` and report accuracies.

    Resumes exactly (``resume=True``): the head, optimizer and sampler state are saved every 50 steps and at the
    end; a resumed run continues from the saved step and ends with the same weights as an uninterrupted one.
    ``on_step(metrics)`` gets each step's ``step``, ``loss`` and ``nu/<aspect>``; returning True stops the run there
    (the state is saved first)."""

    counts = check_aspects(records, cfg.aspects)
    out = begin_reward_dir(out_dir, resume=resume)
    train, test = heldout_split(records, cfg.holdout, cfg.seed)
    if len(train) < MIN_PAIRS_PER_ASPECT:
        raise RewardDataError(f"{len(train)} training pairs after holding out {cfg.holdout:.0%} of the prompts: "
                              f"at least {MIN_PAIRS_PER_ASPECT} are needed")
    dit.eval().requires_grad_(False)
    t0 = time.time()
    cache = FeatureCache(dit, cfg)
    cache.add(records, progress=progress)
    feats = cache.stacked()
    feature_s = time.time() - t0
    tr_c, tr_r = cache.pair_tensors(train)
    tr_y = torch.tensor([pair_labels(r, cfg.aspects) for r in train], dtype=torch.long)  # (P, A)

    torch.manual_seed(cfg.seed)
    head = RewardHead(feats.shape[-1], cfg.hidden, len(cfg.aspects))
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def batch(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(0, len(train), (min(cfg.batch, len(train)),), generator=gen)
        draw = torch.randint(0, feats.shape[1], (len(idx),), generator=gen)
        return head(feats[tr_c[idx], draw]) - head(feats[tr_r[idx], draw]), tr_y[idx]

    history, stopped_at = fit_btt(head, opt, batch, cfg=cfg, state_path=out / STATE_FILE, resume=resume,
                                  save_every=50, desc="reward", progress=progress, on_step=on_step)
    if stopped_at is not None:
        return RewardTraining(out, cfg, len(train), len(test), counts, {"step": stopped_at}, stopped=True)
    head.eval()
    with torch.no_grad():
        metrics: dict[str, Any] = {"train": accuracies(_diffs(head, feats, tr_c, tr_r), tr_y, head.nu, cfg.aspects)}
        if test:
            te_c, te_r = cache.pair_tensors(test)
            te_y = torch.tensor([pair_labels(r, cfg.aspects) for r in test], dtype=torch.long)
            metrics["heldout"] = accuracies(_diffs(head, feats, te_c, te_r), te_y, head.nu, cfg.aspects)
    metrics.update(loss_first=history[0] if history else None, loss_last=history[-1] if history else None,
                   feature_s=round(feature_s, 1), total_s=round(time.time() - t0, 1), candidates=len(cache.features))
    save_tensors({k: v.detach().contiguous() for k, v in head.state_dict().items()}, out / HEAD_FILE)
    meta = {"kind": "latent", "config": dataclasses.asdict(cfg), "feature_dim": int(feats.shape[-1]),
            "nu": [round(float(v), 4) for v in head.nu.detach()], "pairs": {"train": len(train), "heldout": len(test)},
            "aspect_pairs": counts, "metrics": metrics, "lineage": lineage or {}}
    write_reward_meta(out, meta)
    return RewardTraining(out, cfg, len(train), len(test), counts, metrics)


class LatentRewardModel:
    """A trained latent head with the DiT it reads: ``score(latents, text)`` -> (B, A) scores, averaged over the noise
    draws (seeds fixed per call: the same input scores the same)."""

    def __init__(self, dit: nn.Module, reward_dir: str | Path):
        d = Path(reward_dir)
        self.meta = read_reward_meta(d, "latent")
        head_path = d / HEAD_FILE
        if not head_path.is_file():
            raise FileNotFoundError(f"not a reward model directory: {head_path} is missing")
        self.cfg = config_from_meta(LatentRewardConfig, self.meta, d)
        dim = self.meta.get("feature_dim")
        if not isinstance(dim, int) or not 1 <= dim <= 65536:
            raise RewardDataError(f"{d / META_FILE}: feature_dim must be a positive integer, got {dim!r}")
        self.head = RewardHead(dim, self.cfg.hidden, len(self.cfg.aspects))
        self.head.load_state_dict(load_weights(head_path, {k: v.shape for k, v in self.head.state_dict().items()}))
        self.head.eval()
        self.dit = dit.eval().requires_grad_(False)

    @property
    def aspects(self) -> tuple[str, ...]:
        return self.cfg.aspects

    @torch.no_grad()
    def score(self, latents: torch.Tensor, text: dict[str, torch.Tensor],
              keys: list[tuple[str, str]] | None = None) -> torch.Tensor:
        """(B, A) scores of latents (B, F, C, H, W). ``keys``: each candidate's (latent uri, text uri), which fix its
        noise draws exactly as in training (a stored candidate scores as the head saw it); default: draws by
        position."""
        keys = keys if keys is not None else [(str(i), "") for i in range(len(latents))]
        draws = [self.head(dit_features(self.dit, latents, text, t=self.cfg.t,
                                        seeds=[_seed(self.cfg.seed, d, key) for key in keys]))
                 for d in range(self.cfg.noise_draws)]
        return torch.stack(draws).mean(0)  # (B, A)

    @torch.no_grad()
    def evaluate(self, records: list[PairRecord], progress: bool = False) -> dict[str, Any]:
        """Accuracy with and without ties per aspect on ``records`` (features drawn as in training)."""
        cache = FeatureCache(self.dit, self.cfg)
        cache.add(records, progress=progress)
        c, r = cache.pair_tensors(records)
        y = torch.tensor([pair_labels(rec, self.cfg.aspects) for rec in records], dtype=torch.long)
        return accuracies(_diffs(self.head, cache.stacked(), c, r), y, self.head.nu, self.cfg.aspects)


def reward_kind(reward_dir: str | Path) -> str:
    """Which backbone a reward model folder holds: "latent" (DiT features) or "vlm" (a video language model)."""
    return str(read_reward_meta(reward_dir).get("kind", "latent"))
