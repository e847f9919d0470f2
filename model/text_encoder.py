"""Text encoders: Step-LLM (``Step1Model``, bilingual causal LM used as an encoder) and Hunyuan-CLIP (a
``transformers.BertModel``). Both outputs go to the DiT: ``llm_states`` (B, 320, 6144) with a BOS..EOS mask and
``clip_states`` (B, 77, 1024).

Step-LLM layer::

    x = x + wo(Attn(RMSNorm(x)))          GQA (48 q heads, 8 kv groups), causal, sqrt-ALiBi bias, no RoPE/pos-emb
    x = x + w2(silu(a) * b)  with [a | b] = w1(RMSNorm(x))
    (no final norm)

``wqkv`` rows are ``[Q (heads*hd) | KV]`` with KV viewed (groups, 2*hd) -> per group ``[k_g | v_g]``.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.attention import attention
from model.config import CLIPConfig, StepLLMConfig
from model.transformer import RMSNorm

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------------
# Step-LLM
# ---------------------------------------------------------------------------------------------------------------


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """ALiBi head slopes (num_heads,) fp32: n = 2^floor(log2 H); (2^(-8/n))^[1..n] ++ (2^(-4/n))^[1,3,5,...][:H-n]."""
    n = 2 ** math.floor(math.log2(num_heads))
    base = 2.0 ** (-8.0 / n)
    slopes = [base ** (i + 1) for i in range(n)]
    if n < num_heads:
        extra = 2.0 ** (-4.0 / n)
        slopes += [extra ** (2 * i + 1) for i in range(num_heads - n)]
    return torch.tensor(slopes, dtype=torch.float32)


def sqrt_alibi_bias(num_heads: int, length: int, device: torch.device | str) -> torch.Tensor:
    """Causal sqrt-ALiBi bias (1, heads, L, L) fp32: ``-slope_h * sqrt(i - j)`` for j <= i (j > i is masked by causality)."""
    pos = torch.arange(length, device=device, dtype=torch.float32)
    distance = (pos[:, None] - pos[None, :]).clamp(min=0)  # (L, L), i - j
    return -alibi_slopes(num_heads).to(device)[None, :, None, None] * distance.sqrt()[None, None]


class Step1Attention(nn.Module):
    def __init__(self, cfg: StepLLMConfig):
        super().__init__()
        self.num_heads, self.num_groups, self.head_dim = cfg.num_attention_heads, cfg.num_attention_groups, cfg.head_dim
        D = cfg.hidden_size
        self.wqkv = nn.Linear(D, D + 2 * self.head_dim * self.num_groups, bias=False)
        self.wo = nn.Linear(D, D, bias=False)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """x: (B, L, D); bias: (1, heads, L, L) fp32 -> (B, L, D)."""
        B, L, D = x.shape
        qkv = self.wqkv(x)  # (B, L, D + 2*G*hd)
        q = qkv[..., :D].view(B, L, self.num_heads, self.head_dim)  # (B, L, H, hd)
        kv = qkv[..., D:].view(B, L, self.num_groups, 2 * self.head_dim)  # (B, L, G, 2*hd), per group [k v]
        k, v = kv.split(self.head_dim, dim=-1)  # 2 x (B, L, G, hd)
        # The sequences are short (<= 320): attend in fp32 so the sqrt-ALiBi bias keeps full precision.
        out = attention(
            q.float(), k.float(), v.float(), causal=True, bias=bias, scale=self.head_dim**-0.5, backend="sdpa"
        )
        return self.wo(out.to(x.dtype).reshape(B, L, D))


class Step1FeedForward(nn.Module):
    def __init__(self, cfg: StepLLMConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.hidden_size, 2 * cfg.ffn_hidden_size, bias=False)  # [gate | up]
        self.w2 = nn.Linear(cfg.ffn_hidden_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w1(x).chunk(2, dim=-1)
        return self.w2(F.silu(gate) * up)


class Step1Layer(nn.Module):
    def __init__(self, cfg: StepLLMConfig):
        super().__init__()
        self.attention_norm = RMSNorm(cfg.hidden_size, eps=cfg.layernorm_epsilon)
        self.attention = Step1Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.hidden_size, eps=cfg.layernorm_epsilon)
        self.feed_forward = Step1FeedForward(cfg)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), bias)
        return x + self.feed_forward(self.ffn_norm(x))


class _WordEmbeddings(nn.Module):
    def __init__(self, cfg: StepLLMConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.padded_vocab_size, cfg.hidden_size)


class _Layers(nn.Module):
    def __init__(self, cfg: StepLLMConfig):
        super().__init__()
        self.layers = nn.ModuleList([Step1Layer(cfg) for _ in range(cfg.num_layers)])


class StepLLM(nn.Module):
    """Step-LLM encoder. Keys: ``tok_embeddings.word_embeddings.weight``, ``transformer.layers.{i}.*``."""

    def __init__(self, cfg: StepLLMConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = _WordEmbeddings(cfg)
        self.transformer = _Layers(cfg)

    @torch.no_grad()
    def init_weights(self, std: float = 0.02) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=std)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids: (B, L) long -> hidden states after the last layer (B, L, hidden) (no final norm)."""
        x = self.tok_embeddings.word_embeddings(input_ids)  # (B, L, D)
        bias = sqrt_alibi_bias(self.cfg.num_attention_heads, input_ids.shape[1], input_ids.device)  # (1, H, L, L)
        for layer in self.transformer.layers:
            x = layer(x, bias)
        return x


