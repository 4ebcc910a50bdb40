"""A trainer that trains nothing: it reports a made-up curve at once.

It measures the service's own overhead per trial (``bench/overhead.py``) and drives fast tests
of the search machinery. Its "validation loss" is a smooth function of ``lr`` (best near 1e-2)
and of any other float params, so samplers have something to find. The param ``epoch_sleep_s``
(0 by default) makes each epoch take that long, as a stand-in for training when measuring how
many trials run at once (``bench/driver_scale.py``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from searchsvc.trainer import BaseTrainer, Dataset, EpochReport, FitOptions, ReportFn

__all__ = ["NoopTrainer", "trainer"]


class NoopTrainer(BaseTrainer):
    """Reports ``val_loss``/``val_accuracy`` per epoch without training (see module doc).

    It has no weights to keep (its trials cannot be ensemble members), resumes from the epoch
    of its ``training_state`` and accepts any param (tests give it whatever they search).
    """

    name: ClassVar[str] = "noop"
    objective_metrics: ClassVar[frozenset[str]] = frozenset(
        {"train_loss", "val_loss", "val_accuracy", "n_params", "epoch_time_s"}
    )
    supports_resume: ClassVar[bool] = True
    has_weights: ClassVar[bool] = False

    def fit(
        self, params: Mapping[str, Any], data: Dataset, report: ReportFn, options: FitOptions
    ) -> None:
        """Report the made-up curve from the epoch after ``options.resume_from`` on."""
        if params.get("fail"):
            raise RuntimeError("noop trainer asked to fail (param fail=true)")
        lr = float(params.get("lr", 1e-2))
        base = (math.log10(lr) + 2.0) ** 2 + sum(
            float(v) ** 2 for k, v in params.items() if k.startswith("x") and isinstance(v, float)
        )
        sleep_s = float(params.get("epoch_sleep_s", 0.0))
        resume_from = options.resume_from
        start = int(resume_from["epoch"]) if resume_from else 0
        for epoch in range(start + 1, options.max_epochs + 1):
            if sleep_s > 0:
                time.sleep(sleep_s)
            val_loss = base + 1.0 / epoch
            metrics = {
                "train_loss": val_loss * 0.9,
                "val_loss": val_loss,
                "val_accuracy": 1.0 / (1.0 + val_loss),
                "n_params": 0.0,
                "epoch_time_s": 0.0,
            }
            report(EpochReport(epoch=epoch, metrics=metrics, training_state={"epoch": epoch}))

    def build_network(
        self, params: Mapping[str, Any], n_features: int, n_classes: int
    ) -> torch.nn.Module:
        return torch.nn.Linear(n_features, n_classes)


trainer = NoopTrainer()
