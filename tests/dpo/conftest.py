"""Fixtures for dpo tests: a tiny DiT model root and tiny pair manifests written with safetensors.

Everything is CPU-sized: tiny preset DiT (2 layers), latents (F=2, C=4, h=4, w=4), 8 LLM tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

LATENT_SHAPE = (2, 4, 4, 4)  # (F, C, h, w)
LLM_LEN = 8


def _tiny_dit_config():
    from model.presets import get_preset

    return get_preset("tiny").dit


@pytest.fixture(scope="session")
def tiny_dit_config():
    return _tiny_dit_config()


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """A model root with only transformer/ (random, non-zero output projection so the policy is non-trivial)."""
    from model.checkpoint import save_dit
    from model.transformer import StepVideoDiT

    cfg = _tiny_dit_config()
    torch.manual_seed(0)
    model = StepVideoDiT(cfg)
    model.init_weights(zero_out=False)
    root = tmp_path_factory.mktemp("tiny_root")
    save_dit(model, root, cfg, dtype=torch.float32)
    return root


def write_text_embedding(path: Path, cfg, seed: int, llm_len: int = LLM_LEN) -> None:
    g = torch.Generator().manual_seed(seed)
    llm_dim, clip_dim = cfg.caption_channels
    mask = torch.zeros(llm_len, dtype=torch.int8)
    mask[: llm_len - 2] = 1
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {
            "llm_states": torch.randn(llm_len, llm_dim, generator=g).to(torch.bfloat16),
            "llm_mask": mask,
            "clip_states": torch.randn(77, clip_dim, generator=g).to(torch.bfloat16),
            "clip_mask": torch.ones(77, dtype=torch.int8),
        },
        str(path),
        metadata={"encoder_version": "test", "truncated": "false"},
    )


def write_latent(path: Path, latent: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"latent": latent.to(torch.bfloat16).contiguous()}, str(path), metadata={"shape": str(list(latent.shape))})


def make_manifest(
    root: Path,
    cfg,
    *,
    num_pairs: int = 4,
    num_prompts: int = 2,
    shapes: list[tuple[int, ...]] | None = None,
    fmt: str = "jsonl",
    seed: int = 0,
    rows_override: dict[int, dict] | None = None,
) -> Path:
    """Write latents, text embeddings and a manifest under ``root``; chosen latents are brighter (+0.5)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for p in range(num_prompts):
        write_text_embedding(root / f"prompts/p{p}/text-embeddings/test.safetensors", cfg, seed=100 + p)
    for i in range(num_pairs):
        shape = shapes[i % len(shapes)] if shapes else LATENT_SHAPE
        base = torch.randn(shape, generator=g)
        chosen, rejected = base + 0.5 + 0.1 * torch.randn(shape, generator=g), base - 0.5
        cpath = root / f"rounds/0/groups/g{i}/candidates/c{i}a/latent.safetensors"
        rpath = root / f"rounds/0/groups/g{i}/candidates/c{i}b/latent.safetensors"
        write_latent(cpath, chosen)
        write_latent(rpath, rejected)
        row = {
            "pair_id": f"pair-{i}",
            "round": 0,
            "prompt_id": f"p{i % num_prompts}",
            "chosen_candidate": f"c{i}a",
            "rejected_candidate": f"c{i}b",
            "chosen_latent_uri": str(cpath) if i % 2 == 0 else cpath.as_uri(),  # plain paths and file:// URIs
            "rejected_latent_uri": str(rpath),
            "text_embedding_uri": str(root / f"prompts/p{i % num_prompts}/text-embeddings/test.safetensors"),
            "weight": 1.0,
            "source": "human",
            "agreement": 1.0,
        }
        row.update((rows_override or {}).get(i, {}))
        rows.append(row)
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = root / "pairs.parquet"
        pq.write_table(pa.Table.from_pylist(rows), str(path))
    else:
        path = root / "pairs.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def manifest_factory(tmp_path, tiny_dit_config):
    def factory(**kwargs) -> Path:
        sub = tmp_path / f"data{len(list(tmp_path.iterdir()))}"
        return make_manifest(sub, tiny_dit_config, **kwargs)

    return factory


def read_metrics(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]
