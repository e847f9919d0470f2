"""Flow-DPO losses as pure functions (no model, no optimizer, no I/O).

Time convention (Step's, whole repository): t = 0 is pure noise, t = 1 is data,
``x_t = (1 - t) * x0 + t * x1`` with ``x0 ~ N(0, I)``; velocity target ``v = x1 - x0``.

Notation for one pair (prompt y, chosen latent x1_w, rejected latent x1_l), ONE shared (t, x0):

    e_theta(x) = mean over non-batch elements of (u_theta(x_t, y, t) - v)^2     (fp32)
    e_ref(x)   = the same with the frozen reference
    h          = -(1/2) * [(e_theta(w) - e_ref(w)) - (e_theta(l) - e_ref(l))]   ("log-ratio difference")
    z          = beta * h                                                       (the DPO logit)

Diffusion-DPO (Wallace et al., arXiv 2311.12908) Eq. 14 gives ``-log sigmoid(z)`` for epsilon-prediction with
noise at the end of the chain; VideoAlign (arXiv 2501.13918) §4 Eq. 8 is the same with velocities. Both put the
noise at t = 1; the loss only uses errors at a shared t, so the convention enters only through how ``x_t`` and ``v``
are built (``model.flow.interpolate`` / ``model.flow.velocity_target``, used by the trainer) and through the
``derived`` beta schedule.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

# ----------------------------------------------------------------------------------------------------------------
# 1. Flow-matching pieces (Step's convention)
# ----------------------------------------------------------------------------------------------------------------


def velocity_mse(pred: Tensor, target: Tensor, frame_weights: Tensor | None = None) -> Tensor:
    """Per-sample MSE in fp32 over all non-batch elements.  pred, target: (B, F, ...) -> (B,).

    ``frame_weights`` (B, F): a weighted mean over the latent frames instead (per-segment labels, DenseDPO: only
    the frames of the segments the pair's preference holds in count); all ones = the plain mean."""
    diff = pred.float() - target.float()
    if frame_weights is None:
        return diff.pow(2).flatten(1).mean(dim=1)
    per_frame = diff.pow(2).flatten(2).mean(dim=2)  # (B, F)
    w = frame_weights.to(per_frame.device, torch.float32)
    return (w * per_frame).sum(dim=1) / w.sum(dim=1).clamp(min=1e-12)


def segment_frame_weights(segments: Sequence[str], num_frames: int) -> Tensor:
    """(F,) weights of a pair's latent frames from its per-segment outcomes (chosen / rejected / same, in time order).

    The S segments and the F latent frames both tile the clip uniformly (the VAE compresses time uniformly); a
    frame's weight is the share of its time covered by segments where the chosen clip is the better one (1 inside
    such a segment, 0 where the clips are the same or the rejected one is better, a fraction for a frame across a
    boundary). No segments: all ones (the whole clip, as without segment labels)."""
    if not segments:
        return torch.ones(num_frames)
    S = len(segments)
    w = torch.zeros(num_frames)
    for f in range(num_frames):  # in units of 1 / (F S) of the clip: frame f = [f S, (f+1) S), segment k = [k F, (k+1) F)
        for k, outcome in enumerate(segments):
            if outcome == "chosen":
                w[f] += max(0, min((f + 1) * S, (k + 1) * num_frames) - max(f * S, k * num_frames))
    return w / S


def _t_uniform(u: Tensor, **_: float) -> Tensor:
    return u


def _t_logit_normal(u: Tensor, *, mean: float, std: float, **_: float) -> Tensor:
    # SD3's logit-normal density, written for Step's t: t = sigmoid(n), n ~ N(mean, std); mean > 0 favours data.
    n = mean + std * math.sqrt(2.0) * torch.erfinv(2 * u.double().clamp(1e-7, 1 - 1e-7) - 1)
    return torch.sigmoid(n).float()


def _t_shifted(u: Tensor, *, shift: float, **_: float) -> Tensor:
    # The sampler's shift applied to the noise level s = 1 - t: s' = shift*s / (1 + (shift-1)*s).
    # shift > 1 moves mass toward the noise end (t -> 0), as the sampler's shift does (model.flow.timesteps).
    s = 1 - u
    return 1 - shift * s / (1 + (shift - 1) * s)


T_SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "uniform": _t_uniform,
    "logit_normal": _t_logit_normal,
    "shifted": _t_shifted,
}


