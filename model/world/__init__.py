"""The shapes world: a bilingual prompt grammar, a renderer, detectors, scripted annotators and the recipe that
trains the tiny model on it (docs/world.md). No Django: the app, the benchmarks and the tests all use it.

- :mod:`model.world.grammar`: ``WorldSpec``, ``to_prompt`` (en / zh), ``parse``, ``sample_prompts``, held-out split;
- :mod:`model.world.render`: ``render(prompt, seed, size=64)`` -> (17, H, W, 3) uint8;
- :mod:`model.world.detect`: ``score_clip(prompt, frames)`` -> ``ClipScores`` (ta, mq, vq, per-attribute checks);
- :mod:`model.world.annotators`: ``AnnotatorPolicy`` (labels, best-worst, ranking; noise, position bias, ties);
- :mod:`model.world.train`: ``train_tiny_world(out)`` (``python -m model train-tiny-world --out DIR``);
- :func:`default_root`: the committed trained root (``model/world/assets/tiny-world``).
"""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"


def default_root() -> Path:
    """The trained tiny-world model root shipped with the package (official layout)."""
    return ASSETS / "tiny-world"
