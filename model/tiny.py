"""A complete tiny model root in the official layout, with random weights and locally built tokenizers.

``write_tiny_checkpoint(root, seed=0)`` (CLI: ``python -m model make-tiny --out DIR --seed 0``) writes::

    model_index.json, scheduler/scheduler_config.json
    transformer/{config.json, diffusion_pytorch_model-0000i-of-0000n.safetensors, *.index.json}   (several shards)
    vae/vae_v2.safetensors (+ vae/config.json, ours: the tiny sizes)
    step_llm/{config.json, model-0000i-of-0000n.safetensors, model.safetensors.index.json, step1_chat_tokenizer.model}
    hunyuan_clip/clip_text_encoder/{config.json, pytorch_model.bin}
    hunyuan_clip/tokenizer/{vocab.txt, vocab_org.txt, tokenizer_config.json, special_tokens_map.json}

The SentencePiece model is trained in-process on a small bilingual corpus; the BERT vocab.txt is written from the
same corpus and padded with ``[unusedN]`` to the tiny CLIP's vocab size. Same seed -> identical weights.
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import torch

from model.checkpoint import (
    CLIP_MODEL_DIR,
    CLIP_TOKENIZER_DIR,
    LLM_DIR,
    LLM_TOKENIZER,
    save_dit,
    save_step_llm,
    save_vae,
    write_model_index,
    write_scheduler_config,
)
from model.config import NEG_MAGIC, POS_MAGIC, CLIPConfig
from model.presets import get_preset

CORPUS = [
    "A ballet dancer practicing in the dance studio.",
    "A cat sleeping on a sunny windowsill, soft light, calm afternoon.",
    "An astronaut riding a horse on the moon, cinematic, slow motion.",
    "A red sports car driving along a coastal road at sunset.",
    "Waves crashing against black rocks, foam and spray, dramatic sky.",
    "A chef slicing vegetables in a busy kitchen, close-up of the knife.",
    "Two children flying a kite in a green park on a windy day.",
    "Time-lapse of clouds moving over snowy mountains.",
    "A golden retriever running through tall grass toward the camera.",
    "Rain falling on a neon-lit street in a city at night.",
    "A hummingbird hovering near a bright flower, macro shot.",
    "An old man playing chess in a quiet park under autumn trees.",
    "Fireworks exploding over a river, reflections on the water.",
    "A steaming cup of coffee on a wooden table, morning light.",
    "A panda eating bamboo in a forest, natural, vivid details.",
    "Aerial view of a forest with a winding river.",
    "A robot walking through a futuristic city with flying cars.",
    "Ultra high definition, HDR video, ambient light, stable picture, smooth motion, realistic details.",
    "Dark picture, low resolution, bad hands, text, missing fingers, cropped, low quality, grainy, watermark, blurry.",
    "一位芭蕾舞者在舞蹈室里练习。",
    "一只猫在阳光明媚的窗台上睡觉，柔和的光线。",
    "宇航员在月球上骑马，电影感，慢动作。",
    "海浪拍打着黑色的礁石，天空阴沉。",
    "一只熊猫在竹林里吃竹子，自然，生动，细节丰富。",
    "夜晚的城市街道下着雨，霓虹灯闪烁。",
    "两个孩子在公园里放风筝，风很大。",
    "一辆红色跑车在日落时沿着海岸公路行驶。",
    "雪山上空的云在移动，延时摄影。",
    "厨师在厨房里切菜，刀的特写镜头。",
    "烟花在河面上空绽放，水中有倒影。",
    POS_MAGIC,
    NEG_MAGIC,
]

_BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _is_cjk(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff" or "\u3000" <= ch <= "\u303f" or "\uff00" <= ch <= "\uffef"


def bert_vocab(corpus: list[str], size: int) -> list[str]:
    """A WordPiece vocab of exactly ``size`` entries: specials, ASCII chars and ##chars, corpus words, CJK chars."""
    tokens = list(_BERT_SPECIALS)
    seen = set(tokens)

    def add(tok: str) -> None:
        if tok not in seen:
            seen.add(tok)
            tokens.append(tok)

    for ch in "abcdefghijklmnopqrstuvwxyz0123456789.,!?;:'\"-()":
        add(ch)
    for ch in "abcdefghijklmnopqrstuvwxyz0123456789":
        add("##" + ch)
    for line in corpus:
        for ch in line:
            if _is_cjk(ch) or not ch.isascii():
                add(ch)
        for word in re.findall(r"[a-z]+", line.lower()):
            add(word)
    if len(tokens) > size:
        raise ValueError(f"tiny BERT vocab needs {len(tokens)} entries > vocab_size {size}")
    tokens += [f"[unused{i}]" for i in range(size - len(tokens))]
    return tokens


def train_sentencepiece(corpus: list[str], vocab_size: int) -> bytes:
    """Train a tiny BPE SentencePiece model in memory (unk 0, BOS 1, EOS 2, byte fallback); returns its bytes."""
    import sentencepiece as spm

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus * 4),
        model_writer=buffer,
        vocab_size=vocab_size,
        model_type="bpe",
        character_coverage=1.0,
        byte_fallback=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
    )
    return buffer.getvalue()


