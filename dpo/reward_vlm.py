"""The **VLM** reward model: a video language model (Qwen2-VL or Qwen2.5-VL through transformers, loaded from a local
folder) with LoRA adapters (peft) and one score per aspect read off the last token's hidden state by a linear head:
VideoAlign's VideoReward construction. It trains on the app's VideoAlign CSV export (``path_A, path_B, prompt, VQ,
MQ, TA``) with the same tie-aware Bradley-Terry model as the latent reward model (``dpo.reward``: one ``nu`` per
aspect) and reports the same accuracies.

    model, tokenizer = load_vlm(root)                         # VLMLoadError names the file and the missing keys
    pairs = read_videoalign("export/videoalign.csv")          # -> [VideoPair]
    run = train_vlm_reward(pairs, root, VLMRewardConfig(), out_dir)
    scores = VLMRewardModel(out_dir).score([frames], [prompt])  # frames (T, H, W, 3) uint8 -> (1, A)

Inputs are laid out here rather than by transformers' Qwen2-VL processor (its video processor needs torchvision,
which this project does not install): ``frames`` frames sampled evenly over the clip, each resized by
``smart_resize`` (sides multiples of 28, pixel count within [min_pixels, max_pixels]) with PIL's bicubic filter,
scaled to [0, 1], normalised by the CLIP mean / std, and cut into 2 x 14 x 14 tubelets in the order the vision
tower reads them (``video_patches``; the tests check the layout against transformers' PIL image processor).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import shutil
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dpo.reward import (
    A_WINS,
    B_WINS,
    MIN_PAIRS_PER_ASPECT,
    STATE_FILE,
    TIE,
    RewardDataError,
    RewardTraining,
    accuracies,
    begin_reward_dir,
    config_from_meta,
    fit_btt,
    heldout_split,
    load_weights,
    read_reward_meta,
    save_tensors,
    write_reward_meta,
)
from dpo.reward_config import VLMRewardConfig

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)  # the Qwen2-VL processors' normalisation
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
PATCH, MERGE, TEMPORAL = 14, 2, 2  # the Qwen2-VL vision tower's defaults (read from the model's config when set)
HEAD_FILE, ADAPTER_DIR = "vlm-head.safetensors", "adapter"
VIDEOALIGN_COLUMNS = ("path_A", "path_B", "prompt", "VQ", "MQ", "TA")
LETTER_CLASS = {"A": A_WINS, "B": B_WINS, "same": TIE}
MAX_PROMPT_TOKENS = 512  # a longer prompt is cut there (the video's tokens come first and are never cut)
TOKENIZER_FILES = (("tokenizer.json",), ("vocab.json", "merges.txt"))  # a fast tokenizer, or a BPE vocabulary
SPECIAL_IDS = ("video_token_id", "vision_start_token_id", "vision_end_token_id")
INSTRUCTION = ("Rate the generated video for visual quality, motion quality and how well it follows the prompt. "
               "Prompt: {prompt}")


class VLMLoadError(ValueError):
    """A VLM root that does not load (the message names the file and, for weights, the missing keys)."""


# -- inputs -------------------------------------------------------------------------------------------------------
def smart_resize(height: int, width: int, *, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """The Qwen2-VL processors' frame size: sides multiples of ``factor``, aspect ratio kept, pixels within bounds."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio over 200: {height}x{width}")
    h, w = round(height / factor) * factor, round(width / factor) * factor
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h, w


def sample_frames(frames: np.ndarray, n: int, temporal: int = TEMPORAL) -> np.ndarray:
    """(T, H, W, 3) -> at most ``n`` frames spread evenly (first and last kept), padded by repeating the last frame
    to a multiple of ``temporal`` (as the Qwen2-VL video processor pads)."""
    if len(frames) > n:
        frames = frames[np.linspace(0, len(frames) - 1, n).round().astype(int)]
    if pad := -len(frames) % temporal:
        frames = np.concatenate([frames, np.repeat(frames[-1:], pad, axis=0)])
    return frames


