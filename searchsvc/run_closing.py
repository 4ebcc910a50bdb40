"""The closing steps of a :class:`~searchsvc.study_run.StudyRun`: each one best effort.

However a command ends, every step of its closing is tried; a step that fails is logged and
the next one still runs (a study must never stay claimed because Ray would not stop).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from searchsvc.errors import first_line

if TYPE_CHECKING:
    from searchsvc.search.claim import StudyClaim

__all__ = ["best_effort", "shutdown_ray", "stop_what_a_dead_driver_left"]

logger = logging.getLogger(__name__)


def stop_what_a_dead_driver_left(claim: StudyClaim) -> None:
    """The local Ray of the driver this claim took over from, if it ran on this host."""
    previous = claim.previous
    if previous is None or not previous.ray_session or previous.host != claim.holder.host:
        return
    from searchsvc.execution.leftovers import stop_session

    session = previous.ray_session
    best_effort("stop the dead driver's Ray", lambda: stop_session(session))


def shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def best_effort(what: str, step: Any) -> bool:
    """Run one closing step; a failure is logged, never raised (the others still run)."""
    try:
        step()
    except Exception as exc:
        logger.warning("could not %s: %s", what, first_line(exc) or type(exc).__name__)
        return False
    return True
