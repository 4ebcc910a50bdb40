"""The study report: figures, HTML, comparison sections, MLflow logging, empty studies.

The study data is real, built without Ray: an Optuna study in SQLite written with the same
calls the searcher uses, and an MLflow SQLite store written through ``StudyTracker`` (parent
run, one child run per trial with per-epoch metrics, activation-histogram PNGs, ensemble
scores on the parent).
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import torch
from matplotlib.figure import Figure
from optuna.trial import TrialState
from PIL import Image

from searchsvc import keys
from searchsvc.errors import StudyNotRunError
from searchsvc.report import build as report
from searchsvc.report import figures
from searchsvc.search.space import to_distribution
from searchsvc.search.storage import open_study
from searchsvc.study.locations import StudyPaths, resolve_paths
from searchsvc.study.spec import StudySpec
from searchsvc.study_run import StudyRun
from searchsvc.tracking import StudyTracker
from tests.helpers import base_study
from trainers.mlp.diagnostics import activation_histogram_png

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAIN_FIGURES = [
    "history.png",
    "importances.png",
    "parallel.png",
    "learning_curves.png",
    "outcomes_over_time.png",
    "ensemble.png",
]
T0 = datetime(2025, 1, 1, 12, 0, 0)


@dataclass
class Built:
    spec: StudySpec
    paths: StudyPaths
    tracker: StudyTracker


def _paths(spec: StudySpec, stores: Path) -> StudyPaths:
    """Shared MLflow and Optuna stores (studies differ by name), a workdir per study."""
    return resolve_paths(
        spec,
        tracking_uri=f"sqlite:///{stores / 'mlflow.db'}",
        storage=f"sqlite:///{stores / 'optuna.db'}",
        workdir=stores / spec.name,
    )


def _run(spec: StudySpec, paths: StudyPaths) -> StudyRun:
    """The StudyRun a report command builds: the study opened if it has run."""
    run = StudyRun(spec=spec, paths=paths)
    with contextlib.suppress(StudyNotRunError):
        run.open_existing()
    return run


def _histogram_png(seed: int, activation: str, epoch: int) -> bytes:
    """The MLP trainer's own activation-histogram PNG, of made-up activations."""
    generator = torch.Generator().manual_seed(seed)
    outputs = [torch.randn(200, 16, generator=generator) * (i + 1) for i in range(2)]
    if activation == "relu":
        outputs = [out.clamp(min=0) for out in outputs]
    png = activation_histogram_png(outputs, activation, epoch)
    assert png is not None
    return png


def _curve(quality: float, epochs: int, activation: str) -> list[dict[str, float]]:
    """Per-epoch metrics shaped like the MLP trainer's: losses fall, accuracy rises."""
    rows = []
    for epoch in range(1, epochs + 1):
        val_loss = 2.3 * (1 - quality) / epoch**0.5 + 0.05
        row = {
            "train_loss": val_loss * 0.9,
            "val_loss": val_loss,
            "train_accuracy": min(0.99, quality * (1 - 0.4 / epoch) + 0.02),
            "val_accuracy": quality * (1 - 0.4 / epoch),
            "epoch_time_s": 1.5,
            "n_params": 1000.0 * (1 + quality),
        }
        for layer in (1, 2):
            row[f"act_mean_{layer}"] = 0.1 * layer
            row[f"act_std_{layer}"] = 0.5 / layer + 0.01 * epoch
            row[f"grad_norm_{layer}"] = 1.0 / epoch
            if activation == "tanh":
                row[f"saturated_{layer}"] = 0.05 * layer
            else:
                row[f"dead_{layer}"] = 0.1 * layer
        rows.append(row)
    return rows


