"""The Flow-DPO trainer configuration: one frozen dataclass.

Field names follow TRL's ``DPOConfig`` / ``transformers.TrainingArguments`` wherever the concept carries over to a
flow-matching video DiT (``beta``, ``loss_type``, ``label_smoothing``, ``sync_ref_model``, ``learning_rate``,
``gradient_accumulation_steps``, ...). Flow-specific fields (time sampling, beta schedule, reference mode, LoRA,
memory-saving backward) are added. TRL's LLM-only fields (``max_length``, ``padding_value``, ...) are rejected
with an error that names the field, and so is any unknown field: a typo never silently falls back to a default.

Files: YAML (``.yaml``/``.yml``) or JSON (``.json``) holding one mapping of field -> value.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOSS_TYPES = ("sigmoid", "hinge", "ipo", "robust")
T_SAMPLING_MODES = ("uniform", "logit_normal", "shifted")
BETA_SCHEDULES = ("constant", "derived")
REFERENCE_MODES = ("frozen_copy", "lora_adapters_off", "cached")
LR_SCHEDULER_TYPES = ("constant", "constant_with_warmup", "linear", "cosine")
FSDP_MODES = ("", "full_shard")
REPORT_TO = ("tensorboard", "mlflow", "wandb")  # plus "all" and "none", TRL's / TrainingArguments' values

# TRL DPOConfig fields that only make sense for token sequences; the value is the hint shown to the user.
LLM_ONLY_FIELDS: dict[str, str] = {
    "max_length": "latents are not truncated; bucket by shape instead",
    "max_prompt_length": "prompts arrive as precomputed text embeddings",
    "max_completion_length": "videos arrive as precomputed latents",
    "padding_value": "there is no token padding",
    "label_pad_token_id": "there are no labels/tokens",
    "truncation_mode": "nothing is truncated",
    "padding_free": "there is no token padding",
    "pad_to_multiple_of": "there is no token padding",
    "is_encoder_decoder": "the DiT is not a seq2seq LM",
    "generate_during_eval": "use the closed-loop benchmark or the app's fixed-seed comparison",
    "precompute_ref_log_probs": "use reference_mode: cached (reference errors per pair and (t, noise) draw)",
    "precompute_ref_batch_size": "the cached reference pass uses per_device_train_batch_size",
    "use_logits_to_keep": "there are no logits",
    "use_liger_kernel": "there are no logits",
    "tools": "there is no chat template",
    "dataset_num_proc": "the pair manifest is read directly",
    "model_init_kwargs": "the model is loaded with model.checkpoint.load_dit",
    "ref_model_init_kwargs": "the reference is the init checkpoint, or the --reference model root",
    "force_use_ref_model": "the reference is always used (frozen copy, adapters off or cached)",
    "reference_free": "Flow-DPO always needs reference errors",
    "rpo_alpha": "use sft_weight (weight of the chosen video's velocity MSE)",
    "f_divergence_type": "only the reverse-KL (standard DPO) objective is implemented",
    "f_alpha_divergence_coef": "only the reverse-KL (standard DPO) objective is implemented",
    "use_weighting": "use the manifest's per-pair weight column",
    "ld_alpha": "LD-DPO is defined on token lengths",
    "loss_weights": "a single loss_type is used",
    "discopop_tau": "only sigmoid/hinge/ipo/robust are implemented",
    "disable_dropout": "the DiT has no dropout",
    "dataset_text_field": "there is no text dataset",
    "remove_unused_columns": "there is no HF Dataset",
}


class ConfigError(ValueError):
    """A bad configuration: the message names the offending field."""


def _help(text: str, **kwargs: Any) -> Any:
    return field(metadata={"help": text}, **kwargs)


@dataclass(frozen=True)
class FlowDPOConfig:
    """Every knob of a Flow-DPO run (see ``dpo/README.md`` and ``docs/flow-dpo.md``)."""

    # --- DPO objective (TRL names) ---
    beta: float = _help("DPO temperature; z = -(beta/2) * [(e_w - e_ref_w) - (e_l - e_ref_l)].", default=2000.0)
    loss_type: str = _help(f"One of {LOSS_TYPES}.", default="sigmoid")
    label_smoothing: float = _help("cDPO/robust label-noise rate in [0, 0.5).", default=0.0)
    sft_weight: float = _help("lambda of the extra SFT term lambda * e_theta(w) (0 = off).", default=0.0)
    prompt_dropout: float = _help(
        "Probability that a pair is trained unconditionally: its text is replaced by null_text_embedding_uri for "
        "chosen, rejected and reference alike (a pure function of seed, pair and draw), so classifier-free "
        "guidance keeps working after fine-tuning. 0 = off.",
        default=0.0,
    )
    null_text_embedding_uri: str | None = _help(
        "Text-encoder outputs of the empty prompt in the stored format (path, file:// or s3://), e.g. written by "
        "`python -m model encode-text --root MODEL_ROOT --out null.safetensors ''`. Needed when prompt_dropout > 0.",
        default=None,
    )
    beta_schedule: str = _help(
        "'constant' (default, VideoAlign's winner) or 'derived' (beta * t^2 in Step's convention, ablation only).",
        default="constant",
    )

    # --- time sampling (Step's convention: t=0 noise, t=1 data) ---
    t_sampling: str = _help(f"One of {T_SAMPLING_MODES}.", default="uniform")
    logit_normal_mean: float = _help("Mean of the logit-normal t density.", default=0.0)
    logit_normal_std: float = _help("Std of the logit-normal t density.", default=1.0)
    t_shift: float = _help("Shift of the 'shifted' t density (same form as the sampler's shift).", default=3.0)
    num_t_buckets: int = _help("Number of equal-width t buckets for per-bucket accuracy/margin metrics.", default=4)

    # --- reference model (TRL names for the sync fields) ---
    reference_mode: str | None = _help(
        f"One of {REFERENCE_MODES}; default: 'lora_adapters_off' with use_lora (no second copy), else 'frozen_copy'. "
        "'cached': the reference errors of every pair for reference_cache_draws fixed (t, noise) draws are computed "
        "once before training (out_dir/reference_cache.safetensors) and the reference is then freed; epoch e uses "
        "draw e mod reference_cache_draws.",
        default=None,
    )
    reference_cache_draws: int = _help(
        "With reference_mode 'cached': (t, noise) draws per pair whose reference errors are precomputed.", default=4
    )
    sync_ref_model: bool = _help("TR-DPO soft sync ref <- a*policy + (1-a)*ref every ref_model_sync_steps.", default=False)
    ref_model_mixup_alpha: float = _help("TR-DPO mixup alpha a.", default=0.6)
    ref_model_sync_steps: int = _help("TR-DPO sync period tau (optimizer steps).", default=512)

    # --- LoRA (peft) ---
    use_lora: bool = _help("Train LoRA adapters instead of the full DiT.", default=False)
    lora_r: int = _help("LoRA rank.", default=64)
    lora_alpha: float = _help("LoRA alpha (scale = alpha / r).", default=64.0)
    lora_dropout: float = _help("LoRA dropout.", default=0.0)
    lora_target_modules: tuple[str, ...] = _help(
        "Module-name suffixes that get adapters (attention and FFN linears of the DiT).",
        default=("wqkv", "wo", "wq", "wkv", "ff.net.0.proj", "ff.net.2"),
    )

    # --- optimisation (TrainingArguments names) ---
    learning_rate: float = _help("AdamW peak learning rate.", default=1e-5)
    weight_decay: float = _help("AdamW weight decay.", default=0.0)
    adam_beta1: float = _help("AdamW beta1.", default=0.9)
    adam_beta2: float = _help("AdamW beta2.", default=0.999)
    adam_epsilon: float = _help("AdamW epsilon.", default=1e-8)
    max_grad_norm: float = _help("Gradient clipping norm (<= 0 disables clipping, grad_norm is still logged).", default=1.0)
    warmup_steps: int = _help("Linear warmup steps.", default=0)
    lr_scheduler_type: str = _help(f"One of {LR_SCHEDULER_TYPES}.", default="constant_with_warmup")
    gradient_accumulation_steps: int = _help("Micro-batches per optimizer step.", default=1)
    per_device_train_batch_size: int = _help("Pairs per micro-batch per process.", default=1)
    num_train_epochs: float = _help("Epochs over the manifest (ignored when max_steps > 0).", default=1.0)
    max_steps: int = _help("Total optimizer steps; > 0 overrides num_train_epochs.", default=-1)
    seed: int = _help("Seed for data order, t and noise.", default=42)
    bf16: bool = _help("bf16 autocast on CUDA (fp32 master weights / fp32 losses); no effect on CPU.", default=True)
    gradient_checkpointing: bool = _help("Recompute DiT block activations in backward.", default=False)
    memory_saving_backward: bool = _help(
        "Exact two-pass backward: one video's activations at a time (docs/flow-dpo.md).", default=False
    )

    # --- outputs ---
    output_dir: str | None = _help("Run folder (the CLI's --out wins).", default=None)
    save_steps: int = _help("Save a resumable checkpoint every N optimizer steps (0 = only at the end).", default=500)
    final_dtype: str = _help("dtype of the final/ DiT weights ('bfloat16' like the release, or 'float32').", default="bfloat16")
    save_total_limit: int | None = _help("Keep at most this many step-N checkpoints (None = all).", default=None)
    logging_steps: int = _help("Print a metrics line to the log every N steps (metrics.jsonl gets every step).", default=1)
    report_to: tuple[str, ...] | None = _help(
        f"Experiment trackers that also get every step's metrics: some of {REPORT_TO}, ['all'] (every one installed) "
        "or ['none']; a string may list them with commas. Default (null): tensorboard when it is installed. "
        "See dpo/tracking.py.",
        default=None,
    )

    # --- distributed (TrainingArguments name) ---
    fsdp: str = _help("'' = DDP when WORLD_SIZE > 1; 'full_shard' = torch FSDP2 fully_shard.", default="")

    # --- bookkeeping ---
    round_id: int | None = _help("Round id logged with metrics (default: the manifest's round if unique).", default=None)

    def __post_init__(self) -> None:
        # YAML/JSON give lists: store tuples so the dataclass stays hashable/frozen.
        if isinstance(self.lora_target_modules, list):
            object.__setattr__(self, "lora_target_modules", tuple(self.lora_target_modules))
        if isinstance(self.report_to, (str, list)):
            object.__setattr__(self, "report_to", _names(self.report_to))
        if self.reference_mode is None:
            object.__setattr__(self, "reference_mode", "lora_adapters_off" if self.use_lora else "frozen_copy")
        _check(self.beta > 0 and math.isfinite(self.beta), "beta", f"must be a finite number > 0, got {self.beta}")
        _check_choice(self, "loss_type", LOSS_TYPES)
        _check_choice(self, "t_sampling", T_SAMPLING_MODES)
        _check_choice(self, "beta_schedule", BETA_SCHEDULES)
        _check_choice(self, "reference_mode", REFERENCE_MODES)
        _check_choice(self, "lr_scheduler_type", LR_SCHEDULER_TYPES)
        _check_choice(self, "fsdp", FSDP_MODES)
        _check_choice(self, "final_dtype", ("bfloat16", "float32"))
        _check(0.0 <= self.label_smoothing < 0.5, "label_smoothing", f"must be in [0, 0.5), got {self.label_smoothing}")
        _check(self.sft_weight >= 0, "sft_weight", f"must be >= 0, got {self.sft_weight}")
        _check(0.0 <= self.prompt_dropout < 1.0, "prompt_dropout", f"must be in [0, 1), got {self.prompt_dropout}")
        _check(self.prompt_dropout == 0 or bool(self.null_text_embedding_uri), "null_text_embedding_uri",
               "is required when prompt_dropout > 0 (the empty prompt's text-encoder outputs)")
        _check(self.logit_normal_std > 0, "logit_normal_std", f"must be > 0, got {self.logit_normal_std}")
        _check(self.t_shift > 0, "t_shift", f"must be > 0, got {self.t_shift}")
        _check(1 <= self.num_t_buckets <= 100, "num_t_buckets", f"must be in [1, 100], got {self.num_t_buckets}")
        _check(0.0 < self.ref_model_mixup_alpha <= 1.0, "ref_model_mixup_alpha", f"must be in (0, 1], got {self.ref_model_mixup_alpha}")
        _check(self.ref_model_sync_steps >= 1, "ref_model_sync_steps", f"must be >= 1, got {self.ref_model_sync_steps}")
        _check(self.lora_r >= 1, "lora_r", f"must be >= 1, got {self.lora_r}")
        _check(self.lora_alpha > 0, "lora_alpha", f"must be > 0, got {self.lora_alpha}")
        _check(0.0 <= self.lora_dropout < 1.0, "lora_dropout", f"must be in [0, 1), got {self.lora_dropout}")
        _check(len(self.lora_target_modules) > 0, "lora_target_modules", "must name at least one module")
        _check(self.learning_rate > 0, "learning_rate", f"must be > 0, got {self.learning_rate}")
        _check(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        _check(0 <= self.adam_beta1 < 1 and 0 <= self.adam_beta2 < 1, "adam_beta1/adam_beta2", "must be in [0, 1)")
        _check(self.adam_epsilon > 0, "adam_epsilon", f"must be > 0, got {self.adam_epsilon}")
        _check(self.warmup_steps >= 0, "warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        _check(self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps", f"must be >= 1, got {self.gradient_accumulation_steps}")
        _check(self.per_device_train_batch_size >= 1, "per_device_train_batch_size", f"must be >= 1, got {self.per_device_train_batch_size}")
        _check(self.max_steps > 0 or self.num_train_epochs > 0, "num_train_epochs", "must be > 0 when max_steps <= 0")
        _check(self.save_steps >= 0, "save_steps", f"must be >= 0, got {self.save_steps}")
        _check(self.save_total_limit is None or self.save_total_limit >= 1, "save_total_limit", "must be None or >= 1")
        _check(self.logging_steps >= 1, "logging_steps", f"must be >= 1, got {self.logging_steps}")
        bad = [n for n in self.report_to or () if n not in (*REPORT_TO, "all", "none")]
        _check(not bad, "report_to", f"has unknown tracker(s) {bad}; choose from {(*REPORT_TO, 'all', 'none')}")
        _check(self.report_to is None or len(self.report_to) > 0, "report_to", "must name a tracker, 'all' or 'none'")
        _check(
            self.reference_mode != "lora_adapters_off" or self.use_lora,
            "reference_mode",
            "'lora_adapters_off' needs use_lora: true",
        )
        _check(self.reference_cache_draws >= 1, "reference_cache_draws", f"must be >= 1, got {self.reference_cache_draws}")
        _check(
            not (self.sync_ref_model and self.reference_mode == "cached"),
            "sync_ref_model",
            "a cached reference cannot be soft-synced (its errors are computed once); use reference_mode: frozen_copy",
        )
        _check(
            not (self.sync_ref_model and self.reference_mode == "lora_adapters_off"),
            "sync_ref_model",
            "cannot soft-sync a reference that is the base model with adapters off; use reference_mode: frozen_copy",
        )
        _check(
            not (self.sync_ref_model and self.use_lora),
            "sync_ref_model",
            "soft sync mixes the policy's weights into the reference, but a LoRA policy holds adapters on a frozen "
            "base; use full fine-tuning (use_lora: false) for TR-DPO",
        )

    # ------------------------------------------------------------------ I/O
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FlowDPOConfig:
        """Build a config from a mapping, rejecting LLM-only and unknown fields by name."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"config must be a mapping of field -> value, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        for key in data:
            if key in LLM_ONLY_FIELDS:
                raise ConfigError(
                    f"config field {key!r} is an LLM-only TRL DPOConfig field and has no meaning for a video DiT "
                    f"({LLM_ONLY_FIELDS[key]}); remove it"
                )
            if key not in known:
                raise ConfigError(f"unknown config field {key!r}; valid fields: {', '.join(sorted(known))}")
        return cls(**{k: _coerce(k, v, _FIELD_TYPES[k]) for k, v in data.items()})

    @classmethod
    def from_file(cls, path: str | Path, overrides: Mapping[str, Any] | None = None) -> FlowDPOConfig:
        """Read a YAML or JSON config file; ``overrides`` win over the file."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        text = path.read_text()
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        elif path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"config file must end in .yaml, .yml or .json: {path}")
        data = dict(data)
        data.update(overrides or {})
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> FlowDPOConfig:
        return self.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["lora_target_modules"] = list(self.lora_target_modules)
        out["report_to"] = None if self.report_to is None else list(self.report_to)
        return out

    def save(self, path: str | Path) -> None:
        """Write the resolved config (every field, defaults included) as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")