def video_patches(frames: np.ndarray, *, min_pixels: int, max_pixels: int, patch: int = PATCH, merge: int = MERGE,
                  temporal: int = TEMPORAL) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """uint8 (T, H, W, 3), T a multiple of ``temporal`` -> the vision tower's input: patches (t*h*w, 3*temporal*patch*patch)
    float32 and the grid (t, h, w) in patches, rows in the order (t, h-block, w-block, merge row, merge col)."""
    from PIL import Image

    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) % temporal:
        raise ValueError(f"frames must be uint8 (T, H, W, 3) with T a multiple of {temporal}, got "
                         f"{frames.dtype} {frames.shape}")
    height, width = smart_resize(frames.shape[1], frames.shape[2], factor=patch * merge, min_pixels=min_pixels,
                                 max_pixels=max_pixels)
    resized = np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.Resampling.BICUBIC))
                        for f in frames])
    x = ((resized.astype(np.float32) / 255.0 - CLIP_MEAN) / CLIP_STD).transpose(0, 3, 1, 2)  # (T, C, H, W)
    gt, gh, gw = len(x) // temporal, height // patch, width // patch
    x = x.reshape(gt, temporal, 3, gh // merge, merge, patch, gw // merge, merge, patch)
    x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)  # (gt, gh/m, gw/m, m, m, C, temporal, p, p)
    return torch.from_numpy(np.ascontiguousarray(x).reshape(gt * gh * gw, 3 * temporal * patch * patch)), (gt, gh, gw)


def clip_tensors(frames: np.ndarray, cfg: VLMRewardConfig, vision: Any) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """A decoded clip -> (patches, grid) with the model's vision settings (``vision``: its vision config)."""
    temporal = getattr(vision, "temporal_patch_size", TEMPORAL)
    return video_patches(sample_frames(frames, cfg.frames, temporal), min_pixels=cfg.min_pixels,
                         max_pixels=cfg.max_pixels, patch=getattr(vision, "patch_size", PATCH),
                         merge=getattr(vision, "spatial_merge_size", MERGE), temporal=temporal)


def clip_inputs(frames: np.ndarray, cfg: VLMRewardConfig, vision: Any, *, name: str) -> tuple[torch.Tensor,
                                                                                        tuple[int, int, int]]:
    """``clip_tensors`` for a named video: a frame size the vision tower cannot take is a RewardDataError naming it."""
    try:
        return clip_tensors(frames, cfg, vision)
    except ValueError as exc:
        raise RewardDataError(f"video {name}: {exc}") from exc


# -- the model ----------------------------------------------------------------------------------------------------
def _vlm_class(model_type: str):
    import transformers

    classes = {"qwen2_vl": "Qwen2VLForConditionalGeneration", "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration"}
    if model_type not in classes:
        raise VLMLoadError(f"model_type {model_type!r} is not a supported video language model ({sorted(classes)})")
    return getattr(transformers, classes[model_type])


