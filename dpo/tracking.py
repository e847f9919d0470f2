"""Where a run's metrics go: ``metrics.jsonl`` (every step, what the app's live curves read) and experiment trackers
(TensorBoard, MLflow, Weights & Biases).

``report_to`` is TRL's / ``transformers.TrainingArguments``' field name and takes its values: ``tensorboard``,
``mlflow``, ``wandb`` (several at once), ``all`` (every one installed) or ``none``; unset = ``tensorboard`` when the
package is installed. The trackers are accelerate's (``accelerate.tracking``, what ``Accelerator(log_with=...)``
uses), so their environment variables work as in any accelerate/TRL run: ``MLFLOW_TRACKING_URI``,
``MLFLOW_EXPERIMENT_NAME``, ``MLFLOW_TAGS``; ``WANDB_PROJECT``, ``WANDB_MODE=offline``, ``WANDB_API_KEY``.

Where the curves go (rank 0 only):
- tensorboard: ``out_dir/runs/`` (``tensorboard --logdir RUN_DIR/runs``, or a parent of several run folders to
  overlay them); on resume the steps past the checkpoint are purged, as ``metrics.jsonl`` is truncated;
- mlflow: ``MLFLOW_TRACKING_URI``, else a local SQLite store ``out_dir/mlflow.db`` (``mlflow ui --backend-store-uri
  sqlite:///RUN_DIR/mlflow.db``); experiment ``MLFLOW_EXPERIMENT_NAME`` or ``videodpo``, run name = the folder's name;
- wandb: project ``WANDB_PROJECT`` or ``videodpo``, run name = the run folder's name, files in ``out_dir/wandb``.

Scalar names are TRL's (``loss``, ``rewards/chosen``, ``rewards/margins``, ``grad_norm``, ``learning_rate``, ...); like
transformers' TensorBoard and W&B callbacks, those two get them under ``train/``; MLflow gets them as they are.
The run's config is stored as hyperparameters.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from dpo.config import REPORT_TO, ConfigError

logger = logging.getLogger("dpo")

PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}  # tracker -> module it needs
INSTALL = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}  # -> what to pip install
PREFIXED = ("tensorboard", "wandb")  # transformers' rewrite_logs: "loss" -> "train/loss"


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(PACKAGES.get(module, module)) is not None
    except (ImportError, ValueError):
        return False


def resolve_report_to(report_to: Iterable[str] | None) -> list[str]:
    """The trackers a run uses; a tracker asked for by name whose package is missing is a ConfigError naming it."""
    if report_to is None:
        return ["tensorboard"] if installed("tensorboard") else []
    names = list(dict.fromkeys(report_to))
    if "none" in names:
        return []
    if "all" in names:
        return [n for n in REPORT_TO if installed(n)]
    for name in names:
        if not installed(name):
            raise ConfigError(f"report_to {name!r} needs the {PACKAGES[name]} package, which is not installed "
                              f"(pip install {INSTALL[name]}, or pip install 'videodpo-loop[tracking]')")
    if "mlflow" in names and not os.environ.get("MLFLOW_TRACKING_URI"):
        missing = [m for m in ("sqlalchemy", "alembic") if not installed(m)]
        if missing:
            raise ConfigError(f"report_to 'mlflow' without MLFLOW_TRACKING_URI keeps a local SQLite store in the run "
                              f"folder, which needs {' and '.join(missing)} (pip install {' '.join(missing)}); "
                              "or set MLFLOW_TRACKING_URI to your MLflow server")
    return names


class MetricsLog:
    """Rank 0's metric sinks: ``start()`` (on resume, ``metrics.jsonl`` keeps the lines up to ``resume_step`` and
    TensorBoard purges the later steps), ``log(metrics)`` after every optimizer step, ``finish()``."""

    def __init__(self, out_dir: Path, report_to: Iterable[str], config: Any, *, resume_step: int = 0):
        self.out_dir, self.names, self.config, self.resume_step = Path(out_dir), list(report_to), config, resume_step
        self.path = self.out_dir / "metrics.jsonl"
        self.trackers: list[Any] = []

    def start(self) -> MetricsLog:
        if self.path.is_file():
            keep = []
            for line in self.path.read_text().splitlines():
                try:
                    if json.loads(line).get("step", 0) <= self.resume_step:
                        keep.append(line)
                except json.JSONDecodeError:
                    continue
            self.path.write_text("".join(line + "\n" for line in keep))
        if self.names:
            self._start_trackers()
        return self

    def _start_trackers(self) -> None:
        from accelerate import PartialState
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS

        # accelerate's trackers log through accelerate's logger, which needs its process state. The trainer set up
        # the process group already; cpu=True keeps accelerate off the CUDA device, which it does not use here.
        PartialState(cpu=True)
        run_name = self.out_dir.name
        for name in self.names:
            cls = LOGGER_TYPE_TO_CLASS[name]
            if name == "tensorboard":
                kwargs = {"purge_step": self.resume_step + 1} if self.resume_step else {}
                tracker = cls("runs", str(self.out_dir), **kwargs)
            elif name == "mlflow":
                import mlflow

                local = not os.environ.get("MLFLOW_TRACKING_URI")
                if local:
                    mlflow.set_tracking_uri(f"sqlite:///{(self.out_dir / 'mlflow.db').resolve()}")
                tracker = cls(os.environ.get("MLFLOW_EXPERIMENT_NAME", "videodpo"), run_name=run_name,
                              logging_dir=str((self.out_dir / "mlartifacts").resolve()) if local else None)
            else:
                (self.out_dir / "wandb").mkdir(parents=True, exist_ok=True)
                tracker = cls(os.environ.get("WANDB_PROJECT", "videodpo"), name=run_name, dir=str(self.out_dir))
            tracker.main_process_only = False  # only rank 0 builds trackers; no accelerate process checks
            tracker.start()
            tracker.store_init_configuration(_hparams(self.config.to_dict()))
            self.trackers.append(tracker)
        logger.info("experiment trackers: %s", ", ".join(self.names))

    def log(self, metrics: Mapping[str, Any]) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps(metrics) + "\n")
        values = {k: v for k, v in metrics.items()
                  if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
        for tracker in self.trackers:
            prefixed = tracker.name in PREFIXED
            tracker.log({f"train/{k}" if prefixed else k: v for k, v in values.items()}, step=metrics["step"])

    def finish(self) -> None:
        while self.trackers:
            tracker = self.trackers.pop()
            try:
                tracker.finish()
            except Exception:  # noqa: BLE001 - a tracker that fails to close must not fail a finished run
                logger.exception("closing the %s tracker failed", tracker.name)


def _hparams(config: Mapping[str, Any]) -> dict[str, Any]:
    """Hyperparameters as trackers take them: scalars (and None) as they are, the rest as strings."""
    return {k: v if v is None or isinstance(v, (bool, int, float, str)) else str(v) for k, v in config.items()}
