"""GPU benchmark of the full-size Step-Video-T2V DiT and VAE with random bf16 weights (no checkpoint needed).

    python benchmarks/model_gpu.py [--frames 204 --height 544 --width 992 --batch 2] [--skip-vae] [--skip-sdpa]

1. bf16 matmul TFLOP/s (8192^3), measured in the same run as the reference peak.
2. DiT denoising step at 544x992x204 (36x34x62 latents = 75,888 tokens), batch 2 (= one prompt with CFG):
   seconds per step, analytic FLOPs -> achieved TFLOP/s, peak memory; flash-attn ("auto") vs PyTorch SDPA.
3. VAE decode of 36 latents -> 204 frames at 544x992: seconds and peak memory.

Weights are created on the meta device, cast to bf16 there, then materialised directly on the GPU (no fp32 copy).
Last line: JSON with dit_step_s, dit_tflops, matmul_tflops, dit_peak_gb, vae_decode_s, vae_peak_gb (+ details).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from model.attention import ENV_VAR, backend_available  # noqa: E402
from model.presets import get_preset  # noqa: E402
from model.transformer import StepVideoDiT  # noqa: E402
from model.vae import VideoVAE, latent_shape  # noqa: E402

GB = 1024**3


def cuda_time(fn, *fn_args, repeats: int = 1):
    """(mean seconds of ``fn(*fn_args)`` over ``repeats`` runs, synchronised; the last result)."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    result = None
    for _ in range(repeats):
        result = fn(*fn_args)
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats, result


def matmul_tflops(n: int = 8192, repeats: int = 20) -> float:
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        torch.matmul(a, b)
    seconds, _ = cuda_time(torch.matmul, a, b, repeats=repeats)
    return 2 * n**3 / seconds / 1e12


def dit_forward_flops(cfg, tokens: int, text_len: int) -> float:
    """Matmul + attention FLOPs of one forward for one sample (norms, RoPE and elementwise ops ignored).

    Per block: 8ND^2 (self qkv+o) + 4N^2 D (QK^T, AV) + 4ND^2 (cross q, o) + 4LD^2 (cross kv) + 4NLD (cross attn)
    + 16ND^2 (FFN with 4D hidden)  ->  ~10.7 PFLOP at N = 75,888.
    """
    D, N, L = cfg.inner_dim, tokens, text_len
    ffn = 4 * N * D * cfg.ffn_dim
    per_block = 8 * N * D * D + 4 * N * N * D + 4 * N * D * D + 4 * L * D * D + 4 * N * L * D + ffn
    return float(cfg.num_layers * per_block)


def materialize(module: torch.nn.Module) -> torch.nn.Module:
    """meta module -> bf16 on CUDA without ever holding fp32 weights."""
    return module.to(torch.bfloat16).to_empty(device="cuda")


