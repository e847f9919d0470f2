"""Sequence parallelism for the DiT: Ulysses attention across the ranks of a process group.

The official release runs the 30B DiT across 4-8 GPUs with xDiT's Ulysses sequence parallelism. Here the same
scheme runs on any ``torch.distributed`` process group (NCCL on GPUs, gloo on CPUs)::

    tokens (B, N, D)  -- shard --> (B, N/P, D) per rank       (patch embed, text, timestep: replicated)
    self-attention:   q, k, v (B, N/P, H, hd) -- all-to-all --> (B, N, H/P, hd) -> attention per head group
                      -- all-to-all --> (B, N/P, H, hd)
    cross-attention, FFN, AdaLN: token-local, run on the shard as they are
    proj_out (B, N/P, C) -- all-gather --> (B, N, C): every rank returns the whole velocity

The all-to-all is yunchang's ``SeqAllToAll4D`` (the Ulysses engine xDiT uses, autograd-capable, built on
``torch.distributed.all_to_all_single``); the local attention is :func:`model.attention.attention`, so the backend
choice (FA3 / FA2 / SDPA) is unchanged. Each rank computes exactly what one process computes for its heads and tokens,
so the result equals single-process sampling up to float rounding (tested at <= 1e-5 with 2 gloo processes).

Training use (the DPO trainer, later): the final gather's backward returns each rank its slice of the gradient, so with
the same loss on every rank the parameter gradients must be summed over the group (``all_reduce``) afterwards.

Rules, checked before any work (:func:`check_sequence_parallel`): the world size divides the attention heads and the
video tokens ``F * (H/p) * (W/p)``.

:class:`ParallelPipeline` is a whole generation pipeline on N devices: rank 0 lives in the calling process (a generation
worker) and holds the text encoders and the VAE; ranks 1..N-1 are child processes (``python -m model.parallel``)
launched by it, holding only the DiT. Rank 0 sends each ``sample`` request to the children over their stdin, then all
ranks run the same sampling loop together.
"""

from __future__ import annotations

import io
import logging
import os
import socket
import struct
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from model.attention import attention

logger = logging.getLogger(__name__)

__all__ = [
    "ParallelPipeline",
    "SequenceParallel",
    "SequenceParallelError",
    "check_sequence_parallel",
]


class SequenceParallelError(ValueError):
    """The world size does not fit the model or the video (names both sizes)."""


def check_sequence_parallel(world_size: int, num_heads: int, num_tokens: int | None = None) -> None:
    """Raise :class:`SequenceParallelError` unless ``world_size`` divides the heads (and the video tokens if given)."""
    if world_size < 1:
        raise SequenceParallelError(f"sequence-parallel world size must be >= 1, got {world_size}")
    if num_heads % world_size:
        raise SequenceParallelError(
            f"sequence-parallel world size {world_size} does not divide the DiT's {num_heads} attention heads "
            f"(Ulysses gives every rank num_heads / world_size heads)"
        )
    if num_tokens is not None and num_tokens % world_size:
        raise SequenceParallelError(
            f"sequence-parallel world size {world_size} does not divide the {num_tokens} video tokens "
            f"(latent frames x height x width / patch^2); pick a size whose token count is a multiple of {world_size}"
        )