class StepLLMTokenizer:
    """SentencePiece tokenizer with the pipeline's framing: ``[BOS] + ids[:L-2] + [EOS]``, right-padded with PAD."""

    def __init__(self, model_file: str | os.PathLike, cfg: StepLLMConfig):
        import sentencepiece

        self.sp = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
        self.cfg = cfg

    def __call__(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor, list[bool]]:
        """-> input_ids (B, max_length) long, mask (B, max_length) bool (True on BOS..EOS), truncated per prompt."""
        L, cfg = self.cfg.max_length, self.cfg
        ids = torch.full((len(prompts), L), cfg.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), L), dtype=torch.bool)
        truncated = []
        for i, prompt in enumerate(prompts):
            pieces = self.sp.encode(prompt)
            truncated.append(len(pieces) > L - 2)
            row = [cfg.bos_id] + pieces[: L - 2] + [cfg.eos_id]
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = True
        return ids, mask, truncated


# ---------------------------------------------------------------------------------------------------------------
# Hunyuan-CLIP (BERT)
# ---------------------------------------------------------------------------------------------------------------


def build_clip(cfg: CLIPConfig):
    """An (uninitialised if on meta) ``BertModel`` without pooler for ``cfg``."""
    from transformers import BertConfig, BertModel

    return BertModel(BertConfig(**cfg.to_bert_kwargs()), add_pooling_layer=False)


