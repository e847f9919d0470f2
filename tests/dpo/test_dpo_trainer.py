"""Trainer tests on the tiny preset (CPU): invariants, reference handling, exact backward trick, resume, accumulation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from dpo.config import FlowDPOConfig
from dpo.data import collate_pairs
from dpo.losses import flow_inputs
from dpo.reference import CachedReference
from dpo.trainer import FlowDPOTrainer, NonFiniteLossError

LN2 = math.log(2.0)
FAST = dict(beta=50.0, learning_rate=1e-4, save_steps=0, bf16=False)


def _metrics(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]


def _trainer(tmp_path, manifest, root, name="out", **cfg) -> FlowDPOTrainer:
    config = FlowDPOConfig(**{**FAST, **cfg})
    t = FlowDPOTrainer(config, manifest=manifest, init=root, out_dir=tmp_path / name, device="cpu")
    t.setup()
    return t


def _batch(trainer, idx) -> dict:
    b = collate_pairs([trainer.dataset[i] for i in idx])
    b["draw"] = 0
    return b


def test_step0_loss_is_ln2_and_z_is_zero(tmp_path, tiny_root, manifest_factory):
    trainer = _trainer(tmp_path, manifest_factory(num_pairs=2), tiny_root, max_steps=1, per_device_train_batch_size=2)
    trainer.train()
    m = _metrics(tmp_path / "out")[0]
    assert m["loss"] == pytest.approx(LN2, abs=1e-6)
    assert m["rewards/margins"] == 0.0
    assert m["rewards/accuracies"] == 0.5
    assert m["dpo/grad_weight"] == 0.5
    assert m["mse/policy_chosen"] == m["mse/ref_chosen"]
    for key in ("rewards/chosen", "rewards/rejected", "grad_norm", "learning_rate", "pairs_per_s", "step_time_s",
                "peak_memory_gb", "round", "mse/policy_rejected", "mse/ref_rejected"):
        assert key in m
    assert any(k.startswith("t_bucket/") for k in m)


def test_t_and_noise_shared_inside_a_pair(tmp_path, tiny_root, manifest_factory):
    trainer = _trainer(tmp_path, manifest_factory(num_pairs=2), tiny_root, max_steps=1)
    calls = []
    ref = trainer.reference

    def recording(x, t, **text):
        calls.append((x.clone(), t.clone()))
        return ref(x, t, **text)

    trainer.reference = recording
    batch = _batch(trainer, [0, 1])
    trainer.step([batch])
    x, t = calls[0]  # joint call on [chosen; rejected]
    B = 2
    assert torch.equal(t[:B], t[B:])
    assert t[0] != t[1]  # different pairs draw different t
    tt = t[:B].view(B, 1, 1, 1, 1)
    x0_w = (x[:B] - tt * batch["latent_chosen"].float()) / (1 - tt)
    x0_l = (x[B:] - tt * batch["latent_rejected"].float()) / (1 - tt)
    torch.testing.assert_close(x0_w, x0_l, rtol=1e-4, atol=1e-4)  # the same noise for both members
    assert not torch.allclose(x0_w[0], x0_w[1])  # but not across pairs


def test_reference_unchanged_and_policy_changed(tmp_path, tiny_root, manifest_factory):
    trainer = _trainer(tmp_path, manifest_factory(num_pairs=4), tiny_root, max_steps=3, per_device_train_batch_size=2)
    ref_before = {k: v.clone() for k, v in trainer.reference.module.state_dict().items()}
    pol_before = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
    assert all(not p.requires_grad for p in trainer.reference.parameters())
    assert not trainer.reference.module.training
    trainer.train()
    for k, v in trainer.reference.module.state_dict().items():
        assert torch.equal(v, ref_before[k]), k
    changed = [k for k, v in trainer.policy.state_dict().items() if not torch.equal(v, pol_before[k])]
    assert len(changed) > 0.5 * len(pol_before)
    assert len(trainer.optimizer.param_groups[0]["params"]) == len(list(trainer.policy.parameters()))


def _grads(trainer) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in trainer.policy.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_memory_saving_backward_equals_joint_backward(tmp_path, tiny_root, manifest_factory, loss_type):
    manifest = manifest_factory(num_pairs=2)
    trainer = _trainer(tmp_path, manifest, tiny_root, max_steps=1, loss_type=loss_type, sft_weight=0.3)
    # Move the policy away from the reference so z != 0 and the coefficients are non-trivial.
    with torch.no_grad():
        for p in trainer.policy.parameters():
            p.add_(0.01 * torch.randn_like(p))
    batch = _batch(trainer, [0, 1])
    joint = trainer._micro_step(batch, scale=1.0, sync=True)
    g_joint = _grads(trainer)
    trainer.policy.zero_grad(set_to_none=True)
    object.__setattr__(trainer.config, "memory_saving_backward", True)
    split = trainer._micro_step(batch, scale=1.0, sync=True)
    g_split = _grads(trainer)
    assert joint.z.abs().min() > 0
    torch.testing.assert_close(split.loss, joint.loss, rtol=1e-5, atol=1e-6)
    assert set(g_joint) == set(g_split)
    for k in g_joint:  # equal up to fp32 summation order (batch 2B vs two batches of B)
        err = (g_split[k] - g_joint[k]).abs().max().item()
        assert err <= 1e-4 * g_joint[k].abs().max().item() + 1e-9, f"{k}: max diff {err}"


def test_gradient_checkpointing_gives_the_same_gradients(tmp_path, tiny_root, manifest_factory):
    manifest = manifest_factory(num_pairs=2)
    a = _trainer(tmp_path, manifest, tiny_root, "a", max_steps=1)
    b = _trainer(tmp_path, manifest, tiny_root, "b", max_steps=1, gradient_checkpointing=True)
    for t in (a, b):
        with torch.no_grad():
            torch.manual_seed(1)
            for p in t.policy.parameters():
                p.add_(0.01 * torch.randn_like(p))
        t._micro_step(_batch(t, [0, 1]), scale=1.0, sync=True)
    ga, gb = _grads(a), _grads(b)
    for k in ga:
        torch.testing.assert_close(gb[k], ga[k], rtol=1e-5, atol=1e-7, msg=k)


def test_resume_reproduces_the_uninterrupted_trajectory_exactly(tmp_path, tiny_root, manifest_factory):
    manifest = manifest_factory(num_pairs=4)
    common = dict(max_steps=6, per_device_train_batch_size=1, gradient_accumulation_steps=1, warmup_steps=2,
                  lr_scheduler_type="linear", save_steps=0)
    full = _trainer(tmp_path, manifest, tiny_root, "full", **common)
    full.train()
    reference_losses = [m["loss"] for m in _metrics(tmp_path / "full")]

    # Interrupted run: stop after step 3 (saves a checkpoint), then resume in a fresh trainer.
    first = _trainer(tmp_path, manifest, tiny_root, "resumed", **common)
    first.callbacks.append(lambda m: first.request_stop() if m["step"] == 3 else None)
    result = first.train()
    assert result.stopped and result.steps == 3 and result.final_dir is None
    assert (tmp_path / "resumed/checkpoints/step-3/trainer_state.pt").is_file()
    status = json.loads((tmp_path / "resumed/run_status.json").read_text())
    assert status["state"] == "stopped" and status["step"] == 3
    first.cleanup()

    second = FlowDPOTrainer(FlowDPOConfig(**{**FAST, **common}), manifest=manifest, init=tiny_root,
                            out_dir=tmp_path / "resumed", resume=True, device="cpu")
    second.setup()
    assert second.global_step == 3
    second.train()
    resumed_losses = [m["loss"] for m in _metrics(tmp_path / "resumed")]
    assert [m["step"] for m in _metrics(tmp_path / "resumed")] == [1, 2, 3, 4, 5, 6]
    assert resumed_losses == reference_losses  # bit-exact
    for k, v in full.policy.state_dict().items():
        assert torch.equal(v, second.policy.state_dict()[k]), k


def test_accumulation_1x4_equals_4x1(tmp_path, tiny_root, manifest_factory):
    manifest = manifest_factory(num_pairs=4)
    a = _trainer(tmp_path, manifest, tiny_root, "a", max_steps=2, per_device_train_batch_size=4)
    b = _trainer(tmp_path, manifest, tiny_root, "b", max_steps=2, per_device_train_batch_size=1,
                 gradient_accumulation_steps=4)
    a.train()
    b.train()
    ma, mb = _metrics(tmp_path / "a"), _metrics(tmp_path / "b")
    for x, y in zip(ma, mb, strict=True):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-5)
        assert x["grad_norm"] == pytest.approx(y["grad_norm"], rel=1e-4)
        assert x["rewards/margins"] == pytest.approx(y["rewards/margins"], rel=1e-4, abs=1e-5)
    for k, v in a.policy.state_dict().items():
        torch.testing.assert_close(b.policy.state_dict()[k], v, rtol=1e-4, atol=1e-6, msg=k)


def test_lora_reference_equals_base_and_adapters_merge(tmp_path, tiny_root, manifest_factory):
    from model.checkpoint import load_dit

    manifest = manifest_factory(num_pairs=2)
    trainer = _trainer(tmp_path, manifest, tiny_root, use_lora=True, lora_r=4, lora_alpha=8,
                       reference_mode="lora_adapters_off", max_steps=2, learning_rate=1e-2, save_steps=1,
                       final_dtype="float32")
    base = load_dit(tiny_root, dtype=torch.float32)
    trainable = [n for n, p in trainer.policy.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    result = trainer.train()
    batch = _batch(trainer, [0, 1])
    x = batch["latent_chosen"].float()
    t = torch.tensor([0.3, 0.7])
    text = {k: batch[k] for k in ("llm_states", "llm_mask", "clip_states")}
    with torch.no_grad():
        ref_out = trainer.reference(x, t, **text)
        base_out = base(x, t, **text)
        pol_out = trainer.policy(x, t, **text)
    torch.testing.assert_close(ref_out, base_out, rtol=0, atol=0)
    assert not torch.allclose(pol_out, base_out)  # adapters trained
    # final/ holds the merged DiT, strictly loadable by model/, equal to the adapted policy
    merged = load_dit(result.final_dir, dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(merged(x, t, **text), pol_out, rtol=1e-4, atol=1e-5)
    assert (result.final_dir / "lora_adapter/adapter_model.safetensors").is_file()
    # the adapter checkpoint merges with the CLI helper to the same weights
    from dpo.average import merge_lora

    sd = merge_lora(tiny_root, tmp_path / "out/checkpoints/step-2/adapter")
    for k, v in merged.state_dict().items():
        torch.testing.assert_close(sd[k].float(), v, rtol=1e-5, atol=1e-6)


def test_final_checkpoint_loads_strictly_into_model(tmp_path, tiny_root, manifest_factory):
    from model.checkpoint import load_dit

    trainer = _trainer(tmp_path, manifest_factory(num_pairs=2), tiny_root, max_steps=2, final_dtype="float32",
                       save_steps=1, save_total_limit=1)
    result = trainer.train()
    loaded = load_dit(result.final_dir, dtype=None)  # strict by default
    for k, v in trainer.policy.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    ckpts = sorted(p.name for p in (tmp_path / "out/checkpoints").iterdir())
    assert ckpts == ["step-2"]  # save_total_limit=1 rotated step-1 away
    assert json.loads((tmp_path / "out/resolved_config.json").read_text())["beta"] == FAST["beta"]
    again = FlowDPOTrainer(trainer.config, manifest=trainer.manifest, init=tiny_root, out_dir=tmp_path / "out")
    with pytest.raises(ValueError, match="already holds checkpoints .*step-2.* resume it"):
        again.setup()


def test_nan_loss_stops_with_step_number_and_keeps_last_good_checkpoint(tmp_path, tiny_root, manifest_factory):
    trainer = _trainer(tmp_path, manifest_factory(num_pairs=2), tiny_root, max_steps=5, save_steps=1)

    good_reference = trainer.reference

    def poison(m):  # from step 3 on, the model's output is NaN (as after an overflow)
        if m["step"] == 2:
            trainer.reference = lambda *a, **k: good_reference(*a, **k) * float("nan")

    trainer.callbacks.append(poison)
    with pytest.raises(NonFiniteLossError, match="non-finite loss at step 3") as info:
        trainer.train()
    assert info.value.last_checkpoint == tmp_path / "out/checkpoints/step-2"
    from model.checkpoint import load_dit

    good = load_dit(info.value.last_checkpoint, dtype=None)
    assert all(torch.isfinite(v).all() for v in good.state_dict().values())
    status = json.loads((tmp_path / "out/run_status.json").read_text())
    assert status["state"] == "failed" and "step 3" in status["error"]


def test_tr_dpo_soft_sync_moves_reference(tmp_path, tiny_root, manifest_factory):
    trainer = _trainer(tmp_path, manifest_factory(num_pairs=2), tiny_root, max_steps=2, sync_ref_model=True,
                       ref_model_sync_steps=2, ref_model_mixup_alpha=0.25)
    ref0 = {k: v.clone() for k, v in trainer.reference.module.state_dict().items()}
    trainer.step([_batch(trainer, [0])])
    assert all(torch.equal(v, ref0[k]) for k, v in trainer.reference.module.state_dict().items())
    trainer.step([_batch(trainer, [1])])  # step 2: ref <- 0.25 * policy + 0.75 * ref
    pol = trainer.policy.state_dict()
    for k, v in trainer.reference.module.state_dict().items():
        torch.testing.assert_close(v, 0.25 * pol[k] + 0.75 * ref0[k], msg=k)


def test_dpo_moves_samples_toward_the_chosen_side(tmp_path, tiny_dit_config, manifest_factory):
    """End-to-end sign check (trainer -> saved checkpoint -> sampler): chosen latents are the rejected ones + 1 in every
    element, so after training, samples from HELD-OUT noise must move up relative to the reference's samples."""
    from model.checkpoint import load_dit, save_dit
    from model.flow import euler_sample, timesteps
    from model.transformer import StepVideoDiT
    from tests.dpo.conftest import LATENT_SHAPE, write_text_embedding

    torch.manual_seed(0)
    base = StepVideoDiT(tiny_dit_config)
    base.init_weights(zero_out=True)  # v = 0: the reference's sample is its initial noise
    root = tmp_path / "zero_root"
    save_dit(base, root, tiny_dit_config, dtype=torch.float32)
    manifest = manifest_factory(num_pairs=16, num_prompts=2)
    trainer = _trainer(tmp_path, manifest, root, max_steps=30, per_device_train_batch_size=4, beta=500.0)
    result = trainer.train()
    policy = load_dit(result.final_dir, dtype=torch.float32).eval()

    text_path = tmp_path / "heldout.safetensors"
    write_text_embedding(text_path, tiny_dit_config, seed=100)
    from safetensors.torch import load_file

    e = load_file(str(text_path))
    text = dict(llm_states=e["llm_states"].float()[None].expand(8, -1, -1), llm_mask=e["llm_mask"][None].expand(8, -1),
                clip_states=e["clip_states"].float()[None].expand(8, -1, -1))
    x0 = torch.randn((8, *LATENT_SHAPE), generator=torch.Generator().manual_seed(1234))
    with torch.no_grad():
        moved = euler_sample(lambda x, t: policy(x, t, **text), x0, timesteps(8, 1.0)) - x0  # (8, F, C, h, w)
    assert (moved.flatten(1).mean(1) > 0).all(), moved.flatten(1).mean(1)