def video_tokens(latent_frames: int, latent_height: int, latent_width: int, patch_size: int = 1) -> int:
    """N = F * (H/p) * (W/p)."""
    return latent_frames * (latent_height // patch_size) * (latent_width // patch_size)


class _GatherTokens(torch.autograd.Function):
    """All-gather along dim 1; backward returns this rank's slice of the gradient (same loss on every rank)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group, world_size: int, rank: int) -> torch.Tensor:
        ctx.rank, ctx.n = rank, x.shape[1]
        parts = [torch.empty_like(x) for _ in range(world_size)]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts, dim=1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad[:, ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n].contiguous(), None, None, None


@dataclass(frozen=True)
class SequenceParallel:
    """A process group to run the DiT's tokens across. ``group=None`` is the default (world) group.

    Attach it with ``dit.sequence_parallel = SequenceParallel()`` (every rank, same weights and inputs) or pass
    ``sequence_parallel=`` to :meth:`model.transformer.StepVideoDiT.forward`.
    """

    group: Any = None

    @property
    def world_size(self) -> int:
        return dist.get_world_size(self.group)

    @property
    def rank(self) -> int:
        return dist.get_rank(self.group)

    def check(self, num_heads: int, num_tokens: int | None = None) -> None:
        check_sequence_parallel(self.world_size, num_heads, num_tokens)

    def shard(self, x: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """This rank's contiguous slice of ``x`` along ``dim`` (the size must divide)."""
        return x.chunk(self.world_size, dim=dim)[self.rank]

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N/P, ...) shards -> (B, N, ...) on every rank, in rank order."""
        if self.world_size == 1:
            return x
        return _GatherTokens.apply(x, self.group, self.world_size, self.rank)

    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str | None = None) -> torch.Tensor:
        """Ulysses self-attention. q, k, v: (B, N/P, H, hd) token shards -> (B, N/P, H, hd)."""
        if self.world_size == 1:
            return attention(q, k, v, backend=backend)
        from yunchang.comm.all_to_all import SeqAllToAll4D

        # (B, N/P, H, hd) -> (B, N, H/P, hd): scatter heads (dim 2), gather tokens (dim 1)
        q, k, v = (SeqAllToAll4D.apply(self.group, t.contiguous(), 2, 1) for t in (q, k, v))
        out = attention(q, k, v, backend=backend)  # (B, N, H/P, hd)
        return SeqAllToAll4D.apply(self.group, out.contiguous(), 1, 2)  # (B, N/P, H, hd)


# ---------------------------------------------------------------------------------------------------------------
# A generation pipeline on N devices (rank 0 in this process, ranks 1..N-1 launched as child processes)
# ---------------------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_device(device: str, rank: int) -> torch.device:
    """``cuda`` -> ``cuda:rank`` (within CUDA_VISIBLE_DEVICES); ``cpu`` stays ``cpu``."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.device("cuda", (dev.index or 0) + rank)
    return dev


def _write_message(stream, obj) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _read_message(stream):
    head = stream.read(8)
    if len(head) < 8:
        return None  # parent closed the pipe
    (size,) = struct.unpack("<Q", head)
    return torch.load(io.BytesIO(stream.read(size)), weights_only=False)


def _init_group(world_size: int, rank: int, port: int, device: torch.device, timeout_s: float):
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend,
        init_method=f"tcp://127.0.0.1:{port}",
        world_size=world_size,
        rank=rank,
        timeout=timedelta(seconds=timeout_s),
    )