def _add_trial(
    study: optuna.Study,
    tracker: StudyTracker,
    spec: StudySpec,
    number: int,
    params: dict[str, Any],
    state: str,
    quality: float,
    epochs: int,
    files: Path,
) -> None:
    """One trial in Optuna (with times) and its child run in MLflow, as the service writes."""
    activation = str(params.get("activation", "relu"))
    curve = _curve(quality, epochs, activation)
    distributions = {
        k: to_distribution(spec.search_space[k])
        for k in params
        if to_distribution(spec.search_space[k]) is not None
    }
    optuna_state = {"COMPLETE": TrialState.COMPLETE, "PRUNED": TrialState.PRUNED}.get(
        state, TrialState.FAIL
    )
    metric = spec.primary.metric
    single = len(spec.objectives) == 1  # Optuna keeps intermediate values for these only
    frozen = optuna.trial.create_trial(
        state=optuna_state,
        values=[curve[-1][o.metric] for o in spec.objectives] if state == "COMPLETE" else None,
        params={k: v for k, v in params.items() if k in distributions},
        distributions=distributions,
        user_attrs={
            "epochs": epochs,
            "best_epoch": epochs,
            "reason": state.lower(),
            "diagnosis": "healthy" if state == "COMPLETE" else "underfit",
            "diagnosis_evidence": {"train_accuracy": 0.97 if state == "COMPLETE" else 0.5},
            **({keys.INTERRUPTED: True} if state == "INTERRUPTED" else {}),
        },
        intermediate_values={i + 1: row[metric] for i, row in enumerate(curve)} if single else {},
    )
    frozen.datetime_start = T0 + timedelta(seconds=10 * number)
    frozen.datetime_complete = frozen.datetime_start + timedelta(seconds=3 * epochs + 1)
    study.add_trial(frozen)

    run_id = tracker.start_trial(number, params, tags={"ray_trial_id": f"t{number}"})
    for epoch, row in enumerate(curve, start=1):
        tracker.log_epoch(run_id, row, step=epoch)
    files.mkdir(parents=True)
    for epoch in (1, epochs):
        png = _histogram_png(number * 100 + epoch, activation, epoch)
        (files / f"activations_epoch_{epoch:03d}.png").write_bytes(png)
    tracker.log_files(run_id, files, "diagnostics")
    tracker.end_trial(run_id, optuna_state, state.lower(), {"epochs": epochs})


def _build_study(
    stores: Path, trials: list[tuple[dict[str, Any], str, float, int]], **overrides: Any
) -> Built:
    spec = StudySpec.model_validate(base_study(**overrides))
    paths = _paths(spec, stores)
    study = open_study(spec, paths.storage_url)
    tracker = StudyTracker(paths.tracking_uri, artifact_location=paths.artifact_location)
    parent = tracker.start_study(spec, "name: test\n")
    study.set_user_attr("mlflow_parent_run_id", parent)
    for number, (params, state, quality, epochs) in enumerate(trials):
        files = paths.workdir / "trial-files" / str(number)
        _add_trial(study, tracker, spec, number, params, state, quality, epochs, files)
    return Built(spec, paths, tracker)


def _tpe_study(stores: Path) -> Built:
    trials = [
        ({"lr": 0.01, "n_layers": 2, "width_2": 32, "optimizer": "adam"}, "COMPLETE", 0.95, 4),
        ({"lr": 0.1, "n_layers": 1, "optimizer": "sgd"}, "COMPLETE", 0.90, 4),
        ({"lr": 0.5, "n_layers": 1, "optimizer": "sgd"}, "PRUNED", 0.50, 2),
        ({"lr": 0.003, "n_layers": 3, "width_2": 16, "optimizer": "adam"}, "COMPLETE", 0.93, 4),
        ({"lr": 0.9, "n_layers": 2, "width_2": 8, "optimizer": "sgd"}, "FAIL", 0.1, 1),
        ({"lr": 0.02, "n_layers": 2, "width_2": 64, "optimizer": "adam"}, "COMPLETE", 0.96, 4),
        ({"lr": 0.0001, "n_layers": 1, "optimizer": "sgd"}, "PRUNED", 0.40, 1),
        ({"lr": 0.05, "n_layers": 1, "optimizer": "adam"}, "COMPLETE", 0.91, 4),
        ({"lr": 0.007, "n_layers": 2, "width_2": 24, "optimizer": "sgd"}, "INTERRUPTED", 0.5, 1),
    ]
    built = _build_study(
        stores,
        trials,
        name="report-study",
        description="Report <test> & escaping",
        objective={"metric": "val_accuracy", "mode": "max"},
    )
    built.tracker.log_study_metrics(
        {
            "test_accuracy_ensemble": 0.97,
            "test_nll_ensemble": 0.09,
            "test_ece_ensemble": 0.01,
            "test_accuracy_best_single": 0.955,
            "test_nll_best_single": 0.14,
            "test_ece_best_single": 0.02,
        }
    )
    summary = {"method": "greedy", "members": [{"trial": 5, "weight": 0.6}]}
    built.tracker.client.log_dict(built.tracker.parent_run_id, summary, "ensemble/summary.json")
    return built


