"""``load_ensemble`` on studies without an ensemble: one-line errors, and nothing created.

No Ray and no training: the Optuna storage is written directly with optuna where a test needs
one, and every store lives in a temporary folder.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import optuna
import pytest

from searchsvc.api import load_ensemble
from searchsvc.errors import EnsembleError, StudyNotRunError
from tests.helpers import LINEAR_TRAINER_SOURCE, base_study


@pytest.fixture(autouse=True)
def _no_ambient_stores(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Stores come from the study file only; the current folder is an empty temp folder."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "SEARCHSVC_STORAGE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("SEARCHSVC_WORKDIR", raising=False)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _one_line(info: pytest.ExceptionInfo[EnsembleError]) -> str:
    message = str(info.value)
    assert "\n" not in message
    return message


def _add_trials(storage: str, name: str, states: list[optuna.trial.TrialState]) -> None:
    study = optuna.create_study(study_name=name, storage=storage, direction="minimize")
    for state in states:
        values = [0.5] if state == optuna.trial.TrialState.COMPLETE else None
        study.add_trial(optuna.trial.create_trial(state=state, values=values))


def test_study_that_never_ran_says_so_and_creates_nothing(
    write_study: Callable[..., Path], tmp_path: Path
) -> None:
    workdir = tmp_path / "work"
    study_file = write_study(base_study(name="never", workdir=str(workdir)))
    before = _files(tmp_path)

    with pytest.raises(StudyNotRunError) as info:
        load_ensemble(study_file)

    assert str(info.value) == f"{study_file}: study 'never' has not run yet"
    assert _files(tmp_path) == before  # no workdir, no optuna.db, no mlflow.db


def test_default_workdir_under_runs_is_not_created(write_study: Callable[..., Path]) -> None:
    study_file = write_study(base_study(name="nowhere"))  # default: ./runs/nowhere/
    with pytest.raises(StudyNotRunError, match="study 'nowhere' has not run yet$"):
        load_ensemble(study_file)
    assert _files(Path.cwd()) == []


def test_study_with_only_pruned_and_failed_trials_has_no_completed_trials(
    write_study: Callable[..., Path], tmp_path: Path
) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    state = optuna.trial.TrialState
    _add_trials(
        f"sqlite:///{workdir / 'optuna.db'}",
        "pruned-only",
        [state.PRUNED, state.PRUNED, state.FAIL],
    )
    study_file = write_study(base_study(name="pruned-only", workdir=str(workdir)))

    with pytest.raises(EnsembleError) as info:
        load_ensemble(study_file)

    message = _one_line(info)
    assert message.startswith(f"{study_file}: study 'pruned-only' has no ensemble yet")
    assert "no completed trials (2 pruned, 1 failed, 0 interrupted, 0 running)" in message
    assert "searchsvc run" in message
    assert not (workdir / "mlflow.db").exists()


def test_storage_without_this_study_says_it_never_ran(
    write_study: Callable[..., Path], tmp_path: Path
) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    _add_trials(f"sqlite:///{workdir / 'optuna.db'}", "another-study", [])
    study_file = write_study(base_study(name="absent", workdir=str(workdir)))
    with pytest.raises(StudyNotRunError) as info:
        load_ensemble(study_file)
    assert str(info.value) == f"{study_file}: study 'absent' has not run yet"
    assert not (workdir / "mlflow.db").exists()


def test_completed_trials_without_an_mlflow_store_do_not_create_one(
    write_study: Callable[..., Path], tmp_path: Path
) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    _add_trials(f"sqlite:///{workdir / 'optuna.db'}", "done", [optuna.trial.TrialState.COMPLETE])
    study_file = write_study(base_study(name="done", workdir=str(workdir)))
    with pytest.raises(EnsembleError) as info:
        load_ensemble(study_file)
    message = _one_line(info)
    assert f"MLflow tracking store {workdir / 'mlflow.db'} does not exist" in message
    assert not (workdir / "mlflow.db").exists()


def test_model_uri_with_a_missing_sqlite_tracking_store_does_not_create_it(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "nope" / "mlflow.db"
    with pytest.raises(EnsembleError) as info:
        load_ensemble("models:/x@champion", tracking_uri=f"sqlite:///{missing}")
    assert "models:/x@champion: no ensemble to load" in _one_line(info)
    assert not missing.exists() and not missing.parent.exists()
    # MLflow's default tracking URI (./mlflow.db since MLflow 3) is not created either.
    with pytest.raises(EnsembleError, match="does not exist"):
        load_ensemble("models:/x@champion")
    assert _files(Path.cwd()) == []


def test_completed_trials_without_a_registered_ensemble_point_to_the_ensemble_command(
    write_study: Callable[..., Path], tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    workdir = tmp_path / "work"
    workdir.mkdir()
    _add_trials(f"sqlite:///{workdir / 'optuna.db'}", "built", [optuna.trial.TrialState.COMPLETE])
    tracking = f"sqlite:///{workdir / 'mlflow.db'}"
    MlflowClient(tracking_uri=tracking).search_experiments()  # an empty, existing store
    study_file = write_study(base_study(name="built", workdir=str(workdir)))
    with pytest.raises(EnsembleError) as info:
        load_ensemble(study_file)
    message = _one_line(info)
    assert message.startswith(f"{study_file}: no ensemble yet: no registered model ")
    assert f"(run `searchsvc ensemble {study_file}`)" in message


def test_study_with_a_registered_champion_still_loads(
    write_study: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The control case: the checks above must not stand in the way of a finished study.
    import mlflow
    import numpy as np
    import torch
    from mlflow.tracking import MlflowClient
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    from searchsvc.ensemble.predictor import Ensemble, Member
    from searchsvc.ensemble.pyfunc import log_ensemble, set_champion_if_better

    module = "searchsvc_test_api_trainer"
    (tmp_path / f"{module}.py").write_text(LINEAR_TRAINER_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    workdir = tmp_path / "work"
    workdir.mkdir()
    _add_trials(
        f"sqlite:///{workdir / 'optuna.db'}", "finished", [optuna.trial.TrialState.COMPLETE]
    )
    tracking = f"sqlite:///{workdir / 'mlflow.db'}"
    x = np.full((2, 4), 0.5, np.float32)
    ensemble = Ensemble(
        [Member(0, 1.0, {}, 0.5)], [torch.nn.Linear(4, 3)], 4, 3, feature_range=(0.0, 1.0)
    )
    with _use_tracking_uri(tracking):
        experiment = mlflow.create_experiment("finished", (workdir / "mlartifacts").as_uri())
        with mlflow.start_run(experiment_id=experiment):
            info = log_ensemble(
                ensemble, name="ensemble", registered_model_name="finished",
                trainer_ref=f"{module}:tiny", input_example=x,
            )  # fmt: skip
        set_champion_if_better(
            MlflowClient(tracking), "finished", info.registered_model_version, 0.5
        )
    study_file = write_study(base_study(name="finished", workdir=str(workdir)))

    loaded = load_ensemble(study_file)

    np.testing.assert_allclose(loaded.predict_proba(x), ensemble.predict_proba(x), atol=1e-6)
    assert loaded.feature_range == (0.0, 1.0)
