"""Pure-function tests of dpo/losses.py: hand-computed values for every loss type, invariants, coefficients."""

import math

import pytest
import torch

from dpo.losses import (
    LOSS_FUNCTIONS,
    concat_outputs,
    dpo_metrics,
    error_coefficients,
    flow_dpo_loss,
    sample_timesteps,
    sigmoid_coefficient,
    velocity_mse,
)

LN2 = math.log(2.0)


def _errors():
    # Two pairs. Pair 0: policy lowered the winner's error -> h = -(1/2)[(0.9-1.0) - (1.2-1.1)] = 0.1
    # Pair 1: policy lowered the loser's error -> h = -(1/2)[(1.0-1.0) - (0.8-1.0)] = -0.1
    pw = torch.tensor([0.9, 1.0])
    pl = torch.tensor([1.2, 0.8])
    rw = torch.tensor([1.0, 1.0])
    rl = torch.tensor([1.1, 1.0])
    return pw, pl, rw, rl


def test_zero_logit_and_ln2_when_policy_equals_reference():
    e = torch.rand(5)
    f = torch.rand(5)
    out = flow_dpo_loss(e, f, e.clone(), f.clone(), beta=2000.0)
    assert torch.equal(out.z, torch.zeros(5))
    assert out.loss.item() == pytest.approx(LN2, abs=1e-7)
    m = dpo_metrics(out)
    assert m["rewards/accuracies"] == 0.5  # ties count half
    assert m["rewards/margins"] == 0.0
    assert m["dpo/grad_weight"] == 0.5


@pytest.mark.parametrize(
    "loss_type, ls, expected",
    [
        # beta = 10 -> z = [1, -1]
        ("sigmoid", 0.0, [math.log1p(math.exp(-1)), math.log1p(math.exp(1))]),
        # cDPO: -(0.9) log s(z) - 0.1 log s(-z)
        (
            "sigmoid",
            0.1,
            [0.9 * math.log1p(math.exp(-1)) + 0.1 * math.log1p(math.exp(1)),
             0.9 * math.log1p(math.exp(1)) + 0.1 * math.log1p(math.exp(-1))],
        ),
        ("hinge", 0.0, [0.0, 2.0]),
        # IPO: (h - 1/(2 beta))^2, h = [0.1, -0.1], 1/(2 beta) = 0.05
        ("ipo", 0.0, [0.05**2, 0.15**2]),
        # robust: (-(1-e) log s(z) + e log s(-z)) / (1 - 2e), e = 0.1
        (
            "robust",
            0.1,
            [(0.9 * math.log1p(math.exp(-1)) - 0.1 * math.log1p(math.exp(1))) / 0.8,
             (0.9 * math.log1p(math.exp(1)) - 0.1 * math.log1p(math.exp(-1))) / 0.8],
        ),
    ],
)
def test_hand_computed_loss_values(loss_type, ls, expected):
    pw, pl, rw, rl = _errors()
    out = flow_dpo_loss(pw, pl, rw, rl, beta=10.0, loss_type=loss_type, label_smoothing=ls)
    torch.testing.assert_close(out.z, torch.tensor([1.0, -1.0]), rtol=0, atol=1e-5)
    torch.testing.assert_close(out.losses, torch.tensor(expected), rtol=1e-5, atol=1e-6)
    assert out.loss.item() == pytest.approx(sum(expected) / 2, rel=1e-5)


