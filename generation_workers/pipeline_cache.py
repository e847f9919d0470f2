"""One loaded pipeline per worker process.

Loaded lazily by the first task that needs it (not in ``worker_process_init``, which must return within seconds), kept
for the next tasks, and replaced only when a task asks for another checkpoint (or preset, or device). GPU workers run
one process per GPU (``--pool=solo``, ``CUDA_VISIBLE_DEVICES``), so "per process" is "per GPU".

The factory is ``model.pipeline.StepVideoPipeline.from_pretrained`` unless ``VIDEODPO["PIPELINE_FACTORY"]`` (from the
environment variable ``VIDEODPO_PIPELINE_FACTORY``) names another callable ``factory(root, preset=, device=)`` (tests
and benchmarks use it for stand-ins).
"""

from __future__ import annotations

import gc
import importlib
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from annotation.conf import videodpo
from generation_workers.checkpoints import resolve_model_root
from model.layout import TEXT_ENCODER_FOLDERS, fingerprint

logger = logging.getLogger(__name__)


def resolve_device(name: str | None = None) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``."""
    name = name or videodpo().device or "auto"
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _factory():
    dotted = videodpo().pipeline_factory
    if not dotted and videodpo().gpus_per_job != 1:  # this worker owns several GPUs: one process group per worker
        from generation_workers.parallel import pipeline_factory

        return pipeline_factory
    if not dotted:
        from model.pipeline import StepVideoPipeline

        return StepVideoPipeline.from_pretrained
    module, _, attr = dotted.rpartition(".")
    return getattr(importlib.import_module(module), attr)


@dataclass
class LoadedPipeline:
    """A pipeline with what the worker derives from it once per load."""

    key: tuple[str, str, str]
    pipeline: Any
    root: Path
    preset: str
    device: str
    encoder_version: str
    load_s: float
    negatives: dict[str, Any] = field(default_factory=dict)  # negative prompt -> TextEmbeddings (CFG)

    def negative(self, prompt: str):
        """The negative prompt's embeddings, encoded once per load."""
        if prompt not in self.negatives:
            self.negatives[prompt] = self.pipeline.encode_text([prompt])
        return self.negatives[prompt]


class PipelineCache:
    """Holds at most one pipeline; thread-safe (solo pool has one thread, a threads pool would share it)."""

    def __init__(self):
        self._loaded: LoadedPipeline | None = None
        self._lock = threading.Lock()
        self.loads = 0

    @property
    def current(self) -> LoadedPipeline | None:
        return self._loaded

    def get(self, *, uri: str, preset: str, device: str | None = None) -> LoadedPipeline:
        device = resolve_device(device)
        key = (uri, preset, device)
        with self._lock:
            if self._loaded is not None and self._loaded.key == key:
                return self._loaded
            self.clear_locked()
            start = time.perf_counter()
            root = resolve_model_root(uri)
            pipeline = _factory()(root, preset=preset, device=device)
            version = getattr(pipeline, "encoder_version", None) or (
                f"{preset}-{fingerprint(root, TEXT_ENCODER_FOLDERS)}"
            )
            self._loaded = LoadedPipeline(key, pipeline, root, preset, device, version, time.perf_counter() - start)
            self.loads += 1
            logger.info("loaded pipeline %s (preset %s) on %s in %.1fs; encoder version %s", uri, preset, device,
                        self._loaded.load_s, version)
            return self._loaded

    def clear(self) -> None:
        with self._lock:
            self.clear_locked()

    def clear_locked(self) -> None:
        if self._loaded is None:
            return
        close = getattr(self._loaded.pipeline, "close", None)  # a sequence-parallel pipeline stops its ranks
        self._loaded = None
        if callable(close):
            close()
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover
            pass


_CACHE = PipelineCache()


def pipeline_get(*, uri: str, preset: str, device: str | None = None) -> LoadedPipeline:
    """This process's pipeline for (checkpoint URI, preset, device), loading it on first use or on change."""
    return _CACHE.get(uri=uri, preset=preset, device=device)


def pipeline_cache() -> PipelineCache:
    return _CACHE