def sample_timesteps(
    n: int,
    *,
    mode: str = "uniform",
    generator: torch.Generator | None = None,
    logit_normal_mean: float = 0.0,
    logit_normal_std: float = 1.0,
    shift: float = 1.0,
) -> Tensor:
    """Draw n training times in [0, 1] (fp32, on the generator's device; one per PAIR, shared by both members)."""
    u = torch.rand(n, generator=generator, dtype=torch.float32)
    return T_SAMPLERS[mode](u, mean=logit_normal_mean, std=logit_normal_std, shift=shift).clamp(0.0, 1.0)


def pair_seed(seed: int, pair_id: str, draw: int) -> int:
    """A 63-bit seed that depends only on (run seed, pair, draw): not on batch layout, world size or resumption."""
    digest = hashlib.blake2b(f"{seed}:{pair_id}:{draw}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def pair_draws(pair_ids: Sequence[str], draw: int, shape: tuple[int, ...], config: Any) -> tuple[Tensor, Tensor]:
    """One t (B,) and one noise x0 (B, F, C, h, w) per pair, shared by chosen and rejected (fp32, CPU)."""
    ts, noises = [], []
    for pid in pair_ids:
        g = torch.Generator(device="cpu").manual_seed(pair_seed(config.seed, pid, draw))
        ts.append(sample_timesteps(1, mode=config.t_sampling, generator=g, logit_normal_mean=config.logit_normal_mean,
                                   logit_normal_std=config.logit_normal_std, shift=config.t_shift))
        noises.append(torch.randn(shape, generator=g, dtype=torch.float32))
    return torch.cat(ts), torch.stack(noises)


FORWARD_TEXT_KEYS = ("llm_states", "llm_mask", "clip_states")


def flow_inputs(batch: dict[str, Any], draw: int, config: Any, device: torch.device) -> tuple[Tensor, ...]:
    """t (B,), x_t and velocity targets of chosen and rejected (B, F, C, h, w), text kwargs of the DiT."""
    from model.flow import interpolate, velocity_target

    x1_w = batch["latent_chosen"].to(device, torch.float32)  # (B, F, C, h, w)
    x1_l = batch["latent_rejected"].to(device, torch.float32)
    t, x0 = pair_draws(batch["pair_id"], draw, tuple(x1_w.shape[1:]), config)
    t, x0 = t.to(device), x0.to(device)
    xt_w, xt_l = interpolate(x0, x1_w, t), interpolate(x0, x1_l, t)  # same t, same x0 within each pair
    v_w, v_l = velocity_target(x0, x1_w), velocity_target(x0, x1_l)
    # The sampler (model.pipeline) calls the DiT without clip_mask (official behaviour: all 77 CLIP positions
    # attended), so training conditions the same way; clip_mask is read and validated but not passed.
    text = {k: batch[k].to(device) for k in FORWARD_TEXT_KEYS}
    return t, xt_w, xt_l, v_w, v_l, text


# ----------------------------------------------------------------------------------------------------------------
# 2. beta schedule
# ----------------------------------------------------------------------------------------------------------------

BETA_SCHEDULES: dict[str, Callable[[float, Tensor], Tensor]] = {
    # Constant beta: VideoAlign §4 / Table 6 found it beats the derived weight (which reward-hacks).
    "constant": lambda beta, t: torch.full_like(t, beta, dtype=torch.float32),
    # VideoAlign's derived timestep weight beta * (1 - tau)^2 with tau = 1 - t their noise-at-1 time: beta * t^2.
    "derived": lambda beta, t: beta * t.float().pow(2),
}


def beta_per_sample(beta: float, t: Tensor, schedule: str = "constant") -> Tensor:
    """(B,) fp32 effective beta for each pair."""
    return BETA_SCHEDULES[schedule](beta, t)


# ----------------------------------------------------------------------------------------------------------------
# 3. The DPO losses on the error differences (TRL 1.16 formulas, logits -> h, beta * logits -> z)
# ----------------------------------------------------------------------------------------------------------------


def _loss_sigmoid(z: Tensor, h: Tensor, beta: Tensor, label_smoothing: float) -> Tensor:
    # Diffusion-DPO Eq. 14 / Flow-DPO (VideoAlign Eq. 8): -log sigmoid(z); with label smoothing = cDPO (TRL sigmoid).
    return -(1 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)


def _loss_hinge(z: Tensor, h: Tensor, beta: Tensor, label_smoothing: float) -> Tensor:
    # SLiC hinge (TRL "hinge"): relu(1 - beta * logits).
    return torch.relu(1 - z)


def _loss_ipo(z: Tensor, h: Tensor, beta: Tensor, label_smoothing: float) -> Tensor:
    # IPO (Azar et al. 2023, Eq. 17; TRL "ipo"): (logits - 1/(2 beta))^2, beta acting as tau.
    return (h - 1 / (2 * beta)) ** 2


def _loss_robust(z: Tensor, h: Tensor, beta: Tensor, label_smoothing: float) -> Tensor:
    # Robust DPO (Chowdhury et al. 2024, Eq. 7; TRL "robust"): unbiased under label-flip rate eps.
    eps = label_smoothing
    return (-(1 - eps) * F.logsigmoid(z) + eps * F.logsigmoid(-z)) / (1 - 2 * eps)


LOSS_FUNCTIONS: dict[str, Callable[[Tensor, Tensor, Tensor, float], Tensor]] = {
    "sigmoid": _loss_sigmoid,
    "hinge": _loss_hinge,
    "ipo": _loss_ipo,
    "robust": _loss_robust,
}


@dataclass
class DPOLossOutput:
    """The scalar objective and every per-pair quantity (all fp32, shape (B,) unless noted)."""

    loss: Tensor  # () mean over pairs of weight * (dpo loss + sft term)
    losses: Tensor  # per-pair dpo loss + sft term (unweighted)
    z: Tensor  # DPO logits beta * h
    rewards_chosen: Tensor  # -(beta/2) (e_theta(w) - e_ref(w))
    rewards_rejected: Tensor  # -(beta/2) (e_theta(l) - e_ref(l))
    policy_chosen: Tensor
    policy_rejected: Tensor
    ref_chosen: Tensor
    ref_rejected: Tensor
    beta: Tensor
    weights: Tensor
    t: Tensor | None = None

    def detach(self) -> DPOLossOutput:
        return DPOLossOutput(**{f.name: (None if getattr(self, f.name) is None else getattr(self, f.name).detach())
                                for f in fields(self)})


def flow_dpo_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    *,
    beta: float | Tensor,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    sft_weight: float = 0.0,
    weights: Tensor | None = None,
    t: Tensor | None = None,
) -> DPOLossOutput:
    """Flow-DPO on per-pair velocity errors (each (B,), fp32). ``beta`` is a float or a (B,) tensor."""
    policy_chosen, policy_rejected = policy_chosen.float(), policy_rejected.float()
    ref_chosen, ref_rejected = ref_chosen.float().detach(), ref_rejected.float().detach()
    beta_t = torch.as_tensor(beta, dtype=torch.float32, device=policy_chosen.device).expand_as(policy_chosen)
    if weights is None:
        weights = torch.ones_like(policy_chosen)
    weights = weights.to(policy_chosen.device, torch.float32)

    chosen_diff = policy_chosen - ref_chosen  # e_theta(w) - e_ref(w)
    rejected_diff = policy_rejected - ref_rejected  # e_theta(l) - e_ref(l)
    h = -0.5 * (chosen_diff - rejected_diff)
    # Diffusion-DPO Eq. 14 (arXiv 2311.12908), velocity form of VideoAlign Eq. 8:
    # z = -(beta/2) * [(e_theta(w) - e_ref(w)) - (e_theta(l) - e_ref(l))]
    z = beta_t * h
    losses = LOSS_FUNCTIONS[loss_type](z, h, beta_t, label_smoothing)
    if sft_weight:
        losses = losses + sft_weight * policy_chosen  # SFT term lambda * e_theta(w) against likelihood displacement
    loss = (weights * losses).mean()
    return DPOLossOutput(
        loss=loss,
        losses=losses,
        z=z,
        rewards_chosen=-0.5 * beta_t * chosen_diff,
        rewards_rejected=-0.5 * beta_t * rejected_diff,
        policy_chosen=policy_chosen,
        policy_rejected=policy_rejected,
        ref_chosen=ref_chosen,
        ref_rejected=ref_rejected,
        beta=beta_t,
        weights=weights,
        t=t,
    )


