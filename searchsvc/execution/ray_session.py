"""The Ray the search runs on: joined or started for the run, its local session recorded.

Only the execution stage imports Ray. A local Ray started here is this run's: its session
folder goes on the run and into the study's claim, so its processes are stopped when the run
ends, or by the next run when this driver is killed (see ``leftovers``).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from searchsvc.study_run import StudyRun

__all__ = ["start_ray"]

logger = logging.getLogger(__name__)


def start_ray(run: StudyRun, address: str | None) -> None:
    """Join ``address`` (a cluster) or start a local Ray; record a local one's session."""
    if _init_ray(address, run.search_path):
        _record_local_session(run)


def _init_ray(address: str | None, search_path: tuple[str, ...]) -> bool:
    """Join the cluster at ``address``, or start a fresh local Ray of this machine's cores;
    True when a local Ray was started here (one already running in the process is not ours)."""
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.ERROR,
        # Trainers named 'module:object' from the user's folder must import in the workers too.
        "runtime_env": {"env_vars": {"PYTHONPATH": _pythonpath(search_path)}},
    }
    if address:
        ray.init(address=address, **kwargs)
        return False
    # "local": always a fresh cluster of this machine's cores, never a leftover one.
    ray.init(address="local", num_cpus=os.cpu_count() or 1, **kwargs)
    return True


def _record_local_session(run: StudyRun) -> None:
    """The session of the local Ray just started, on the run and in the claim: its processes
    are stopped when the run ends, or by the next run if this driver is killed (a cluster
    the run joined is not the run's to stop, so it is never recorded)."""
    import ray

    # Ray has no public accessor for its session folder; its node object is the one place.
    run.ray_session = ray._private.worker._global_node.get_session_dir_path()
    logger.info("started a local Ray, session %s", run.ray_session)
    if run.claim is not None:
        run.claim.record_ray_session(run.ray_session)


def _pythonpath(search_path: tuple[str, ...]) -> str:
    """The workers' PYTHONPATH: theirs, then the study file's folder and the current folder."""
    parts = [*filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep)), *search_path]
    return os.pathsep.join(dict.fromkeys(parts))
