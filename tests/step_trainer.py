"""A small plug-in trainer that tests copy beside a study file (``trainer: steptrainer:trainer``).

A linear softmax model trained by full-batch gradient steps: fast, deterministic for a seed,
with real weights (so an ensemble can be built from its trials). Two environment variables
let a test time its signals: ``STEP_MARKER`` (a file touched at every epoch) and
``STEP_EPOCH_S`` (seconds each epoch sleeps).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from searchsvc.trainer import BaseTrainer, EpochReport


class StepTrainer(BaseTrainer):
    name = "step"
    objective_metrics = frozenset({"val_loss", "val_accuracy"})

    def build_network(self, params, n_features, n_classes):
        return nn.Linear(n_features, n_classes)

    def fit(self, params, data, report, options):
        torch.manual_seed(options.seed)
        net = self.build_network(params, data.n_features, data.n_classes)
        opt = torch.optim.SGD(net.parameters(), lr=float(params["lr"]))
        x, y = torch.tensor(data.x_train), torch.tensor(data.y_train)
        xv, yv = torch.tensor(data.x_val), torch.tensor(data.y_val)
        marker, pause = os.environ.get("STEP_MARKER"), float(os.environ.get("STEP_EPOCH_S", "0"))
        for epoch in range(1, options.max_epochs + 1):
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                logits = net(xv)
                metrics = {
                    "val_loss": F.cross_entropy(logits, yv).item(),
                    "val_accuracy": (logits.argmax(1) == yv).float().mean().item(),
                }
            state = {k: v.clone() for k, v in net.state_dict().items()}
            report(EpochReport(epoch, metrics, state))
            if marker:
                Path(marker).touch()
            time.sleep(pause)


trainer = StepTrainer()
