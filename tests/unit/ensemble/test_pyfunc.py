"""The ensemble as an MLflow model: log, register, champion alias, load elsewhere, serve."""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient
from mlflow.tracking._tracking_service.utils import _use_tracking_uri

import searchsvc
from searchsvc import keys
from searchsvc.ensemble.members import write_members_dir
from searchsvc.ensemble.predictor import Ensemble, Member
from searchsvc.ensemble.pyfunc import CHAMPION_ALIAS, log_ensemble, set_champion_if_better
from searchsvc.errors import EnsembleError

logger = logging.getLogger(__name__)

N_FEATURES, N_CLASSES = 6, 3
FEATURE_RANGE = (-4.0, 4.0)  # as if recorded from standardised training features
TRAINER_MODULE = "searchsvc_test_pyfunc_trainer"
TRAINER_REF = f"{TRAINER_MODULE}:tiny"
TRAINER_SOURCE = textwrap.dedent(
    """
    from torch import nn

    from searchsvc.trainer import BaseTrainer


    class Tiny(BaseTrainer):
        name = "tiny"
        objective_metrics = frozenset({"val_loss"})

        def fit(self, *args, **kwargs):
            raise NotImplementedError

        def build_network(self, params, n_features, n_classes):
            hidden = int(params["hidden"])
            return nn.Sequential(
                nn.Linear(n_features, hidden), nn.Tanh(), nn.Linear(hidden, n_classes)
            )


    tiny = Tiny()
    """
)
REPO_ROOT = Path(searchsvc.__file__).resolve().parent.parent
MLFLOW_CLI = Path(sys.executable).parent / "mlflow"


@dataclass
class Env:
    root: Path
    uri: str
    trainer_dir: Path
    site_dir: Path  # only searchsvc + trainers: what an installed environment would hold
    experiment_id: str
    x: np.ndarray
    expected: np.ndarray
    registered_name: str
    version: str
    model_uri: str

    def subprocess_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env["MLFLOW_TRACKING_URI"] = self.uri
        env["PYTHONPATH"] = os.pathsep.join([str(self.site_dir), str(self.trainer_dir)])
        # the scoring server is started as `uvicorn` from PATH
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        return env


def make_study_members(study_dir: Path, trainer: object) -> tuple[list, list[torch.nn.Module]]:
    """Fakes three finished trials: model/state_dict.pt + model/params.json each."""
    torch.manual_seed(0)
    entries, networks = [], []
    for trial_number, hidden, weight in [(3, 4, 0.5), (7, 8, 0.25), (9, 5, 0.25)]:
        params = {"hidden": hidden, "lr": 0.01}
        net = trainer.build_network(params, N_FEATURES, N_CLASSES)
        model_dir = study_dir / f"trial_{trial_number:04d}" / "model"
        model_dir.mkdir(parents=True)
        torch.save(net.state_dict(), model_dir / "state_dict.pt")
        (model_dir / "params.json").write_text(json.dumps(params))
        member = Member(trial_number, weight, params, val_score=0.9)
        entries.append((member, model_dir / "state_dict.pt"))
        networks.append(net)
    return entries, networks


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("pyfunc")
    uri = f"sqlite:///{root}/mlflow.db"
    trainer_dir = root / "trainer_pkg"
    trainer_dir.mkdir()
    (trainer_dir / f"{TRAINER_MODULE}.py").write_text(TRAINER_SOURCE)
    site_dir = root / "site"
    site_dir.mkdir()
    for package in ("searchsvc", "trainers"):
        if (REPO_ROOT / package).is_dir():
            (site_dir / package).symlink_to(REPO_ROOT / package)

    with pytest.MonkeyPatch.context() as mp, _use_tracking_uri(uri):
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.syspath_prepend(str(trainer_dir))
        trainer = importlib.import_module(TRAINER_MODULE).tiny

        # The study's working folder: trial models, then the members directory built from them.
        study_dir = root / "study"
        entries, networks = make_study_members(study_dir, trainer)
        members_dir = write_members_dir(
            entries,
            study_dir / "ensemble" / "members",
            trainer_ref=TRAINER_REF,
            n_features=N_FEATURES,
            n_classes=N_CLASSES,
            feature_range=FEATURE_RANGE,
        )
        ensemble = Ensemble([m for m, _ in entries], networks, N_FEATURES, N_CLASSES)
        x = np.random.default_rng(0).normal(size=(7, N_FEATURES)).astype(np.float32)

        experiment_id = mlflow.create_experiment(
            "ensemble-tests", artifact_location=str(root / "artifacts")
        )
        with mlflow.start_run(experiment_id=experiment_id):
            info = log_ensemble(
                members_dir,
                name="ensemble",
                registered_model_name="tiny-ensemble",
                input_example=x[:3],
                val_nll=0.80,
            )
        assert set_champion_if_better(
            MlflowClient(), "tiny-ensemble", info.registered_model_version, 0.80
        )
        # Nothing of the study folder may be needed from here on.
        shutil.rmtree(study_dir)
        yield Env(
            root=root,
            uri=uri,
            trainer_dir=trainer_dir,
            site_dir=site_dir,
            experiment_id=experiment_id,
            x=x,
            expected=ensemble.predict_proba(x),
            registered_name="tiny-ensemble",
            version=str(info.registered_model_version),
            model_uri=info.model_uri,
        )


