"""Flow-DPO trainer for the Step-Video DiT (torchtune-style recipe: setup / train / save_checkpoint / cleanup).

One optimizer step = ``gradient_accumulation_steps`` micro-batches of ``per_device_train_batch_size`` pairs, each
micro-batch of one latent shape. For every pair ONE t and ONE noise x0 are drawn and shared by chosen and rejected
(Step §4.4, Diffusion-DPO); they are a pure function of (seed, pair_id, draw index), so a run's randomness does not
depend on micro-batch layout, world size or resumption.

Outputs in ``out_dir`` (docs/contracts.md): ``resolved_config.json``, ``metrics.jsonl`` (one JSON per optimizer
step, TRL names), ``run_status.json``, ``checkpoints/step-N/`` (resumable), ``final/`` (official DiT layout).

In-process use (the app)::

    trainer = FlowDPOTrainer(cfg, manifest="pairs.parquet", init="/models/base", out_dir="/runs/r1",
                             callbacks=[lambda m: print(m["step"], m["loss"])])
    result = trainer.run()          # setup + train + cleanup; trainer.request_stop() from any thread cancels
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import random
import resource
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dpo.config import ConfigError, FlowDPOConfig
from dpo.data import PairDataset, ShapeBucketBatchSampler, collate_pairs, read_manifest, validate_pairs
from dpo.lora_merge import adapter_pairs, base_state_dict, merge_lora_into
from dpo.losses import (
    DPOLossOutput,
    beta_per_sample,
    concat_outputs,
    dpo_metrics,
    error_coefficients,
    flow_dpo_loss,
    sample_timesteps,
    velocity_mse,
)
from dpo.reference import (
    AdapterOffReference,
    CachedReference,
    FrozenReference,
    PolicyAsReference,
    apply_lora,
    lora_state_dict,
    unwrap,
)

logger = logging.getLogger("dpo")

STATE_FILE = "trainer_state.pt"
ADAPTER_DIR = "adapter"
REFERENCE_FILE = "reference.safetensors"
REFERENCE_CACHE_FILE = "reference_cache.safetensors"
FORWARD_TEXT_KEYS = ("llm_states", "llm_mask", "clip_states")
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}


class NonFiniteLossError(RuntimeError):
    """The loss (or gradient norm) became NaN/Inf; the run stopped without updating past the last good state."""

    def __init__(self, step: int, what: str, last_checkpoint: Path | None, pair_ids: list[str] | None = None):
        self.step, self.last_checkpoint = step, last_checkpoint
        pairs = f" (pairs {pair_ids})" if pair_ids else ""
        super().__init__(
            f"non-finite {what} at step {step}{pairs}; stopped. Last good checkpoint: "
            f"{last_checkpoint if last_checkpoint else 'none saved yet'}"
        )


@dataclass
class TrainResult:
    steps: int  # optimizer steps completed
    stopped: bool  # True when request_stop() ended the run early
    final_dir: Path | None  # model root of the final policy (None when stopped early)
    last_checkpoint: Path | None
    metrics: dict[str, Any] = field(default_factory=dict)  # the last step's metrics


# ----------------------------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------------------------


def _pair_seed(seed: int, pair_id: str, draw: int) -> int:
    digest = hashlib.blake2b(f"{seed}:{pair_id}:{draw}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


LR_LAMBDAS: dict[str, Callable[[int, int, int], float]] = {
    # (step, warmup, total) -> multiplier; the formulas of transformers.get_scheduler
    "constant": lambda s, w, n: 1.0,
    "constant_with_warmup": lambda s, w, n: s / max(1, w) if s < w else 1.0,
    "linear": lambda s, w, n: s / max(1, w) if s < w else max(0.0, (n - s) / max(1, n - w)),
    "cosine": lambda s, w, n: s / max(1, w) if s < w else 0.5 * (1 + math.cos(math.pi * min(1.0, (s - w) / max(1, n - w)))),
}


def _find_dit(module: nn.Module) -> nn.Module:
    from model.transformer import StepVideoDiT

    for m in unwrap(module).modules():
        if isinstance(m, StepVideoDiT):
            return m
    raise TypeError("no StepVideoDiT inside the policy module")


def _peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1024**3
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux: KiB -> GiB (process RSS)


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------------------------------------------


class FlowDPOTrainer:
    """Flow-DPO on a pair manifest.

    Args:
        config: the run's :class:`FlowDPOConfig`.
        manifest: pair manifest (Parquet/JSONL; local path, file:// or s3://). None only for ``step()``-driven use.
        init: model root (or its ``transformer/`` folder) of the starting checkpoint.
        reference: model root of the frozen reference when it is not ``init`` (e.g. a fixed base for a later
            round); needs ``reference_mode`` frozen_copy or cached and the same DiT config.
            Default: ``init``.
        out_dir: run folder (default ``config.output_dir``).
        resume: continue from the newest ``out_dir/checkpoints/step-N`` (fresh start when there is none).
        device: default ``cuda:LOCAL_RANK`` when CUDA is available, else CPU.
        callbacks: called on rank 0 after every optimizer step with that step's metrics dict.
        policy, dit_config: an in-memory DiT to train instead of loading ``init`` (benchmarks, tests).
        progress: show a tqdm bar on rank 0.
    """

    def __init__(
        self,
        config: FlowDPOConfig,
        *,
        manifest: str | os.PathLike | None = None,
        init: str | os.PathLike | None = None,
        reference: str | os.PathLike | None = None,
        out_dir: str | os.PathLike | None = None,
        resume: bool = False,
        device: str | torch.device | None = None,
        callbacks: Iterable[Callable[[dict[str, Any]], None]] = (),
        policy: nn.Module | None = None,
        dit_config: Any | None = None,
        progress: bool = False,
    ):
        self.config = config
        self.manifest = None if manifest is None else str(manifest)
        self.init = None if init is None else Path(init)
        self.reference_root = None if reference is None else Path(reference)
        if self.reference_root is not None and self.reference_root == self.init:
            self.reference_root = None
        if self.reference_root is not None and config.reference_mode == "lora_adapters_off":
            raise ConfigError(
                f"reference {self.reference_root} differs from init {self.init}, but reference_mode "
                "'lora_adapters_off' makes the reference the init checkpoint (adapters off); "
                "use reference_mode: frozen_copy (or cached) for a separate reference"
            )
        out = out_dir if out_dir is not None else config.output_dir
        if out is None:
            raise ValueError("an output folder is required (out_dir= or config.output_dir)")
        self.out_dir = Path(out)
        self.resume = resume
        self.callbacks = list(callbacks)
        self.progress = progress
        self._given_policy, self._given_dit_config = policy, dit_config
        self._stop = threading.Event()
        self._device_arg = device
        self.global_step = 0
        self.epoch = 0
        self.batch_pos = 0
        self.last_checkpoint: Path | None = None
        self.last_metrics: dict[str, Any] = {}
        self._is_setup = False

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Distributed init, data validation, policy/reference/optimizer construction, resume."""
        cfg = self.config
        self._setup_distributed()
        random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            cfg.save(self.out_dir / "resolved_config.json")
        self._barrier()

        # 1. Data (validated before any model is loaded)
        self.records, self.dataset, self.sampler = [], None, None
        if self.manifest is not None:
            self.records = read_manifest(self.manifest)
            shapes = validate_pairs(self.records, check_values=True)
            self.dataset = PairDataset(self.records)
            if cfg.prompt_dropout > 0:
                self._null_text = self._load_null_text()
            self.sampler = ShapeBucketBatchSampler(
                shapes, cfg.per_device_train_batch_size, seed=cfg.seed, rank=self.rank, world_size=self.world_size
            )
            self.micro_batches_per_epoch = len(self.sampler)
            if self.micro_batches_per_epoch == 0:
                raise ValueError(f"{len(self.records)} pairs give no micro-batch for {self.world_size} process(es)")
            rounds = Counter(str(r.round) for r in self.records)
            self.round_id = cfg.round_id if cfg.round_id is not None else (
                self.records[0].round if len(rounds) == 1 else None)
            if self.is_main:
                summary = {
                    "num_pairs": len(self.records),
                    "pairs_by_round": dict(rounds),
                    "pairs_by_source": dict(Counter(str(r.source) for r in self.records)),
                    "latent_shapes": {str(k): len(v) for k, v in self.sampler.buckets.items()},
                    "manifest": self.manifest,
                    "init": None if self.init is None else str(self.init),
                    "reference": str(self.reference_root or self.init),
                    "world_size": self.world_size,
                }
                (self.out_dir / "data_summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        else:
            self.micro_batches_per_epoch = 0
            self.round_id = cfg.round_id
        if cfg.max_steps > 0:
            self.total_steps = cfg.max_steps
        elif self.micro_batches_per_epoch:
            self.total_steps = math.ceil(cfg.num_train_epochs * self.micro_batches_per_epoch / cfg.gradient_accumulation_steps)
        else:
            raise ValueError("max_steps must be > 0 when no manifest is given")

        # 2. Resume point
        resume_dir = self.latest_checkpoint() if self.resume else None
        if not self.resume and self.latest_checkpoint() is not None:
            raise ValueError(
                f"{self.out_dir} already holds checkpoints ({self.latest_checkpoint().name}) of an earlier run: "
                "resume it (--resume) or use an empty output folder"
            )
        if self.resume and resume_dir is None and self.is_main:
            logger.warning("--resume: no checkpoint in %s, starting from step 0", self.out_dir / "checkpoints")

        # 3. Policy and reference
        self._build_models(resume_dir)
        if cfg.reference_mode == "cached":
            self.reference = self._reference_cache(fresh=resume_dir is None)

        # 4. Optimizer and schedule
        self.trainable = [p for p in self.policy.parameters() if p.requires_grad]
        if not self.trainable:
            raise ValueError("the policy has no trainable parameters")
        self.optimizer = torch.optim.AdamW(
            self.trainable,
            lr=cfg.learning_rate,
            betas=(cfg.adam_beta1, cfg.adam_beta2),
            eps=cfg.adam_epsilon,
            weight_decay=cfg.weight_decay,
            foreach=self.device.type == "cuda",
        )
        fn = LR_LAMBDAS[cfg.lr_scheduler_type]
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: fn(s, cfg.warmup_steps, self.total_steps)
        )
        if resume_dir is not None:
            self._load_trainer_state(resume_dir)
        self._is_setup = True

    def _setup_distributed(self) -> None:
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if self._device_arg is not None:
            self.device = torch.device(self._device_arg)
            if self.device.type == "cuda" and self.device.index is None:
                self.device = torch.device("cuda", torch.cuda.current_device())
        elif torch.cuda.is_available():
            self.device = torch.device("cuda", self.local_rank)
        else:
            self.device = torch.device("cpu")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.distributed = self.world_size > 1
        if self.distributed and not torch.distributed.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            torch.distributed.init_process_group(backend=backend)
        self.is_main = self.rank == 0
        self.use_fsdp = self.distributed and self.config.fsdp == "full_shard"
        self.autocast_enabled = self.config.bf16 and self.device.type == "cuda"

    def _barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()

    def _build_models(self, resume_dir: Path | None) -> None:
        from model.checkpoint import load_dit, read_dit_config

        cfg = self.config
        # Full fine-tuning keeps fp32 master weights (bf16 autocast on CUDA); LoRA keeps the frozen base in bf16
        # on CUDA (adapters stay fp32, peft's default) so a 30B base fits one GPU.
        base_dtype = torch.bfloat16 if (cfg.use_lora and self.autocast_enabled) else torch.float32
        self._base_dtype = base_dtype
        reference: Any = None  # reference_mode 'cached': built after the models by _reference_cache()
        if self.use_fsdp and self._given_policy is None:
            self._build_models_fsdp(resume_dir)
            return
        if self._given_policy is not None:
            policy = self._given_policy
            self.dit_config = self._given_dit_config or policy.cfg
        else:
            if self.init is None:
                raise ValueError("init (a model root) is required")
            self.dit_config = read_dit_config(self.init)
            source = self.init
            if resume_dir is not None and not cfg.use_lora:
                source = resume_dir  # exact fp32 weights of the checkpoint
            policy = load_dit(source, device=self.device, dtype=base_dtype)
            if source != self.init:
                logger.info("policy weights from %s", source)
        policy = policy.to(self.device)

        # Reference BEFORE adapters: an exact copy of the starting weights, or a separate checkpoint.
        if cfg.reference_mode == "frozen_copy":
            if self.reference_root is not None:
                ref_module = self._load_separate_reference(self.device, base_dtype)
            elif resume_dir is not None and not cfg.use_lora and self._given_policy is None:
                ref_module = load_dit(self.init, device=self.device, dtype=base_dtype)
            else:
                ref_module = FrozenReference.copy_of(policy).module
            if resume_dir is not None and (resume_dir / REFERENCE_FILE).is_file():
                from safetensors.torch import load_file

                ref_module.load_state_dict(load_file(str(resume_dir / REFERENCE_FILE), device="cpu"))
            reference = FrozenReference(ref_module)
        if cfg.use_lora:
            policy = self._with_lora(policy, resume_dir)
        else:
            policy.requires_grad_(True)
        if cfg.reference_mode == "lora_adapters_off":
            reference = AdapterOffReference(policy)
        _find_dit(policy).gradient_checkpointing = cfg.gradient_checkpointing
        policy.train()
        if self.use_fsdp:  # a policy given in memory (a checkpoint is loaded by _build_models_fsdp)
            self._shard(policy)
            if isinstance(reference, FrozenReference):
                self._shard(reference.module)
        elif self.distributed:
            policy = nn.parallel.DistributedDataParallel(
                policy, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.policy, self.reference = policy, reference

    def _with_lora(self, policy: nn.Module, resume_dir: Path | None) -> nn.Module:
        """Freeze ``policy`` and wrap it with peft LoRA adapters (fresh, or the checkpoint's on resume)."""
        cfg = self.config
        policy.requires_grad_(False)
        policy = apply_lora(policy, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                            target_modules=cfg.lora_target_modules)
        if resume_dir is not None:
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            device = next(policy.parameters()).device
            adapters = load_file(str(resume_dir / ADAPTER_DIR / "adapter_model.safetensors"), device=str(device))
            result = set_peft_model_state_dict(policy, adapters)
            if getattr(result, "unexpected_keys", None):
                raise RuntimeError(f"{resume_dir}: unexpected adapter keys {result.unexpected_keys[:5]}")
        return policy

    def _build_models_fsdp(self, resume_dir: Path | None) -> None:
        """FSDP: every rank builds the DiT (with LoRA: the peft-wrapped DiT) on the meta device and shards it; only
        rank 0 reads weights from disk and ``set_model_state_dict`` broadcasts them shard by shard (host memory: one
        full copy on rank 0 at a time, instead of one per rank). The frozen reference is sharded on the same mesh."""
        from model.checkpoint import load_dit, read_dit_config

        cfg = self.config
        if self.init is None:
            raise ValueError("init (a model root) is required")
        self.dit_config = read_dit_config(self.init)
        dtype = self._base_dtype
        if cfg.use_lora:  # rank 0 builds the adapters (the same RNG draws as one process), then broadcasts them
            def read_policy() -> dict[str, torch.Tensor]:
                return self._with_lora(load_dit(self.init, device="cpu", dtype=dtype), resume_dir).state_dict()

            policy = self._fsdp_load(read_policy, dtype, lora=True)
        else:
            source = resume_dir if resume_dir is not None else self.init  # a checkpoint holds exact fp32 weights
            policy = self._fsdp_load(lambda: load_dit(source, device="cpu", dtype=dtype).state_dict(), dtype)
            policy.requires_grad_(True)
        reference: Any = None
        if cfg.reference_mode == "frozen_copy":
            if resume_dir is not None and (resume_dir / REFERENCE_FILE).is_file():  # a soft-synced reference
                from safetensors.torch import load_file

                state = lambda: load_file(str(resume_dir / REFERENCE_FILE), device="cpu")  # noqa: E731
            elif self.reference_root is not None:
                self._check_reference_architecture()
                state = lambda: load_dit(self.reference_root, device="cpu", dtype=dtype).state_dict()  # noqa: E731
            else:
                state = lambda: load_dit(self.init, device="cpu", dtype=dtype).state_dict()  # noqa: E731
            reference = FrozenReference(self._fsdp_load(state, dtype))
        elif cfg.reference_mode == "lora_adapters_off":
            reference = AdapterOffReference(policy)
        _find_dit(policy).gradient_checkpointing = cfg.gradient_checkpointing
        policy.train()
        self.policy, self.reference = policy, reference

    def _fsdp_load(self, read_state: Callable[[], dict[str, torch.Tensor]], dtype: torch.dtype,
                   lora: bool = False) -> nn.Module:
        """A sharded DiT (``lora``: frozen and wrapped with the config's adapters) whose weights come from
        ``read_state()``, called on rank 0 only."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        from model.transformer import StepVideoDiT

        with torch.device("meta"), torch.random.fork_rng(devices=[]):  # peft draws adapter inits on the CPU RNG
            module = StepVideoDiT(self.dit_config).to(dtype)
            if lora:
                module = self._with_lora(module, None)
        self._shard(module)
        module.to_empty(device=self.device)
        state = read_state() if self.is_main else {}
        if self.is_main:
            logger.info("rank 0 read %d tensors; broadcasting them to %d ranks' shards", len(state), self.world_size)
        set_model_state_dict(module, state, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
        del state
        return module

    def _load_null_text(self) -> dict[str, torch.Tensor]:
        """The empty prompt's text-encoder outputs, checked against the manifest's embeddings."""
        uri = self.config.null_text_embedding_uri
        try:
            null = self.dataset._text(uri)
        except Exception as exc:  # noqa: BLE001 - any read failure becomes a config error naming the file
            raise ConfigError(f"null_text_embedding_uri {uri}: cannot read it ({exc})") from exc
        sample = self.dataset._text(self.records[0].text_embedding_uri)
        for key in ("llm_states", "clip_states"):
            if null[key].shape[-1] != sample[key].shape[-1]:
                raise ConfigError(
                    f"null_text_embedding_uri {uri}: {key} has {null[key].shape[-1]} channels, the manifest's text "
                    f"embeddings ({self.records[0].text_embedding_uri}) have {sample[key].shape[-1]}"
                )
        return dict(null)

    # ------------------------------------------------------------------ cached reference (design §3)
    def _reference_cache(self, fresh: bool) -> CachedReference:
        """Reference errors of every pair for draws 0..K-1: read from ``out_dir`` when they match this run, else
        computed (rank-strided under DDP/FSDP, summed across ranks) and written there."""
        from safetensors.torch import load_file, save_file

        cfg = self.config
        if self.dataset is None:
            raise ConfigError("reference_mode 'cached' needs a manifest (the cache holds one entry per pair)")
        pair_ids = [r.pair_id for r in self.records]
        fingerprint = json.dumps({
            "pairs": hashlib.sha256("\n".join(f"{r.pair_id}|{r.chosen_latent_uri}|{r.rejected_latent_uri}|"
                                              f"{r.text_embedding_uri}" for r in self.records).encode()).hexdigest(),
            "draws": cfg.reference_cache_draws, "seed": cfg.seed, "t_sampling": cfg.t_sampling,
            "logit_normal": [cfg.logit_normal_mean, cfg.logit_normal_std], "t_shift": cfg.t_shift,
            "reference": str(self.reference_root or self.init), "memory_saving_backward": cfg.memory_saving_backward,
            "prompt_dropout": [cfg.prompt_dropout, cfg.null_text_embedding_uri],
        }, sort_keys=True)
        path = self.out_dir / REFERENCE_CACHE_FILE
        if path.is_file():
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                stored = (f.metadata() or {}).get("fingerprint")
            if stored == fingerprint:
                logger.info("reference errors read from %s", path)
                return CachedReference(load_file(str(path))["errors"], pair_ids)
            logger.warning("%s was computed for other pairs or settings; recomputing it", path)

        if self.reference_root is None and fresh:
            errors = self._reference_errors_all(PolicyAsReference(self.policy if self.use_fsdp else unwrap(self.policy)))
            if self.use_fsdp:  # FSDP2 keeps the root unsharded after a forward; the optimizer needs the shards
                from torch.distributed.fsdp import FSDPModule

                for module in self.policy.modules():
                    if isinstance(module, FSDPModule):
                        module.reshard()
        else:  # a separate reference, or a resumed policy that is no longer the reference: load it for this pass
            if self.init is None and self.reference_root is None:
                raise ConfigError("reference_mode 'cached' cannot rebuild its cache without an init checkpoint")
            from model.checkpoint import load_dit

            root = self.reference_root or self.init
            if self.reference_root is not None:
                self._check_reference_architecture()
            if self.use_fsdp:  # rank 0 reads, the shards are broadcast
                module = self._fsdp_load(lambda: load_dit(root, device="cpu", dtype=self._base_dtype).state_dict(),
                                         self._base_dtype)
            else:
                module = load_dit(root, device=self.device, dtype=self._base_dtype)
            errors = self._reference_errors_all(FrozenReference(module))
            del module
        if self.is_main:
            tmp = path.with_suffix(".tmp")
            save_file({"errors": errors.contiguous()}, str(tmp), metadata={"fingerprint": fingerprint})
            os.replace(tmp, path)
        self._barrier()
        return CachedReference(errors, pair_ids)

    def _reference_errors_all(self, reference: Callable) -> torch.Tensor:
        """(N, K, 2) fp32: e_ref of chosen and rejected for every pair and draw, the same inputs as training."""
        from tqdm.auto import tqdm

        cfg = self.config
        num_draws, size = cfg.reference_cache_draws, cfg.per_device_train_batch_size
        chunks = [idx[i:i + size] for _, idx in sorted(self.sampler.buckets.items()) for i in range(0, len(idx), size)]
        mine = chunks[self.rank::self.world_size]
        calls = math.ceil(len(chunks) / self.world_size)  # the same on every rank (FSDP forwards are collective)
        errors = torch.zeros(len(self.records), num_draws, 2, dtype=torch.float32)
        joint = not cfg.memory_saving_backward
        with tqdm(total=calls * num_draws, desc="reference cache", unit="draw", dynamic_ncols=True,
                  disable=not (self.progress and self.is_main)) as bar:
            for j in range(calls):
                chunk = mine[j] if j < len(mine) else chunks[0]  # padding call on ranks with fewer chunks
                items = [self.dataset[i] for i in chunk]  # read once, K draws
                for k in range(num_draws):
                    batch = self._collate(chunk, k, items)
                    t, xt_w, xt_l, v_w, v_l, text = self._inputs(batch, k)
                    with torch.no_grad(), self._autocast():
                        e_w, e_l = self._errors(reference, xt_w, xt_l, v_w, v_l, t, text, joint)
                    if j < len(mine):
                        errors[chunk, k, 0], errors[chunk, k, 1] = e_w.float().cpu(), e_l.float().cpu()
                    bar.update(1)
        if self.distributed:  # each entry was computed by exactly one rank
            reduced = errors.to(self.device)
            torch.distributed.all_reduce(reduced)
            errors = reduced.cpu()
        if not bool(torch.isfinite(errors).all()):
            bad = sorted({self.records[i].pair_id for i in torch.nonzero(~torch.isfinite(errors))[:, 0].tolist()})
            raise NonFiniteLossError(0, "reference error", None, bad[:10])
        return errors

    def _load_separate_reference(self, device: torch.device | str, dtype: torch.dtype) -> nn.Module:
        """The reference from its own checkpoint; it must be the same architecture as the policy."""
        from model.checkpoint import load_dit

        self._check_reference_architecture()
        logger.info("reference weights from %s", self.reference_root)
        return load_dit(self.reference_root, device=device, dtype=dtype)

    def _check_reference_architecture(self) -> None:
        from model.checkpoint import RUNTIME_FIELDS, read_dit_config

        ref_config = read_dit_config(self.reference_root)
        diff = sorted(k for k in vars(ref_config)
                      if k not in RUNTIME_FIELDS and getattr(ref_config, k) != getattr(self.dit_config, k, None))
        if diff:
            raise ConfigError(
                f"reference {self.reference_root} is not the policy's architecture (DiT config differs in {diff}); "
                "a reference must be a checkpoint of the same model"
            )

    def _shard(self, module: nn.Module) -> None:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        if not hasattr(self, "_mesh"):
            self._mesh = init_device_mesh(self.device.type, (self.world_size,))
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if self.autocast_enabled else MixedPrecisionPolicy()
        dit = _find_dit(module)
        for block in dit.transformer_blocks:
            fully_shard(block, mesh=self._mesh, mp_policy=mp)
        fully_shard(module, mesh=self._mesh, mp_policy=mp)

    # ------------------------------------------------------------------ one optimizer step
    def _autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.autocast_enabled)

    def _grad_sync(self, sync: bool):
        """Skip gradient all-reduce on all but the last backward of an optimizer step."""
        if not self.distributed or sync:
            return contextlib.nullcontext()
        if self.use_fsdp:
            return _FSDPNoSync(self.policy)
        return self.policy.no_sync()

    def _draw(self, pair_ids: list[str], draw: int, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """One t (B,) and one noise x0 (B, F, C, h, w) per pair, shared by chosen and rejected (fp32, CPU)."""
        cfg = self.config
        ts, noises = [], []
        for pid in pair_ids:
            g = torch.Generator(device="cpu").manual_seed(_pair_seed(cfg.seed, pid, draw))
            ts.append(sample_timesteps(1, mode=cfg.t_sampling, generator=g, logit_normal_mean=cfg.logit_normal_mean,
                                       logit_normal_std=cfg.logit_normal_std, shift=cfg.t_shift))
            noises.append(torch.randn(shape, generator=g, dtype=torch.float32))
        return torch.cat(ts), torch.stack(noises)

    def _errors(self, model: Callable, xt_w, xt_l, v_w, v_l, t, text, joint: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pair velocity MSE of chosen and rejected (B,) each: one forward on [w; l] or two forwards."""
        if joint:
            pred = model(torch.cat([xt_w, xt_l]), torch.cat([t, t]), **{k: torch.cat([v, v]) for k, v in text.items()})
            e = velocity_mse(pred, torch.cat([v_w, v_l]))  # (2B,)
            return e.chunk(2)
        return velocity_mse(model(xt_w, t, **text), v_w), velocity_mse(model(xt_l, t, **text), v_l)

    def _inputs(self, batch: dict[str, Any], draw: int) -> tuple[torch.Tensor, ...]:
        """t (B,), x_t and velocity targets of chosen and rejected (B, F, C, h, w), text kwargs of the DiT."""
        from model.flow import interpolate, velocity_target

        dev = self.device
        x1_w = batch["latent_chosen"].to(dev, torch.float32)  # (B, F, C, h, w)
        x1_l = batch["latent_rejected"].to(dev, torch.float32)
        t, x0 = self._draw(batch["pair_id"], draw, tuple(x1_w.shape[1:]))
        t, x0 = t.to(dev), x0.to(dev)
        xt_w, xt_l = interpolate(x0, x1_w, t), interpolate(x0, x1_l, t)  # same t, same x0 within each pair
        v_w, v_l = velocity_target(x0, x1_w), velocity_target(x0, x1_l)
        # The sampler (model.pipeline) calls the DiT without clip_mask (official behaviour: all 77 CLIP positions
        # attended), so training conditions the same way; clip_mask is read and validated but not passed.
        text = {k: batch[k].to(dev) for k in FORWARD_TEXT_KEYS}
        return t, xt_w, xt_l, v_w, v_l, text

    def _micro_step(self, batch: dict[str, Any], scale: float, sync: bool) -> DPOLossOutput:
        cfg, dev = self.config, self.device
        draw = self._draw_index(batch.get("draw", self.global_step))
        t, xt_w, xt_l, v_w, v_l, text = self._inputs(batch, draw)
        loss_kwargs = dict(
            beta=beta_per_sample(cfg.beta, t, cfg.beta_schedule),
            loss_type=cfg.loss_type,
            label_smoothing=cfg.label_smoothing,
            sft_weight=cfg.sft_weight,
            weights=batch["weight"].to(dev),
            t=t,
        )
        joint = not cfg.memory_saving_backward
        if isinstance(self.reference, CachedReference):
            ref_w, ref_l = (e.to(dev) for e in self.reference.lookup(batch["pair_id"], draw))
        else:
            with torch.no_grad(), self._autocast():
                ref_w, ref_l = self._errors(self.reference, xt_w, xt_l, v_w, v_l, t, text, joint)

        if joint:
            with self._grad_sync(sync), self._autocast():
                pol_w, pol_l = self._errors(self.policy, xt_w, xt_l, v_w, v_l, t, text, joint=True)
                out = flow_dpo_loss(pol_w, pol_l, ref_w, ref_l, **loss_kwargs)
                self._check_finite(out.loss, "loss", batch)
                (out.loss * scale).backward()
            return out.detach()

        # Exact memory-saving backward (docs/flow-dpo.md): the four errors without grad, then the coefficients
        # dL/de_theta(w) = c, dL/de_theta(l) = -c (c = (beta/2) sigmoid(-z) for the sigmoid loss, detached),
        # then backprop c * e_theta(w) and -c * e_theta(l) one video at a time.
        with torch.no_grad(), self._autocast():
            pol_w, pol_l = self._errors(self.policy, xt_w, xt_l, v_w, v_l, t, text, joint=False)
        out = flow_dpo_loss(pol_w, pol_l, ref_w, ref_l, **loss_kwargs)
        self._check_finite(out.loss, "loss", batch)
        coef_w, coef_l = error_coefficients(pol_w, pol_l, ref_w, ref_l, **loss_kwargs)
        for member, (xt, v, coef) in enumerate(((xt_w, v_w, coef_w), (xt_l, v_l, coef_l))):
            with self._grad_sync(sync and member == 1), self._autocast():
                e = velocity_mse(self.policy(xt, t, **text), v)  # (B,) with grad
                ((coef * scale) * e).sum().backward()
        return out.detach()

    def _check_finite(self, value: torch.Tensor, what: str, batch: dict[str, Any] | None = None) -> None:
        if not bool(torch.isfinite(value).all()):
            raise NonFiniteLossError(self.global_step + 1, what, self.last_checkpoint,
                                     None if batch is None else list(batch["pair_id"]))

    def step(self, micro_batches: list[dict[str, Any]]) -> dict[str, Any]:
        """One optimizer step over collated micro-batches; returns (and logs nothing of) the step's metrics."""
        cfg = self.config
        start = time.perf_counter()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.policy.train()
        outs = []
        n = len(micro_batches)
        for i, batch in enumerate(micro_batches):
            outs.append(self._micro_step(batch, scale=1.0 / n, sync=i == n - 1))
        max_norm = cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, max_norm)
        if hasattr(grad_norm, "full_tensor"):
            grad_norm = grad_norm.full_tensor()
        self._check_finite(grad_norm, "gradient norm")
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        if cfg.sync_ref_model and self.global_step % cfg.ref_model_sync_steps == 0:
            self.reference.soft_sync(self.policy, cfg.ref_model_mixup_alpha)

        merged = concat_outputs(outs)
        if self.distributed:
            gathered: list[Any] = [None] * self.world_size
            torch.distributed.all_gather_object(gathered, merged)
            merged = concat_outputs(gathered)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - start
        num_pairs = int(merged.z.numel())
        metrics: dict[str, Any] = {"step": self.global_step}
        if self.micro_batches_per_epoch:
            metrics["epoch"] = round(
                self.epoch + self.batch_pos / self.micro_batches_per_epoch, 4)
        metrics.update(dpo_metrics(merged, num_t_buckets=cfg.num_t_buckets))
        metrics.update({
            "grad_norm": float(grad_norm),
            "learning_rate": lr,
            "num_pairs": num_pairs,
            "pairs_per_s": num_pairs / elapsed,
            "step_time_s": elapsed,
            "peak_memory_gb": _peak_memory_gb(self.device),
            "round": self.round_id,
        })
        return metrics

    # ------------------------------------------------------------------ data cursor
    def _next_micro_batch(self) -> dict[str, Any]:
        if not hasattr(self, "_epoch_batches") or self._epoch_batches_for != self.epoch:
            self._epoch_batches = self.sampler.batches(self.epoch)
            self._epoch_batches_for = self.epoch
        if self.batch_pos >= len(self._epoch_batches):
            self.epoch += 1
            self.batch_pos = 0
            return self._next_micro_batch()
        batch = self._collate(self._epoch_batches[self.batch_pos], self._draw_index(self.epoch))
        self.batch_pos += 1
        return batch

    def _draw_index(self, n: int) -> int:
        """Each pair is drawn once per epoch; a cached reference has errors for draws 0..K-1 only."""
        return n % self.config.reference_cache_draws if self.config.reference_mode == "cached" else n

    def _collate(self, indices: list[int], draw: int, items: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """A micro-batch of pairs (``items``: already loaded ``dataset[i]`` of ``indices``); with prompt_dropout,
        the dropped pairs' text is the null embedding."""
        items = [dict(it) for it in items] if items is not None else [self.dataset[i] for i in indices]
        p = self.config.prompt_dropout
        if p > 0:
            for item in items:
                if _pair_seed(self.config.seed, f"{item['pair_id']}/prompt-dropout", draw) / 2.0**63 < p:
                    item.update(self._null_text)
        batch = collate_pairs(items)
        batch["draw"] = draw
        return batch

    # ------------------------------------------------------------------ train
    def request_stop(self) -> None:
        """Ask the run to stop after the current optimizer step (thread-safe). It saves a resumable checkpoint."""
        self._stop.set()

    def _should_stop(self) -> bool:
        flag = self._stop.is_set()
        if self.distributed:
            t = torch.tensor([1.0 if flag else 0.0], device=self.device if self.device.type == "cuda" else "cpu")
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
            flag = bool(t.item() > 0)
        return flag

    def train(self) -> TrainResult:
        if not self._is_setup:
            self.setup()
        if self.dataset is None:
            raise ValueError("train() needs a manifest; use step() for hand-made batches")
        cfg = self.config
        metrics_path = self.out_dir / "metrics.jsonl"
        if self.is_main:
            _truncate_metrics(metrics_path, self.global_step)
            self._write_status("running")
        bar = None
        if self.progress and self.is_main:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.total_steps, initial=self.global_step, desc="dpo", dynamic_ncols=True)
        stopped = False
        try:
            while self.global_step < self.total_steps:
                if self._should_stop():
                    stopped = True
                    break
                micro = [self._next_micro_batch() for _ in range(cfg.gradient_accumulation_steps)]
                metrics = self.step(micro)
                self.last_metrics = metrics
                if self.is_main:
                    with open(metrics_path, "a") as fh:
                        fh.write(json.dumps(metrics) + "\n")
                    if self.global_step % cfg.logging_steps == 0:
                        logger.info("step %d loss %.4f acc %.3f margin %.3f", self.global_step, metrics["loss"],
                                    metrics["rewards/accuracies"], metrics["rewards/margins"])
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{metrics['loss']:.4f}", acc=f"{metrics['rewards/accuracies']:.2f}")
                    for cb in self.callbacks:
                        cb(metrics)
                if cfg.save_steps and self.global_step % cfg.save_steps == 0 and self.global_step < self.total_steps:
                    self.save_checkpoint()
            if stopped or self.global_step >= self.total_steps:
                if self.last_checkpoint is None or not self.last_checkpoint.name.endswith(f"-{self.global_step}"):
                    self.save_checkpoint()
            final_dir = None if stopped else self.save_final(DTYPES[cfg.final_dtype])
        except NonFiniteLossError as exc:
            if self.is_main:
                self._write_status("failed", error=str(exc))
            raise
        except BaseException as exc:
            if self.is_main:
                self._write_status("failed", error=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            if bar is not None:
                bar.close()
        if self.is_main:
            self._write_status("stopped" if stopped else "completed")
        return TrainResult(self.global_step, stopped, final_dir, self.last_checkpoint, self.last_metrics)

    def run(self) -> TrainResult:
        """setup() + train() + cleanup()."""
        try:
            self.setup()
            result = self.train()
        except BaseException:
            self.cleanup()
            raise
        self.cleanup(synchronize=True)
        return result

    def _write_status(self, state: str, error: str | None = None) -> None:
        status = {"state": state, "step": self.global_step, "total_steps": getattr(self, "total_steps", None),
                  "last_checkpoint": None if self.last_checkpoint is None else str(self.last_checkpoint),
                  "error": error, "time": time.time()}
        tmp = self.out_dir / "run_status.json.tmp"
        tmp.write_text(json.dumps(status, indent=2) + "\n")
        tmp.replace(self.out_dir / "run_status.json")

    # ------------------------------------------------------------------ checkpoints
    def _policy_state_dict(self) -> dict[str, torch.Tensor]:
        """Full (gathered) state dict of the unwrapped policy; every rank must call it under FSDP."""
        if self.use_fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            return get_model_state_dict(self.policy, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return unwrap(self.policy).state_dict()

    def _optimizer_state_dict(self) -> dict[str, Any]:
        if self.use_fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

            return get_optimizer_state_dict(self.policy, self.optimizer,
                                            options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return self.optimizer.state_dict()

    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/step-N`` atomically (tmp folder + rename): weights, optimizer, scheduler, RNG, cursor."""
        from model.checkpoint import save_dit

        cfg = self.config
        final = self.out_dir / "checkpoints" / f"step-{self.global_step}"
        tmp = final.with_name(final.name + ".tmp")
        policy_sd = self._policy_state_dict() if not cfg.use_lora or self.use_fsdp else None
        optim_sd = self._optimizer_state_dict()
        ref_sd = None
        if cfg.sync_ref_model and isinstance(self.reference, FrozenReference):
            if self.use_fsdp:
                from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

                ref_sd = get_model_state_dict(self.reference.module,
                                              options=StateDictOptions(full_state_dict=True, cpu_offload=True))
            else:
                ref_sd = self.reference.state_dict()
        if self.is_main:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
            if cfg.use_lora:
                from safetensors.torch import save_file

                adapter = lora_state_dict(self.policy) if policy_sd is None else _adapters_from_full(policy_sd)
                (tmp / ADAPTER_DIR).mkdir()
                save_file({k: v.detach().cpu().contiguous() for k, v in adapter.items()},
                          str(tmp / ADAPTER_DIR / "adapter_model.safetensors"))
                unwrap(self.policy).peft_config["default"].save_pretrained(str(tmp / ADAPTER_DIR))
            else:
                save_dit(policy_sd, tmp, self.dit_config, dtype=None)  # exact (fp32) weights, loadable by load_dit
            if ref_sd is not None:
                from safetensors.torch import save_file

                save_file({k: v.detach().cpu().contiguous() for k, v in ref_sd.items()}, str(tmp / REFERENCE_FILE))
            torch.save(
                {
                    "step": self.global_step,
                    "epoch": self.epoch,
                    "batch_pos": self.batch_pos,
                    "optimizer": optim_sd,
                    "scheduler": self.scheduler.state_dict(),
                    "rng": _rng_state(),
                    "config": cfg.to_dict(),
                    "model_args": self.dit_config.to_dict(),
                    "metrics": self.last_metrics,
                    "world_size": self.world_size,
                },
                tmp / STATE_FILE,
            )
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
            self._rotate_checkpoints()
        self._barrier()
        self.last_checkpoint = final
        return final

    def _rotate_checkpoints(self) -> None:
        limit = self.config.save_total_limit
        if not limit:
            return
        ckpts = sorted(_checkpoints(self.out_dir), key=lambda p: int(p.name.split("-")[1]))
        for old in ckpts[:-limit]:
            shutil.rmtree(old, ignore_errors=True)

    def latest_checkpoint(self) -> Path | None:
        ckpts = sorted(_checkpoints(self.out_dir), key=lambda p: int(p.name.split("-")[1]))
        return ckpts[-1] if ckpts else None

    def _load_trainer_state(self, path: Path) -> None:
        state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=False)
        if state.get("world_size", 1) != self.world_size and self.is_main:
            logger.warning("resuming a %s-process run with %s processes", state.get("world_size"), self.world_size)
        if self.use_fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(self.policy, self.optimizer, state["optimizer"],
                                     options=StateDictOptions(full_state_dict=True))
        else:
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        self.global_step, self.epoch, self.batch_pos = state["step"], state["epoch"], state["batch_pos"]
        self.last_metrics = state.get("metrics", {})
        self.last_checkpoint = path
        if self.is_main:
            logger.info("resumed from %s at step %d", path, self.global_step)

    def policy_state_dict_merged(self) -> dict[str, torch.Tensor]:
        """The policy as a plain DiT state dict (LoRA merged: W + (alpha/r) B A)."""
        sd = self._policy_state_dict()
        if not self.config.use_lora or not sd:  # FSDP gathers the full state dict on rank 0 only
            return sd
        return merge_lora_into(base_state_dict(sd), _adapters_from_full(sd), self.config.lora_alpha / self.config.lora_r)

    def save_final(self, save_dtype: torch.dtype | None = None) -> Path:
        """``out_dir/final``: official DiT layout (merged), the other components linked from ``init``, LoRA adapters."""
        from model.checkpoint import save_dit

        final = self.out_dir / "final"
        sd = self.policy_state_dict_merged()
        if self.is_main:
            if final.exists():
                shutil.rmtree(final)
            save_dit(sd, final, self.dit_config, dtype=save_dtype)
            if self.config.use_lora and self.last_checkpoint is not None:
                shutil.copytree(self.last_checkpoint / ADAPTER_DIR, final / "lora_adapter")
            _link_other_components(self.init, final)
            info = {"init": None if self.init is None else str(self.init),
                    "reference": str(self.reference_root or self.init), "steps": self.global_step,
                    "manifest": self.manifest, "round": self.round_id, "use_lora": self.config.use_lora,
                    "last_metrics": self.last_metrics}
            (final / "dpo_info.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
        self._barrier()
        return final

    def cleanup(self, synchronize: bool = False) -> None:
        """Release models and the process group. ``synchronize`` (a run that ended normally on every rank): wait
        for all ranks before tearing the group down, so no rank closes its connections while a peer still works."""
        for name in ("policy", "reference", "optimizer", "scheduler", "_mesh"):  # the mesh holds the group
            if hasattr(self, name):
                delattr(self, name)
        self._is_setup = False
        if getattr(self, "distributed", False) and torch.distributed.is_initialized():
            if synchronize:
                torch.distributed.barrier()
            torch.distributed.destroy_process_group()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


class _FSDPNoSync:
    def __init__(self, module: nn.Module):
        self.module = module

    def __enter__(self):
        self.module.set_requires_gradient_sync(False)

    def __exit__(self, *exc):
        self.module.set_requires_gradient_sync(True)


def _adapters_from_full(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """peft full state dict -> adapter-file keys (``...lora_A.weight``, adapter name dropped)."""
    out = {}
    for key, value in sd.items():
        if ".lora_" in key:
            parts = key.split(".")
            # ... lora_A . default . weight -> ... lora_A . weight
            if len(parts) >= 3 and parts[-3].startswith("lora_"):
                key = ".".join(parts[:-2] + parts[-1:])
            out[key] = value
    if not adapter_pairs(out):
        raise ValueError("no LoRA adapters in the policy state dict")
    return out


def _checkpoints(out_dir: Path) -> list[Path]:
    folder = out_dir / "checkpoints"
    if not folder.is_dir():
        return []
    return [p for p in folder.iterdir() if p.is_dir() and p.name.startswith("step-") and p.name[5:].isdigit()
            and (p / STATE_FILE).is_file()]


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop metric lines past the resumed step so curves stay consistent."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:
            continue
    path.write_text("".join(line + "\n" for line in keep))


def _link_other_components(init: Path | None, final: Path) -> None:
    """Make ``final`` a complete model root by symlinking the VAE and text encoders of ``init``."""
    if init is None or not init.is_dir() or (init / "config.json").is_file():
        return  # init was a transformer folder: nothing else to link
    for entry in init.iterdir():
        if entry.name == "transformer" or (final / entry.name).exists():
            continue
        (final / entry.name).symlink_to(entry.resolve(), target_is_directory=entry.is_dir())


def train(
    config: FlowDPOConfig,
    *,
    manifest: str | os.PathLike,
    init: str | os.PathLike,
    out_dir: str | os.PathLike,
    reference: str | os.PathLike | None = None,
    resume: bool = False,
    on_metrics: Callable[[dict[str, Any]], None] | None = None,
    stop_event: threading.Event | None = None,
    progress: bool = False,
) -> TrainResult:
    """Run a whole training in-process. ``on_metrics`` gets each step's metrics; setting ``stop_event`` cancels
    after the current step (a resumable checkpoint is saved; ``TrainResult.stopped`` is True)."""
    trainer = FlowDPOTrainer(config, manifest=manifest, init=init, reference=reference, out_dir=out_dir, resume=resume,
                             callbacks=[on_metrics] if on_metrics else [], progress=progress)
    if stop_event is not None:
        trainer._stop = stop_event
    return trainer.run()