def error_coefficients(
    policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor, **loss_kwargs
) -> tuple[Tensor, Tensor]:
    """dL/de_theta(w) and dL/de_theta(l), each (B,), detached: the exact memory-saving backward's coefficients.

    For the sigmoid loss with unit weights and batch size B they equal ``c / B`` and ``-c / B`` with
    ``c = (beta/2) * sigmoid(-z)`` (docs/flow-dpo.md). Obtained with autograd on the cheap scalar function, so every
    loss type, weight and the SFT term are handled by the same code.
    """
    pw = policy_chosen.detach().float().requires_grad_(True)
    pl = policy_rejected.detach().float().requires_grad_(True)
    with torch.enable_grad():
        out = flow_dpo_loss(pw, pl, ref_chosen, ref_rejected, **loss_kwargs)
        grad_w, grad_l = torch.autograd.grad(out.loss, (pw, pl))
    return grad_w.detach(), grad_l.detach()


def sigmoid_coefficient(z: Tensor, beta: float | Tensor) -> Tensor:
    """c = (beta/2) * sigmoid(-z): dL/de_theta(w) of -log sigmoid(z) for one pair (= -dL/de_theta(l))."""
    return 0.5 * torch.as_tensor(beta, dtype=torch.float32) * torch.sigmoid(-z.float())


