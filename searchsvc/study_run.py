"""One study, one command: the ``StudyRun`` that every stage is handed.

A command builds one ``StudyRun`` from the validated study file and its options (nothing is
created then), opens what it needs (the data, the Optuna study, the MLflow tracker) once,
hands the run to the stages (search, ensemble, report, status), and ends it through
:meth:`StudyRun.lifecycle`. Whatever ends the command (its end, an error, Ctrl-C, SIGTERM),
the lifecycle ends the MLflow parent run with the matching status (FINISHED, FAILED, KILLED),
says what the tracker could not write, and releases the driver's claim on the study.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from searchsvc import keys
from searchsvc.errors import (
    SearchsvcError,
    StudyFailed,
    StudyNotRunError,
    StudySpecError,
    TrackingError,
    first_line,
)
from searchsvc.run_closing import best_effort, shutdown_ray, stop_what_a_dead_driver_left
from searchsvc.settings import Settings
from searchsvc.signals import signals_held, stop_signals
from searchsvc.study.locations import StudyPaths, resolve_paths
from searchsvc.study.spec import StudySpec

if TYPE_CHECKING:
    import optuna

    from searchsvc.search.claim import StudyClaim
    from searchsvc.study.loader import Study
    from searchsvc.tracking import StudyTracker
    from searchsvc.trainer import Dataset, Trainer

__all__ = ["RunOutcome", "StudyRun"]

logger = logging.getLogger(__name__)

_SQLITE = "sqlite:///"


@dataclass
class RunOutcome:
    """How a command's run ended, filled in by :meth:`StudyRun.lifecycle`.

    Attributes:
        interrupted: Ctrl-C or SIGTERM stopped it.
        stage: the stage it was in when it stopped (``"searching"``, ...).
        signal: ``"SIGTERM"`` when that signal stopped it, else ``"SIGINT"``.
        status: the MLflow status the parent run was ended with ("" if there was none).
        pending: tracker writes still unwritten at the end (MLflow unreachable).
    """

    interrupted: bool = False
    stage: str = ""
    signal: str = ""
    status: str = ""
    pending: int = 0


@dataclass
class StudyRun:
    """A study's state for one command, built once and handed to every stage.

    Attributes:
        spec: the study spec with the command's overrides (``--n-trials``, ``--data-dir``).
        paths: where the study's stores and folder are.
        source: the study file (for messages), or None for a spec built in code.
        text: the study file's text (stored with the parent run).
        search_path: folders a ``module:object`` trainer is imported from, here and on
            every Ray worker.
        study: the one Optuna handle, once opened.
        tracker: the one MLflow writer, once opened.
        data: the data set, once loaded (in the driver only).
        trainer_instance: the trainer, once imported (see ``trainer``) or as given.
        settings: the environment variables, read once when the command built the run.
        stage: what the command is doing now (named in interrupt and error messages).
    """

    spec: StudySpec
    paths: StudyPaths
    source: Path | None = None
    text: str = ""
    search_path: tuple[str, ...] = ()
    study: optuna.Study | None = None
    tracker: StudyTracker | None = None
    data: Dataset | None = None
    settings: Settings = field(default_factory=Settings)
    stage: str = "starting"
    claim: StudyClaim | None = None  # this command's hold on the study (one driver)
    ray_address: str | None = None  # the cluster named by --address (checked by preflight)
    ray_session: str | None = None  # the session folder of the local Ray this run started
    owns_parent: bool = False  # this command set the parent run RUNNING, so it ends it
    trainer_instance: Trainer | None = field(default=None, repr=False)

    # ----------------------------------------------------------------- building

    @classmethod
    def prepare(
        cls,
        study: Study,
        *,
        n_trials: int | None = None,
        tracking_uri: str | None = None,
        storage: str | None = None,
        workdir: str | Path | None = None,
        data_dir: str | Path | None = None,
        settings: Settings | None = None,
    ) -> StudyRun:
        """The run of a validated study file with the command's options; creates nothing.

        ``settings``: the environment (default: read now, once, for this command).

        Raises:
            StudySpecError: an option or an environment variable is malformed (a URL, a
                missing ``--data-dir``).
        """
        settings = settings if settings is not None else Settings.from_env()
        spec = study.spec
        if n_trials is not None:
            budget = spec.budget.model_copy(update={"n_trials": n_trials})
            spec = spec.model_copy(update={"budget": budget})
        if data_dir is not None:
            if not Path(data_dir).is_dir():
                raise StudySpecError(f"--data-dir: {data_dir} is not a folder")
            # The option beats the study file's dataset.data_dir, as every option beats the file.
            dataset = spec.dataset.model_copy(update={"data_dir": str(Path(data_dir).resolve())})
            spec = spec.model_copy(update={"dataset": dataset})
        paths = resolve_paths(
            spec, tracking_uri=tracking_uri, storage=storage, workdir=workdir, settings=settings
        )
        return cls(
            spec=spec, paths=paths, source=study.path, text=study.text,
            search_path=study.search_path, settings=settings,
        )  # fmt: skip

    def preflight(self, address: str | None = None) -> None:
        """What a run needs from outside, checked before it creates anything: the data set's
        files are on disk or downloadable, the Ray cluster named answers, an ``http(s)://``
        MLflow tracking server answers, and the ``warm_start`` study can be read and shares
        this space's distributions.

        Raises:
            StudySpecError: one line per problem, naming the key or option at fault.
        """
        from searchsvc.data.datasets import dataset_problem
        from searchsvc.execution.preflight import ray_address_problem, tracking_server_problem
        from searchsvc.search.warm_start import warm_start_problem

        dataset = self.spec.dataset
        data = dataset_problem(
            dataset.name, data_dir=dataset.data_dir, path=dataset.path, settings=self.settings
        )
        problems = [f"{self.where}: {p}" for p in (data, warm_start_problem(self.spec)) if p]
        origin = "--address" if address else "RAY_ADDRESS"
        self.ray_address = address or self.ray_address
        ray = ray_address_problem(address or self.settings.ray_address, origin)
        problems += [p for p in (ray, tracking_server_problem(self.paths.tracking_uri)) if p]
        if problems:
            raise StudySpecError(problems)

    @property
    def where(self) -> str:
        """How messages name the study: its file, else its name."""
        return str(self.source) if self.source is not None else self.spec.name

    @property
    def budget(self) -> int:
        """Finished trials this run aims for (``budget.n_trials``, capped at a grid's size)."""
        budget = self.spec.budget.n_trials
        if self.spec.sampler.name == "grid":
            return min(budget, self.spec.grid_size())
        return budget

    @property
    def trainer(self) -> Trainer:
        """The study's trainer, imported on first use (``status`` never needs it)."""
        if self.trainer_instance is None:
            from searchsvc.registry import resolve_trainer

            self.trainer_instance = resolve_trainer(self.spec.trainer, self.search_path)
        return self.trainer_instance

    def enter(self, stage: str) -> None:
        """Say what the command does next (named if it stops there)."""
        self.stage = stage
        logger.info("%s: %s", self.spec.name, stage)

    # ----------------------------------------------------------------- opening

    def load_data(self) -> Dataset:
        """The study's data set, loaded once (in the driver) and kept on the run."""
        from searchsvc.data.datasets import load_dataset

        dataset = self.spec.dataset
        self.data = load_dataset(
            dataset.name,
            data_dir=dataset.data_dir,
            path=dataset.path,
            val_size=dataset.val_size,
            train_subset=dataset.train_subset,
            seed=self.spec.seed,
            settings=self.settings,
        )
        return self.data

    def open_search(self) -> list[int]:
        """Open (or create) the Optuna study, claim it as its driver and recover orphans.

        Returns:
            The numbers of the trials a dead driver left running (now asked for again).
        """
        from searchsvc.search.claim import StudyClaim
        from searchsvc.search.samplers import build_sampler
        from searchsvc.search.storage import open_study, recover_interrupted
        from searchsvc.search.warm_start import apply_start_points

        self.paths.workdir.mkdir(parents=True, exist_ok=True)
        self.study = open_study(self.spec, self.paths.storage_url)
        # Before anything else: a second live driver would take the first one's trials as orphans.
        self.claim = StudyClaim.acquire(self.paths.storage_url, self.spec.name)
        stop_what_a_dead_driver_left(self.claim)
        recovered = recover_interrupted(self.study)
        apply_start_points(self.study, self.spec)  # once per study: enqueue, warm start
        # A resumed seeded sampler must not replay the start-up points of the first run.
        seed = self.spec.seed + len(self.study.get_trials(deepcopy=False))
        self.study.sampler = build_sampler(self.spec, seed=seed)
        # `searchsvc status` shows progress toward the budget of the last run (--n-trials too).
        self.study.set_user_attr(keys.BUDGET, self.budget)
        return recovered

    def open_tracking(self, *, tidy: bool = True) -> int:
        """Find or create the MLflow parent run (RUNNING until the lifecycle ends it).

        Args:
            tidy: also end trial runs a dead driver left RUNNING and hand interrupted trials'
                runs to their successors (only the study's driver may).

        Returns:
            How many trial runs were left RUNNING (now ended).
        """
        from searchsvc.search.storage import resumed_trials
        from searchsvc.tracking import StudyTracker

        self.tracker = StudyTracker(
            self.paths.tracking_uri, artifact_location=self.paths.artifact_location
        )
        parent = self.tracker.start_study(self.spec, self.text)
        self.owns_parent = True
        self._replay_journal()
        if not tidy:
            return 0
        stale = self.tracker.close_stale_trial_runs()
        if self.study is not None:
            self.tracker.adopt_interrupted_runs(
                resumed_trials(self.study), metric=self.spec.primary.metric
            )
            self.study.set_user_attr(keys.PARENT_RUN, parent)
        return stale

    def _replay_journal(self) -> None:
        """Make the MLflow writes an earlier driver journaled and could not make (it died, or
        the server was away past the final wait), before anything reads the runs."""
        from searchsvc.journal import JOURNAL_DIR

        tracker = self.tracker
        waiting = tracker.use_journal(self.paths.workdir / JOURNAL_DIR)
        if waiting:
            logger.warning("MLflow: writing %d journaled update(s) of an earlier run", waiting)
        if waiting and not tracker.flush(wait_s=self.settings.mlflow_wait_s):
            raise TrackingError(f"MLflow at {tracker.tracking_uri} stopped answering while "
                                f"{tracker.journal_path} was written")  # fmt: skip

    def open_existing(self) -> optuna.Study:
        """The Optuna study of a study that has run, opened without creating anything.

        For the commands that read results (``status``, ``ensemble``, ``report``,
        ``predict``): a study that never ran leaves no database, file or run behind.

        Raises:
            StudyNotRunError: the storage or the study in it does not exist.
        """
        from searchsvc.search.storage import open_study, study_names

        storage = self.paths.storage_url
        not_run = StudyNotRunError(f"{self.where}: study {self.spec.name!r} has not run yet")
        if storage.startswith(_SQLITE) and not Path(storage.removeprefix(_SQLITE)).exists():
            raise not_run
        if self.spec.name not in study_names(storage):
            raise not_run
        self.study = open_study(self.spec, storage, create=False)
        return self.study

    def attach_tracking(self) -> StudyTracker | None:
        """The tracker on the study's existing parent run, creating nothing; None if none."""
        from searchsvc.tracking import StudyTracker

        uri = self.paths.tracking_uri
        if uri.startswith(_SQLITE) and not Path(uri.removeprefix(_SQLITE)).exists():
            return None
        tracker = StudyTracker(uri, artifact_location=self.paths.artifact_location)
        if not tracker.attach(self.spec, self.study):
            return None
        self.tracker = tracker
        return tracker

    # ----------------------------------------------------------------- ending

    @contextlib.contextmanager
    def lifecycle(self) -> Iterator[RunOutcome]:
        """Run the command's stages; end the parent run and release the claim however it ends.

        Ctrl-C and SIGTERM stop the stages and are swallowed (``outcome.interrupted``; the
        parent run ends KILLED); a searchsvc error ends it FAILED and propagates; any other
        exception does too, as :class:`StudyFailed` naming the stage. Further signals are
        ignored while the run closes, so the closing cannot be cut short.
        """
        outcome = RunOutcome()
        status = "FINISHED"
        with stop_signals(outcome):
            try:
                yield outcome
            except KeyboardInterrupt:
                status = "KILLED"
                outcome.interrupted = True
                outcome.stage = self.stage
                outcome.signal = outcome.signal or "SIGINT"
            except SearchsvcError:
                status = "FAILED"
                raise
            except Exception as exc:
                status = "FAILED"
                logger.debug("%s failed while %s", self.where, self.stage, exc_info=True)
                first = first_line(exc)
                raise StudyFailed(
                    f"{self.where}: failed while {self.stage}: {type(exc).__name__}"
                    + (f": {first}" if first else "")
                    + " (run with -v for the traceback)"
                ) from exc
            finally:
                with signals_held():
                    self.close(status, outcome)

    def close(self, status: str, outcome: RunOutcome | None = None) -> None:
        """End what this run opened; every step is tried, none lets an error out."""
        outcome = outcome if outcome is not None else RunOutcome()
        if "ray" in sys.modules:
            best_effort("stop Ray", shutdown_ray)
        if self.ray_session is not None:
            from searchsvc.execution.leftovers import stop_session

            session = self.ray_session
            best_effort("stop Ray's leftover processes", lambda: stop_session(session))
        if self.claim is not None and self.study is not None:
            from searchsvc.search.storage import recover_interrupted

            # Trials Ray did not finish become interrupted (asked for again), not RUNNING.
            best_effort("record interrupted trials", lambda: recover_interrupted(self.study))
        if self.tracker is not None and self.owns_parent:
            tracker = self.tracker
            best_effort("write deferred MLflow updates", tracker.flush_now)
            if self.claim is not None:
                best_effort("end stale trial runs", tracker.close_stale_trial_runs)
            if best_effort("end the MLflow parent run", lambda: tracker.end_study(status)):
                outcome.status = status
            outcome.pending = tracker.pending
            if tracker.pending:
                logger.warning(
                    "MLflow at %s: %d update(s) not written (unreachable), kept in %s; "
                    "`searchsvc sync` or the next run writes them", tracker.tracking_uri,
                    tracker.pending, tracker.journal_path or "memory (lost)",
                )  # fmt: skip
        if self.claim is not None:
            if best_effort("release the study", self.claim.release):
                self.claim = None