def test_rewards_margins_weights_and_sft_term():
    pw, pl, rw, rl = _errors()
    w = torch.tensor([2.0, 0.0])
    out = flow_dpo_loss(pw, pl, rw, rl, beta=10.0, weights=w, sft_weight=0.5)
    # rewards/chosen = -(beta/2)(e_w - e_ref_w) = [0.5, 0]; rejected = [-0.5, 1]
    torch.testing.assert_close(out.rewards_chosen, torch.tensor([0.5, 0.0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.rewards_rejected, torch.tensor([-0.5, 1.0]), atol=1e-5, rtol=0)
    sig = torch.tensor([math.log1p(math.exp(-1)), math.log1p(math.exp(1))]) + 0.5 * pw
    assert out.loss.item() == pytest.approx(float((w * sig).mean()), rel=1e-6)
    m = dpo_metrics(out)
    assert m["rewards/accuracies"] == 0.5
    assert m["rewards/margins"] == pytest.approx(0.0, abs=1e-6)
    assert m["mse/policy_chosen"] == pytest.approx(0.95)
    assert m["mse/ref_rejected"] == pytest.approx(1.05)


def test_loss_registry_is_the_four_trl_types():
    assert set(LOSS_FUNCTIONS) == {"sigmoid", "hinge", "ipo", "robust"}


def test_error_coefficients_equal_design_formula_for_sigmoid():
    pw, pl, rw, rl = _errors()
    beta = 10.0
    gw, gl = error_coefficients(pw, pl, rw, rl, beta=beta)
    out = flow_dpo_loss(pw, pl, rw, rl, beta=beta)
    c = sigmoid_coefficient(out.z, beta)
    torch.testing.assert_close(gw, c / 2)  # mean over B = 2 pairs
    torch.testing.assert_close(gl, -c / 2)


@pytest.mark.parametrize("loss_type", ["sigmoid", "hinge", "ipo", "robust"])
def test_error_coefficients_match_autograd_of_the_loss(loss_type):
    pw = torch.tensor([0.9, 1.3, 0.7], requires_grad=True)
    pl = torch.tensor([1.2, 0.8, 0.71], requires_grad=True)
    rw, rl = torch.tensor([1.0, 1.0, 0.7]), torch.tensor([1.1, 1.0, 0.7])
    kw = dict(beta=3.0, loss_type=loss_type, label_smoothing=0.1 if loss_type == "robust" else 0.0,
              sft_weight=0.2, weights=torch.tensor([1.0, 2.0, 0.5]))
    flow_dpo_loss(pw, pl, rw, rl, **kw).loss.backward()
    gw, gl = error_coefficients(pw, pl, rw, rl, **kw)
    torch.testing.assert_close(gw, pw.grad)
    torch.testing.assert_close(gl, pl.grad)


def test_velocity_mse_is_per_sample_fp32_mean():
    a = torch.zeros(2, 1, 2, 2, 2, dtype=torch.bfloat16)
    b = torch.ones(2, 1, 2, 2, 2, dtype=torch.bfloat16)
    b[1] *= 2
    e = velocity_mse(a, b)
    assert e.dtype == torch.float32 and e.shape == (2,)
    torch.testing.assert_close(e, torch.tensor([1.0, 4.0]))


@pytest.mark.parametrize("mode", ["uniform", "logit_normal", "shifted"])
def test_timestep_sampling_is_seeded_and_in_range(mode):
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    a = sample_timesteps(4000, mode=mode, generator=g1, shift=3.0)
    b = sample_timesteps(4000, mode=mode, generator=g2, shift=3.0)
    assert torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1
    if mode == "shifted":
        assert a.mean() < 0.4  # shift > 1 favours the noise end (t -> 0)
    else:
        assert abs(a.mean().item() - 0.5) < 0.03


def test_concat_and_t_bucket_metrics():
    pw, pl, rw, rl = _errors()
    o1 = flow_dpo_loss(pw[:1], pl[:1], rw[:1], rl[:1], beta=10.0, t=torch.tensor([0.1]))
    o2 = flow_dpo_loss(pw[1:], pl[1:], rw[1:], rl[1:], beta=10.0, t=torch.tensor([0.9]))
    joint = flow_dpo_loss(pw, pl, rw, rl, beta=10.0, t=torch.tensor([0.1, 0.9]))
    m = dpo_metrics(concat_outputs([o1, o2]), num_t_buckets=4)
    mj = dpo_metrics(joint, num_t_buckets=4)
    assert m["loss"] == pytest.approx(mj["loss"])
    assert m["t_bucket/0.00-0.25/accuracy"] == 1.0
    assert m["t_bucket/0.75-1.00/accuracy"] == 0.0
    assert m["t_bucket/0.75-1.00/margin"] == pytest.approx(-1.0, abs=1e-5)
    assert "t_bucket/0.25-0.50/accuracy" not in m