def bench_dit(args, results: dict) -> None:
    preset = get_preset("stepvideo-t2v")
    cfg = preset.dit
    t_lat, C, h, w = latent_shape(args.frames, args.height, args.width, preset.vae)
    tokens = t_lat * h * w
    B = args.batch
    print(f"DiT: latents ({B}, {t_lat}, {C}, {h}, {w}) -> {tokens:,} tokens per sample")

    with torch.device("meta"):
        dit = StepVideoDiT(cfg)
    dit = materialize(dit)
    start = time.perf_counter()
    dit.init_weights(zero_out=False)
    torch.cuda.synchronize()
    dit.eval().requires_grad_(False)
    params = sum(p.numel() for p in dit.parameters())
    print(
        f"  {params:,} params, bf16 weights {torch.cuda.memory_allocated() / GB:.1f} GiB (init {time.perf_counter() - start:.1f}s)"
    )

    g = torch.Generator("cuda").manual_seed(0)
    x = torch.randn(B, t_lat, C, h, w, device="cuda", dtype=torch.bfloat16, generator=g)
    t = torch.full((B,), 0.3, device="cuda")
    L = preset.step_llm.max_length
    llm = torch.randn(B, L, cfg.caption_channels[0], device="cuda", dtype=torch.bfloat16, generator=g)
    lengths = torch.tensor([120, 60][:B] + [L] * max(0, B - 2), device="cuda")  # cond / uncond prompt lengths
    llm_mask = torch.arange(L, device="cuda")[None] < lengths[:, None]
    clip = torch.randn(B, 77, cfg.caption_channels[1], device="cuda", dtype=torch.bfloat16, generator=g)
    text_len = 77 + int(lengths.max())
    flops = B * dit_forward_flops(cfg, tokens, text_len)

    backends = ["auto"]
    flash = [n for n in ("fa3", "fa2") if backend_available(n)]
    print(f"  flash-attn available: {flash or 'none'}")
    if flash and not args.skip_sdpa:
        backends.append("sdpa")
    results["flash_attn"] = flash[0] if flash else None

    with torch.no_grad():
        # Warm-up on a small input (kernel selection, cuBLAS handles) before the full-size step.
        small = x[:, :1, :, : min(h, 8), : min(w, 8)].contiguous()
        for backend in backends:
            os.environ[ENV_VAR] = backend
            dit(small, t, llm, llm_mask, clip)
        torch.cuda.synchronize()
        for backend in backends:
            os.environ[ENV_VAR] = backend
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            seconds, _ = cuda_time(dit, x, t, llm, llm_mask, clip, repeats=args.repeats)
            peak = torch.cuda.max_memory_allocated() / GB
            tflops = flops / seconds / 1e12
            label = backend if backend != "auto" else f"auto ({flash[0] if flash else 'sdpa'})"
            print(f"  attention {label:<12} step {seconds:8.2f} s  {tflops:7.1f} TFLOP/s  peak {peak:6.1f} GiB")
            results[f"dit_step_s_{backend}"] = round(seconds, 3)
            results[f"dit_tflops_{backend}"] = round(tflops, 1)
            if backend == "auto":
                results.update(dit_step_s=round(seconds, 3), dit_tflops=round(tflops, 1), dit_peak_gb=round(peak, 2))
    os.environ.pop(ENV_VAR, None)
    results["dit_pflop_per_step"] = round(flops / 1e15, 2)
    results["dit_tokens"] = tokens
    del dit, x, llm, clip
    gc.collect()
    torch.cuda.empty_cache()


def bench_vae(args, results: dict) -> None:
    cfg = get_preset("stepvideo-t2v").vae
    t_lat, C, h, w = latent_shape(args.frames, args.height, args.width, cfg)
    with torch.device("meta"):
        vae = VideoVAE(cfg)
    vae = materialize(vae)
    vae.init_weights(std=0.02)
    vae.eval().requires_grad_(False)
    z = torch.randn(
        1, t_lat, C, h, w, device="cuda", dtype=torch.bfloat16, generator=torch.Generator("cuda").manual_seed(0)
    )
    print(f"VAE: decode latents {tuple(z.shape)} -> {args.frames} frames at {args.height}x{args.width}")
    with torch.no_grad():
        vae.decode(z[:, : cfg.latent_len])  # warm-up on one chunk (cuDNN algorithm choice)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        seconds, out = cuda_time(vae.decode, z)
    peak = torch.cuda.max_memory_allocated() / GB
    print(f"  decode {seconds:.2f} s, peak {peak:.1f} GiB, output {tuple(out.shape)}")
    results.update(vae_decode_s=round(seconds, 3), vae_peak_gb=round(peak, 2))
    del vae, z, out
    gc.collect()
    torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=204)
    parser.add_argument("--height", type=int, default=544)
    parser.add_argument("--width", type=int, default=992)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="timed DiT steps per backend")
    parser.add_argument("--skip-vae", action="store_true")
    parser.add_argument("--skip-dit", action="store_true")
    parser.add_argument("--skip-sdpa", action="store_true", help="do not time the SDPA backend when flash-attn exists")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA GPU")
    torch.backends.cudnn.benchmark = True
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}")
    results: dict = {"device": torch.cuda.get_device_name()}
    results["matmul_tflops"] = round(matmul_tflops(), 1)
    print(f"bf16 matmul 8192^3: {results['matmul_tflops']} TFLOP/s")
    if not args.skip_dit:
        bench_dit(args, results)
        if "dit_tflops" in results:
            results["dit_mfu_vs_matmul"] = round(results["dit_tflops"] / results["matmul_tflops"], 3)
    if not args.skip_vae:
        bench_vae(args, results)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
