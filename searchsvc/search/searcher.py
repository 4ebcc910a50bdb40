"""A Ray Tune searcher around a persistent Optuna study (ask/tell).

Why not Ray's ``OptunaSearch``: it records a trial stopped by the scheduler as COMPLETE with
its last value, and never reports per-epoch values, so TPE learns from truncated curves as if
they were finished. Here every epoch's value is reported to the Optuna trial, trials stopped
early by the scheduler (or by divergence) are told PRUNED, errors FAIL, and a completed trial's
value is the one of the epoch whose weights are kept.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from ray.tune.search import Searcher

from searchsvc import keys
from searchsvc.errors import first_line
from searchsvc.search.budget import TimeBudget
from searchsvc.search.space import suggest_params
from searchsvc.search.storage import retrying
from searchsvc.search.trial_config import RESUMED_AFTER, TrialTicket, make_config
from searchsvc.study.diagnosis import Diagnosis, Thresholds, diagnose
from searchsvc.study.spec import StudySpec

__all__ = ["OptunaSearcher", "TrialOutcome", "WeightsHook"]

logger = logging.getLogger(__name__)

TrialState = optuna.trial.TrialState
COMPLETE, PRUNED, FAIL = TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL
_CURVES = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")


@dataclass
class TrialOutcome:
    """How a trial ended, as told to Optuna and shown everywhere else."""

    number: int
    state: TrialState  # COMPLETE | PRUNED | FAIL
    values: list[float] | None = None
    reason: str = ""
    best_epoch: int = 0
    epochs: int = 0
    diagnosis: Diagnosis | None = None


WeightsHook = Callable[[str, TrialOutcome], "str | None"]
"""``(trial_id, outcome) -> keys.WEIGHTS value``: stores a COMPLETE trial's weights before
Optuna is told, and says what happened (``"stored"``, ``"missing: <why>"``), or None when the
trainer keeps no weights (no attribute then)."""

# A test hook, never set outside the tests: SIGKILL the driver right after the first COMPLETE
# tell, the moment a dead driver used to leave a COMPLETE trial with no stored weights.
_TEST_DIE_AFTER_TELL = "SEARCHSVC_TEST_DIE_AFTER_TELL"


@dataclass
class _Live:
    trial: optuna.Trial
    params: dict[str, Any]
    history: dict[int, dict[str, float]] = field(default_factory=dict)  # epoch -> objectives
    curves: dict[str, list[float]] = field(default_factory=dict)  # for the diagnosis
    carried: _Carried | None = None  # an interrupted trial's epochs, until the worker confirms


@dataclass(frozen=True)
class _Carried:
    """The epochs of the trial whose checkpoint a successor is to continue from."""

    owner: int  # the trial that wrote the checkpoint
    epoch: int  # the checkpoint's epoch
    values: dict[int, float]  # its intermediate values up to that epoch
    curves: dict[str, list[float]]


class OptunaSearcher(Searcher):
    """Suggests params from an Optuna study and tells it how each trial ended.

    Args:
        spec: the study spec (space, objectives).
        study: the Optuna study, already created in its storage.
        stopped_by_scheduler: the set the scheduler fills with the trial ids it stopped early.
        time_budget: the search's time budget (none by default): once it runs out, no trial
            starts and the trials it stops are PRUNED.
    """

    def __init__(
        self,
        spec: StudySpec,
        study: optuna.Study,
        stopped_by_scheduler: set[str],
        time_budget: TimeBudget | None = None,
    ) -> None:
        objectives = spec.objectives
        super().__init__(
            metric=objectives[0].metric
            if len(objectives) == 1
            else [o.metric for o in objectives],
            mode=objectives[0].mode if len(objectives) == 1 else [o.mode for o in objectives],
        )
        self._spec = spec
        self._study = study
        self._stopped = stopped_by_scheduler
        self._budget = time_budget if time_budget is not None else TimeBudget(None)
        self._live: dict[str, _Live] = {}
        self.outcomes: dict[str, TrialOutcome] = {}
        self.restarted: set[str] = set()  # successors that started again from epoch 1
        # Set by the tracking callback: a trial is COMPLETE in Optuna only with its weights
        # stored or an attribute saying why not (Tune notifies the searcher before callbacks).
        self.weights_hook: WeightsHook | None = None

    # Tune pickles its search algorithm into the experiment folder; the study lives in Optuna
    # storage, so the pickle only needs to survive, not to restore anything (no save/restore).
    def __getstate__(self) -> dict[str, Any]:
        # Without the store URLs: the pickle lands in the study folder, and they may carry a
        # password.
        hidden = {"storage": None, "tracking_uri": None, "warm_start": None}
        return {"_spec": self._spec.model_copy(update=hidden)}

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self._budget.expired():  # before ask: no trial is created that would not run
            return Searcher.FINISHED
        trial = retrying(self._study.ask, "ask")
        params = retrying(lambda: suggest_params(trial, self._spec.search_space), "suggest")
        live = _Live(trial=trial, params=params)
        self._live[trial_id] = live
        attrs = trial.user_attrs
        # The one seed rule: the study's seed plus the first trial of the chain's number.
        seed = self._spec.seed + int(attrs.get(keys.SEED_OF, trial.number))
        replaces = attrs.get(keys.RESUME_OF)
        ticket = TrialTicket(
            number=trial.number,
            seed=seed,
            replaces=int(replaces) if replaces is not None else None,
        )
        checkpoint = attrs.get(keys.CHECKPOINT)
        if checkpoint:
            # It is to continue an interrupted trial from that trial's last checkpoint. The
            # checkpoint's owner wrote it: the interrupted trial, or an earlier one when that
            # trial was itself interrupted before its first checkpoint.
            owner = int(checkpoint.get("owner", attrs[keys.RESUME_OF]))
            done = int(checkpoint["epoch"])
            previous = self._study.get_trials(deepcopy=False)[owner]
            values = {s: v for s, v in previous.intermediate_values.items() if s <= done}
            curves = {k: list(v) for k, v in checkpoint["curves"].items()}
            live.carried = _Carried(owner, done, values, curves)
            ticket = dataclasses.replace(
                ticket, resume_checkpoint=checkpoint["path"], resume_of=owner
            )
        return make_config(params, ticket)

    def _settle_carried(self, trial_id: str, live: _Live, resumed_after: int) -> None:
        """On a successor's first result: its predecessor's epochs count as its own only when
        the worker continued from that checkpoint; a worker that started again from epoch 1
        (checkpoint gone, a trainer without resume) is a restart whose values are its own."""
        carried, live.carried = live.carried, None
        if carried is None:
            return
        if resumed_after != carried.epoch:
            logger.warning(
                "trial %d was to continue trial %d after epoch %d but started again from epoch "
                "1; it is recorded as a restart (its own values, a new MLflow run)",
                live.trial.number, carried.owner, carried.epoch,
            )  # fmt: skip
            self.restarted.add(trial_id)
            retrying(lambda: live.trial.set_user_attr(keys.RESTARTED, True), "set_user_attr")
            return
        for step, value in sorted(carried.values.items()):
            retrying(lambda s=step, v=value: live.trial.report(v, step=s), "report")
            live.history[step] = {self._spec.primary.metric: value}
        live.curves.update(carried.curves)

    def note_checkpoint(self, trial_id: str, path: str, epoch: int) -> None:
        """Remember where the trial's latest checkpoint is, so a new driver can resume it."""
        live = self._live.get(trial_id)
        if live is None:
            return
        epoch = epoch or max(live.history, default=0)
        # One storage write per epoch: where to resume, from which epoch, with which curves.
        record = {
            "path": path,
            "epoch": epoch,
            "owner": live.trial.number,
            "curves": {k: v[:epoch] for k, v in live.curves.items()},
        }
        retrying(lambda: live.trial.set_user_attr(keys.CHECKPOINT, record), "set_user_attr")

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        live = self._live.get(trial_id)
        if live is None:
            return
        if live.carried is not None:
            self._settle_carried(trial_id, live, int(result.get(RESUMED_AFTER, 0)))
        epoch = int(result.get("epoch", result.get("training_iteration", 0)))
        if epoch in live.history:  # Tune repeats the last result when the trial ends
            return
        live.history[epoch] = {
            o.metric: float(result[o.metric]) for o in self._spec.objectives if o.metric in result
        }
        for key in _CURVES:
            if key in result:
                live.curves.setdefault(key, []).append(float(result[key]))
        value = live.history[epoch].get(self._spec.primary.metric)
        # Intermediate values exist only for single-objective studies in Optuna.
        if len(self._spec.objectives) == 1 and value is not None and math.isfinite(value):
            retrying(lambda: live.trial.report(value, step=epoch), "report")

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        if result:
            # Tune skips on_trial_result for the result that made the scheduler stop the trial.
            self.on_trial_result(trial_id, result)
        live = self._live.pop(trial_id, None)
        if live is None:
            return
        outcome = self._classify(trial_id, live, result, error)
        outcome.diagnosis = diagnose(
            live.curves,
            diverged=bool((result or {}).get("diverged")),
            thresholds=Thresholds(**self._spec.diagnosis.model_dump()),
        )
        self.outcomes[trial_id] = outcome
        state = outcome.state
        attrs = {
            keys.REASON: outcome.reason,
            keys.EPOCHS: outcome.epochs,
            keys.BEST_EPOCH: outcome.best_epoch,
            keys.DIAGNOSIS: outcome.diagnosis.label,
            keys.DIAGNOSIS_EVIDENCE: dict(outcome.diagnosis.evidence),
        }
        if outcome.reason.startswith("diverged"):
            attrs[keys.DIVERGED] = True
        if state == COMPLETE:
            weights = self._store_weights(trial_id, outcome)
            if weights is not None:  # before the tell: Optuna refuses attrs on finished trials
                attrs[keys.WEIGHTS] = weights
        try:
            for key, value in attrs.items():
                retrying(lambda k=key, v=value: live.trial.set_user_attr(k, v), "set_user_attr")
            if state == optuna.trial.TrialState.COMPLETE:
                retrying(lambda: self._study.tell(live.trial, outcome.values), "tell")
            else:
                retrying(lambda: self._study.tell(live.trial, state=state), "tell")
        except Exception:  # never let bookkeeping kill the study; the trial stays visible
            logger.exception("could not tell Optuna the outcome of trial %d", outcome.number)
        if state == COMPLETE and os.environ.get(_TEST_DIE_AFTER_TELL) == "1":
            os.kill(os.getpid(), signal.SIGKILL)  # the test hook above; tests only

    def _store_weights(self, trial_id: str, outcome: TrialOutcome) -> str | None:
        """The :data:`keys.WEIGHTS` value of a COMPLETE trial, once the hook stored them."""
        if self.weights_hook is None:
            return None
        try:
            return self.weights_hook(trial_id, outcome)
        except Exception as exc:  # the hook's own bug must not cost the trial its outcome
            logger.exception("could not store the weights of trial %d", outcome.number)
            return f"{keys.WEIGHTS_MISSING}: {type(exc).__name__}: {first_line(exc)}"

    def _classify(
        self, trial_id: str, live: _Live, result: dict[str, Any] | None, error: bool
    ) -> TrialOutcome:
        number = live.trial.number
        epochs = max(live.history, default=0)
        best_epoch = int((result or {}).get("best_epoch", 0)) or epochs
        if error:
            return TrialOutcome(number, FAIL, reason="error in the trainer", epochs=epochs)
        if epochs == 0:
            return TrialOutcome(number, FAIL, reason="ended without reporting", epochs=epochs)
        if not result:
            # Stopped while paused (HyperBand's halving losers): Tune passes no result, but every
            # epoch it ran was reported. Cut short, so PRUNED, whoever stopped it.
            by = self._spec.scheduler.name if trial_id in self._stopped else "Tune"
            return TrialOutcome(
                number, PRUNED, reason=f"stopped by {by} at epoch {epochs}", epochs=epochs
            )
        if result.get("diverged"):
            return TrialOutcome(
                number, PRUNED, reason=f"diverged at epoch {epochs}", epochs=epochs
            )
        # A stop at the last epoch cuts nothing short: the trial ran its whole budget.
        if trial_id in self._budget.stopped and epochs < self._spec.budget.max_epochs:
            return TrialOutcome(
                number, PRUNED, reason=f"stopped by the time budget at epoch {epochs}",
                epochs=epochs,
            )  # fmt: skip
        if trial_id in self._stopped and epochs < self._spec.budget.max_epochs:
            name = self._spec.scheduler.name
            return TrialOutcome(
                number, PRUNED, reason=f"stopped by {name} at epoch {epochs}", epochs=epochs
            )
        # The value of the epoch whose weights are kept (the trainer's best epoch).
        row = live.history.get(best_epoch) or live.history[epochs]
        values = [row.get(o.metric, math.nan) for o in self._spec.objectives]
        if not all(math.isfinite(v) for v in values):
            names = [o.metric for o in self._spec.objectives]
            return TrialOutcome(
                number, FAIL, reason=f"objective {names} not finite: {values}", epochs=epochs
            )
        reason = "completed" if epochs >= self._spec.budget.max_epochs else "early stopping"
        return TrialOutcome(number, COMPLETE, values, reason, best_epoch, epochs)
