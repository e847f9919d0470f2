"""One attention entry point, :func:`attention`, used by every attention in ``model/`` (DiT self/cross, Step-LLM, VAE).

Backends, in the order ``"auto"`` tries them:

==========  ==============================================================  =====================================
name        implementation                                                  used by "auto" when
==========  ==============================================================  =====================================
``fa3``     flash-attn 3 (``flash_attn_interface``, Hopper build)            CUDA, fp16/bf16, head_dim <= 256,
``fa2``     flash-attn 2 (``flash_attn``)                                    no additive bias, and importable
``sdpa``    ``torch.nn.functional.scaled_dot_product_attention``            otherwise
``math``    explicit softmax(QK^T)V in fp32 (the reference)                 never (tests / debugging)
==========  ==============================================================  =====================================

The backend is chosen by the ``backend`` argument (models pass their config value) unless the environment variable
``STEPVIDEO_ATTENTION=auto|fa3|fa2|sdpa|math`` is set, which wins. A backend requested explicitly but unusable raises
:class:`AttentionBackendError` naming the reason; ``"auto"`` logs (once per reason) why it fell back.
flash-attn is never needed on CPU.

Masks: ``key_padding_mask`` (B, Nk) bool, True = key is attended. Flash backends run it as varlen attention
(keys unpadded, ``cu_seqlens_k``); SDPA/math get a boolean/additive mask.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

ENV_VAR = "STEPVIDEO_ATTENTION"
BACKENDS = ("auto", "fa3", "fa2", "sdpa", "math")
_FLASH_DTYPES = (torch.float16, torch.bfloat16)
_FLASH_MAX_HEAD_DIM = 256


class AttentionBackendError(RuntimeError):
    """A requested attention backend cannot run these inputs (not installed, wrong device/dtype...)."""


@functools.cache
def _flash_module(name: str):
    """Import flash-attn ``name`` ("fa3" or "fa2") once; None when not installed. (An import cache, not model state.)"""
    candidates = ["flash_attn_interface", "flash_attn_3.flash_attn_interface"] if name == "fa3" else ["flash_attn"]
    for module_name in candidates:
        try:
            module = importlib.import_module(module_name)
        except Exception:  # ImportError, or a broken CUDA build raising OSError/RuntimeError at import
            continue
        if hasattr(module, "flash_attn_func") and hasattr(module, "flash_attn_varlen_func"):
            return module
    return None


def backend_available(name: str) -> bool:
    """Whether backend ``name`` can be imported here (sdpa/math always can)."""
    if name in ("sdpa", "math"):
        return True
    if name in ("fa3", "fa2"):
        return _flash_module(name) is not None
    raise ValueError(f"unknown attention backend {name!r}; expected one of {BACKENDS}")


@functools.cache
def _log_once(message: str) -> None:
    logger.info(message)


def _flash_problem(name: str, q: torch.Tensor, bias: torch.Tensor | None) -> str | None:
    """Why flash backend ``name`` cannot run ``q`` (None if it can)."""
    if not backend_available(name):
        module = "flash_attn_interface (flash-attn 3)" if name == "fa3" else "flash_attn (flash-attn 2)"
        return f"{module} is not importable"
    if q.device.type != "cuda":
        return f"inputs are on {q.device.type}, flash-attn needs CUDA"
    if q.dtype not in _FLASH_DTYPES:
        return f"dtype {q.dtype} is not fp16/bf16"
    if q.shape[-1] > _FLASH_MAX_HEAD_DIM:
        return f"head_dim {q.shape[-1]} > {_FLASH_MAX_HEAD_DIM}"
    if bias is not None:
        return "an additive attention bias is not supported by flash-attn"
    return None


def resolve_backend(requested: str | None, q: torch.Tensor, bias: torch.Tensor | None = None) -> str:
    """Pick the backend for these inputs. ``STEPVIDEO_ATTENTION`` overrides ``requested``."""
    env = os.environ.get(ENV_VAR, "").strip().lower()
    source = f"{ENV_VAR}={env}" if env else "config"
    name = env or (requested or "auto")
    if name not in BACKENDS:
        raise AttentionBackendError(f"unknown attention backend {name!r} (from {source}); expected one of {BACKENDS}")
    if name in ("sdpa", "math"):
        return name
    if name in ("fa3", "fa2"):
        problem = _flash_problem(name, q, bias)
        if problem:
            raise AttentionBackendError(f"attention backend {name!r} was requested ({source}) but {problem}")
        return name
    # auto
    reasons = []
    for candidate in ("fa3", "fa2"):
        problem = _flash_problem(candidate, q, bias)
        if problem is None:
            return candidate
        reasons.append(f"{candidate}: {problem}")
    if q.device.type == "cuda":
        _log_once("attention auto -> sdpa (" + "; ".join(reasons) + ")")
    return "sdpa"


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    key_padding_mask: torch.Tensor | None = None,
    causal: bool = False,
    bias: torch.Tensor | None = None,
    scale: float | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Multi-head attention ``softmax(q k^T * scale + bias) v``.

    Args:
        q: (B, Nq, H, D).
        k, v: (B, Nk, Hk, D) with H divisible by Hk (grouped-query attention; query head h uses kv head h // (H/Hk)).
        key_padding_mask: (B, Nk) bool, True where the key may be attended. Every query must see >= 1 key.
        causal: query i attends keys j <= i (needs Nq == Nk).
        bias: additive float bias broadcastable to (B, H, Nq, Nk) (SDPA/math only).
        scale: softmax scale, default 1/sqrt(D).
        backend: "auto" | "fa3" | "fa2" | "sdpa" | "math" (None = "auto"); see the module docstring.

    Returns:
        (B, Nq, H, D) in q's dtype.
    """
    B, Nq, H, D = q.shape
    Nk, Hk = k.shape[1], k.shape[2]
    if H % Hk:
        raise ValueError(f"query heads {H} must be a multiple of key/value heads {Hk}")
    if causal and Nq != Nk:
        raise ValueError(f"causal attention needs Nq == Nk, got {Nq} and {Nk}")
    if key_padding_mask is not None and key_padding_mask.shape != (B, Nk):
        raise ValueError(f"key_padding_mask must be (B, Nk) = {(B, Nk)}, got {tuple(key_padding_mask.shape)}")
    scale = D**-0.5 if scale is None else scale
    name = resolve_backend(backend, q, bias)
    if name in ("fa3", "fa2"):
        return _flash(name, q, k, v, key_padding_mask, causal, scale)
    if name == "sdpa":
        return _sdpa(q, k, v, key_padding_mask, causal, bias, scale)
    return _math(q, k, v, key_padding_mask, causal, bias, scale)


