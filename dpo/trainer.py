"""Flow-DPO trainer for the Step-Video DiT (torchtune-style recipe: setup / train / step / save / cleanup).

One optimizer step = ``gradient_accumulation_steps`` micro-batches of ``per_device_train_batch_size`` pairs, each
micro-batch of one latent shape. For every pair ONE t and ONE noise x0 are drawn and shared by chosen and rejected
(Step §4.4, Diffusion-DPO); they are a pure function of (seed, pair_id, draw index), so a run's randomness does not
depend on micro-batch layout, world size or resumption.

The parts: ``dpo.distributed`` (process group, FSDP2), ``dpo.models`` (policy and reference for every layout),
``dpo.reference`` (reference kinds, the cached-reference pass), ``dpo.checkpointing`` (checkpoint and final I/O),
``dpo.tracking`` (TensorBoard / MLflow / W&B), ``dpo.losses`` (the loss and metrics, pure functions).

Outputs in ``out_dir`` (docs/contracts.md): ``resolved_config.json``, ``metrics.jsonl`` (one JSON per optimizer
step, TRL names), ``run_status.json``, ``checkpoints/step-N/`` (resumable), ``final/`` (official DiT layout),
``runs/`` (TensorBoard, when installed).

In-process use (the app)::

    trainer = FlowDPOTrainer(cfg, manifest="pairs.parquet", init="/models/base", out_dir="/runs/r1",
                             callbacks=[lambda m: print(m["step"], m["loss"])])
    result = trainer.run()          # setup + train + cleanup; trainer.request_stop() from any thread cancels
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import resource
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dpo import checkpointing
from dpo.config import ConfigError, FlowDPOConfig
from dpo.data import PairDataset, PairStream, ShapeBucketBatchSampler, draw_index, read_manifest, validate_pairs
from dpo.distributed import init_distributed
from dpo.losses import (
    DPOLossOutput,
    beta_per_sample,
    concat_outputs,
    dpo_metrics,
    error_coefficients,
    flow_dpo_loss,
    flow_inputs,
    velocity_mse,
)
from dpo.models import build_models, reference_for_cache
from dpo.reference import REFERENCE_CACHE_FILE, CachedReference, cache_fingerprint, cached_reference, reference_errors
from dpo.tracking import MetricsLog, resolve_report_to

logger = logging.getLogger("dpo")

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}
LR_LAMBDAS: dict[str, Callable[[int, int, int], float]] = {
    # (step, warmup, total) -> multiplier; the formulas of transformers.get_scheduler
    "constant": lambda s, w, n: 1.0,
    "constant_with_warmup": lambda s, w, n: s / max(1, w) if s < w else 1.0,
    "linear": lambda s, w, n: s / max(1, w) if s < w else max(0.0, (n - s) / max(1, n - w)),
    "cosine": lambda s, w, n: s / max(1, w) if s < w else 0.5 * (1 + math.cos(math.pi * min(1.0, (s - w) / max(1, n - w)))),
}


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
        self.report_to = resolve_report_to(config.report_to)  # a missing tracker package fails before any work
        self._given_policy, self._given_dit_config = policy, dit_config
        self._stop = threading.Event()
        self._device_arg = device
        self.global_step = 0
        self.last_checkpoint: Path | None = None
        self.last_metrics: dict[str, Any] = {}
        self._is_setup = False

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Distributed init, data validation, policy/reference/optimizer construction, resume."""
        cfg = self.config
        self.dist = dist = init_distributed(self._device_arg, fsdp=cfg.fsdp, bf16=cfg.bf16)
        self.rank, self.world_size, self.device, self.is_main = dist.rank, dist.world_size, dist.device, dist.is_main
        self.distributed, self.use_fsdp, self.autocast_enabled = dist.distributed, dist.fsdp, dist.mixed_precision
        random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            cfg.save(self.out_dir / "resolved_config.json")
        dist.barrier()

        # 1. Data (validated before any model is loaded)
        self.records, self.dataset, self.data, self.round_id = [], None, None, cfg.round_id
        if self.manifest is not None:
            self._setup_data()
        if cfg.max_steps > 0:
            self.total_steps = cfg.max_steps
        elif self.data is not None:
            self.total_steps = math.ceil(cfg.num_train_epochs * len(self.data) / cfg.gradient_accumulation_steps)
        else:
            raise ValueError("max_steps must be > 0 when no manifest is given")

        # 2. Resume point
        latest = checkpointing.latest_checkpoint(self.out_dir)
        if not self.resume and latest is not None:
            raise ValueError(f"{self.out_dir} already holds checkpoints ({latest.name}) of an earlier run: "
                             "resume it (--resume) or use an empty output folder")
        if self.resume and latest is None and self.is_main:
            logger.warning("--resume: no checkpoint in %s, starting from step 0", self.out_dir / "checkpoints")
        resume_dir = latest if self.resume else None

        # 3. Policy and reference
        self.models = build_models(cfg, dist, init=self.init, reference_root=self.reference_root, resume_dir=resume_dir,
                                   policy=self._given_policy, dit_config=self._given_dit_config)
        self.policy, self.reference, self.dit_config = self.models.policy, self.models.reference, self.models.dit_config
        if cfg.reference_mode == "cached":
            self.reference = self._cached_reference(fresh=resume_dir is None)

        # 4. Optimizer and schedule
        self.trainable = [p for p in self.policy.parameters() if p.requires_grad]
        if not self.trainable:
            raise ValueError("the policy has no trainable parameters")
        self.optimizer = torch.optim.AdamW(self.trainable, lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                           eps=cfg.adam_epsilon, weight_decay=cfg.weight_decay,
                                           foreach=self.device.type == "cuda")
        fn = LR_LAMBDAS[cfg.lr_scheduler_type]
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: fn(s, cfg.warmup_steps, self.total_steps))
        if resume_dir is not None:
            state = checkpointing.load_checkpoint(resume_dir, dist=dist, policy=self.policy, optimizer=self.optimizer,
                                                  scheduler=self.scheduler)
            self.global_step = state["step"]
            if self.data is not None:
                self.data.epoch, self.data.batch_pos = state["epoch"], state["batch_pos"]
            self.last_metrics, self.last_checkpoint = state.get("metrics", {}), resume_dir
        self._is_setup = True

    def _setup_data(self) -> None:
        cfg = self.config
        self.records = read_manifest(self.manifest)
        shapes = validate_pairs(self.records, check_values=True)
        self.dataset = PairDataset(self.records)
        null_text = self.dataset.null_text(cfg.null_text_embedding_uri) if cfg.prompt_dropout > 0 else None
        sampler = ShapeBucketBatchSampler(shapes, cfg.per_device_train_batch_size, seed=cfg.seed, rank=self.rank,
                                          world_size=self.world_size)
        self.data = PairStream(self.dataset, sampler, cfg, null_text)
        if len(self.data) == 0:
            raise ValueError(f"{len(self.records)} pairs give no micro-batch for {self.world_size} process(es)")
        if cfg.round_id is None and len({str(r.round) for r in self.records}) == 1:
            self.round_id = self.records[0].round
        if self.is_main:
            summary = {**self.data.summary(), "manifest": self.manifest,
                       "init": None if self.init is None else str(self.init),
                       "reference": str(self.reference_root or self.init), "world_size": self.world_size}
            (self.out_dir / "data_summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")

    def _cached_reference(self, fresh: bool) -> CachedReference:
        """Reference errors of every pair for draws 0..K-1, from ``out_dir`` when they match this run."""
        cfg = self.config
        if self.dataset is None:
            raise ConfigError("reference_mode 'cached' needs a manifest (the cache holds one entry per pair)")

        def compute() -> torch.Tensor:
            network = reference_for_cache(self.models, init=self.init, reference_root=self.reference_root, fresh=fresh)
            errors = reference_errors(network, self._pair_errors, dataset=self.dataset, buckets=self.data.sampler.buckets,
                                      num_draws=cfg.reference_cache_draws, batch_size=cfg.per_device_train_batch_size,
                                      dist=self.dist, progress=self.progress)
            self.dist.reshard(self.policy)
            if not bool(torch.isfinite(errors).all()):
                bad = sorted({self.records[i].pair_id for i in torch.nonzero(~torch.isfinite(errors))[:, 0].tolist()})
                raise NonFiniteLossError(0, "reference error", None, bad[:10])
            return errors

        fingerprint = cache_fingerprint(self.records, cfg, str(self.reference_root or self.init))
        return cached_reference(self.out_dir / REFERENCE_CACHE_FILE, fingerprint, [r.pair_id for r in self.records],
                                compute, is_main=self.is_main, barrier=self.dist.barrier)

    def _pair_errors(self, reference: Callable, indices: list[int], draw: int, items: list[dict[str, Any]]):
        """e_ref of chosen and rejected (B,) each for one micro-batch and draw: the same inputs as training."""
        batch = self.data.collate(indices, draw, items)
        t, xt_w, xt_l, v_w, v_l, text = flow_inputs(batch, draw, self.config, self.device)
        with torch.no_grad(), self._autocast():
            return self._errors(reference, xt_w, xt_l, v_w, v_l, t, text, not self.config.memory_saving_backward,
                                batch.get("frame_weights"))

    # ------------------------------------------------------------------ one optimizer step
    def _autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.autocast_enabled)

    def _errors(self, model: Callable, xt_w, xt_l, v_w, v_l, t, text, joint: bool,
                frame_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pair velocity MSE of chosen and rejected (B,) each: one forward on [w; l] or two forwards; with
        ``frame_weights`` (B, F) (per-segment labels) a weighted mean over the latent frames, the same for both."""
        if joint:
            pred = model(torch.cat([xt_w, xt_l]), torch.cat([t, t]), **{k: torch.cat([v, v]) for k, v in text.items()})
            fw = None if frame_weights is None else torch.cat([frame_weights, frame_weights])
            e = velocity_mse(pred, torch.cat([v_w, v_l]), fw)  # (2B,)
            return e.chunk(2)
        return (velocity_mse(model(xt_w, t, **text), v_w, frame_weights),
                velocity_mse(model(xt_l, t, **text), v_l, frame_weights))

    def _micro_step(self, batch: dict[str, Any], scale: float, sync: bool) -> DPOLossOutput:
        cfg, dev = self.config, self.device
        draw = draw_index(batch.get("draw", self.global_step), cfg)
        t, xt_w, xt_l, v_w, v_l, text = flow_inputs(batch, draw, cfg, dev)
        loss_kwargs = dict(beta=beta_per_sample(cfg.beta, t, cfg.beta_schedule), loss_type=cfg.loss_type,
                           label_smoothing=cfg.label_smoothing, sft_weight=cfg.sft_weight,
                           weights=batch["weight"].to(dev), t=t)
        joint = not cfg.memory_saving_backward
        fw = batch.get("frame_weights")
        if isinstance(self.reference, CachedReference):
            ref_w, ref_l = (e.to(dev) for e in self.reference.lookup(batch["pair_id"], draw))
        else:
            with torch.no_grad(), self._autocast():
                ref_w, ref_l = self._errors(self.reference, xt_w, xt_l, v_w, v_l, t, text, joint, fw)

        if joint:
            with self.dist.grad_sync(self.policy, sync), self._autocast():
                pol_w, pol_l = self._errors(self.policy, xt_w, xt_l, v_w, v_l, t, text, True, fw)
                out = flow_dpo_loss(pol_w, pol_l, ref_w, ref_l, **loss_kwargs)
                self._check_finite(out.loss, "loss", batch)
                (out.loss * scale).backward()
            return out.detach()

        # Exact memory-saving backward (docs/flow-dpo.md): the four errors without grad, then the coefficients
        # dL/de_theta(w) = c, dL/de_theta(l) = -c (c = (beta/2) sigmoid(-z) for the sigmoid loss, detached),
        # then backprop c * e_theta(w) and -c * e_theta(l) one video at a time.
        with torch.no_grad(), self._autocast():
            pol_w, pol_l = self._errors(self.policy, xt_w, xt_l, v_w, v_l, t, text, False, fw)
        out = flow_dpo_loss(pol_w, pol_l, ref_w, ref_l, **loss_kwargs)
        self._check_finite(out.loss, "loss", batch)
        coef_w, coef_l = error_coefficients(pol_w, pol_l, ref_w, ref_l, **loss_kwargs)
        for member, (xt, v, coef) in enumerate(((xt_w, v_w, coef_w), (xt_l, v_l, coef_l))):
            with self.dist.grad_sync(self.policy, sync and member == 1), self._autocast():
                e = velocity_mse(self.policy(xt, t, **text), v, fw)  # (B,) with grad
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
        n = len(micro_batches)
        outs = [self._micro_step(batch, scale=1.0 / n, sync=i == n - 1) for i, batch in enumerate(micro_batches)]
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf"))
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

        merged = concat_outputs(self.dist.gather(concat_outputs(outs)) if self.distributed else outs)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - start
        num_pairs = int(merged.z.numel())
        metrics: dict[str, Any] = {"step": self.global_step}
        if self.data is not None:
            metrics["epoch"] = round(self.data.epoch + self.data.batch_pos / len(self.data), 4)
        metrics.update(dpo_metrics(merged, num_t_buckets=cfg.num_t_buckets))
        peak_gb = (torch.cuda.max_memory_allocated(self.device) / 1024**3 if self.device.type == "cuda"
                   else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2)  # Linux: KiB -> GiB (RSS)
        metrics.update({"grad_norm": float(grad_norm), "learning_rate": lr, "num_pairs": num_pairs,
                        "pairs_per_s": num_pairs / elapsed, "step_time_s": elapsed, "peak_memory_gb": peak_gb,
                        "round": self.round_id})
        return metrics

    # ------------------------------------------------------------------ train
    def request_stop(self) -> None:
        """Ask the run to stop after the current optimizer step (thread-safe). It saves a resumable checkpoint."""
        self._stop.set()

    def train(self) -> TrainResult:
        if not self._is_setup:
            self.setup()
        if self.dataset is None:
            raise ValueError("train() needs a manifest; use step() for hand-made batches")
        cfg = self.config
        log = MetricsLog(self.out_dir, self.report_to, cfg, resume_step=self.global_step) if self.is_main else None
        bar = None
        if self.is_main:
            self._write_status("running")
            if self.progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=self.total_steps, initial=self.global_step, desc="dpo", dynamic_ncols=True)
        stopped = False
        try:
            if log is not None:
                log.start()
            while self.global_step < self.total_steps:
                if self.dist.any(self._stop.is_set()):
                    stopped = True
                    break
                metrics = self.last_metrics = self.step([self.data.next() for _ in range(cfg.gradient_accumulation_steps)])
                if log is not None:
                    log.log(metrics)
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
            if self.last_checkpoint is None or not self.last_checkpoint.name.endswith(f"-{self.global_step}"):
                self.save_checkpoint()
            final_dir = None if stopped else self.save_final(DTYPES[cfg.final_dtype])
        except BaseException as exc:
            if self.is_main:
                self._write_status("failed", error=str(exc) if isinstance(exc, NonFiniteLossError)
                                   else f"{type(exc).__name__}: {exc}")
            raise
        finally:
            if log is not None:
                log.finish()
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

    # ------------------------------------------------------------------ save
    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/step-N`` atomically: weights, optimizer, scheduler, RNG, data cursor (every rank)."""
        self.last_checkpoint = checkpointing.save_checkpoint(
            self.out_dir, dist=self.dist, config=self.config, dit_config=self.dit_config, policy=self.policy,
            reference=self.reference, optimizer=self.optimizer, scheduler=self.scheduler,
            state={"step": self.global_step, "epoch": self.data.epoch if self.data else 0,
                   "batch_pos": self.data.batch_pos if self.data else 0, "metrics": self.last_metrics})
        return self.last_checkpoint

    def latest_checkpoint(self) -> Path | None:
        return checkpointing.latest_checkpoint(self.out_dir)

    def policy_state_dict_merged(self) -> dict[str, torch.Tensor]:
        """The policy as a plain DiT state dict (LoRA merged: W + (alpha/r) B A); every rank calls it under FSDP."""
        cfg = self.config
        return checkpointing.merged_state_dict(self.policy, cfg.use_lora, cfg.lora_alpha / cfg.lora_r, self.dist)

    def save_final(self, save_dtype: torch.dtype | None = None) -> Path:
        """``out_dir/final``: official DiT layout (merged), the other components linked from ``init``, LoRA adapters."""
        cfg = self.config
        info = {"init": None if self.init is None else str(self.init),
                "reference": str(self.reference_root or self.init), "steps": self.global_step,
                "manifest": self.manifest, "round": self.round_id, "use_lora": cfg.use_lora,
                "last_metrics": self.last_metrics}
        return checkpointing.save_final(
            self.out_dir / "final", self.policy_state_dict_merged(), dist=self.dist, dit_config=self.dit_config,
            dtype=save_dtype, init=self.init, info=info,
            adapter_from=self.last_checkpoint if cfg.use_lora and self.last_checkpoint is not None else None)

    # ------------------------------------------------------------------ cleanup
    def cleanup(self, synchronize: bool = False) -> None:
        """Release models and the process group. ``synchronize`` (a run that ended normally on every rank): wait
        for all ranks before tearing the group down, so no rank closes its connections while a peer still works."""
        for name in ("policy", "reference", "models", "optimizer", "scheduler"):
            if hasattr(self, name):
                delattr(self, name)
        self._is_setup = False
        if hasattr(self, "dist"):
            self.dist.destroy(synchronize)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


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
