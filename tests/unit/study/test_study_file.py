"""The study schema: every kind of bad input gets one clear line naming the key at fault."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from searchsvc.errors import StudySpecError
from searchsvc.study.loader import load_study
from searchsvc.study.spec import Condition
from tests.helpers import base_study


def _errors(path: Path) -> list[str]:
    with pytest.raises(StudySpecError) as info:
        load_study(path)
    return info.value.problems


def test_valid_study_loads_with_defaults(write_study):
    study = load_study(write_study(base_study()))
    spec = study.spec
    assert spec.sampler.name == "tpe" and spec.scheduler.name == "asha"
    assert spec.search_space["batch_size"].type == "fixed"
    assert spec.search_space["width_2"].when == Condition(param="n_layers", op=">=", value=2)
    assert spec.ensemble.method == "greedy"
    assert spec.primary.metric == "val_loss"


def test_missing_file_names_the_file(tmp_path):
    problems = _errors(tmp_path / "nope.yaml")
    assert problems == [f"{tmp_path / 'nope.yaml'}: no such study file"]


def test_broken_yaml_names_line_and_column(write_study):
    path = write_study("name: x\ntrainer: [noop\n")
    (line,) = _errors(path)
    assert line.startswith(f"{path}: broken YAML (line 3")


def test_yaml_that_is_not_a_mapping_is_refused(write_study):
    (line,) = _errors(write_study("- a\n- b\n"))
    assert "must be a mapping of keys, but it is a list" in line


def test_unknown_top_level_key_suggests_the_right_one(write_study):
    study = base_study()
    study["sampelr"] = study.pop("sampler")
    (line,) = _errors(write_study(study))
    assert "sampelr: unknown key 'sampelr' (did you mean 'sampler'?)" in line


def test_unknown_nested_key_names_its_path(write_study):
    study = base_study(budget={"n_trials": 4, "max_epochs": 2, "max_epoch": 3})
    (line,) = _errors(write_study(study))
    assert "budget -> max_epoch: unknown key 'max_epoch' (did you mean 'max_epochs'?)" in line


def test_unknown_key_inside_a_param_names_the_param(write_study):
    study = base_study()
    study["search_space"]["lr"]["lw"] = 1
    (line,) = _errors(write_study(study))
    assert "search_space -> lr -> lw: unknown key 'lw'" in line


def test_low_not_below_high_is_refused(write_study):
    study = base_study()
    study["search_space"]["lr"] = {"type": "float", "low": 0.1, "high": 0.01}
    (line,) = _errors(write_study(study))
    assert "search_space -> lr: low < high must hold, got low=0.1, high=0.01" in line


def test_log_scale_with_nonpositive_low_is_refused(write_study):
    study = base_study()
    study["search_space"]["lr"] = {"type": "float", "low": 0.0, "high": 0.1, "log": True}
    (line,) = _errors(write_study(study))
    assert "search_space -> lr: log: true needs low > 0, got low=0.0" in line


def test_unknown_sampler_lists_the_valid_ones(write_study):
    (line,) = _errors(write_study(base_study(sampler={"name": "tpee"})))
    assert "sampler: unknown name 'tpee' (did you mean 'tpe'?)" in line
    assert "expected one of: tpe, random, gp, qmc, cmaes, grid, nsga2" in line


def test_unknown_scheduler_lists_the_valid_ones(write_study):
    (line,) = _errors(write_study(base_study(scheduler="ashaa")))
    assert "scheduler: unknown name 'ashaa'" in line
    assert "asha, median, hyperband, none" in line


def test_unknown_trainer_lists_the_valid_ones(write_study):
    (line,) = _errors(write_study(base_study(trainer="mlpp")))
    assert "trainer: unknown trainer 'mlpp' (did you mean 'mlp'?)" in line
    assert "expected one of: mlp, noop" in line


def test_unknown_dataset_lists_the_valid_ones(write_study):
    (line,) = _errors(write_study(base_study(dataset="mnits")))
    assert "dataset -> name: unknown dataset 'mnits' (did you mean 'mnist'?)" in line
    assert "fashion_mnist" in line


def test_objective_metric_outside_the_trainers_objective_metrics_is_refused(write_study):
    path = write_study(base_study(objective={"metric": "val_acc", "mode": "max"}))
    assert _errors(path) == [
        f"{path}: objective -> metric: trainer 'noop' cannot optimise 'val_acc' (did you mean "
        "'val_accuracy'?); its objective metrics: epoch_time_s, n_params, train_loss, "
        "val_accuracy, val_loss"
    ]


def test_condition_on_a_later_param_is_refused(write_study):
    study = base_study()
    study["search_space"] = {
        "width_2": {"type": "int", "low": 8, "high": 64, "when": "n_layers >= 2"},
        "n_layers": {"type": "int", "low": 1, "high": 3},
    }
    (line,) = _errors(write_study(study))
    assert "condition 'n_layers >= 2' refers to 'n_layers'" in line


def test_malformed_condition_is_refused(write_study):
    study = base_study()
    study["search_space"]["width_2"]["when"] = "n_layers is big"
    (line,) = _errors(write_study(study))
    assert "search_space -> width_2 -> when" in line and "is not of the form" in line


def test_several_problems_give_several_lines(write_study):
    study = base_study(sampler="nope", budget={"n_trials": 0, "max_epochs": 2})
    path = write_study(study)
    problems = _errors(path)
    assert len(problems) == 2
    assert all(p.startswith(f"{path}: ") for p in problems)
    assert any("budget -> n_trials" in p for p in problems)


def test_grid_sampler_needs_categorical_params(write_study):
    (line,) = _errors(write_study(base_study(sampler="grid")))
    assert "search_space -> lr: sampler grid needs categorical or fixed params" in line


def test_nsga2_needs_two_objectives(write_study):
    (line,) = _errors(write_study(base_study(sampler="nsga2")))
    assert "nsga2 is multi-objective" in line


def test_cli_validate_bad_file_exits_2_with_one_line_and_creates_nothing(write_study, tmp_path):
    path = write_study(base_study(sampler="tpee"))
    env = {**os.environ, "MLFLOW_TRACKING_URI": "", "PYTHONWARNINGS": "ignore"}
    for command in ("validate", "run", "status"):
        proc = subprocess.run(
            [sys.executable, "-m", "searchsvc", command, str(path)],
            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "sampler: unknown name 'tpee'" in lines[0]
    # Nothing was started or written: no runs folder, no MLflow or Optuna database.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"]


def test_cli_validate_good_file_exits_0(write_study, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "searchsvc", "validate", str(write_study(base_study()))],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "ok" in proc.stdout and "unit-study" in proc.stdout


def test_param_the_trainer_does_not_know_is_refused_at_validation(write_study):
    study = base_study(trainer="mlp", objective={"metric": "val_accuracy", "mode": "max"})
    study["search_space"]["lerning_rate"] = {"type": "float", "low": 0.1, "high": 1.0}
    (line,) = _errors(write_study(study))
    assert "search_space: trainer 'mlp' rejects it:" in line and "lerning_rate" in line


def test_categorical_choice_the_trainer_does_not_know_is_refused(write_study):
    study = base_study(trainer="mlp", objective={"metric": "val_accuracy", "mode": "max"})
    study["search_space"]["activation"] = {"type": "categorical", "choices": ["relu", "relu6"]}
    (line,) = _errors(write_study(study))
    assert line.split(": ", 1)[1].startswith("search_space -> activation: trainer 'mlp' rejects")
    assert "relu6" in line


def test_grid_point_the_trainer_rejects_is_named(write_study):
    study = base_study(
        trainer="mlp",
        objective={"metric": "val_accuracy", "mode": "max"},
        sampler="grid",
        search_space={
            "init": {"type": "categorical", "choices": ["he_normal", "rbm"]},
            "activation": {"type": "categorical", "choices": ["relu", "maxout"]},
        },
    )
    (line,) = _errors(write_study(study))
    assert "grid point (init=rbm, activation=maxout): trainer 'mlp' rejects it" in line


def test_status_of_a_study_that_never_ran_says_so_and_creates_nothing(write_study, tmp_path):
    path = write_study(base_study(workdir=str(tmp_path / "w")))
    proc = subprocess.run(
        [sys.executable, "-m", "searchsvc", "status", str(path)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "study 'unit-study' has not run yet" in proc.stderr
    assert not (tmp_path / "w").exists()


def test_diagnosis_threshold_out_of_range_names_its_key(write_study):
    (line,) = _errors(write_study(base_study(diagnosis={"underfit_train_accuracy": 1.5})))
    assert "diagnosis -> underfit_train_accuracy" in line


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [("tracking_uri", "htp://127.0.0.1:5000", "not an MLflow tracking URI: 'htp://"),
     ("storage", "postgres://u@h/db", "not a database URL for Optuna: 'postgres://")],
)  # fmt: skip
def test_malformed_store_url_in_the_file_names_its_key(write_study, key, value, message):
    (line,) = _errors(write_study(base_study(**{key: value})))
    assert f"{key}: " in line and message in line


def test_malformed_store_url_on_the_command_line_exits_2_and_creates_nothing(
    write_study, tmp_path
):
    path = write_study(base_study(workdir=str(tmp_path / "work")))
    env = {**os.environ, "MLFLOW_TRACKING_URI": "", "PYTHONWARNINGS": "ignore"}
    for options, origin in (
        (["--tracking-uri", "htp://x"], "--tracking-uri"),
        (["--storage", "optuna.db"], "--storage"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "searchsvc", "run", str(path), *options],
            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        (line,) = [x for x in proc.stderr.splitlines() if x.strip()]
        assert line.startswith(f"error: {origin}: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"]


def test_data_dir_option_that_is_not_a_folder_exits_2_and_creates_nothing(write_study, tmp_path):
    path = write_study(base_study(workdir=str(tmp_path / "work")))
    proc = subprocess.run(
        [sys.executable, "-m", "searchsvc", "run", str(path), "--data-dir", "no-such-folder"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.strip()]
    assert line == "error: --data-dir: no-such-folder is not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"]


def test_data_dir_option_beats_the_study_file(write_study, tmp_path):
    from searchsvc.study_run import StudyRun

    path = write_study(base_study(dataset={"name": "mnist", "data_dir": "/elsewhere"}))
    run = StudyRun.prepare(load_study(path), data_dir=tmp_path)
    assert run.spec.dataset.data_dir == str(tmp_path.resolve())
    assert run.source == path


def test_a_trainer_missing_part_of_the_protocol_is_refused_naming_what_it_lacks(
    write_study, tmp_path
):
    (tmp_path / "halfdone.py").write_text(
        "class Half:\n    name = 'half'\n    objective_metrics = frozenset({'val_loss'})\n"
        "    def fit(self, *a, **k): pass\n    def build_network(self, *a): pass\n"
        "trainer = Half()\n"
    )
    path = write_study(base_study(trainer="halfdone:trainer"))
    assert _errors(path) == [
        f"{path}: trainer: 'halfdone:trainer' is not a trainer: it lacks supports_resume, "
        "has_weights, check_params (subclass searchsvc.trainer.BaseTrainer for the defaults; "
        "see searchsvc.trainer)"
    ]


def test_readme_table_of_environment_variables_is_the_settings_module():
    from searchsvc.settings import VARIABLES
    from tests.helpers import REPO

    readme = (REPO / "README.md").read_text()
    section = readme.split("## Environment variables", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert rows == [f"| `{v.name}` | {v.default} | {v.meaning} |" for v in VARIABLES]


def test_a_malformed_wait_setting_is_an_input_error_naming_the_variable():
    from searchsvc.settings import Settings

    with pytest.raises(StudySpecError) as info:
        Settings.from_env({"SEARCHSVC_MLFLOW_WAIT_S": "soon"})
    assert info.value.problems == [
        "SEARCHSVC_MLFLOW_WAIT_S: expected a number of seconds >= 0, got 'soon'"
    ]


def test_a_refit_or_reseed_of_a_trainer_without_weights_is_refused_naming_the_key(write_study):
    path = write_study(base_study(ensemble={"reseed": 2, "refit": True}))  # noop: no weights
    assert _errors(path) == [
        f"{path}: ensemble -> refit: trainer 'noop' does not support refit (it sets no "
        "supports_refit = True)",
        f"{path}: ensemble -> refit: trainer 'noop' keeps no weights (has_weights = False), "
        "so it has nothing to retrain",
    ]
    reseed_only = write_study(base_study(ensemble={"reseed": 2}))
    assert _errors(reseed_only) == [
        f"{reseed_only}: ensemble -> reseed: trainer 'noop' keeps no weights (has_weights = "
        "False), so it has nothing to retrain"
    ]


def test_ensemble_options_are_checked_by_the_schema(write_study):
    path = write_study(base_study(ensemble={"reseed": -1, "choose": "random"}))
    assert _errors(path) == [
        f"{path}: ensemble -> choose: Input should be 'diverse' or 'best'",
        f"{path}: ensemble -> reseed: Input should be greater than or equal to 0",
    ]