def bert_config(cfg: CLIPConfig) -> dict:
    """A ``transformers`` BertConfig as a plain dict (written as ``clip_text_encoder/config.json``)."""
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        **cfg.to_bert_kwargs(),
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "initializer_range": 0.02,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
    }


def bert_state_dict(cfg: CLIPConfig, std: float = 0.02) -> dict[str, torch.Tensor]:
    """Random weights under ``BertModel``'s state-dict names (no pooler), drawn from torch's global RNG.

    Built by hand so ``make-tiny`` does not pay for importing ``transformers``; a test checks the names and shapes
    against a real ``BertModel``.
    """
    H, inter = cfg.hidden_size, cfg.intermediate_size
    state: dict[str, torch.Tensor] = {}

    def linear(name: str, n_out: int, n_in: int) -> None:
        state[f"{name}.weight"] = torch.randn(n_out, n_in) * std
        state[f"{name}.bias"] = torch.zeros(n_out)

    def layer_norm(name: str) -> None:
        state[f"{name}.weight"] = torch.ones(H)
        state[f"{name}.bias"] = torch.zeros(H)

    state["embeddings.word_embeddings.weight"] = torch.randn(cfg.vocab_size, H) * std
    state["embeddings.position_embeddings.weight"] = torch.randn(cfg.max_position_embeddings, H) * std
    state["embeddings.token_type_embeddings.weight"] = torch.randn(cfg.type_vocab_size, H) * std
    layer_norm("embeddings.LayerNorm")
    for i in range(cfg.num_hidden_layers):
        p = f"encoder.layer.{i}."
        for name in ("query", "key", "value"):
            linear(p + f"attention.self.{name}", H, H)
        linear(p + "attention.output.dense", H, H)
        layer_norm(p + "attention.output.LayerNorm")
        linear(p + "intermediate.dense", inter, H)
        linear(p + "output.dense", H, inter)
        layer_norm(p + "output.LayerNorm")
    return state


def write_tiny_checkpoint(root: str | os.PathLike, seed: int = 0, *, dit_zero_out: bool = False) -> Path:
    """Write a complete tiny model root (random weights from ``seed``) to ``root``; returns ``root``.

    ``dit_zero_out``: DiT with the standard zero-initialised AdaLN modulation and output projection (it predicts
    v = 0, so sampling returns the initial noise) instead of a random non-trivial velocity field."""
    from model.text_encoder import StepLLM
    from model.transformer import StepVideoDiT
    from model.vae import VideoVAE

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    preset = get_preset("tiny")
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        # 1. DiT: by default a non-zero output projection so the tiny model's velocity depends on its inputs;
        #    ``dit_zero_out=True``: the standard DiT init (AdaLN modulation and output projection zero, v = 0 at start)
        dit = StepVideoDiT(preset.dit)
        dit.init_weights(zero_out=dit_zero_out)
        save_dit(dit, root, preset.dit, max_shard_bytes=4 * 1024**2)

        # 2. VAE
        vae = VideoVAE(preset.vae)
        vae.init_weights()
        save_vae(vae, root, preset.vae)

        # 3. Step-LLM + SentencePiece tokenizer
        llm = StepLLM(preset.step_llm)
        llm.init_weights()
        save_step_llm(llm, root, preset.step_llm, max_shard_bytes=128 * 1024)
        sp_bytes = train_sentencepiece(CORPUS, vocab_size=500)
        (root / LLM_DIR / LLM_TOKENIZER).write_bytes(sp_bytes)

        # 4. Hunyuan-CLIP (BERT) + vocab
        clip_cfg = preset.clip
        model_dir = root / CLIP_MODEL_DIR
        model_dir.mkdir(parents=True, exist_ok=True)
        (model_dir / "config.json").write_text(json.dumps(bert_config(clip_cfg), indent=2) + "\n")
        torch.save(bert_state_dict(clip_cfg), model_dir / "pytorch_model.bin")
    finally:
        torch.random.set_rng_state(generator_state)

    tok_dir = root / CLIP_TOKENIZER_DIR
    tok_dir.mkdir(parents=True, exist_ok=True)
    vocab = "\n".join(bert_vocab(CORPUS, clip_cfg.vocab_size)) + "\n"
    (tok_dir / "vocab.txt").write_text(vocab, encoding="utf-8")
    (tok_dir / "vocab_org.txt").write_text(vocab, encoding="utf-8")
    (tok_dir / "tokenizer_config.json").write_text(
        json.dumps(
            {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": clip_cfg.max_length},
            indent=2,
        )
        + "\n"
    )
    (tok_dir / "special_tokens_map.json").write_text(
        json.dumps(
            {
                "unk_token": "[UNK]",
                "sep_token": "[SEP]",
                "pad_token": "[PAD]",
                "cls_token": "[CLS]",
                "mask_token": "[MASK]",
            },
            indent=2,
        )
        + "\n"
    )

    # 5. Pipeline files
    write_model_index(root)
    index = json.loads((root / "model_index.json").read_text())
    index["_stepvideo_preset"] = "tiny"
    (root / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    write_scheduler_config(root, preset.sampler.shift)
    return root