def _other_root(tmp_path, cfg, seed: int) -> Path:
    from model.checkpoint import save_dit
    from model.transformer import StepVideoDiT

    torch.manual_seed(seed)
    model = StepVideoDiT(cfg)
    model.init_weights(zero_out=False)
    root = tmp_path / f"other-{seed}-{cfg.num_layers}"
    save_dit(model, root, cfg, dtype=torch.float32)
    return root


def test_separate_reference_is_loaded_frozen_and_recorded(tmp_path, tiny_root, tiny_dit_config, manifest_factory):
    """A later round may keep a fixed base as reference while starting from the previous policy."""
    from model.checkpoint import load_dit

    base = _other_root(tmp_path, tiny_dit_config, seed=7)
    config = FlowDPOConfig(**{**FAST, "max_steps": 2, "per_device_train_batch_size": 2})
    trainer = FlowDPOTrainer(config, manifest=manifest_factory(num_pairs=2), init=tiny_root, reference=base,
                             out_dir=tmp_path / "out", device="cpu")
    trainer.setup()
    base_sd, init_sd = load_dit(base, dtype=None).state_dict(), load_dit(tiny_root, dtype=None).state_dict()
    for k, v in trainer.reference.module.state_dict().items():
        assert torch.equal(v, base_sd[k]), k
    for k, v in trainer.policy.state_dict().items():
        assert torch.equal(v, init_sd[k]), k
    assert all(not p.requires_grad for p in trainer.reference.parameters())
    result = trainer.run()
    m = _metrics(tmp_path / "out")[0]
    assert m["mse/policy_chosen"] != m["mse/ref_chosen"]  # policy != reference at step 0: z is not 0
    assert m["loss"] != pytest.approx(LN2, abs=1e-6)
    assert json.loads((result.final_dir / "dpo_info.json").read_text())["reference"] == str(base)
    assert json.loads((tmp_path / "out/data_summary.json").read_text())["reference"] == str(base)


