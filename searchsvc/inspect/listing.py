"""Every study found (``searchsvc ls``): in each study folder under a runs folder, and in a
storage named by URL; trials by state, best value, last activity. Reads only."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from searchsvc.errors import StudySpecError
from searchsvc.inspect.trials import STATES
from searchsvc.study.urls import check_storage_url

__all__ = ["StudyListing", "list_studies"]

_SQLITE = "sqlite:///"


@dataclass(frozen=True)
class StudyListing:
    """One study of a storage.

    Attributes:
        best_value: the best completed value of the first objective (None if none).
        last_activity: when a trial last started or ended (ISO 8601), None if no trial.
    """

    name: str
    storage: str
    directions: list[str]
    trials: dict[str, int] = field(default_factory=dict)
    best_value: float | None = None
    last_activity: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data, for JSON."""
        return asdict(self)


def list_studies(
    runs_dir: Path | None = Path("runs"), storage: str | None = None
) -> list[StudyListing]:
    """The studies in ``runs_dir/*/optuna.db`` and in ``storage``, by storage then name.

    Raises:
        StudySpecError: ``storage`` is malformed or a SQLite file that does not exist.
    """
    storages = []
    if runs_dir is not None and runs_dir.is_dir():
        storages += [f"{_SQLITE}{db.resolve()}" for db in sorted(runs_dir.glob("*/optuna.db"))]
    if storage:
        try:
            check_storage_url(storage)
        except ValueError as exc:
            raise StudySpecError(f"--storage: {exc}") from None
        if storage.startswith(_SQLITE) and not Path(storage.removeprefix(_SQLITE)).is_file():
            raise StudySpecError(f"--storage: no such SQLite database: {storage}")
        storages.append(storage)
    return [listing for url in dict.fromkeys(storages) for listing in _storage_studies(url)]


def _storage_studies(storage: str) -> list[StudyListing]:
    import optuna

    from searchsvc.search.storage import study_names

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    listings = []
    for name in sorted(study_names(storage)):
        study = optuna.load_study(study_name=name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        counts = dict.fromkeys(STATES, 0)
        for trial in trials:
            interrupted = trial.state.name == "FAIL" and trial.user_attrs.get("interrupted")
            counts["INTERRUPTED" if interrupted else trial.state.name] += 1
        complete = [t.values[0] for t in trials if t.state.name == "COMPLETE"]
        maximize = study.directions[0].name == "MAXIMIZE"
        best = (max if maximize else min)(complete) if complete else None
        times = [t.datetime_complete or t.datetime_start for t in trials]
        last = max((t for t in times if t is not None), default=None)
        listings.append(StudyListing(
            name=name, storage=storage, directions=[d.name.lower() for d in study.directions],
            trials={k: v for k, v in counts.items() if v}, best_value=best,
            last_activity=last.isoformat(timespec="seconds") if last else None,
        ))  # fmt: skip
    return listings
