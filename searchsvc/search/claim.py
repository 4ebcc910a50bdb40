"""One driver per study: a row in the study's own database that only one driver can hold.

Two drivers of one study would take each other's running trials for orphans, so a run claims
the study before it touches a trial. The claim is a row of table ``searchsvc_drivers`` (study
name as primary key) beside Optuna's tables, in the same SQLite file or PostgreSQL database:

- a free study is claimed with an ``INSERT``; of two drivers that try at once, the database's
  primary key lets exactly one in;
- a holder that is gone (its process no longer exists on this host, or, from another host, no
  heartbeat for ``stale_after_s``) is taken over with an ``UPDATE ... WHERE token = <its
  token>``: a compare-and-swap, so of two drivers taking over one dead holder, one wins;
- the holder renews its heartbeat on a timer thread of its own, every ``heartbeat_every_s``,
  whatever the driver's main loop is doing (storage retries, MLflow timeouts, a long Tune step).

Written by hand on SQLAlchemy (which Optuna's storage already uses) because Optuna's study
attributes have no compare-and-set.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from searchsvc.errors import StudyBusyError

__all__ = ["DRIVER_STALE_S", "HEARTBEAT_EVERY_S", "Holder", "StudyClaim", "holder_of"]

logger = logging.getLogger(__name__)

DRIVER_STALE_S = 60.0  # a driver on another host whose heartbeat is older is gone
HEARTBEAT_EVERY_S = 10.0

_METADATA = sa.MetaData()
_DRIVERS = sa.Table(
    "searchsvc_drivers",
    _METADATA,
    sa.Column("study_name", sa.String(512), primary_key=True),
    sa.Column("token", sa.String(32), nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("heartbeat", sa.Float, nullable=False),
    # The local Ray this driver started (its session folder), so that a run taking over from
    # a killed driver can stop what that driver left running (see execution/leftovers.py).
    sa.Column("ray_session", sa.String(1024), nullable=True),
)


@dataclass(frozen=True)
class Holder:
    """The driver that holds a study: which process, and when it last said it lives."""

    token: str
    host: str
    pid: int
    heartbeat: float
    ray_session: str | None = None

    def alive(self, stale_after_s: float) -> bool:
        """Its process exists (this host), or its heartbeat is fresh (another host)."""
        if self.host == socket.gethostname():
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:  # it exists, under another user
                return True
            return True
        return time.time() - self.heartbeat < stale_after_s


def _between_check_and_write() -> None:
    """Nothing; a test puts a pause here to race two drivers between reading and writing."""


def _engine(storage_url: str) -> sa.Engine:
    engine = sa.create_engine(storage_url, pool_pre_ping=True)
    try:
        _METADATA.create_all(engine, checkfirst=True)
    except sa.exc.DBAPIError:  # another driver created it at this moment (PostgreSQL says so
        # with a unique violation on its catalog, SQLite with "already exists")
        if not sa.inspect(engine).has_table(_DRIVERS.name):
            raise
    return engine


def holder_of(storage_url: str, study_name: str) -> Holder | None:
    """The driver holding ``study_name`` in that storage now, or None."""
    engine = _engine(storage_url)
    try:
        return _read(engine, study_name)
    finally:
        engine.dispose()


def _read(engine: sa.Engine, study_name: str) -> Holder | None:
    with engine.connect() as connection:
        row = connection.execute(
            sa.select(
                _DRIVERS.c.token, _DRIVERS.c.host, _DRIVERS.c.pid, _DRIVERS.c.heartbeat,
                _DRIVERS.c.ray_session,
            ).where(_DRIVERS.c.study_name == study_name)
        ).first()  # fmt: skip
    return Holder(*row) if row is not None else None


class StudyClaim:
    """This process's hold on one study, from :meth:`acquire` until :meth:`release`."""

    def __init__(
        self, engine: sa.Engine, study_name: str, holder: Holder, previous: Holder | None = None
    ) -> None:
        self._engine = engine
        self.study_name = study_name
        self.holder = holder
        self.previous = previous  # the dead driver this claim took over from, if any
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None

    @classmethod
    def acquire(
        cls,
        storage_url: str,
        study_name: str,
        *,
        stale_after_s: float = DRIVER_STALE_S,
        heartbeat_every_s: float = HEARTBEAT_EVERY_S,
    ) -> StudyClaim:
        """Claim ``study_name`` for this process and start its heartbeat timer.

        Raises:
            StudyBusyError: another live driver holds the study (or won it at this moment).
        """
        engine = _engine(storage_url)
        me = Holder(uuid.uuid4().hex, socket.gethostname(), os.getpid(), time.time())
        try:
            held = _read(engine, study_name)
            if held is not None and held.alive(stale_after_s):
                raise _busy(study_name, held)
            _between_check_and_write()
            if not _write(engine, study_name, me, replacing=held):
                raise _busy(study_name, _read(engine, study_name))
        except BaseException:
            engine.dispose()
            raise
        if held is not None:
            logger.info("%s: took over from a driver that is gone (pid %d on %s)",
                        study_name, held.pid, held.host)  # fmt: skip
        claim = cls(engine, study_name, me, previous=held)
        claim._start(heartbeat_every_s)
        return claim

    def record_ray_session(self, session_dir: str) -> None:
        """Remember the local Ray session this driver started, for whoever takes over."""
        with self._engine.begin() as connection:
            connection.execute(
                _DRIVERS.update()
                .where(_DRIVERS.c.study_name == self.study_name)
                .where(_DRIVERS.c.token == self.holder.token)
                .values(ray_session=session_dir)
            )  # fmt: skip

    def beat(self) -> bool:
        """Renew the heartbeat; False when the claim is no longer this process's."""
        now = time.time()
        with self._engine.begin() as connection:
            done = connection.execute(
                _DRIVERS.update()
                .where(_DRIVERS.c.study_name == self.study_name)
                .where(_DRIVERS.c.token == self.holder.token)
                .values(heartbeat=now)
            ).rowcount  # fmt: skip
        return done == 1

    def release(self) -> None:
        """Stop the heartbeat and give the study up (only if this process still holds it)."""
        self._stop.set()
        if self._timer is not None:
            self._timer.join(timeout=5)
        try:
            with self._engine.begin() as connection:
                connection.execute(
                    _DRIVERS.delete()
                    .where(_DRIVERS.c.study_name == self.study_name)
                    .where(_DRIVERS.c.token == self.holder.token)
                )  # fmt: skip
        finally:
            self._engine.dispose()

    def _start(self, every_s: float) -> None:
        self._timer = threading.Thread(
            target=self._beat_until_stopped, args=(every_s,), daemon=True,
            name=f"searchsvc-heartbeat-{self.study_name}",
        )  # fmt: skip
        self._timer.start()

    def _beat_until_stopped(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            try:
                if not self.beat():
                    logger.error("%s: another driver took the study over", self.study_name)
                    return
            except Exception as exc:  # a blip: the next beat tries again
                logger.warning("%s: heartbeat failed: %s", self.study_name, exc)


def _write(engine: sa.Engine, study_name: str, me: Holder, *, replacing: Holder | None) -> bool:
    """Insert this driver's row, or swap it in for ``replacing``; False when another won."""
    values = {
        "token": me.token, "host": me.host, "pid": me.pid, "heartbeat": me.heartbeat,
        "ray_session": None,
    }  # fmt: skip
    try:
        with engine.begin() as connection:
            if replacing is None:
                connection.execute(_DRIVERS.insert().values(study_name=study_name, **values))
                return True
            return connection.execute(
                _DRIVERS.update()
                .where(_DRIVERS.c.study_name == study_name)
                .where(_DRIVERS.c.token == replacing.token)
                .values(**values)
            ).rowcount == 1  # fmt: skip
    except IntegrityError:  # another driver inserted the row first
        return False


def _busy(study_name: str, holder: Holder | None) -> StudyBusyError:
    if holder is None:  # it came and went between two reads
        return StudyBusyError(f"study {study_name!r} was claimed by another driver just now")
    age = time.time() - holder.heartbeat
    return StudyBusyError(
        f"study {study_name!r} is being run by another driver (pid {holder.pid} on "
        f"{holder.host}, heartbeat {age:.0f} s ago); wait for it to end or stop it"
    )