class ParallelPipeline:
    """A :class:`model.pipeline.StepVideoPipeline` whose DiT runs sequence-parallel on ``world_size`` devices.

    Same methods as the pipeline (``encode_text``, ``sample``, ``decode``, ``generate``, ``preset`` ...; everything
    but ``sample`` runs on rank 0 only). ``close()`` stops the child ranks and destroys the process group; one
    ParallelPipeline per process at a time (it owns the default process group).
    """

    def __init__(self, pipeline, children: list[subprocess.Popen], world_size: int):
        self.pipeline, self.children, self.world_size = pipeline, children, world_size
        self.closed = False

    @classmethod
    def launch(
        cls,
        root: str | os.PathLike,
        preset: str = "tiny",
        *,
        device: str = "cpu",
        world_size: int = 2,
        timeout_s: float = 1800.0,
        **pipeline_kwargs,
    ) -> ParallelPipeline:
        """Check the sizes, start ranks 1..N-1, join the group as rank 0 and load the pipeline on every rank."""
        from model.checkpoint import read_dit_config
        from model.pipeline import StepVideoPipeline

        if dist.is_available() and dist.is_initialized():
            raise RuntimeError("a process group already exists in this process; close the other ParallelPipeline")
        dit_cfg = read_dit_config(root)
        check_sequence_parallel(world_size, dit_cfg.num_attention_heads)
        if torch.device(device).type == "cuda" and torch.cuda.device_count() < world_size:
            raise SequenceParallelError(
                f"{world_size} ranks requested but only {torch.cuda.device_count()} CUDA device(s) are visible"
            )
        port = _free_port()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent.parent)]
                                                         + [p for p in [os.environ.get("PYTHONPATH")] if p])}
        children = []
        for rank in range(1, world_size):
            args = [sys.executable, "-m", "model.parallel", "--rank", str(rank), "--world-size", str(world_size),
                    "--port", str(port), "--root", str(root), "--preset", preset, "--device", device,
                    "--timeout", str(timeout_s)]
            children.append(subprocess.Popen(args, stdin=subprocess.PIPE, env=env))
        try:
            dev = _rank_device(device, 0)
            _init_group(world_size, 0, port, dev, timeout_s)
            pipeline = StepVideoPipeline.from_pretrained(root, preset, device=dev, **pipeline_kwargs)
            pipeline.dit.sequence_parallel = SequenceParallel()
        except BaseException:
            for child in children:
                child.kill()
            if dist.is_initialized():
                dist.destroy_process_group()
            raise
        logger.info("sequence-parallel pipeline on %d ranks (%s), root %s", world_size, device, root)
        return cls(pipeline, children, world_size)

    def __getattr__(self, name):  # only called for names not set in __init__: delegate to the rank-0 pipeline
        if name in ("pipeline", "children", "world_size", "closed"):
            raise AttributeError(name)
        return getattr(self.pipeline, name)

    @torch.no_grad()
    def sample(self, text, seeds=None, **kwargs) -> torch.Tensor:
        """As :meth:`StepVideoPipeline.sample`; the request is sent to every rank, rank 0's latents are returned."""
        if self.closed:
            raise RuntimeError("this ParallelPipeline is closed")
        progress = kwargs.pop("progress", None)
        self.pipeline.check_sample_request(text, seeds, **kwargs)  # bad sizes fail here, before any rank works
        cfg_scale = kwargs.get("cfg_scale")
        cfg_scale = self.pipeline.preset.sampler.cfg_scale if cfg_scale is None else cfg_scale
        if cfg_scale != 1.0 and kwargs.get("negative") is None:  # the other ranks have no text encoders
            kwargs["negative"] = self.pipeline.encode_text([self.pipeline.preset.negative_prompt])
        request = {"text": text.to("cpu"), "seeds": seeds, "kwargs": {
            k: (v.to("cpu") if hasattr(v, "to") else v) for k, v in kwargs.items()}}
        for child in self.children:
            if child.poll() is not None:
                raise RuntimeError(f"sequence-parallel rank process {child.pid} exited with code {child.returncode}")
            _write_message(child.stdin, ("sample", request))
        return self.pipeline.sample(text, seeds, progress=progress, **kwargs)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for child in self.children:
            try:
                _write_message(child.stdin, ("stop", None))
                child.stdin.close()
            except (BrokenPipeError, ValueError):
                pass
        for child in self.children:
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()
        if dist.is_initialized():
            dist.destroy_process_group()

    def __del__(self):  # the pipeline cache drops a replaced pipeline and collects it: stop the ranks with it
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _rank_main(argv: list[str] | None = None) -> int:
    """A child rank: join the group, load the DiT, run every ``sample`` request from rank 0 until ``stop``/EOF."""
    import argparse

    from model.pipeline import StepVideoPipeline

    parser = argparse.ArgumentParser(prog="python -m model.parallel")
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--world-size", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--preset", required=True)
    parser.add_argument("--device", required=True)
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads() // args.world_size))
    dev = _rank_device(args.device, args.rank)
    _init_group(args.world_size, args.rank, args.port, dev, args.timeout)
    pipeline = StepVideoPipeline.from_pretrained(
        args.root, args.preset, device=dev, load_text_encoders=False, load_vae=False
    )
    pipeline.dit.sequence_parallel = SequenceParallel()
    stdin = sys.stdin.buffer
    try:
        while True:
            message = _read_message(stdin)
            if message is None or message[0] == "stop":
                break
            request = message[1]
            pipeline.sample(request["text"], request["seeds"], **request["kwargs"])
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(_rank_main())
