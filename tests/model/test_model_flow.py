"""Flow-matching convention: schedule values, seeded noise, and training target/sampler agreement."""

import pytest
import torch

from model import flow


def test_schedule_values_n50_shift13():
    t = flow.timesteps(50, 13.0)
    assert t.shape == (51,) and t.dtype == torch.float32
    assert t[0].item() == 0.0 and t[-1].item() == 1.0
    assert t[1].item() == pytest.approx(0.0015674, abs=1e-7)
    assert t[25].item() == pytest.approx(0.0714286, abs=1e-7)
    assert t[49].item() == pytest.approx(0.7903226, abs=1e-7)
    assert torch.all(t[1:] > t[:-1])


def test_schedule_turbo_values():
    t = flow.timesteps(10, 17.0)
    assert t[1].item() == pytest.approx(0.0065, abs=1e-4)
    assert t[9].item() == pytest.approx(0.3462, abs=1e-4)


def test_noise_is_a_pure_function_of_seed_and_shape():
    a = flow.initial_noise(1234, (3, 4, 5, 6))
    b = flow.initial_noise(1234, (3, 4, 5, 6))
    c = flow.initial_noise(1235, (3, 4, 5, 6))
    assert a.dtype == torch.float32 and a.device.type == "cpu"
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    # independent of the batch it is drawn in
    batch = flow.batch_noise([7, 1234], (3, 4, 5, 6))
    assert torch.equal(batch[1], a)
    # documented recipe
    ref = torch.randn((3, 4, 5, 6), generator=torch.Generator("cpu").manual_seed(1234), dtype=torch.float32)
    assert torch.equal(a, ref)


def test_interpolate_endpoints_and_target():
    x0, x1 = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    torch.testing.assert_close(flow.interpolate(x0, x1, 0.0), x0)
    torch.testing.assert_close(flow.interpolate(x0, x1, 1.0), x1)
    t = torch.tensor([0.25, 0.75])
    xt = flow.interpolate(x0, x1, t)
    torch.testing.assert_close(xt[1], 0.25 * x0[1] + 0.75 * x1[1])
    torch.testing.assert_close(flow.velocity_target(x0, x1), x1 - x0)


@pytest.mark.parametrize("steps,shift", [(50, 13.0), (12, 17.0), (3, 1.0)])
def test_sampler_with_the_exact_target_carries_x0_to_x1(steps, shift):
    x0 = flow.initial_noise(0, (2, 3, 4, 4))
    x1 = flow.initial_noise(1, (2, 3, 4, 4))

    def oracle(x, t):  # a model that returns exactly the training target v = x1 - x0
        return flow.velocity_target(x0, x1)

    calls = []
    out = flow.euler_sample(oracle, x0, flow.timesteps(steps, shift), progress=lambda i, n: calls.append((i, n)))
    torch.testing.assert_close(out, x1, rtol=1e-5, atol=1e-5)
    assert calls == [(i, steps) for i in range(1, steps + 1)]


def test_sampler_velocity_sees_x_t_on_the_straight_path():
    x0 = flow.initial_noise(0, (1, 8))
    x1 = flow.initial_noise(1, (1, 8))

    def check(x, t):
        torch.testing.assert_close(x, flow.interpolate(x0, x1, t), rtol=1e-5, atol=1e-5)
        return x1 - x0

    flow.euler_sample(check, x0, flow.timesteps(5, 13.0))


def test_cfg_combine():
    c, u = torch.tensor([2.0]), torch.tensor([1.0])
    assert flow.cfg_combine(c, u, 9.0).item() == pytest.approx(10.0)
    assert flow.cfg_combine(c, u, 1.0).item() == pytest.approx(2.0)


def test_training_t_distributions():
    g = torch.Generator().manual_seed(0)
    for kind in ("uniform", "logit_normal", "u_shaped"):
        t = flow.sample_training_t(4096, g, kind)
        assert t.shape == (4096,) and 0 < t.min() and t.max() < 1
    u = flow.sample_training_t(20000, g, "u_shaped")
    assert ((u < 0.2) | (u > 0.8)).float().mean() > 0.6  # mass at both ends


def test_flow_matching_loss_is_zero_for_the_exact_velocity_and_the_mse_otherwise():
    x0, x1, t = torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.tensor([0.2, 0.9])
    seen = []

    def exact(xt, tt):
        seen.append(xt)
        return x1 - x0

    assert float(flow.flow_matching_loss(exact, x0, x1, t)) == 0.0
    torch.testing.assert_close(seen[0], flow.interpolate(x0, x1, t))
    off = flow.flow_matching_loss(lambda xt, tt: x1 - x0 + 0.5, x0, x1, t)
    assert abs(float(off) - 0.25) < 1e-6