def test_separate_reference_bad_input(tmp_path, tiny_root, tiny_dit_config, manifest_factory):
    import dataclasses

    from dpo.config import ConfigError

    manifest = manifest_factory(num_pairs=2)
    other_arch = _other_root(tmp_path, dataclasses.replace(tiny_dit_config, num_layers=1), seed=3)
    trainer = FlowDPOTrainer(FlowDPOConfig(**{**FAST, "max_steps": 1}), manifest=manifest, init=tiny_root,
                             reference=other_arch, out_dir=tmp_path / "a", device="cpu")
    with pytest.raises(ConfigError, match=r"not the policy's architecture .*num_layers"):
        trainer.setup()
    with pytest.raises(ConfigError, match="reference_mode: frozen_copy"):
        FlowDPOTrainer(FlowDPOConfig(**{**FAST, "max_steps": 1, "use_lora": True}), manifest=manifest,
                       init=tiny_root, reference=other_arch, out_dir=tmp_path / "b", device="cpu")


@pytest.mark.parametrize("use_lora", [False, True])
def test_cached_reference_reproduces_the_live_reference_trajectory(tmp_path, tiny_root, manifest_factory, use_lora):
    """reference_mode 'cached' (draw = epoch mod K) with K >= epochs trains exactly like the live reference."""
    manifest = manifest_factory(num_pairs=4)
    common = dict(max_steps=4, per_device_train_batch_size=2, use_lora=use_lora, lora_r=4, lora_alpha=4.0,
                  learning_rate=1e-3)
    live = _trainer(tmp_path, manifest, tiny_root, "live", **common)
    live.train()
    cached = _trainer(tmp_path, manifest, tiny_root, "cached", reference_mode="cached", reference_cache_draws=2,
                      **common)
    assert isinstance(cached.reference, CachedReference) and list(cached.reference.parameters()) == []
    assert cached.reference.errors.shape == (4, 2, 2)
    cached.train()
    ml, mc = _metrics(tmp_path / "live"), _metrics(tmp_path / "cached")
    assert mc[0]["loss"] == pytest.approx(LN2, abs=1e-6) and mc[0]["epoch"] == 0.5
    for x, y in zip(ml, mc, strict=True):
        for key in ("loss", "rewards/margins", "mse/ref_chosen", "mse/ref_rejected", "grad_norm"):
            assert y[key] == pytest.approx(x[key], rel=1e-5, abs=1e-6), (x["step"], key)
    assert ml[-1]["loss"] < LN2 - 1e-3  # it trained