def load_vlm(root: str | Path) -> tuple[nn.Module, Any]:
    """(model, tokenizer) from a local Hugging Face folder (config.json, model.safetensors or its index, tokenizer
    files), float32 on the CPU. Refuses, naming the file: a config that is not a JSON object or does not build the
    architecture, weights that lack keys or hold tensors of other shapes (transformers would initialise those at
    random), missing tokenizer files, and special token ids outside the vocabulary."""
    from transformers import AutoTokenizer

    root = Path(root)
    config_path = root / "config.json"
    if not config_path.is_file():
        raise VLMLoadError(f"{config_path} is missing: not a model folder")
    try:
        raw = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VLMLoadError(f"{config_path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise VLMLoadError(f"{config_path} must hold a JSON object, got {type(raw).__name__}")
    cls = _vlm_class(raw.get("model_type", ""))
    weights = [p for p in (root / "model.safetensors", root / "model.safetensors.index.json") if p.is_file()]
    if not weights:
        raise VLMLoadError(f"{root / 'model.safetensors'} (or model.safetensors.index.json) is missing")
    if weights[0].name.endswith(".index.json"):
        _check_shards(weights[0])
    if not any(all((root / f).is_file() for f in files) for files in TOKENIZER_FILES):
        raise VLMLoadError(f"{root}: the tokenizer files are missing (tokenizer.json, or vocab.json and merges.txt)")
    missing_ids = [name for name in SPECIAL_IDS if not isinstance(raw.get(name), int)]
    if missing_ids:  # transformers would fill in Qwen's own ids, which another vocabulary does not have
        raise VLMLoadError(f"{config_path}: {', '.join(missing_ids)} must be set (integer token ids)")
    try:
        config = cls.config_class.from_pretrained(str(root), local_files_only=True)
        model, info = cls.from_pretrained(str(root), config=config, local_files_only=True, output_loading_info=True,
                                          use_safetensors=True,  # never a pickle (.bin) beside it
                                          ignore_mismatched_sizes=True, dtype=torch.float32)
    except Exception as exc:  # noqa: BLE001 (transformers and safetensors raise many types for a damaged folder)
        raise VLMLoadError(f"{root} does not load ({config_path.name}, {weights[0].name}): "
                           f"{type(exc).__name__}: {' '.join(str(exc).split())}") from exc
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        shown = ", ".join(missing[:12]) + (f" and {len(missing) - 12} more" if len(missing) > 12 else "")
        raise VLMLoadError(f"{weights[0]}: missing keys {shown}")
    mismatched = [f"{k} {tuple(found)} (expected {tuple(wanted)})" if isinstance(k, str) else str(k)
                  for k, found, wanted in _mismatched(info)]
    if mismatched:
        raise VLMLoadError(f"{weights[0]}: tensors of the wrong shape for config.json: {', '.join(mismatched[:12])}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(root), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 (tokenizers raises its own exception type for a damaged file)
        raise VLMLoadError(f"{root}: the tokenizer files do not load: {type(exc).__name__}: {exc}") from exc
    vocab = model.config.get_text_config().vocab_size
    outside = [f"{name} {raw[name]}" for name in SPECIAL_IDS if not 0 <= raw[name] < vocab]
    if len(tokenizer) > vocab:
        outside.append(f"the tokenizer's {len(tokenizer)} tokens")
    if outside:
        raise VLMLoadError(f"{config_path}: {', '.join(outside)} outside the model's vocabulary of {vocab}")
    return model, tokenizer


def _check_shards(index: Path) -> None:
    """A sharded folder's index must name only .safetensors files beside it: never a pickle (.bin) that
    transformers would hand to torch.load, never a path out of the folder."""
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map")
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
        raise VLMLoadError(f"{index} is not a safetensors index (a JSON object with a weight_map): {exc}") from exc
    if not isinstance(weight_map, dict) or not weight_map:
        raise VLMLoadError(f"{index}: weight_map must be a non-empty JSON object")
    bad = sorted({str(f) for f in weight_map.values()
                  if not (isinstance(f, str) and f.endswith(".safetensors") and "/" not in f and "\\" not in f
                          and f not in (".", ".."))})
    if bad:
        raise VLMLoadError(f"{index}: shards must be .safetensors files in the folder, got {', '.join(bad[:5])}")


def _mismatched(info: dict) -> list[tuple[str, tuple, tuple]]:
    """(key, shape in the file, shape the model wants) from transformers' loading info."""
    rows = []
    for item in info.get("mismatched_keys") or []:
        if isinstance(item, (tuple, list)) and len(item) == 3:
            rows.append((item[0], item[1], item[2]))
        else:
            rows.append((item, (), ()))
    return rows


class VLMReward(nn.Module):
    """The VLM (LoRA-wrapped) and a linear score per aspect on the last real token's hidden state (B, H) -> (B, A),
    with the BTT tie parameter nu (A,) = softplus(raw)."""

    def __init__(self, vlm: nn.Module, hidden: int, n_aspects: int):
        super().__init__()
        self.vlm = vlm
        self.head = nn.Linear(hidden, n_aspects)
        nn.init.normal_(self.head.weight, std=hidden**-0.5)
        nn.init.zeros_(self.head.bias)
        self.raw_nu = nn.Parameter(torch.full((n_aspects,), math.log(math.expm1(1.0))))  # nu starts at 1

    @property
    def nu(self) -> torch.Tensor:
        return F.softplus(self.raw_nu)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """inputs: ``encode_batch``'s input_ids / attention_mask / mm_token_type_ids (B, L), pixel_values_videos
        (N, D) and video_grid_thw (B, 3) -> scores (B, A)."""
        core = self.vlm.get_base_model().model if hasattr(self.vlm, "get_base_model") else self.vlm.model
        hidden = core(**inputs, use_cache=False).last_hidden_state  # (B, L, H)
        last = inputs["attention_mask"].sum(1) - 1  # right padding: the last real token
        pooled = hidden[torch.arange(len(hidden)), last]  # (B, H)
        return self.head(pooled.float())


def encode_batch(tokenizer: Any, config: Any, clips: list[tuple[torch.Tensor, tuple[int, int, int]]],
                 prompts: list[str]) -> dict[str, torch.Tensor]:
    """Token ids for (video, instruction) per clip: the chat template when the tokenizer has one (Qwen's), else
    vision-start, the video's tokens, vision-end and the instruction; the video placeholder is expanded to one token
    per merged patch (t * h * w / merge^2). Right-padded; mm_token_type_ids marks video tokens with 2."""
    merge = getattr(config.vision_config, "spatial_merge_size", MERGE)
    video_id, start_id, end_id = config.video_token_id, config.vision_start_token_id, config.vision_end_token_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    rows = []
    for (_, (t, h, w)), prompt in zip(clips, prompts, strict=True):
        n_video = t * h * w // merge**2
        text = INSTRUCTION.format(prompt=_capped(tokenizer, prompt))
        if getattr(tokenizer, "chat_template", None):
            rendered = tokenizer.apply_chat_template(
                [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": text}]}],
                tokenize=False, add_generation_prompt=True)
            ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
            if ids.count(video_id) != 1:
                raise VLMLoadError("the tokenizer's chat template does not place one video token")
            k = ids.index(video_id)
            ids = ids[:k] + [video_id] * n_video + ids[k + 1 :]
        else:
            ids = [start_id] + [video_id] * n_video + [end_id] + tokenizer(text, add_special_tokens=False)["input_ids"]
        rows.append(ids)
    length = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return {"input_ids": input_ids, "attention_mask": mask,
            "mm_token_type_ids": ((input_ids == video_id) & (mask == 1)).int() * 2,
            "pixel_values_videos": torch.cat([c[0] for c in clips]),
            "video_grid_thw": torch.tensor([list(c[1]) for c in clips], dtype=torch.long)}


def _capped(tokenizer: Any, prompt: str) -> str:
    """``prompt`` cut to its first ``MAX_PROMPT_TOKENS`` tokens (unchanged when shorter)."""
    if len(prompt) <= MAX_PROMPT_TOKENS:  # a token is at least one character
        return prompt
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return prompt if len(ids) <= MAX_PROMPT_TOKENS else tokenizer.decode(ids[:MAX_PROMPT_TOKENS])


# -- data ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoPair:
    """One VideoAlign row: two videos (A, B), the prompt, and per aspect the winner: "A", "B" or "same"."""

    video_a: str
    video_b: str
    prompt: str
    labels: dict[str, str]
    row: int


def read_videoalign(uri: str | Path) -> list[VideoPair]:
    """Rows of a VideoAlign CSV (the app's ``videoalign`` export). Video paths may be absolute, relative to the CSV's
    folder (an unzipped ``media: bundle`` export), file:// or s3:// URIs (``media: none``) or https links
    (``media: links``). Raises RewardDataError naming a missing column or a bad cell."""
    from dpo.storage import parse_uri, read_bytes

    uri = str(uri)
    kind, _, path = parse_uri(uri)
    if kind == "local" and not Path(path).is_file():
        raise RewardDataError(f"VideoAlign CSV not found: {uri}")
    try:
        text = read_bytes(uri).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RewardDataError(f"{uri} is not UTF-8 text (byte {exc.start}): not a VideoAlign CSV") from exc
    try:
        return _videoalign_rows(uri, csv.DictReader(io.StringIO(text)), Path(path).parent if kind == "local" else None)
    except csv.Error as exc:
        raise RewardDataError(f"{uri}: not a readable CSV: {exc}") from exc


def _videoalign_rows(uri: str, reader: csv.DictReader, base: Path | None) -> list[VideoPair]:
    missing = [c for c in VIDEOALIGN_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise RewardDataError(f"{uri}: not a VideoAlign CSV, missing columns {missing}")
    pairs = []
    for i, row in enumerate(reader, start=2):
        labels = {}
        for column in ("VQ", "MQ", "TA"):
            value = (row[column] or "").strip()
            if value not in LETTER_CLASS:
                raise RewardDataError(f"{uri} line {i}: {column} must be A, B or same, got {value!r}")
            labels[column.lower()] = value
        videos = []
        for column in ("path_A", "path_B"):
            value = (row[column] or "").strip()
            if not value:
                raise RewardDataError(f"{uri} line {i}: {column} is empty")
            if base is not None and "://" not in value and not Path(value).is_absolute():
                value = str(base / value)
            videos.append(value)
        pairs.append(VideoPair(videos[0], videos[1], row["prompt"] or "", labels, i))
    if not pairs:
        raise RewardDataError(f"{uri}: no pairs (a header and no rows)")
    return pairs


def read_clip(uri: str, frames: int | None = None) -> np.ndarray:
    """A video (a path, file://, s3:// or an export's signed https:// link) decoded to uint8 (T, H, W, 3): every
    frame, or ``frames`` spread evenly over it (only those are kept in memory, whatever the video's length)."""
    from dpo.storage import parse_uri, read_bytes
    from model.media import VideoReadError, read_video_frames

    try:
        if uri.startswith(("http://", "https://")):
            import urllib.request

            with urllib.request.urlopen(uri, timeout=60) as resp:  # noqa: S310 (the scheme is checked above)
                data = resp.read()
        else:
            kind, _, path = parse_uri(uri)
            if kind == "local":
                return read_video_frames(path, frames)
            data = read_bytes(uri)
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "clip.mp4"
            local.write_bytes(data)
            return read_video_frames(local, frames)
    except VideoReadError as exc:
        raise RewardDataError(str(exc)) from exc
    except OSError as exc:
        raise RewardDataError(f"video {uri} cannot be read: {exc}") from exc


class ClipCache:
    """uri -> (patches, grid), the most recent ``size`` clips kept (memory stays bounded whatever the CSV's size)."""

    def __init__(self, cfg: VLMRewardConfig, vision: Any, size: int = 256):
        self.cfg, self.vision, self.size = cfg, vision, size
        self.items: OrderedDict[str, tuple[torch.Tensor, tuple[int, int, int]]] = OrderedDict()

    def get(self, uri: str) -> tuple[torch.Tensor, tuple[int, int, int]]:
        if uri in self.items:
            self.items.move_to_end(uri)
            return self.items[uri]
        item = clip_inputs(read_clip(uri, self.cfg.frames), self.cfg, self.vision, name=uri)
        self.items[uri] = item
        if len(self.items) > self.size:
            self.items.popitem(last=False)
        return item


def pair_classes(pairs: list[VideoPair], aspects: tuple[str, ...]) -> torch.Tensor:
    """(P, A) BTT classes with A = the CSV's column A."""
    return torch.tensor([[LETTER_CLASS[p.labels[a]] for a in aspects] for p in pairs], dtype=torch.long)


# -- training and scoring -----------------------------------------------------------------------------------------
def _pair_diffs(model: VLMReward, tokenizer: Any, cache: ClipCache, pairs: list[VideoPair]) -> torch.Tensor:
    """Scores of side A minus side B (P, A), both sides in one forward."""
    clips = [cache.get(p.video_a) for p in pairs] + [cache.get(p.video_b) for p in pairs]
    scores = model(encode_batch(tokenizer, model.vlm.config, clips, [p.prompt for p in pairs] * 2))
    return scores[: len(pairs)] - scores[len(pairs) :]


@torch.no_grad()
def _evaluate(model: VLMReward, tokenizer: Any, cache: ClipCache, pairs: list[VideoPair],
              aspects: tuple[str, ...], batch: int) -> dict[str, Any]:
    model.eval()
    diffs = torch.cat([_pair_diffs(model, tokenizer, cache, pairs[i : i + batch]) for i in range(0, len(pairs), batch)])
    return accuracies(diffs, pair_classes(pairs, aspects), model.nu, aspects)


def _build(root: str | Path, cfg: VLMRewardConfig) -> tuple[VLMReward, Any]:
    from peft import LoraConfig, get_peft_model

    vlm, tokenizer = load_vlm(root)
    vlm.requires_grad_(False)
    lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                      target_modules=list(cfg.lora_targets))
    try:
        vlm = get_peft_model(vlm, lora)
    except ValueError as exc:
        raise VLMLoadError(f"{root}: LoRA targets {list(cfg.lora_targets)} match no module: {exc}") from exc
    hidden = vlm.config.get_text_config().hidden_size
    return VLMReward(vlm, hidden, len(cfg.aspects)), tokenizer


def train_vlm_reward(pairs: list[VideoPair], root: str | Path, cfg: VLMRewardConfig, out_dir: str | Path, *,
                     lineage: dict[str, Any] | None = None, resume: bool = False, progress: bool = True,
                     on_step: Callable[[dict[str, Any]], bool] | None = None) -> RewardTraining:
    """Fit the LoRA adapters and the heads on the pairs (held-out prompts kept aside), save them under ``out_dir``
    (adapter/, vlm-head.safetensors, reward.json) and report accuracies. Resumes exactly from ``state.pt`` (saved
    every 25 steps, at the end and when ``on_step`` returns True to stop), like the latent reward model."""

    out = begin_reward_dir(out_dir, resume=resume)
    train, test = heldout_split(pairs, cfg.holdout, cfg.seed, prompt=lambda p: p.prompt)
    if len(train) < MIN_PAIRS_PER_ASPECT:
        raise RewardDataError(f"{len(train)} training pairs after holding out {cfg.holdout:.0%} of the prompts: "
                              f"at least {MIN_PAIRS_PER_ASPECT} are needed")
    torch.manual_seed(cfg.seed)
    model, tokenizer = _build(root, cfg)
    cache = ClipCache(cfg, model.vlm.config.vision_config)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    labels = pair_classes(train, cfg.aspects)
    t0 = time.time()

    def batch(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randperm(len(train), generator=gen)[: cfg.batch]
        return _pair_diffs(model, tokenizer, cache, [train[int(i)] for i in idx]), labels[idx]

    model.train()
    history, stopped_at = fit_btt(model, opt, batch, cfg=cfg, state_path=out / STATE_FILE, resume=resume,
                                  save_every=25, desc="vlm reward", progress=progress, on_step=on_step)
    if stopped_at is not None:
        return RewardTraining(out, cfg, len(train), len(test), {}, {"step": stopped_at}, stopped=True)
    metrics: dict[str, Any] = {"train": _evaluate(model, tokenizer, cache, train, cfg.aspects, cfg.batch)}
    if test:
        metrics["heldout"] = _evaluate(model, tokenizer, cache, test, cfg.aspects, cfg.batch)
    metrics.update(loss_first=history[0] if history else None, loss_last=history[-1] if history else None,
                   total_s=round(time.time() - t0, 1))
    staged = out / (ADAPTER_DIR + ".partial")
    shutil.rmtree(staged, ignore_errors=True)
    model.vlm.save_pretrained(str(staged))
    shutil.rmtree(out / ADAPTER_DIR, ignore_errors=True)
    staged.rename(out / ADAPTER_DIR)
    save_tensors({"head.weight": model.head.weight.detach().contiguous(), "head.bias": model.head.bias.detach(),
                  "raw_nu": model.raw_nu.detach()}, out / HEAD_FILE)
    counts = {a: len(pairs) for a in cfg.aspects}
    meta = {"kind": "vlm", "vlm_root": str(Path(root).resolve()), "config": dataclasses.asdict(cfg),
            "nu": [round(float(v), 4) for v in model.nu.detach()], "pairs": {"train": len(train), "heldout": len(test)},
            "aspect_pairs": counts, "metrics": metrics, "lineage": lineage or {}}
    write_reward_meta(out, meta)  # last: the folder is a finished model once reward.json is there
    return RewardTraining(out, cfg, len(train), len(test), counts, metrics)


class VLMRewardModel:
    """A trained VLM reward model: ``score(clips, prompts)`` -> (B, A), ``evaluate(pairs)`` -> accuracies. The VLM
    is read from ``vlm_root`` (default: the folder it was trained from, recorded in reward.json)."""

    def __init__(self, reward_dir: str | Path, vlm_root: str | Path | None = None):
        from peft import PeftModel

        d = Path(reward_dir)
        self.meta = read_reward_meta(d, "vlm")
        for p in (d / HEAD_FILE, d / ADAPTER_DIR / "adapter_config.json"):
            if not p.is_file():
                raise FileNotFoundError(f"not a VLM reward model directory: {p} is missing")
        self.cfg = config_from_meta(VLMRewardConfig, self.meta, d)
        root = str(vlm_root) if vlm_root else self.meta.get("vlm_root")
        if not isinstance(root, str) or not root:
            raise RewardDataError(f"{d}: reward.json names no vlm_root; pass --vlm")
        vlm, self.tokenizer = load_vlm(root)
        try:
            vlm = PeftModel.from_pretrained(vlm, str(d / ADAPTER_DIR))
        except Exception as exc:  # noqa: BLE001 (peft raises many types for a damaged or foreign adapter)
            raise VLMLoadError(f"{d / ADAPTER_DIR} does not fit {root}: {type(exc).__name__}: {exc}") from exc
        hidden, n = vlm.config.get_text_config().hidden_size, len(self.cfg.aspects)
        self.model = VLMReward(vlm, hidden, n)
        state = load_weights(d / HEAD_FILE, {"head.weight": torch.Size([n, hidden]), "head.bias": torch.Size([n]),
                                             "raw_nu": torch.Size([n])})
        self.model.head.load_state_dict({"weight": state["head.weight"], "bias": state["head.bias"]})
        self.model.raw_nu.data.copy_(state["raw_nu"])
        self.model.eval().requires_grad_(False)
        self.cache = ClipCache(self.cfg, vlm.config.vision_config)

    @property
    def aspects(self) -> tuple[str, ...]:
        return self.cfg.aspects

    @torch.no_grad()
    def score(self, clips: list[np.ndarray], prompts: list[str], names: list[str] | None = None) -> torch.Tensor:
        """Decoded clips (each uint8 (T, H, W, 3)) and their prompts -> (B, A) scores (``names``: the clips' files,
        for the refusal of one the vision tower cannot take)."""
        vision = self.model.vlm.config.vision_config
        names = names or [f"clip {i}" for i in range(len(clips))]
        tensors = [clip_inputs(c, self.cfg, vision, name=n) for c, n in zip(clips, names, strict=True)]
        return self.model(encode_batch(self.tokenizer, self.model.vlm.config, tensors, prompts))

    @torch.no_grad()
    def evaluate(self, pairs: list[VideoPair]) -> dict[str, Any]:
        return _evaluate(self.model, self.tokenizer, self.cache, pairs, self.cfg.aspects, self.cfg.batch)
