"""The recipe's diagnosis on hand-made curves: one case per label."""

from __future__ import annotations

from searchsvc.study.diagnosis import ADVICE, Thresholds, diagnose


def test_low_training_accuracy_is_underfit_not_overfit():
    curves = {
        "train_loss": [2.3, 2.2, 2.1, 2.05],
        "train_accuracy": [0.11, 0.2, 0.3, 0.35],
        "val_loss": [2.3, 2.25, 2.2, 2.3],
        "val_accuracy": [0.1, 0.15, 0.2, 0.2],
    }
    result = diagnose(curves)
    assert result.label == "underfit"
    assert result.evidence == {"train_accuracy": 0.35}
    assert "activation" in result.advice and "do not add dropout" in result.advice


def test_flat_training_loss_without_accuracy_is_underfit():
    result = diagnose({"train_loss": [1.0, 0.98, 0.97, 0.96]})
    assert result.label == "underfit"
    assert round(result.evidence["train_loss_drop"], 2) == 0.04


def test_rising_validation_loss_while_training_loss_falls_is_overfit():
    curves = {
        "train_loss": [0.5, 0.2, 0.1, 0.05, 0.02],
        "train_accuracy": [0.9, 0.95, 0.97, 0.99, 1.0],
        "val_loss": [0.4, 0.3, 0.33, 0.38, 0.45],
        "val_accuracy": [0.9, 0.93, 0.93, 0.92, 0.92],
    }
    result = diagnose(curves)
    assert result.label == "overfit"
    assert result.evidence["best_val_epoch"] == 2
    assert abs(result.evidence["val_loss_rise"] - 0.5) < 1e-9
    assert "dropout" in result.advice


def test_growing_accuracy_gap_is_overfit_even_if_val_loss_is_flat():
    curves = {
        "train_accuracy": [0.92, 0.96, 0.99],
        "val_accuracy": [0.91, 0.92, 0.92],
        "train_loss": [0.3, 0.1, 0.03],
        "val_loss": [0.3, 0.29, 0.3],
    }
    assert diagnose(curves).label == "overfit"


def test_good_training_and_tracking_validation_is_healthy():
    curves = {
        "train_loss": [0.4, 0.2, 0.12],
        "train_accuracy": [0.9, 0.95, 0.97],
        "val_loss": [0.35, 0.2, 0.14],
        "val_accuracy": [0.91, 0.95, 0.96],
    }
    result = diagnose(curves)
    assert result.label == "healthy"
    assert result.summary().startswith("healthy: train_accuracy=0.97")


def test_divergence_wins_over_every_other_rule():
    assert diagnose({"train_loss": [2.0, float("nan")]}, diverged=True).label == "diverged"


def test_every_label_has_advice():
    assert set(ADVICE) == {"diverged", "underfit", "overfit", "healthy", "unknown"}


def test_a_stable_gap_since_the_best_validation_epoch_is_healthy():
    """Epoch 1's training accuracy is averaged while the network learns, so the gap grows from
    a negative start in every run; only growth after the best validation epoch counts."""
    curves = {
        "train_accuracy": [0.70, 0.93, 0.96, 0.975],
        "val_accuracy": [0.90, 0.93, 0.94, 0.94],
        "train_loss": [0.9, 0.25, 0.15, 0.1],
        "val_loss": [0.35, 0.25, 0.21, 0.20],
    }
    assert diagnose(curves).label == "healthy"


def test_underfit_threshold_is_adjustable_for_a_harder_dataset():
    curves = {"train_loss": [0.6, 0.45, 0.4], "train_accuracy": [0.8, 0.86, 0.88]}
    assert diagnose(curves).label == "underfit"
    assert diagnose(curves, thresholds=Thresholds(underfit_train_accuracy=0.85)).label == "healthy"


def test_study_file_thresholds_default_to_the_documented_constants():
    from searchsvc.study.spec import DiagnosisSpec

    assert Thresholds(**DiagnosisSpec().model_dump()) == Thresholds()
    assert Thresholds().underfit_train_accuracy == 0.90