def test_cached_reference_file_is_reused_and_invalidated(tmp_path, tiny_root, tiny_dit_config, manifest_factory,
                                                         monkeypatch):
    from safetensors import safe_open

    manifest = manifest_factory(num_pairs=2)
    first = _trainer(tmp_path, manifest, tiny_root, "run", max_steps=2, reference_mode="cached",
                     reference_cache_draws=3, save_steps=1)
    cache_file = tmp_path / "run/reference_cache.safetensors"
    with safe_open(str(cache_file), framework="pt") as f:
        assert json.loads(f.metadata()["fingerprint"])["draws"] == 3
    first.callbacks.append(lambda m: first.request_stop() if m["step"] == 1 else None)
    first.train()
    errors = first.reference.errors.clone()
    first.cleanup()

    def must_not_run(*_, **__):
        raise AssertionError("the cache was recomputed")

    monkeypatch.setattr("dpo.trainer.reference_errors", must_not_run)
    resumed = FlowDPOTrainer(FlowDPOConfig(**{**FAST, "max_steps": 2, "reference_mode": "cached",
                                              "reference_cache_draws": 3, "save_steps": 1}),
                             manifest=manifest, init=tiny_root, out_dir=tmp_path / "run", resume=True, device="cpu")
    resumed.setup()
    assert resumed.global_step == 1 and torch.equal(resumed.reference.errors, errors)
    resumed.cleanup()
    monkeypatch.undo()

    # another seed (other draws) on a resumed policy: the stale cache is rebuilt from the init checkpoint, not
    # from the trained policy
    other = FlowDPOTrainer(FlowDPOConfig(**{**FAST, "max_steps": 2, "reference_mode": "cached",
                                            "reference_cache_draws": 3, "save_steps": 1, "seed": 5}),
                           manifest=manifest, init=tiny_root, out_dir=tmp_path / "run", resume=True, device="cpu")
    other.setup()
    fresh = _trainer(tmp_path, manifest, tiny_root, "fresh", max_steps=2, reference_mode="cached",
                     reference_cache_draws=3, seed=5)
    assert not torch.equal(other.reference.errors, errors)
    torch.testing.assert_close(other.reference.errors, fresh.reference.errors, rtol=1e-6, atol=1e-7)


