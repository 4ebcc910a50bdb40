"""Which configurations the reseeds retrain: the best N once each, or the fewer that
completed in turn, each turn with a further seed."""

from __future__ import annotations

from searchsvc.ensemble.reseeds import ReseedOutcome, reseed_plan


def test_with_enough_configurations_the_best_n_are_reseeded_once_each() -> None:
    assert reseed_plan(["a", "b", "c", "d"], 3) == [(0, 1), (1, 1), (2, 1)]


def test_with_fewer_configurations_the_best_ones_are_reseeded_in_turn() -> None:
    assert reseed_plan(["a", "b"], 5) == [(0, 1), (1, 1), (0, 2), (1, 2), (0, 3)]


def test_no_completed_configuration_means_no_reseed() -> None:
    assert reseed_plan([], 4) == []


def test_the_outcome_line_says_what_ran_what_was_kept_and_what_the_budget_cut() -> None:
    failed = ["reseed-0003-2: diverged at epoch 2"]
    outcome = ReseedOutcome(trials=[3, 1], kept=1, finished=2, not_started=1, out_of_time=1,
                            failed=failed, seconds=61.4)  # fmt: skip
    assert outcome.line() == (
        "reseeds of trials [3, 1]: 2 finished, 1 kept from an earlier run, 2 cut by the time "
        "budget, 1 failed (reseed-0003-2: diverged at epoch 2) in 61 s"
    )