def _first(out):
    """flash-attn 3 returns (out, lse) in some versions."""
    return out[0] if isinstance(out, tuple) else out


def _flash(name, q, k, v, key_padding_mask, causal, scale):
    module = _flash_module(name)
    if key_padding_mask is None:
        return _first(module.flash_attn_func(q, k, v, softmax_scale=scale, causal=causal))
    # Varlen: queries stay dense, keys are unpadded per sample.
    B, Nq, H, D = q.shape
    Nk, Hk = k.shape[1], k.shape[2]
    mask = key_padding_mask.to(torch.bool)
    seqlens_k = mask.sum(dim=1, dtype=torch.int32)  # (B,)
    cu_seqlens_k = F.pad(torch.cumsum(seqlens_k, 0, dtype=torch.int32), (1, 0))  # (B+1,)
    cu_seqlens_q = torch.arange(0, (B + 1) * Nq, Nq, dtype=torch.int32, device=q.device)  # (B+1,)
    index = mask.reshape(-1).nonzero().squeeze(1)  # (total_k,)
    k_unpad = k.reshape(B * Nk, Hk, D).index_select(0, index)  # (total_k, Hk, D)
    v_unpad = v.reshape(B * Nk, Hk, D).index_select(0, index)
    out = module.flash_attn_varlen_func(
        q.reshape(B * Nq, H, D),
        k_unpad,
        v_unpad,
        cu_seqlens_q,
        cu_seqlens_k,
        Nq,
        int(seqlens_k.max()),
        softmax_scale=scale,
        causal=causal,
    )
    return _first(out).reshape(B, Nq, H, D)


def _expand_kv(k: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, Nk, Hk, D) -> (B, Nk, H, D) by repeating each kv head H/Hk times (head h uses kv head h // rep)."""
    rep = num_heads // k.shape[2]
    return k if rep == 1 else k.repeat_interleave(rep, dim=2)


def _dense_mask(q, key_padding_mask, causal, bias, dtype):
    """Combine padding mask, causal mask and bias into one SDPA ``attn_mask`` (bool or additive float), or None."""
    Nq, Nk = q.shape[1], key_padding_mask.shape[1] if key_padding_mask is not None else q.shape[1]
    keep = None  # bool, broadcastable to (B, H, Nq, Nk)
    if key_padding_mask is not None:
        keep = key_padding_mask.to(torch.bool)[:, None, None, :]  # (B, 1, 1, Nk)
    if causal:
        tri = torch.ones(Nq, Nk, dtype=torch.bool, device=q.device).tril()  # (Nq, Nk)
        keep = tri if keep is None else keep & tri
    if bias is None:
        return keep
    bias = bias.to(dtype)
    if keep is not None:
        bias = bias.masked_fill(~keep, float("-inf"))
    return bias


def _sdpa(q, k, v, key_padding_mask, causal, bias, scale):
    H = q.shape[2]
    k, v = _expand_kv(k, H), _expand_kv(v, H)
    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))  # (B, H, N, D)
    if key_padding_mask is None and bias is None:
        out = F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal, scale=scale)
    else:
        mask = _dense_mask(q, key_padding_mask, causal, bias, q.dtype)
        out = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask, scale=scale)
    return out.transpose(1, 2)  # (B, Nq, H, D)


def _math(q, k, v, key_padding_mask, causal, bias, scale):
    H = q.shape[2]
    k, v = _expand_kv(k, H), _expand_kv(v, H)
    qt, kt, vt = (x.transpose(1, 2).float() for x in (q, k, v))  # (B, H, N, D) fp32
    scores = (qt @ kt.transpose(-1, -2)) * scale  # (B, H, Nq, Nk)
    mask = _dense_mask(q, key_padding_mask, causal, bias, torch.float32)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    out = scores.softmax(dim=-1) @ vt  # (B, H, Nq, D)
    return out.transpose(1, 2).to(q.dtype)