def test_cached_reference_with_a_separate_reference_and_bad_settings(tmp_path, tiny_root, tiny_dit_config,
                                                                     manifest_factory):
    from dpo.config import ConfigError

    base = _other_root(tmp_path, tiny_dit_config, seed=11)
    manifest = manifest_factory(num_pairs=2)
    cfg = FlowDPOConfig(**{**FAST, "max_steps": 1, "reference_mode": "cached", "reference_cache_draws": 2})
    cached = FlowDPOTrainer(cfg, manifest=manifest, init=tiny_root, reference=base, out_dir=tmp_path / "c",
                            device="cpu")
    cached.setup()
    live = FlowDPOTrainer(FlowDPOConfig(**{**FAST, "max_steps": 1}), manifest=manifest, init=tiny_root,
                          reference=base, out_dir=tmp_path / "l", device="cpu")
    live.setup()
    batch = _batch(live, [0, 1])
    t, xt_w, xt_l, v_w, v_l, text = flow_inputs(batch, 1, live.config, live.device)
    e_w, e_l = live._errors(live.reference, xt_w, xt_l, v_w, v_l, t, text, joint=True)
    torch.testing.assert_close(cached.reference.errors[:, 1, 0], e_w, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(cached.reference.errors[:, 1, 1], e_l, rtol=1e-6, atol=1e-7)
    with pytest.raises(ConfigError, match="sync_ref_model.*cached reference cannot be soft-synced"):
        FlowDPOConfig(reference_mode="cached", sync_ref_model=True)
    with pytest.raises(ConfigError, match="reference_cache_draws"):
        FlowDPOConfig(reference_mode="cached", reference_cache_draws=0)
    no_manifest = FlowDPOTrainer(cfg, init=tiny_root, out_dir=tmp_path / "n", device="cpu")
    with pytest.raises(ConfigError, match="needs a manifest"):
        no_manifest.setup()


def test_prompt_dropout_uses_the_null_embedding_per_pair_and_draw(tmp_path, tiny_root, tiny_dit_config,
                                                                   manifest_factory):
    from dpo.config import ConfigError
    from model.__main__ import main as model_cli
    from tests.dpo.conftest import write_text_embedding

    null = tmp_path / "null.safetensors"
    write_text_embedding(null, tiny_dit_config, seed=999, llm_len=5)
    manifest = manifest_factory(num_pairs=16, num_prompts=4)
    trainer = _trainer(tmp_path, manifest, tiny_root, max_steps=1, prompt_dropout=0.5,
                       null_text_embedding_uri=str(null), reference_mode="cached", reference_cache_draws=2)
    null_llm = trainer.data.null_text["llm_states"]
    dropped = {}
    for draw in (0, 1):
        batch = trainer.data.collate(list(range(16)), draw)
        dropped[draw] = [torch.equal(batch["llm_states"][j, :5], null_llm)
                         and torch.equal(batch["llm_mask"][j, :5], trainer.data.null_text["llm_mask"])
                         and not batch["llm_mask"][j, 5:].any() for j in range(16)]
        again = trainer.data.collate(list(range(16)), draw)
        assert torch.equal(again["llm_states"], batch["llm_states"])  # a pure function of (seed, pair, draw)
        assert 3 <= sum(dropped[draw]) <= 13
    assert dropped[0] != dropped[1]
    trainer.train()  # the cached reference saw the same dropped prompts: step 0 is exactly ln 2
    assert _metrics(tmp_path / "out")[0]["loss"] == pytest.approx(LN2, abs=1e-6)

    with pytest.raises(ConfigError, match="'null_text_embedding_uri' is required when prompt_dropout"):
        FlowDPOConfig(prompt_dropout=0.1)
    with pytest.raises(ConfigError, match="prompt_dropout"):
        FlowDPOConfig(prompt_dropout=1.0, null_text_embedding_uri=str(null))
    with pytest.raises(ConfigError, match="missing.safetensors: cannot read it"):
        _trainer(tmp_path, manifest, tiny_root, "b", max_steps=1, prompt_dropout=0.1,
                 null_text_embedding_uri=str(tmp_path / "missing.safetensors"))
    # the CLI writes the empty prompt of a real model root; its widths must match the manifest's embeddings
    from model.tiny import write_tiny_checkpoint

    root = write_tiny_checkpoint(tmp_path / "tiny-full", seed=1)
    assert model_cli(["encode-text", "--root", str(root), "--out", str(tmp_path / "empty.safetensors"), ""]) == 0
    cfg_llm, cfg_clip = tiny_dit_config.caption_channels
    empty = trainer.dataset.text_embedding(str(tmp_path / "empty.safetensors"))
    assert empty["llm_states"].shape[-1] == cfg_llm and empty["clip_states"].shape[-1] == cfg_clip
    wide = tmp_path / "wide.safetensors"
    from safetensors.torch import save_file

    save_file({**{k: v for k, v in empty.items()}, "llm_states": torch.zeros(4, cfg_llm + 1, dtype=torch.bfloat16),
               "llm_mask": torch.ones(4, dtype=torch.int8), "clip_mask": empty["clip_mask"].to(torch.int8)}, str(wide))
    with pytest.raises(ConfigError, match="llm_states has .* channels"):
        _trainer(tmp_path, manifest, tiny_root, "c", max_steps=1, prompt_dropout=0.1, null_text_embedding_uri=str(wide))
