"""Reading and writing the official ``stepfun-ai/stepvideo-t2v`` model-root layout (docs/contracts.md)::

    model_index.json
    transformer/config.json
    transformer/diffusion_pytorch_model-0000i-of-0000n.safetensors + diffusion_pytorch_model.safetensors.index.json
    vae/vae_v2.safetensors                      (stores decoder.conv_out.{weight,bias}; loaded as decoder.conv_out.conv.*)
    step_llm/config.json, model-0000i-of-0000n.safetensors, model.safetensors.index.json, step1_chat_tokenizer.model
    hunyuan_clip/clip_text_encoder/{config.json, pytorch_model.bin}, hunyuan_clip/tokenizer/{vocab.txt, ...}

Loading builds the module on the meta device and calls ``load_state_dict(assign=True)`` with tensors read straight
from safetensors onto the target device/dtype, so no full fp32 copy is made in host memory. Loads are strict by
default; a mismatch raises :class:`CheckpointError` naming the file(s) and the missing / unexpected / mis-shaped keys.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from model.config import DiTConfig, StepLLMConfig, VAEConfig
from model.layout import (  # noqa: F401 - the layout's names live in the torch-free model.layout; re-exported
    CLIP_MODEL_DIR,
    CLIP_TOKENIZER_DIR,
    DIT_DIR,
    DIT_INDEX,
    DIT_WEIGHTS,
    LLM_DIR,
    LLM_INDEX,
    LLM_TOKENIZER,
    LLM_WEIGHTS,
    VAE_FILE,
)

logger = logging.getLogger(__name__)

# Runtime-only DiTConfig fields: not written to transformer/config.json.
RUNTIME_FIELDS = ("attention_backend", "gradient_checkpointing")
# vae_v2.safetensors name -> module name (the official loader's rename).
_VAE_RENAMES = {
    "decoder.conv_out.weight": "decoder.conv_out.conv.weight",
    "decoder.conv_out.bias": "decoder.conv_out.conv.bias",
}
DEFAULT_MAX_SHARD_BYTES = 10 * 1024**3


class CheckpointError(ValueError):
    """A checkpoint on disk does not match the module it is loaded into (or is missing)."""


# ---------------------------------------------------------------------------------------------------------------
# Generic safetensors helpers
# ---------------------------------------------------------------------------------------------------------------


def _as_state_dict(module_or_state_dict: nn.Module | Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    if isinstance(module_or_state_dict, nn.Module):
        return module_or_state_dict.state_dict()
    return module_or_state_dict


def save_sharded(
    state_dict: Mapping[str, torch.Tensor],
    folder: str | os.PathLike,
    weights_name: str,
    index_name: str,
    *,
    dtype: torch.dtype | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> list[Path]:
    """Write ``state_dict`` as ``{weights_name}-0000i-of-0000n.safetensors`` shards plus ``index_name``.

    Tensors are cast to ``dtype`` (if given) one at a time, so only one shard is materialised at once.
    Returns the shard paths. Keys keep the order of ``state_dict``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    groups: list[list[str]] = [[]]
    sizes = [0]
    for key, tensor in state_dict.items():
        nbytes = tensor.numel() * (torch.empty((), dtype=dtype).element_size() if dtype else tensor.element_size())
        if groups[-1] and sizes[-1] + nbytes > max_shard_bytes:
            groups.append([])
            sizes.append(0)
        groups[-1].append(key)
        sizes[-1] += nbytes
    n = len(groups)
    # Remove stale shards of an earlier save with a different shard count.
    for old in folder.glob(f"{weights_name}-*-of-*.safetensors"):
        old.unlink()
    weight_map, paths = {}, []
    for i, keys in enumerate(groups, start=1):
        name = f"{weights_name}-{i:05d}-of-{n:05d}.safetensors"
        shard = {}
        for key in keys:
            tensor = state_dict[key].detach()
            if dtype is not None and tensor.is_floating_point():
                tensor = tensor.to(dtype)
            shard[key] = tensor.to("cpu").contiguous()
            weight_map[key] = name
        save_file(shard, str(folder / name), metadata={"format": "pt"})
        paths.append(folder / name)
        del shard
    index = {"metadata": {"total_size": int(sum(sizes))}, "weight_map": weight_map}
    (folder / index_name).write_text(json.dumps(index, indent=2) + "\n")
    return paths


