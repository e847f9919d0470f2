"""Flow-DPO step cost of the full-size Step-Video DiT (random bf16 weights) with LoRA on one GPU (H200).

For each video size it runs real ``FlowDPOTrainer.step`` calls (one pair per step: reference forward on both
videos, policy forward + backward, AdamW on the adapters) and reports step time, peak memory, pairs/s and
achieved TFLOP/s. 68 frames uses the joint backward; 136 and 204 use the memory-saving backward (both with
gradient checkpointing). A size that runs out of memory is reported as ``"fits": false``; a size whose
projected time would exceed ``--time-budget-s`` is skipped (reported with the projection).

    python benchmarks/dpo_gpu.py                                  # 544x992, 68/136/204 frames, LoRA r=64
    python benchmarks/dpo_gpu.py --frames 68 --steps 3
    # under a 10-minute limit per command, one size per run:
    python benchmarks/dpo_gpu.py --frames 68; python benchmarks/dpo_gpu.py --frames 136 --warmup 0
    python benchmarks/dpo_gpu.py --frames 204 --warmup 0 --time-budget-s 100000
    python benchmarks/dpo_gpu.py --preset tiny --device cpu --height 64 --width 64 --frames 17   # smoke test

FLOP accounting (per video; F = one DiT forward, from the matmul shapes; Step's Table 3 gives 1,717 TFLOP for
fwd+bwd at 204x256x256 and this formula gives 1,725):
  ``tflops_model``: reference 1F + policy 3F (fwd+bwd, the usual training convention) [+ 1F no-grad policy forward
  with the memory-saving backward]; activation recompute not counted.
  ``tflops_executed_est``: what LoRA really executes: reference 1F + policy forward 1F + recompute 1F (checkpointing)
  + backward (activation grads only: linears 1x, attention core 2x) [+ 1F memory-saving].
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def forward_flops(cfg, n_tokens: int, text_len: int) -> tuple[float, float]:
    """(linear FLOPs, attention-core FLOPs) of one DiT forward on one video of n_tokens tokens."""
    D, ffn, L = cfg.inner_dim, cfg.ffn_dim, cfg.num_layers
    per_layer_linear = 2 * n_tokens * (3 * D * D + D * D  # self-attn qkv + out
                                       + D * D + D * D  # cross-attn q + out
                                       + 2 * D * ffn)  # FFN
    per_layer_linear += 2 * text_len * 2 * D * D  # cross-attn kv on the text tokens
    per_layer_attn = 4 * n_tokens * n_tokens * D + 4 * n_tokens * text_len * D  # QK^T + AV, self and cross
    embed = 2 * n_tokens * cfg.in_channels * D + 2 * n_tokens * D * cfg.out_channels
    return L * per_layer_linear + embed, L * per_layer_attn


def build_policy(preset_name: str, device: torch.device):
    """The DiT created directly in bf16 on the device (no fp32 copy anywhere), non-zero init."""
    from model.presets import get_preset
    from model.transformer import StepVideoDiT

    cfg = get_preset(preset_name).dit
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            torch.manual_seed(0)
            dit = StepVideoDiT(cfg)
            dit.init_weights(zero_out=False)
    finally:
        torch.set_default_dtype(old)
    return dit, cfg


def make_batch(cfg, latent: tuple[int, int, int, int], llm_len: int, draw: int) -> dict:
    g = torch.Generator().manual_seed(draw)
    F, C, h, w = latent
    return {
        "pair_id": [f"bench-{draw}"],
        "round": [0],
        "draw": draw,
        "weight": torch.ones(1),
        "latent_chosen": torch.randn(1, F, C, h, w, generator=g).to(torch.bfloat16),
        "latent_rejected": torch.randn(1, F, C, h, w, generator=g).to(torch.bfloat16),
        "llm_states": torch.randn(1, llm_len, cfg.caption_channels[0], generator=g).to(torch.bfloat16),
        "llm_mask": torch.ones(1, llm_len, dtype=torch.bool),
        "clip_states": torch.randn(1, 77, cfg.caption_channels[1], generator=g).to(torch.bfloat16),
        "clip_mask": torch.ones(1, 77, dtype=torch.bool),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="stepvideo-t2v")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--height", type=int, default=544)
    ap.add_argument("--width", type=int, default=992)
    ap.add_argument("--frames", default="68,136,204", help="comma-separated pixel frame counts")
    ap.add_argument("--memory-saving-from", type=int, default=136,
                    help="use the memory-saving backward from this many frames on")
    ap.add_argument("--steps", type=int, default=2, help="timed steps per size below --memory-saving-from")
    ap.add_argument("--big-steps", type=int, default=1, help="timed steps per size from --memory-saving-from on")
    ap.add_argument("--warmup", type=int, default=1, help="untimed warm-up steps before the first size")
    ap.add_argument("--lora-r", type=int, default=64)
    ap.add_argument("--llm-len", type=int, default=320)
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak for the MFU column (H200: 989)")
    ap.add_argument("--time-budget-s", type=float, default=540.0, help="skip sizes projected to exceed this")
    args = ap.parse_args()

    from dpo.config import FlowDPOConfig
    from dpo.trainer import FlowDPOTrainer
    from model.presets import get_preset
    from model.vae import latent_shape

    device = torch.device(args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    t_start = time.time()
    results: dict = {"preset": args.preset, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                     "lora_r": args.lora_r, "height": args.height, "width": args.width, "sizes": []}
    dit, cfg = build_policy(args.preset, device)
    results["dit_params_b"] = round(sum(p.numel() for p in dit.parameters()) / 1e9, 3)
    config = FlowDPOConfig(use_lora=True, lora_r=args.lora_r, lora_alpha=float(args.lora_r), beta=2000.0,
                           learning_rate=1e-5, max_steps=10**6, gradient_checkpointing=True, bf16=True,
                           save_steps=0, memory_saving_backward=False)
    out = Path(tempfile.mkdtemp(prefix="dpo-gpu-bench-"))
    trainer = FlowDPOTrainer(config, policy=dit, dit_config=cfg, out_dir=out, device=device)
    trainer.setup()
    results["trainable_params_m"] = round(sum(p.numel() for p in trainer.trainable) / 1e6, 1)
    results["setup_s"] = round(time.time() - t_start, 1)
    if device.type == "cuda":
        results["memory_after_setup_gb"] = round(torch.cuda.memory_allocated(device) / 1024**3, 2)
    print(json.dumps({"setup": results}), flush=True)

    vae_cfg = get_preset(args.preset).vae
    last_rate = None  # achieved executed FLOP/s of the previous size, to project the next one
    warmed = False
    for frames in [int(f) for f in args.frames.split(",")]:
        latent = latent_shape(frames, args.height, args.width, vae_cfg)
        n_tokens = latent[0] * (latent[2] // cfg.patch_size) * (latent[3] // cfg.patch_size)
        mem_saving = frames >= args.memory_saving_from
        lin, att = forward_flops(cfg, n_tokens, 77 + args.llm_len)
        fwd = lin + att
        model_flops = 2 * (1 * fwd + 3 * fwd + (fwd if mem_saving else 0))
        exec_flops = 2 * (fwd + fwd + fwd + (lin + 2 * att) + (fwd if mem_saving else 0))
        entry = {"frames": frames, "latent": list(latent), "tokens": n_tokens, "memory_saving_backward": mem_saving,
                 "gradient_checkpointing": True, "tflop_model_per_step": round(model_flops / 1e12, 1),
                 "tflop_executed_per_step_est": round(exec_flops / 1e12, 1)}
        n_timed = args.big_steps if mem_saving else args.steps
        n_warm = 0 if warmed else args.warmup
        n_steps = n_timed + n_warm
        if last_rate is not None:
            projected = n_steps * exec_flops / last_rate
            if time.time() - t_start + projected > args.time_budget_s:
                entry.update(fits=None, skipped=f"projected {projected:.0f}s exceeds the time budget")
                results["sizes"].append(entry)
                print(json.dumps(entry), flush=True)
                continue
        trainer.config = config.replace(memory_saving_backward=mem_saving)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        times = []
        try:
            for i in range(n_steps):
                m = trainer.step([make_batch(cfg, latent, args.llm_len, draw=i + 100 * frames)])
                if i >= n_warm:
                    times.append(m["step_time_s"])
                if not math.isfinite(m["loss"]):
                    entry["warning"] = f"non-finite loss {m['loss']}"
            warmed = True
            step_s = sum(times) / len(times)
            entry.update(
                fits=True, step_time_s=round(step_s, 3), pairs_per_s=round(1.0 / step_s, 4),
                peak_memory_gb=round(torch.cuda.max_memory_allocated(device) / 1024**3, 2) if device.type == "cuda"
                else round(m["peak_memory_gb"], 2),
                tflops_model=round(model_flops / step_s / 1e12, 1),
                tflops_executed_est=round(exec_flops / step_s / 1e12, 1),
                mfu_executed_est=round(exec_flops / step_s / 1e12 / args.peak_tflops, 3),
                loss=m["loss"], grad_norm=m["grad_norm"],
            )
            last_rate = exec_flops / step_s
        except torch.OutOfMemoryError as exc:
            entry.update(fits=False, error=str(exc).splitlines()[0][:300])
            trainer.optimizer.zero_grad(set_to_none=True)
        results["sizes"].append(entry)
        print(json.dumps(entry), flush=True)
        gc.collect()
    results["total_s"] = round(time.time() - t_start, 1)
    trainer.cleanup()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
