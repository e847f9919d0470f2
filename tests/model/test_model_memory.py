"""Memory for smaller cards: the per-GPU plan of `python -m model info`, and the optional FP8 weight-only DiT."""

import importlib.util

import pytest
import torch

from model.memory import GPU_COUNTS, format_memory_plan, memory_plan, quantize_dit_fp8
from model.presets import get_preset
from model.transformer import StepVideoDiT


def test_released_model_plan_replicates_weights_and_splits_activations():
    rows = {(r.gpus, r.fp8): r for r in memory_plan("stepvideo-t2v")}
    assert {g for g, _ in rows} == set(GPU_COUNTS)
    one, four = rows[(1, False)], rows[(4, False)]
    assert one.dit_weights_gib == four.dit_weights_gib == pytest.approx(29_342_478_400 * 2 / 1024**3)
    assert four.activations_gib == pytest.approx(one.activations_gib / 4)
    assert rows[(4, True)].dit_weights_gib == pytest.approx(one.dit_weights_gib / 2)
    # 204 frames at 544x992 do not fit one 80 GB card in bf16 (the official release needs several GPUs for it)
    assert one.dit_only_gib > 80e9 / 1024**3 > four.dit_only_gib


def test_plan_skips_gpu_counts_that_do_not_divide_the_heads():
    assert {r.gpus for r in memory_plan("tiny")} == {1, 2}  # the tiny DiT has 2 heads


def test_cli_info_prints_the_plan_per_gpu_count_and_card(capsys):
    from model.__main__ import main

    assert main(["info", "--preset", "stepvideo-t2v"]) == 0
    out = capsys.readouterr().out
    assert "memory plan per GPU" in out and "80 GB card" in out and "141 GB card" in out
    assert format_memory_plan("stepvideo-t2v") in out
    plan = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [(p[0], p[1]) for p in plan if p[1] in ("bf16", "fp8")][:2] == [("1", "bf16"), ("1", "fp8")]


def test_fp8_refuses_a_cpu_dit_with_a_clear_reason():
    dit = StepVideoDiT(get_preset("tiny").dit)
    with pytest.raises(RuntimeError, match="needs a CUDA device with FP8 support; the DiT is on cpu"):
        quantize_dit_fp8(dit)


@pytest.mark.gpu
def test_fp8_weight_only_dit_stays_close_to_bf16():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    if importlib.util.find_spec("torchao") is None:
        pytest.skip("torchao is not installed (pip install -c constraints.txt torchao; in the gpu extra)")
    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("FP8 needs compute capability >= 8.9")
    torch.manual_seed(0)
    dit = StepVideoDiT(get_preset("tiny").dit)
    dit.init_weights(zero_out=False)
    dit = dit.to("cuda", torch.bfloat16).eval()
    x = torch.randn(1, 3, 4, 4, 4, device="cuda")
    args = (x, torch.tensor([0.5], device="cuda"), torch.randn(1, 8, 64, device="cuda"),
            torch.ones(1, 8, device="cuda"), torch.randn(1, 77, 32, device="cuda"))
    with torch.no_grad():
        ref = dit(*args).float()
        quantize_dit_fp8(dit)
        out = dit(*args).float()
    assert (out - ref).norm() / ref.norm() < 0.1


def test_cli_info_plans_another_video_size_and_refuses_a_bad_one(capsys):
    from model.__main__ import main

    assert main(["info", "--preset", "stepvideo-t2v", "--frames", "68", "--height", "544", "--width", "992"]) == 0
    assert "68 frames at 544x992" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["info", "--preset", "stepvideo-t2v", "--frames", "20"])
    assert "num_frames must be 1 or a multiple of 17" in capsys.readouterr().err