_FIELD_TYPES: dict[str, str] = {f.name: str(f.type) for f in dataclasses.fields(FlowDPOConfig)}


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` from the command line; the value is parsed as YAML (so 1e-5, true, [a, b] work)."""
    import yaml

    if "=" not in text:
        raise ConfigError(f"override must look like key=value, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)


def _coerce(name: str, value: Any, type_name: str) -> Any:
    """YAML 1.1 reads ``1e-5`` as a string and JSON has no tuples: coerce to the annotated scalar type."""
    if value is None:
        return value
    try:
        if type_name.startswith("float") and isinstance(value, (int, float, str)) and not isinstance(value, bool):
            return float(value)
        if type_name.startswith("int") and isinstance(value, (int, str)) and not isinstance(value, bool):
            return int(value)
    except ValueError as exc:
        raise ConfigError(f"config field {name!r} must be a {type_name.split(' ')[0]}, got {value!r}") from exc
    if type_name == "bool" and not isinstance(value, bool):
        raise ConfigError(f"config field {name!r} must be true or false, got {value!r}")
    if name == "report_to" and isinstance(value, str):  # TrainingArguments takes a string too
        return _names(value)
    if type_name.startswith("tuple"):
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"config field {name!r} must be a list of strings, got {value!r}")
        return tuple(str(v) for v in value)
    return value


def _names(value: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``"tensorboard,wandb"`` or ``["tensorboard", "wandb"]`` -> ``("tensorboard", "wandb")``."""
    items = value.split(",") if isinstance(value, str) else value
    return tuple(str(v).strip() for v in items if str(v).strip())


def _check(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"config field {name!r} {message}")


def _check_choice(cfg: FlowDPOConfig, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(cfg, name)
    _check(value in choices, name, f"must be one of {choices}, got {value!r}")