LOAD_SCRIPT = textwrap.dedent(
    """
    import sys

    import mlflow
    import numpy as np
    import pandas as pd

    model = mlflow.pyfunc.load_model(sys.argv[1])
    x = np.load(sys.argv[2])
    np.save(sys.argv[3], model.predict(x))
    np.save(sys.argv[4], model.predict(pd.DataFrame(x)))
    """
)


def test_champion_loads_in_a_fresh_process_without_the_study_folder(env: Env) -> None:
    elsewhere = env.root / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "load.py").write_text(LOAD_SCRIPT)
    np.save(elsewhere / "x.npy", env.x)
    uri = f"models:/{env.registered_name}@{CHAMPION_ALIAS}"
    proc = subprocess.run(
        [sys.executable, "load.py", uri, "x.npy", "p_array.npy", "p_frame.npy"],
        cwd=elsewhere,
        env=env.subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("p_array.npy", "p_frame.npy"):
        probs = np.load(elsewhere / name)
        assert probs.shape == (7, N_CLASSES) and probs.dtype == np.float32
        np.testing.assert_allclose(probs, env.expected, atol=1e-6)


def test_in_process_load_accepts_arrays_and_dataframes(env: Env) -> None:
    model = mlflow.pyfunc.load_model(env.model_uri, model_config={"device": "cpu"})
    np.testing.assert_allclose(model.predict(env.x), env.expected, atol=1e-6)
    frame = pd.DataFrame(env.x, columns=[f"f{i}" for i in range(N_FEATURES)])
    np.testing.assert_allclose(model.predict(frame), env.expected, atol=1e-6)
    signature = model.metadata.get_input_schema().inputs[0]
    assert signature.type == np.dtype(np.float32) and signature.shape == (-1, N_FEATURES)
    output = model.metadata.get_output_schema().inputs[0]
    assert output.type == np.dtype(np.float32) and output.shape == (-1, N_CLASSES)
    version = MlflowClient().get_model_version(env.registered_name, env.version)
    assert float(version.tags[keys.TAG_VAL_NLL]) == pytest.approx(0.80)
    assert version.tags["trials"] == "3,7,9"


def test_pyfunc_refuses_unscaled_input_like_the_python_api(env: Env) -> None:
    model = mlflow.pyfunc.load_model(env.model_uri)
    assert model.metadata.metadata["feature_range"] == list(FEATURE_RANGE)
    unscaled = (env.x * 255).astype(np.float32)  # what JSON pixels 0-255 become over REST
    with pytest.raises(EnsembleError) as info:
        model.predict(unscaled)
    message = str(info.value)
    assert "\n" not in message
    assert "training features spanned [-4, 4] (accepted [-8, 8];" in message
    with pytest.raises(EnsembleError, match="training features spanned"):
        model.predict(pd.DataFrame(unscaled))
    # MLflow's signature refuses integer arrays first; the wrapper itself refuses them too.
    pixels = np.abs(env.x * 40).astype(np.uint8)
    with pytest.raises(EnsembleError, match=r"got uint8 input - .*astype\(np\.float32\) / 255"):
        model.unwrap_python_model().predict(None, pixels)  # type: ignore[arg-type]


def test_champion_moves_only_to_a_better_version(env: Env) -> None:
    client = MlflowClient()
    name = "tiny-ensemble-champion"

    def new_version() -> str:
        return str(mlflow.register_model(env.model_uri, name).version)

    first, worse, better, same = new_version(), new_version(), new_version(), new_version()
    assert set_champion_if_better(client, name, first, 0.50) is True  # no champion yet
    assert set_champion_if_better(client, name, worse, 0.70) is False
    assert str(client.get_model_version_by_alias(name, CHAMPION_ALIAS).version) == first
    assert client.get_model_version(name, worse).tags[keys.TAG_VAL_NLL] == "0.7"  # stored anyway
    assert set_champion_if_better(client, name, better, 0.30) is True
    assert str(client.get_model_version_by_alias(name, CHAMPION_ALIAS).version) == better
    assert set_champion_if_better(client, name, same, 0.30) is False  # ties keep the champion
    assert set_champion_if_better(client, name, same, float("nan")) is False
    assert str(client.get_model_version_by_alias(name, CHAMPION_ALIAS).version) == better


def test_log_ensemble_needs_an_active_run(env: Env) -> None:
    with pytest.raises(EnsembleError, match="active MLflow run"):
        log_ensemble(env.root, name="e", registered_model_name="never")


def test_log_ensemble_from_an_in_memory_ensemble(env: Env) -> None:
    trainer = importlib.import_module(TRAINER_MODULE).tiny
    torch.manual_seed(1)
    networks = [trainer.build_network({"hidden": h}, N_FEATURES, N_CLASSES) for h in (3, 6)]
    members = [Member(1, 2.0, {"hidden": 3}, None), Member(2, 1.0, {"hidden": 6}, 0.7)]
    ensemble = Ensemble(members, networks, N_FEATURES, N_CLASSES, class_names=("x", "y", "z"))
    with mlflow.start_run(experiment_id=env.experiment_id):
        with pytest.raises(EnsembleError, match="trainer_ref"):
            log_ensemble(ensemble, name="ensemble", registered_model_name="in-memory")
        info = log_ensemble(
            ensemble,
            name="ensemble",
            registered_model_name="in-memory",
            input_example=env.x.astype(np.float64),  # cast to float32 for the signature
            trainer_ref=TRAINER_REF,
        )
    model = mlflow.pyfunc.load_model(f"models:/in-memory/{info.registered_model_version}")
    np.testing.assert_allclose(model.predict(env.x), ensemble.predict_proba(env.x), atol=1e-6)
    assert model.metadata.metadata["class_names"] == ["x", "y", "z"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_mlflow_models_serve_answers_invocations(env: Env) -> None:
    port = _free_port()
    log_path = env.root / f"serve-{port}.log"
    cwd = env.root / "serve-cwd"
    cwd.mkdir(exist_ok=True)
    uri = f"models:/{env.registered_name}@{CHAMPION_ALIAS}"
    cmd = [str(MLFLOW_CLI), "models", "serve", "-m", uri, "--env-manager", "local"]
    cmd += ["-p", str(port), "-h", "127.0.0.1"]
    with open(log_path, "wb") as log:
        # Own session, so the whole group (mlflow CLI + uvicorn child) can be stopped together.
        server = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env.subprocess_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if server.poll() is not None:
                pytest.fail(f"server exited {server.returncode}: {log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/ping", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready after 90 s: {log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        request = urllib.request.Request(
            f"{base}/invocations",
            data=json.dumps({"inputs": env.x.tolist()}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            body = json.loads(response.read())
        np.testing.assert_allclose(np.array(body["predictions"]), env.expected, atol=1e-5)
        # 0-255 pixels as JSON numbers pass MLflow's float32 cast; the range check refuses them.
        unscaled = urllib.request.Request(
            f"{base}/invocations",
            data=json.dumps({"inputs": (env.x * 255).tolist()}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(unscaled, timeout=30)
        # What MLflow's own server does to any exception from predict (why `searchsvc serve`
        # exists): a generic message, our one line only inside the server's stack trace.
        assert refused.value.code == 400
        body = json.loads(refused.value.read())
        assert sorted(body) == ["error_class", "error_code", "message", "sqlstate", "stack_trace"]
        assert body["error_code"] == "BAD_REQUEST"
        assert body["message"] == (
            "Encountered an unexpected error while evaluating the model. Verify that the "
            "serialized input Dataframe is compatible with the model for inference."
        )
        assert "training features spanned" in body["stack_trace"]
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=15)
        except ProcessLookupError:
            pass
