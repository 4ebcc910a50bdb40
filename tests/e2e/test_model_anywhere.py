"""The registered ensemble serves anywhere: in a fresh virtual environment holding only MLflow
and the pinned torch (no searchsvc, no trainers, no user module), from a folder outside the
checkout, ``mlflow.pyfunc.load_model("models:/<study>@champion")`` predicts, because the model
carries its own code and its pip requirements exist."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from mlflow.tracking._tracking_service.utils import _use_tracking_uri

from searchsvc.ensemble.predictor import Ensemble, Member
from searchsvc.ensemble.pyfunc import log_ensemble, set_champion_if_better
from searchsvc.registry import resolve_trainer
from tests.helpers import REPO, clean_env

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

N_FEATURES, N_CLASSES = 20, 4
OWN_MODULE = "own_trainer_anywhere"
OWN_SOURCE = textwrap.dedent(
    """
    from torch import nn

    from searchsvc.trainer import BaseTrainer


    class Wide(BaseTrainer):
        name = "wide"
        objective_metrics = frozenset({"val_loss"})

        def fit(self, *args, **kwargs):
            raise NotImplementedError

        def build_network(self, params, n_features, n_classes):
            return nn.Sequential(nn.Linear(n_features, params["hidden"]), nn.ReLU(),
                                 nn.Linear(params["hidden"], n_classes))


    trainer = Wide()
    """
)
LOAD = textwrap.dedent(
    """
    import importlib.util, json, sys

    import mlflow
    import numpy as np

    names = ("searchsvc", "trainers", "own_trainer_anywhere")  # OWN_MODULE
    found = [m for m in names if importlib.util.find_spec(m)]
    x = np.load(sys.argv[1])
    out = {name: mlflow.pyfunc.load_model(f"models:/{name}@champion").predict(x).tolist()
           for name in sys.argv[2:]}
    print(json.dumps({"importable_before_loading": found, "predictions": out}))
    """
)


def _register(name: str, trainer_ref: str, params: list[dict]) -> Ensemble:
    trainer = resolve_trainer(trainer_ref)
    torch.manual_seed(len(name))
    networks = [trainer.build_network(p, N_FEATURES, N_CLASSES) for p in params]
    members = [Member(i, 1.0, p, None) for i, p in enumerate(params)]
    ensemble = Ensemble(members, networks, N_FEATURES, N_CLASSES, feature_range=(0.0, 1.0))
    with mlflow.start_run():
        info = log_ensemble(
            ensemble, name="ensemble", registered_model_name=name, trainer_ref=trainer_ref
        )
    set_champion_if_better(MlflowClient(), name, info.registered_model_version, 0.5)
    return ensemble


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Ensemble]]:
    """Two champions in one store: the built-in mlp trainer's and a user module's."""
    root = tmp_path_factory.mktemp("anywhere")
    uri = f"sqlite:///{root}/mlflow.db"
    own_dir = root / "own"
    own_dir.mkdir()
    (own_dir / f"{OWN_MODULE}.py").write_text(OWN_SOURCE)
    sys.path.insert(0, str(own_dir))
    try:
        with _use_tracking_uri(uri):
            mlflow.set_experiment("anywhere")
            built = {
                "mlp-anywhere": _register(
                    "mlp-anywhere", "mlp", [{"n_layers": 1, "width_1": 16}, {"n_layers": 2}]
                ),
                "own-anywhere": _register(
                    "own-anywhere", f"{OWN_MODULE}:trainer", [{"hidden": 8}, {"hidden": 5}]
                ),
            }
    finally:
        sys.path.remove(str(own_dir))
        sys.modules.pop(OWN_MODULE, None)
    (own_dir / f"{OWN_MODULE}.py").unlink()  # from here on only the model holds its code
    return uri, built


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtual environment with only MLflow and torch, as pinned for this project."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    proc = subprocess.run(
        [*pip, "-c", str(REPO / "constraints.txt"), "mlflow", "torch==2.13.0"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return venv / "bin" / "python"


def test_the_champion_predicts_where_searchsvc_and_trainers_are_not_installed(
    registered, bare_python, tmp_path
):
    uri, built = registered
    x = np.random.default_rng(0).uniform(size=(9, N_FEATURES)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "load.py").write_text(LOAD)
    env = {**clean_env(), "MLFLOW_TRACKING_URI": uri}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        [str(bare_python), "load.py", "x.npy", *built], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    reply = json.loads(proc.stdout.strip().splitlines()[-1])
    assert reply["importable_before_loading"] == []
    for name, ensemble in built.items():
        got = np.array(reply["predictions"][name])
        np.testing.assert_allclose(got, ensemble.predict_proba(x), atol=1e-6, err_msg=name)


def test_the_model_records_requirements_that_exist_and_holds_no_pickle(registered, tmp_path):
    uri, _ = registered
    with _use_tracking_uri(uri):
        local = Path(mlflow.artifacts.download_artifacts("models:/mlp-anywhere@champion"))
    requirements = (local / "requirements.txt").read_text().split()
    assert [r.split("==")[0] for r in requirements] == ["mlflow", "torch", "numpy", "pydantic"]
    assert not list(local.rglob("*.pkl"))
    assert sorted(p.name for p in (local / "code").iterdir()) == ["searchsvc", "trainers"]