# ----------------------------------------------------------------------------------------------------------------
# 4. Metrics (TRL names)
# ----------------------------------------------------------------------------------------------------------------


def concat_outputs(outputs: Sequence[DPOLossOutput]) -> DPOLossOutput:
    """Join the per-pair tensors of several micro-batches (for per-optimizer-step metrics)."""
    merged = {}
    for f in fields(DPOLossOutput):
        if f.name == "loss":
            continue
        vals = [getattr(o, f.name) for o in outputs]
        merged[f.name] = None if any(v is None for v in vals) else torch.cat([v.detach().float().cpu() for v in vals])
    merged["loss"] = (merged["weights"] * merged["losses"]).mean()
    return DPOLossOutput(**merged)


def implicit_accuracy(z: Tensor) -> Tensor:
    """Per-pair [z > 0] with ties counted half."""
    return (z > 0).float() + 0.5 * (z == 0).float()


def dpo_metrics(out: DPOLossOutput, *, num_t_buckets: int = 4) -> dict[str, float]:
    """Per-step metrics from (possibly concatenated) per-pair outputs."""
    z = out.z.detach().float()
    m = {
        "loss": float(out.loss.detach()),
        "rewards/chosen": float(out.rewards_chosen.mean()),
        "rewards/rejected": float(out.rewards_rejected.mean()),
        "rewards/margins": float(z.mean()),
        "rewards/accuracies": float(implicit_accuracy(z).mean()),
        "dpo/grad_weight": float(torch.sigmoid(-z).mean()),
        "mse/policy_chosen": float(out.policy_chosen.mean()),
        "mse/policy_rejected": float(out.policy_rejected.mean()),
        "mse/ref_chosen": float(out.ref_chosen.mean()),
        "mse/ref_rejected": float(out.ref_rejected.mean()),
    }
    if out.t is not None:
        m.update(t_bucket_metrics(z, out.t, num_t_buckets))
    return m


def t_bucket_metrics(z: Tensor, t: Tensor, num_buckets: int) -> dict[str, float]:
    """Accuracy, margin and count per equal-width t bucket; empty buckets are omitted (no NaN in the JSON)."""
    t = t.detach().float().cpu()
    z = z.detach().float().cpu()
    idx = (t * num_buckets).long().clamp(0, num_buckets - 1)
    out: dict[str, float] = {}
    for b in range(num_buckets):
        sel = idx == b
        if not bool(sel.any()):
            continue
        name = f"t_bucket/{b / num_buckets:.2f}-{(b + 1) / num_buckets:.2f}"
        out[f"{name}/accuracy"] = float(implicit_accuracy(z[sel]).mean())
        out[f"{name}/margin"] = float(z[sel].mean())
        out[f"{name}/count"] = int(sel.sum())
    return out
