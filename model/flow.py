"""Flow matching, Step-Video's convention (paper Eq. 5-7; docs/flow-dpo.md), the one convention for the whole repository:

    t = 0 is pure noise, t = 1 is data
    x_t = (1 - t) * x0 + t * x1          x0 ~ N(0, I) noise, x1 = clean VAE latent (unscaled posterior sample)
    v   = dx_t/dt = x1 - x0              the DiT's regression target (it takes t in [0, 1], x1000 inside)
    sampling integrates t: 0 -> 1 with Euler, x <- x + v * (t[i+1] - t[i]), in fp32

Kept apart from the network (minRF style): nothing here knows about the DiT beyond a ``velocity(x, t)`` callable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def timesteps(num_steps: int, shift: float) -> torch.Tensor:
    """The shifted schedule of ``FlowMatchDiscreteScheduler.set_timesteps``, (N+1,) fp32, t[0]=0, t[N]=1.

    ``s = linspace(1, 0, N+1)``; ``s <- shift*s / (1 + (shift-1)*s)`` (SD3 shift); ``t = 1 - s``.
    Step i feeds t[i] to the model and moves to t[i+1]. For N=50, shift=13: t[1]=0.0015674, t[25]=0.0714286.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    sigma = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64)
    sigma = shift * sigma / (1.0 + (shift - 1.0) * sigma)
    t = (1.0 - sigma).to(torch.float32)
    t[0], t[-1] = 0.0, 1.0
    return t


def initial_noise(seed: int, shape: Sequence[int]) -> torch.Tensor:
    """The initial noise x0 for one sample: a pure function of (seed, shape).

    Drawn as ``torch.randn(shape, dtype=float32, generator=torch.Generator("cpu").manual_seed(seed))`` on the CPU,
    so it is identical on every machine and device and independent of batch composition; move it to the device
    afterwards. (The official pipeline ignores its seed; multi-seed candidates need this to work.)
    """
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32)


def batch_noise(seeds: Sequence[int], shape: Sequence[int]) -> torch.Tensor:
    """Stack :func:`initial_noise` for each seed: (len(seeds), *shape) fp32 on CPU."""
    return torch.stack([initial_noise(seed, shape) for seed in seeds])


def _expand_t(t: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """t scalar or (B,) -> broadcastable to ``like`` (B, ...)."""
    t = torch.as_tensor(t, dtype=torch.float32, device=like.device)
    if t.ndim == 0:
        return t
    return t.reshape(-1, *([1] * (like.ndim - 1)))


def interpolate(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """x_t = (1 - t) * x0 + t * x1 (fp32). x0, x1: (B, ...); t: scalar or (B,)."""
    t = _expand_t(t, x0)
    return (1.0 - t) * x0.float() + t * x1.float()


def velocity_target(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """v = x1 - x0 (fp32), the training target."""
    return x1.float() - x0.float()


def flow_matching_loss(
    velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x0: torch.Tensor, x1: torch.Tensor,
    t: torch.Tensor, weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """The flow-matching (pre)training loss: mean ||velocity(x_t, t) - (x1 - x0)||^2 over every element (fp32).

    x0 (noise), x1 (clean latents): (B, ...); t: (B,) in [0, 1]; ``velocity(x_t, t)`` is the network's prediction;
    ``weight``: optional per-element weights broadcastable to x1 (e.g. (B, F, 1, H, W) per latent cell), mean 1
    keeps the loss's scale.
    """
    err = (velocity(interpolate(x0, x1, t), t).float() - velocity_target(x0, x1)).pow(2)
    return err.mean() if weight is None else (err * weight).mean()


def sample_training_t(
    batch: int, generator: torch.Generator | None = None, kind: str = "uniform", device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Training timesteps (B,) fp32 in (0, 1). The paper does not state its distribution.

    kind: ``"uniform"``, ``"logit_normal"`` (SD3, mean 0 std 1) or ``"u_shaped"`` (Turbo, p(u) ~ e^{5u} + e^{-5u}).
    """
    u = torch.rand(batch, generator=generator, dtype=torch.float32)
    if kind == "uniform":
        t = u
    elif kind == "logit_normal":
        t = torch.sigmoid(torch.randn(batch, generator=generator, dtype=torch.float32))
    elif kind == "u_shaped":
        # Inverse CDF of p(t) ∝ e^{a t} + e^{-a t} = 2 cosh(a t) on [0, 1]: CDF = sinh(a t) / sinh(a).
        a = 5.0
        t = torch.asinh(u * torch.sinh(torch.tensor(a))) / a
    else:
        raise ValueError(f"unknown timestep distribution {kind!r}")
    return t.clamp(1e-5, 1 - 1e-5).to(device)


def cfg_combine(v_cond: torch.Tensor, v_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: v_u + w (v_c - v_u)."""
    return v_uncond + scale * (v_cond - v_uncond)


VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def euler_sample(
    velocity: VelocityFn,
    x0: torch.Tensor,
    schedule: torch.Tensor,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Integrate dx/dt = velocity(x, t) from t = schedule[0] (noise) to schedule[-1] (data) with Euler, in fp32.

    Args:
        velocity: ``velocity(x (B, ...) fp32, t (B,) fp32) -> v (B, ...)``; CFG lives inside this callable.
        x0: (B, ...) initial noise.
        schedule: (N+1,) increasing times, usually :func:`timesteps`.
        progress: called as ``progress(i, N)`` after step i (1-based).

    Returns:
        (B, ...) fp32 sample at t = schedule[-1].
    """
    x = x0.float()
    schedule = schedule.float()
    n = len(schedule) - 1
    for i in range(n):
        t = schedule[i].to(x.device).expand(x.shape[0])  # (B,)
        v = velocity(x, t).float()
        x = x + v * (schedule[i + 1] - schedule[i]).item()
        if progress is not None:
            progress(i + 1, n)
    return x
