"""The exceptions of searchsvc. The CLI maps them to exit codes; library code never exits."""

from __future__ import annotations

__all__ = [
    "DataError",
    "SearchsvcError",
    "StudySpecError",
    "TrackingError",
    "EnsembleError",
    "StudyBusyError",
    "StudyFailed",
    "StudyNotRunError",
]


class SearchsvcError(Exception):
    """Root of every error searchsvc raises on purpose (exit code 1 in the CLI)."""


class StudySpecError(SearchsvcError, ValueError):
    """A study file is missing, unreadable or invalid (exit code 2).

    ``problems`` holds one line per problem, each naming the file and the key path.
    """

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class DataError(SearchsvcError, ValueError):
    """A data set is missing, corrupt or malformed; the message names the file and the problem."""


class TrackingError(SearchsvcError):
    """MLflow or Optuna storage cannot be reached or holds something unexpected."""


class EnsembleError(SearchsvcError, ValueError):
    """An ensemble cannot be built or used as asked (no completed trials, bad input ...)."""


class StudyBusyError(SearchsvcError):
    """Another live driver is running this study (two would take each other's trials)."""


class StudyNotRunError(SearchsvcError, LookupError):
    """A command that reads a study's results was given a study that has not run yet."""


class StudyFailed(SearchsvcError):
    """A stage of a study run raised an unexpected error; the message names the stage."""


def first_line(exc: BaseException | str) -> str:
    """The first line of ``exc``'s message, or of a text ('' for none): what a one-line error
    quotes."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