def _shard_files(folder: Path, weights_name: str, index_name: str) -> tuple[dict[str, list[str]], Path]:
    """{file name: [keys]} from the index (or the single unsharded file) and the path that describes them."""
    index_path = folder / index_name
    if index_path.is_file():
        weight_map = json.loads(index_path.read_text())["weight_map"]
        files: dict[str, list[str]] = {}
        for key, name in weight_map.items():
            files.setdefault(name, []).append(key)
        for name in files:
            if not (folder / name).is_file():
                raise CheckpointError(f"{index_path}: lists shard {name!r}, which does not exist in {folder}")
        return files, index_path
    single = folder / f"{weights_name}.safetensors"
    if single.is_file():
        with safe_open(str(single), framework="pt") as f:
            return {single.name: list(f.keys())}, single
    raise CheckpointError(f"{folder}: neither {index_name} nor {weights_name}.safetensors exists")


def read_safetensors(
    paths: Iterable[Path],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    renames: Mapping[str, str] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read every tensor of ``paths`` onto ``device`` (cast to ``dtype`` for floating tensors).

    Returns (state_dict, {key: file it came from}).
    """
    renames = renames or {}
    device = torch.device(device)
    state, origin = {}, {}
    for path in paths:
        # Reading on CPU and moving per tensor keeps the peak at one tensor for non-CPU targets.
        try:
            handle = safe_open(str(path), framework="pt", device="cpu")
        except SafetensorError as exc:  # truncated or corrupted file: name it
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
        with handle as f:
            for key in f.keys():
                tensor = f.get_tensor(key)
                if dtype is not None and tensor.is_floating_point():
                    tensor = tensor.to(dtype)
                name = renames.get(key, key)
                if name in state:
                    raise CheckpointError(f"{path}: key {key!r} also appears in {origin[name]}")
                state[name] = tensor.to(device)
                origin[name] = str(path)
    return state, origin


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str, *, strict: bool = True) -> None:
    """Raise :class:`CheckpointError` listing missing, unexpected and mis-shaped keys (the latter always)."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {expected[k]}"
        for k in set(expected) & set(state)
        if tuple(state[k].shape) != expected[k]
    )
    problems = []
    if strict and missing:
        problems.append(f"{len(missing)} missing key(s): {_short(missing)}")
    if strict and unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_short(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {_short(mismatched)}")
    if problems:
        raise CheckpointError(f"{source}: " + "; ".join(problems))


def _short(items: list[str], limit: int = 20) -> str:
    shown = ", ".join(repr(i) for i in items[:limit])
    return f"[{shown}{', ...' if len(items) > limit else ''}]"


def load_into_meta_module(
    module: nn.Module, state: Mapping[str, torch.Tensor], source: str, *, strict: bool = True
) -> nn.Module:
    """Assign ``state`` into a module built on the meta device; every tensor must end up materialised."""
    check_state_dict(module, state, source, strict=strict)
    module.load_state_dict(state, strict=strict, assign=True)
    still_meta = [n for n, t in list(module.named_parameters()) + list(module.named_buffers()) if t.is_meta]
    if still_meta:
        raise CheckpointError(f"{source}: no tensor for {_short(still_meta)} (module left on the meta device)")
    return module


# ---------------------------------------------------------------------------------------------------------------
# DiT
# ---------------------------------------------------------------------------------------------------------------


def transformer_dir(root: str | os.PathLike) -> Path:
    """``root/transformer`` or ``root`` itself when it already is the transformer folder."""
    root = Path(root)
    if (root / "config.json").is_file() and (
        (root / DIT_INDEX).is_file() or (root / f"{DIT_WEIGHTS}.safetensors").is_file()
    ):
        return root
    return root / DIT_DIR


def save_dit(
    module_or_state_dict: nn.Module | Mapping[str, torch.Tensor],
    root: str | os.PathLike,
    cfg: DiTConfig,
    *,
    dtype: torch.dtype | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> Path:
    """Write ``root/transformer/{config.json, shards, index}``; returns the transformer folder."""
    folder = Path(root) / DIT_DIR
    save_sharded(
        _as_state_dict(module_or_state_dict),
        folder,
        DIT_WEIGHTS,
        DIT_INDEX,
        dtype=dtype,
        max_shard_bytes=max_shard_bytes,
    )
    config = {"_class_name": "StepVideoModel", "_diffusers_version": "0.31.0"}
    config.update({k: v for k, v in cfg.to_dict().items() if k not in RUNTIME_FIELDS})
    config["use_additional_conditions"] = False
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return folder


def read_dit_config(root: str | os.PathLike) -> DiTConfig:
    path = transformer_dir(root) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: transformer config not found")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    if data.get("use_additional_conditions"):
        raise CheckpointError(f"{path}: use_additional_conditions=true (TI2V conditioning) is not supported")
    return DiTConfig.from_dict({k: v for k, v in data.items() if k not in RUNTIME_FIELDS})


def load_dit(
    root: str | os.PathLike,
    cfg: DiTConfig | None = None,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = torch.bfloat16,
    strict: bool = True,
    attention_backend: str | None = None,
    gradient_checkpointing: bool | None = None,
):
    """Load the DiT from ``root/transformer`` (or the transformer folder itself).

    ``cfg`` defaults to ``transformer/config.json``; ``dtype=None`` keeps the stored dtype.
    """
    from model.transformer import StepVideoDiT

    folder = transformer_dir(root)
    from_config = cfg is None
    cfg = cfg or read_dit_config(folder)
    overrides = {}
    if attention_backend is not None:
        overrides["attention_backend"] = attention_backend
    if gradient_checkpointing is not None:
        overrides["gradient_checkpointing"] = gradient_checkpointing
    if overrides:
        cfg = DiTConfig.from_dict({**cfg.to_dict(), **overrides})
    files, source = _shard_files(folder, DIT_WEIGHTS, DIT_INDEX)
    state, _ = read_safetensors([folder / f for f in files], device=device, dtype=dtype)
    with torch.device("meta"):
        model = StepVideoDiT(cfg)
    config_path = folder / "config.json"
    try:
        return load_into_meta_module(model, state, str(source), strict=strict).eval()
    except CheckpointError as exc:
        if not from_config:
            raise
        raise CheckpointError(
            f"{exc} (the network was built from {config_path}: {cfg.num_layers} layers, "
            f"{cfg.num_attention_heads}x{cfg.attention_head_dim} heads, ffn_dim {cfg.ffn_dim}; config and weights disagree)"
        ) from None


# ---------------------------------------------------------------------------------------------------------------
# VAE
# ---------------------------------------------------------------------------------------------------------------


def save_vae(
    module_or_state_dict, root: str | os.PathLike, cfg: VAEConfig | None = None, *, dtype: torch.dtype | None = None
) -> Path:
    """Write ``root/vae/vae_v2.safetensors`` with the official stored names (``decoder.conv_out.weight``).

    ``cfg`` (optional) is written to ``vae/config.json`` so non-default sizes (tiny) can be re-read.
    """
    inverse = {v: k for k, v in _VAE_RENAMES.items()}
    state = {}
    for key, tensor in _as_state_dict(module_or_state_dict).items():
        tensor = tensor.detach()
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        state[inverse.get(key, key)] = tensor.to("cpu").contiguous()
    path = Path(root) / VAE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"format": "pt"})
    if cfg is not None:
        (path.parent / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    return path


def read_vae_config(root: str | os.PathLike) -> VAEConfig | None:
    path = Path(root) / "vae" / "config.json"
    return VAEConfig.from_dict(json.loads(path.read_text())) if path.is_file() else None


def load_vae(
    root: str | os.PathLike,
    cfg: VAEConfig | None = None,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = torch.float32,
    strict: bool = True,
):
    """Load ``root/vae/vae_v2.safetensors`` (``root`` may also be the file itself) into :class:`model.vae.VideoVAE`."""
    from model.vae import VideoVAE

    path = Path(root)
    source = "given config"
    if path.is_dir():
        if cfg is None and (path / "vae" / "config.json").is_file():
            source = str(path / "vae" / "config.json")
        cfg = cfg or read_vae_config(path)
        path = path / VAE_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: VAE weights not found")
    if cfg is None:
        cfg, source = VAEConfig(), "no vae/config.json: official default"
    logger.info("%s: VAE GroupNorm eps %g (%s)", path, cfg.norm_eps, source)
    state, _ = read_safetensors([path], device=device, dtype=dtype, renames=_VAE_RENAMES)
    with torch.device("meta"):
        model = VideoVAE(cfg)
    try:
        return load_into_meta_module(model, state, str(path), strict=strict).eval()
    except CheckpointError as exc:
        raise CheckpointError(
            f"{exc} (the network was built from {source}: z_channels {cfg.z_channels}, encoder channels "
            f"{cfg.encoder_ch}x{list(cfg.encoder_ch_mult)}, decoder channels {cfg.decoder_ch}x{list(cfg.decoder_ch_mult)}; "
            "config and weights disagree)"
        ) from None


# ---------------------------------------------------------------------------------------------------------------
# Step-LLM
# ---------------------------------------------------------------------------------------------------------------


def save_step_llm(
    module_or_state_dict,
    root: str | os.PathLike,
    cfg: StepLLMConfig,
    *,
    dtype: torch.dtype | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> Path:
    """Write ``root/step_llm/{config.json, model-*.safetensors, model.safetensors.index.json}``."""
    folder = Path(root) / LLM_DIR
    save_sharded(
        _as_state_dict(module_or_state_dict),
        folder,
        LLM_WEIGHTS,
        LLM_INDEX,
        dtype=dtype,
        max_shard_bytes=max_shard_bytes,
    )
    config = {"model_type": "step1", "attention_impl": "GQA", **cfg.to_dict()}
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return folder


def read_step_llm_config(root: str | os.PathLike) -> StepLLMConfig:
    path = Path(root) / LLM_DIR / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: Step-LLM config not found")
    return StepLLMConfig.from_dict(json.loads(path.read_text()))


def load_step_llm(
    root: str | os.PathLike,
    cfg: StepLLMConfig | None = None,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = torch.bfloat16,
    strict: bool = True,
):
    """Load ``root/step_llm`` into :class:`model.text_encoder.StepLLM`."""
    from model.text_encoder import StepLLM

    folder = Path(root) / LLM_DIR
    cfg = cfg or read_step_llm_config(root)
    files, source = _shard_files(folder, LLM_WEIGHTS, LLM_INDEX)
    state, _ = read_safetensors([folder / f for f in files], device=device, dtype=dtype)
    with torch.device("meta"):
        model = StepLLM(cfg)
    return load_into_meta_module(model, state, str(source), strict=strict).eval()


# ---------------------------------------------------------------------------------------------------------------
# Model root
# ---------------------------------------------------------------------------------------------------------------


def write_model_index(root: str | os.PathLike) -> Path:
    """``model_index.json`` in the official form."""
    index = {
        "_class_name": "StepVideoPipeline",
        "_diffusers_version": "0.31.0",
        "scheduler": ["stepvideo.diffusion.scheduler", "FlowMatchDiscreteScheduler"],
        "transformer": ["stepvideo.modules.model", "StepVideoModel"],
    }
    path = Path(root) / "model_index.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(index, indent=2) + "\n")
    return path


def write_scheduler_config(root: str | os.PathLike, shift: float) -> Path:
    """``scheduler/scheduler_config.json`` (the official file's contents were not read; ours records the shift)."""
    path = Path(root) / "scheduler" / "scheduler_config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    config = {"_class_name": "FlowMatchDiscreteScheduler", "reverse": False, "solver": "euler", "shift": shift}
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path