def load_clip(root: str | os.PathLike, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
    """Load ``root/hunyuan_clip/{clip_text_encoder, tokenizer}`` -> (BertModel, BertTokenizer)."""
    from transformers import BertModel, BertTokenizer

    from model.checkpoint import CLIP_MODEL_DIR, CLIP_TOKENIZER_DIR, CheckpointError

    model_dir, tok_dir = Path(root) / CLIP_MODEL_DIR, Path(root) / CLIP_TOKENIZER_DIR
    for folder in (model_dir, tok_dir):
        if not folder.is_dir():
            raise CheckpointError(f"{folder}: Hunyuan-CLIP folder not found")
    model = BertModel.from_pretrained(str(model_dir), add_pooling_layer=False, dtype=dtype)
    tokenizer = BertTokenizer.from_pretrained(str(tok_dir))
    return model.to(device).eval(), tokenizer


# ---------------------------------------------------------------------------------------------------------------
# Both encoders together
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class TextEmbeddings:
    """Text conditioning for the DiT.

    llm_states (B, L, C_llm), llm_mask (B, L) bool, clip_states (B, 77, C_clip), clip_mask (B, 77) bool;
    ``truncated[i]``: prompt i was cut to fit Step-LLM's ``max_length - 2`` tokens (the main encoder);
    ``clip_truncated[i]``: it was cut to CLIP's 77 tokens (common and expected for long prompts).
    """

    llm_states: torch.Tensor
    llm_mask: torch.Tensor
    clip_states: torch.Tensor
    clip_mask: torch.Tensor
    truncated: list[bool] = field(default_factory=list)
    clip_truncated: list[bool] = field(default_factory=list)

    def __len__(self) -> int:
        return self.llm_states.shape[0]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> TextEmbeddings:
        def move(x: torch.Tensor) -> torch.Tensor:
            return x.to(device=device, dtype=dtype if (dtype is not None and x.is_floating_point()) else x.dtype)

        return TextEmbeddings(
            move(self.llm_states),
            self.llm_mask.to(device),
            move(self.clip_states),
            self.clip_mask.to(device),
            list(self.truncated),
            list(self.clip_truncated),
        )

    def expand(self, batch: int) -> TextEmbeddings:
        """Repeat a batch of 1 to ``batch`` (no-op when sizes already match)."""
        if len(self) == batch:
            return self
        if len(self) != 1:
            raise ValueError(f"cannot expand text embeddings of batch {len(self)} to {batch}")
        rep = lambda x: x.expand(batch, *x.shape[1:])  # noqa: E731
        return TextEmbeddings(
            rep(self.llm_states),
            rep(self.llm_mask),
            rep(self.clip_states),
            rep(self.clip_mask),
            self.truncated * batch,
            self.clip_truncated * batch,
        )

    @staticmethod
    def concat(items: list[TextEmbeddings]) -> TextEmbeddings:
        """Concatenate along the batch; LLM lengths must match (they are always ``max_length``)."""
        return TextEmbeddings(
            torch.cat([e.llm_states for e in items]),
            torch.cat([e.llm_mask for e in items]),
            torch.cat([e.clip_states for e in items]),
            torch.cat([e.clip_mask for e in items]),
            [t for e in items for t in e.truncated],
            [t for e in items for t in e.clip_truncated],
        )


class TextEncoders(nn.Module):
    """Step-LLM + Hunyuan-CLIP with their tokenizers; ``encode(prompts) -> TextEmbeddings``."""

    def __init__(
        self, step_llm: StepLLM, llm_tokenizer: StepLLMTokenizer, clip, clip_tokenizer, clip_max_length: int = 77
    ):
        super().__init__()
        self.step_llm = step_llm
        self.clip = clip
        self.llm_tokenizer = llm_tokenizer
        self.clip_tokenizer = clip_tokenizer
        self.clip_max_length = clip_max_length

    @classmethod
    def from_pretrained(
        cls,
        root: str | os.PathLike,
        *,
        device: torch.device | str = "cpu",
        llm_dtype: torch.dtype = torch.bfloat16,
        llm_cfg: StepLLMConfig | None = None,
        clip_max_length: int = 77,
    ) -> TextEncoders:
        from model.checkpoint import LLM_DIR, LLM_TOKENIZER, load_step_llm, read_step_llm_config

        llm_cfg = llm_cfg or read_step_llm_config(root)
        step_llm = load_step_llm(root, llm_cfg, device=device, dtype=llm_dtype)
        tokenizer = StepLLMTokenizer(Path(root) / LLM_DIR / LLM_TOKENIZER, llm_cfg)
        clip, clip_tokenizer = load_clip(root, device=device, dtype=torch.float32)
        return cls(step_llm, tokenizer, clip, clip_tokenizer, clip_max_length)

    @property
    def device(self) -> torch.device:
        return self.step_llm.tok_embeddings.word_embeddings.weight.device

    @torch.no_grad()
    def encode_clip(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor, list[bool]]:
        """-> clip_states (B, 77, C) fp32, clip_mask (B, 77) bool, truncated per prompt."""
        n = self.clip_max_length
        batch = self.clip_tokenizer(prompts, max_length=n, padding="max_length", truncation=True, return_tensors="pt")
        full = self.clip_tokenizer(prompts, truncation=False, verbose=False)["input_ids"]  # only counted: no warning
        truncated = [len(ids) > n for ids in full]
        device = self.clip.embeddings.word_embeddings.weight.device
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        states = self.clip(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, 77, C)
        return states.float(), mask.bool(), truncated

    @torch.no_grad()
    def encode_llm(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor, list[bool]]:
        """-> llm_states (B, L, C), llm_mask (B, L) bool, truncated per prompt."""
        ids, mask, truncated = self.llm_tokenizer(prompts)
        states = self.step_llm(ids.to(self.device))  # (B, L, C)
        return states, mask.to(self.device), truncated

    def encode(self, prompts: list[str]) -> TextEmbeddings:
        if isinstance(prompts, str):
            raise TypeError("encode() takes a list of prompts, not a single string")
        llm_states, llm_mask, truncated = self.encode_llm(prompts)
        clip_states, clip_mask, clip_truncated = self.encode_clip(prompts)
        for prompt, cut in zip(prompts, truncated, strict=True):
            if cut:
                logger.warning(
                    "prompt truncated to %d Step-LLM tokens: %.60r...", self.llm_tokenizer.cfg.max_length - 2, prompt
                )
        return TextEmbeddings(llm_states, llm_mask, clip_states, clip_mask, truncated, clip_truncated)


def text_embeddings_to_bytes(emb, *, version: str) -> bytes:
    """Batch-1 TextEmbeddings -> the stored format (contracts.md): bf16 states, int8 masks, string metadata."""
    from safetensors.torch import save

    if len(emb) != 1:
        raise ValueError(f"store one prompt's embeddings at a time, got batch {len(emb)}")
    tensors = {
        "llm_states": emb.llm_states[0].detach().to("cpu", torch.bfloat16).contiguous(),  # (L, C_llm)
        "llm_mask": emb.llm_mask[0].detach().to("cpu", torch.int8).contiguous(),  # (L,)
        "clip_states": emb.clip_states[0].detach().to("cpu", torch.bfloat16).contiguous(),  # (77, C_clip)
        "clip_mask": emb.clip_mask[0].detach().to("cpu", torch.int8).contiguous(),  # (77,)
    }
    metadata = {
        "encoder_version": version,
        "truncated": "true" if emb.truncated and emb.truncated[0] else "false",
        "clip_truncated": "true" if getattr(emb, "clip_truncated", None) and emb.clip_truncated[0] else "false",
    }
    return save(tensors, metadata=metadata)


def text_embeddings_from_bytes(data: bytes):
    """The stored format -> batch-1 TextEmbeddings (fp32 states from bf16, bool masks) and its metadata."""
    import tempfile

    from safetensors import safe_open
    from safetensors.torch import load

    tensors = load(data)
    with tempfile.NamedTemporaryFile(suffix=".safetensors") as fh:  # metadata needs safe_open
        fh.write(data)
        fh.flush()
        with safe_open(fh.name, framework="pt") as f:
            metadata = f.metadata() or {}
    emb = TextEmbeddings(
        tensors["llm_states"].float()[None], tensors["llm_mask"].bool()[None],
        tensors["clip_states"].float()[None], tensors["clip_mask"].bool()[None],
        [metadata.get("truncated") == "true"], [metadata.get("clip_truncated") == "true"],
    )
    return emb, metadata
