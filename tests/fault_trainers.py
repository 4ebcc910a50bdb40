"""Trainers that misbehave on purpose, for the fault tests (named as 'fault_trainers:...')."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from searchsvc.trainer import Dataset, EpochReport, FitOptions, ReportFn
from trainers.mlp.training import MLPTrainer
from trainers.noop import NoopTrainer


class KillOnceTrainer(NoopTrainer):
    """The noop trainer, slowed down, whose first trial to reach epoch 2 SIGKILLs its own
    worker process (once per ``marker`` file). A resumed trial leaves a ``resumed-*`` file.
    Without a ``marker`` param the fault is disarmed (the contract suite runs it so)."""

    name = "kill_once"

    def fit(
        self, params: Mapping[str, Any], data: Dataset, report: ReportFn, options: FitOptions
    ) -> None:
        marker = Path(params["marker"]) if "marker" in params else None
        resume_from = options.resume_from
        if marker is not None and resume_from is not None:
            (marker.parent / f"resumed-{os.getpid()}-{resume_from['epoch']}").touch()

        def report_then_maybe_die(epoch_report: EpochReport) -> None:
            time.sleep(float(params.get("sleep_s", 0.2)))
            if marker is not None and epoch_report.epoch == 2:
                try:
                    os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                except FileExistsError:
                    pass
                else:
                    os.kill(os.getpid(), signal.SIGKILL)
            report(epoch_report)

        clean = {k: v for k, v in params.items() if k not in ("marker", "sleep_s")}
        super().fit(clean, data, report_then_maybe_die, options)


kill_once = KillOnceTrainer()


class SlowMLPTrainer(MLPTrainer):
    """The MLP trainer (which resumes from its checkpoints), each epoch slowed down by
    ``SLOW_EPOCH_S`` seconds (environment), so a test can kill a driver between two epochs."""

    name = "slow_mlp"

    def fit(
        self, params: Mapping[str, Any], data: Dataset, report: ReportFn, options: FitOptions
    ) -> None:
        pause = float(os.environ.get("SLOW_EPOCH_S", "0"))

        def report_slowly(epoch_report: EpochReport) -> None:
            time.sleep(pause)
            report(epoch_report)

        super().fit(params, data, report_slowly, options)


slow_mlp = SlowMLPTrainer()


class RefitFailsTrainer(MLPTrainer):
    """The MLP trainer, except that a refit (``options.refit``) raises at once."""

    name = "refit_fails"

    def fit(
        self, params: Mapping[str, Any], data: Dataset, report: ReportFn, options: FitOptions
    ) -> None:
        if options.refit:
            raise RuntimeError("a refit refused on purpose")
        super().fit(params, data, report, options)


refit_fails = RefitFailsTrainer()
