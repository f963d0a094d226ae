"""Where training curves go: `train.logger` (pretraining) and `--set logger=` (fine-tuning) pick one of
Lightning's own loggers — csv (the default), tensorboard, wandb, mlflow. The CSV log is always written too: the
run folder's curves, `loss_curve.png`, resume and `selfsup report` read it, whatever else is chosen.

An extra logger's package is optional; a missing one is a one-line "pip install ..." error before training.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from selfsup.errors import SelfsupError

LOGGERS = ("csv", "tensorboard", "wandb", "mlflow")
# logger -> (modules any one of which Lightning can use, what to install)
PACKAGES = {"tensorboard": (("tensorboard", "tensorboardX"), "tensorboard"), "wandb": (("wandb",), "wandb"),
            "mlflow": (("mlflow",), "mlflow")}


def check_logger(kind: str, key: str = "train.logger") -> None:
    """A one-line error for an unknown logger or one whose package is not installed."""
    if kind not in LOGGERS:
        raise SelfsupError(f"{key}: expected one of {', '.join(LOGGERS)}, got {kind!r}")
    if kind in PACKAGES:
        modules, package = PACKAGES[kind]
        if not any(importlib.util.find_spec(m) for m in modules):
            raise SelfsupError(f"{key}={kind} needs the {package} package: pip install {package}")


def make_loggers(kind: str, folder: Path, version: str, run_name: str = "selfsup") -> list[Any]:
    """Lightning loggers writing under `folder`: logs/<version>/metrics.csv always, and the chosen one:
    tensorboard/<version>/ (event files), wandb/ (offline unless WANDB_MODE says otherwise), mlruns/ (a local
    MLflow store unless MLFLOW_TRACKING_URI says otherwise)."""
    import os

    from lightning.pytorch.loggers import CSVLogger

    check_logger(kind)
    loggers: list[Any] = [CSVLogger(str(folder), name="logs", version=version)]
    if kind == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(str(folder), name="tensorboard", version=version, default_hp_metric=False))
    elif kind == "wandb":
        from lightning.pytorch.loggers import WandbLogger

        loggers.append(WandbLogger(name=f"{run_name}-{version}", save_dir=str(folder),
                                   offline=os.environ.get("WANDB_MODE", "offline") == "offline"))
    elif kind == "mlflow":
        from lightning.pytorch.loggers import MLFlowLogger

        uri = os.environ.get("MLFLOW_TRACKING_URI", (folder / "mlruns").resolve().as_uri())
        loggers.append(MLFlowLogger(experiment_name=run_name, run_name=version, tracking_uri=uri))
    return loggers
