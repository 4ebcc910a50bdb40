"""Which networks a refit retrains, and for how long: each chosen member (and the best single
trial) from its own seed for its best epoch count; a member that recorded neither cannot be
refit, and the refit is then refused as a whole (the pre-refit ensemble is kept)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from searchsvc.ensemble.candidates import Candidate
from searchsvc.ensemble.predictor import Member
from searchsvc.ensemble.refit import refit_jobs
from searchsvc.retraining import RetrainJob


def _candidate(number: int, *, reseed: int = 0, seed: int | None = 11, best: int | None = 7):
    member = Member(number, 1.0, {"width": 8}, 0.9, seed=seed, reseed=reseed, best_epoch=best)
    return Candidate(member, Path(f"{number}.pt"), network=None, val_probs=np.ones((1, 2)))


def test_each_chosen_member_is_refit_from_its_seed_for_its_best_epoch_count() -> None:
    pool = [_candidate(4), _candidate(9, seed=23, best=12), _candidate(4, reseed=2, seed=5)]

    assert refit_jobs(pool, [0, 2]) == [
        RetrainJob("refit", 4, 0, {"width": 8}, 11, epochs=7, member="4"),
        RetrainJob("refit", 4, 2, {"width": 8}, 5, epochs=7, member="4-reseed-2"),
    ]


def test_a_member_without_a_recorded_best_epoch_refuses_the_refit_naming_it() -> None:
    pool = [_candidate(4), _candidate(9, best=None)]

    assert refit_jobs(pool, [0, 1]) == (
        "trial 9 records no best epoch or seed (stored before refit existed)"
    )


def test_a_member_without_a_recorded_seed_refuses_the_refit_naming_it() -> None:
    pool = [_candidate(4, reseed=1, seed=None)]

    assert refit_jobs(pool, [0]) == (
        "trial 4-reseed-1 records no best epoch or seed (stored before refit existed)"
    )