def _grid_study(stores: Path) -> Built:
    qualities = {
        ("he_normal", "relu"): 0.95,
        ("he_normal", "tanh"): 0.90,
        ("xavier", "relu"): 0.93,
        ("xavier", "tanh"): 0.85,
    }
    trials = []
    for seed in (0, 1):
        for (init, activation), quality in qualities.items():
            params = {"init": init, "activation": activation, "seed": seed, "lr": 0.01}
            trials.append((params, "COMPLETE", quality - 0.01 * seed, 3))
    return _build_study(
        stores,
        trials,
        name="grid-study",
        objective={"metric": "val_accuracy", "mode": "max"},
        search_space={
            "init": {"type": "categorical", "choices": ["he_normal", "xavier"]},
            "activation": {"type": "categorical", "choices": ["relu", "tanh"]},
            "seed": {"type": "categorical", "choices": [0, 1]},
            "lr": 0.01,
        },
        sampler={"name": "grid"},
        scheduler={"name": "none"},
    )


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One MLflow and one Optuna store for the module: each new store costs seconds."""
    return tmp_path_factory.mktemp("stores")


@pytest.fixture(scope="module")
def tpe_study(stores: Path) -> Built:
    """A TPE study: 5 complete, 2 pruned, 1 failed, 1 interrupted trial; ensemble scores."""
    return _tpe_study(stores)


@pytest.fixture(scope="module")
def grid_study(stores: Path) -> Built:
    """A grid comparison study: init x activation x seed, one trial each, no ensemble."""
    return _grid_study(stores)


def _own_workdir(built: Built, tmp_path: Path) -> StudyPaths:
    """The shared study's stores, but this test's own report folder."""
    return dataclasses.replace(built.paths, workdir=tmp_path / "work")


def _assert_png(path: Path) -> None:
    assert path.is_file(), f"{path.name} missing"
    data = path.read_bytes()
    assert len(data) > 1000, f"{path.name} is nearly empty ({len(data)} bytes)"
    assert data.startswith(PNG_MAGIC), f"{path.name} is not a PNG"


def _img_sources(index: Path) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', index.read_text())


# --------------------------------------------------------------------------- tests


def test_report_draws_every_figure_and_references_it(tpe_study: Built, tmp_path: Path) -> None:
    paths = _own_workdir(tpe_study, tmp_path)
    index = report.write_report(_run(tpe_study.spec, paths), log_to_mlflow=False)

    assert index == tmp_path / "work" / "report" / "index.html"
    sources = _img_sources(index)
    for name in MAIN_FIGURES:
        _assert_png(index.parent / name)
        assert name in sources, f"index.html does not show {name}"
    for source in sources:
        assert (index.parent / source).is_file(), f"index.html shows a missing {source}"
    page = index.read_text()
    assert 'class="note"' not in page  # every figure drawn, none replaced by a note
    assert "Study report: report-study" in page
    assert "Report &lt;test&gt; &amp; escaping" in page and "<test>" not in page
    for text in ("noop", "synthetic", "max val_accuracy", "tpe", "asha"):
        assert text in page
    # Summary: 5 complete, 2 pruned, 1 failed, 1 interrupted; best is trial 5 (quality 0.96).
    assert "<th>complete</th><td>5</td>" in page
    assert "<th>pruned</th><td>2</td>" in page
    assert "<th>failed</th><td>1</td>" in page
    assert "<th>interrupted</th><td>1</td>" in page
    assert "<th>best trial</th><td>5</td>" in page
    assert "greedy: trial 5 x0.60" in page  # the ensemble's members, from summary.json
    assert "test split only reports" in page
    # Top table: the 5 completed by value, then the pruned ones marked as such.
    top = page[page.index("Top 7 trials") :]
    rows = re.findall(r'<tr><td class="num">(\d+)</td>', top)
    assert rows[:7] == ["5", "0", "3", "7", "1", "2", "6"]
    assert "last report, epoch 2" in top
    assert "Comparison of groups" not in page  # a TPE study is not a comparison
    assert not list(paths.workdir.glob(".report*")), "temporary folders left behind"


def test_report_is_logged_to_the_parent_run(tpe_study: Built, tmp_path: Path) -> None:
    report.write_report(_run(tpe_study.spec, _own_workdir(tpe_study, tmp_path)))

    client = tpe_study.tracker.client
    logged = {a.path for a in client.list_artifacts(tpe_study.tracker.parent_run_id, "report")}
    assert "report/index.html" in logged
    for name in MAIN_FIGURES:
        assert f"report/{name}" in logged


def test_grid_study_gets_group_curves_histograms_and_layer_table(
    grid_study: Built, tmp_path: Path
) -> None:
    paths = _own_workdir(grid_study, tmp_path)
    index = report.write_report(_run(grid_study.spec, paths), log_to_mlflow=False)

    folder = index.parent
    page = index.read_text()
    _assert_png(folder / "group_curves.png")
    assert "group_curves.png" in _img_sources(index)
    # Auto-detected groups: every categorical with >1 choice (init, activation, seed): 8 groups.
    assert "Groups by init, activation, seed: 8 groups" in page
    histograms = sorted(folder.glob("activations_group*_epoch_*.png"))
    assert len(histograms) == 16  # 8 groups x (epoch 1, last epoch 3)
    for path in histograms:
        _assert_png(path)
        assert path.name in _img_sources(index)
    assert "init=he_normal, activation=relu, seed=0: trial 0, epoch 1" in page
    assert "init=xavier, activation=tanh, seed=1: trial 7, epoch 3" in page
    assert "Per-group layer diagnostics" in page
    # No ensemble was built in this study: a note, no figure.
    assert not (folder / "ensemble.png").exists()
    assert "No ensemble test scores on the parent run" in page


def test_group_by_averages_each_groups_trials(grid_study: Built, tmp_path: Path) -> None:
    paths = _own_workdir(grid_study, tmp_path)
    index = report.write_report(
        _run(grid_study.spec, paths), group_by="activation", log_to_mlflow=False
    )

    page = index.read_text()
    assert "Groups by activation: 2 groups" in page
    assert len(list(index.parent.glob("activations_group*_epoch_*.png"))) == 4
    table = page[page.index("Per-group layer diagnostics") :]
    # relu: trials of quality 0.95, 0.93, 0.94, 0.92 at the last of 3 epochs (x (1 - 0.4/3)).
    relu_final = np.mean([0.95, 0.93, 0.94, 0.92]) * (1 - 0.4 / 3)
    assert f"{relu_final:.4g}" in table
    # Epoch 1 of layer 2: act_std = 0.5/2 + 0.01; relu reports dead units, tanh saturation.
    relu = table[table.index("activation=relu") : table.index("activation=tanh")]
    tanh = table[table.index("activation=tanh") :]
    assert "0.26" in relu and "0.2</td>" in relu  # act_std_2, dead_2
    assert "0.1</td>" in tanh  # saturated_2 = 0.05 * 2
    # The representative trial of each group is its best one (seed 0, he_normal).
    assert "activation=relu: trial 0, epoch 1" in page
    assert "activation=tanh: trial 1, epoch 3" in page


def test_unknown_group_by_is_refused(grid_study: Built, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown: depth"):
        report.write_report(
            _run(grid_study.spec, _own_workdir(grid_study, tmp_path)), group_by="activation,depth"
        )


def test_multi_objective_study_ranks_by_the_primary(stores: Path) -> None:
    trials = [
        ({"lr": 0.01, "n_layers": 1, "optimizer": "adam"}, "COMPLETE", 0.95, 2),
        ({"lr": 0.1, "n_layers": 2, "width_2": 8, "optimizer": "sgd"}, "COMPLETE", 0.90, 2),
        ({"lr": 0.3, "n_layers": 1, "optimizer": "sgd"}, "COMPLETE", 0.80, 2),
        ({"lr": 0.5, "n_layers": 3, "width_2": 8, "optimizer": "sgd"}, "PRUNED", 0.50, 1),
    ]
    built = _build_study(
        stores,
        trials,
        name="multi-study",
        objective=[
            {"metric": "val_accuracy", "mode": "max"},
            {"metric": "n_params", "mode": "min"},
        ],
        sampler={"name": "nsga2"},
    )
    index = report.write_report(_run(built.spec, built.paths), log_to_mlflow=False)

    for name in MAIN_FIGURES[:5]:  # no ensemble in this study
        _assert_png(index.parent / name)
    page = index.read_text()
    assert "<th>best trial</th><td>0</td>" in page
    assert "value (val_accuracy / n_params)" in page


def test_empty_study_still_gets_a_page(stores: Path) -> None:
    spec = StudySpec.model_validate(base_study(name="empty-study"))
    index = report.write_report(_run(spec, _paths(spec, stores)))  # no Optuna study, no MLflow run

    page = index.read_text()
    assert "Study report: empty-study" in page
    assert "no trials yet" in page
    assert _img_sources(index) == []


def test_empty_study_with_parent_run_is_logged_only_when_asked(stores: Path) -> None:
    built = _build_study(stores, [], name="started-study")
    client, run_id = built.tracker.client, built.tracker.parent_run_id

    index = report.write_report(_run(built.spec, built.paths), log_to_mlflow=False)
    assert "no trials yet" in index.read_text()
    assert not client.list_artifacts(run_id, "report")
    report.write_report(_run(built.spec, built.paths))
    assert "report/index.html" in {a.path for a in client.list_artifacts(run_id, "report")}


def test_rewrite_replaces_the_old_report_and_a_crash_keeps_it(
    tpe_study: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = _own_workdir(tpe_study, tmp_path)
    index = report.write_report(_run(tpe_study.spec, paths), log_to_mlflow=False)
    (index.parent / "stale.png").write_bytes(PNG_MAGIC)
    report.write_report(_run(tpe_study.spec, paths), log_to_mlflow=False)
    assert not (index.parent / "stale.png").exists()  # replaced, not merged
    before = index.read_text()

    def crash(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(figures, "fig_ensemble", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        report.write_report(_run(tpe_study.spec, paths), log_to_mlflow=False)
    assert index.read_text() == before
    assert all((index.parent / name).is_file() for name in MAIN_FIGURES)
    assert not list(paths.workdir.glob(".report*")), "temporary folders left behind"


# --------------------------------------------------------------------------- rendered page


@pytest.mark.slow
def test_report_renders_in_headless_chromium(grid_study: Built, tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is not installed; CI must install it: apt-get install -y chromium")
    index = report.write_report(
        _run(grid_study.spec, _own_workdir(grid_study, tmp_path)), log_to_mlflow=False
    )
    shot = tmp_path / "page.png"
    done = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-quic",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            f"--screenshot={shot}",
            "--window-size=1280,4000",
            index.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"chromium failed ({done.returncode}): {done.stderr[-2000:]}"
    _assert_png(shot)
    with Image.open(shot) as image:
        assert image.size == (1280, 4000)
        pixels = np.asarray(image.convert("RGB")).astype(int)
    # A blank or error page has a handful of colours; figures and text give thousands.
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 500, f"the page looks blank ({len(colours)} distinct colours)"
    # The figures must have loaded: the plots' coloured lines and bars. The page without its
    # images (text, tables, broken-image icons) has ~0.04% such pixels, with them ~3%.
    colourful = (pixels.max(axis=2) - pixels.min(axis=2) > 80).mean()
    assert colourful > 0.005, f"no figures visible ({colourful:.2%} coloured pixels)"


def test_report_shows_diagnosis_counts_and_each_top_trials_diagnosis(
    tpe_study: Built, tmp_path: Path
) -> None:
    index = report.write_report(_run(tpe_study.spec, tpe_study.paths), log_to_mlflow=False)
    page = index.read_text()
    summary = page[page.index("<h2>Summary</h2>") : page.index("<h2>Top")]
    assert "diagnosis (recipe)" in summary and "healthy" in summary
    top = page[page.index("<h2>Top") :]
    assert "<th>diagnosis</th>" in top
    assert "healthy (train_accuracy=0.97)" in top


# --------------------------------------------------------------------------- figure labels


def _axes_problems(name: str, fig: Figure) -> list[str]:
    """One line per missing title or axis label of a figure the report drew.

    Every visible Axes needs a title (its own or the figure's suptitle); every axis that shows
    ticks needs a label. An axis without ticks (a colorbar's short side, the hidden x axis of
    a parallel-coordinates twin) has nothing to label.
    """
    problems = []
    suptitle = fig.get_suptitle()
    for index, ax in enumerate(fig.axes):
        if not ax.get_visible():
            continue
        where = f"{name} axes {index}"
        if not (suptitle or any(ax.get_title(loc) for loc in ("center", "left", "right"))):
            problems.append(f"{where}: no title and no figure suptitle")
        for axis, ticks, label in (
            ("x", ax.get_xticks(), ax.get_xlabel()),
            ("y", ax.get_yticks(), ax.get_ylabel()),
        ):
            shown = (ax.xaxis if axis == "x" else ax.yaxis).get_visible() and len(ticks) > 0
            if shown and not label.strip():
                problems.append(f"{where}: {axis} axis has ticks but no label")
    return problems


def _record_figures(monkeypatch: pytest.MonkeyPatch) -> dict[str, Figure]:
    """Makes the report hand every figure it saves to the returned dict, by file name."""
    drawn: dict[str, Figure] = {}
    save = figures.save

    def record(fig: Figure, folder: Path, name: str) -> str:
        drawn[name] = fig  # still inspectable after save closes it
        return save(fig, folder, name)

    monkeypatch.setattr(figures, "save", record)
    return drawn


@pytest.mark.parametrize("which", ["tpe_study", "grid_study"])
def test_every_report_figure_has_a_title_and_labelled_axes(
    which: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: Built = request.getfixturevalue(which)
    drawn = _record_figures(monkeypatch)
    report.write_report(_run(built.spec, _own_workdir(built, tmp_path)), log_to_mlflow=False)

    expected = MAIN_FIGURES if which == "tpe_study" else [*MAIN_FIGURES[:5], "group_curves.png"]
    assert sorted(drawn) == sorted(expected)
    problems = [p for name, fig in drawn.items() for p in _axes_problems(name, fig)]
    assert not problems, "\n".join(problems)


def test_parallel_coordinates_label_the_objective_and_every_parameter_axis(
    tpe_study: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn = _record_figures(monkeypatch)
    report.write_report(
        _run(tpe_study.spec, _own_workdir(tpe_study, tmp_path)), log_to_mlflow=False
    )

    fig = drawn["parallel.png"]
    main = fig.axes[0]
    assert main.get_ylabel() == "validation accuracy (fraction)"
    assert "validation accuracy (fraction)" in fig.get_suptitle()
    labels = sorted(ax.get_ylabel() for ax in fig.axes[1:])
    # the colorbar (the objective) and one twin axes per parameter, named above its axis
    assert labels == [
        "lr (log scale)",
        "n_layers (integer)",
        "optimizer (choice)",
        "validation accuracy (fraction)",
        "width_2 (integer)",
    ]
