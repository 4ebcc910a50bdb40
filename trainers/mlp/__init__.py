"""The built-in MLP trainer (``trainer: mlp``): every knob of the classic material."""

from trainers.mlp.training import MLPTrainer, trainer

__all__ = ["MLPTrainer", "trainer"]
