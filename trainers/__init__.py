"""The trainers that ship with searchsvc: ``mlp`` (every knob of the classic material) and
``noop`` (trains nothing; for the overhead benchmark and fast tests).

Nothing here imports Ray, Optuna or MLflow: a trainer sees only its params, a
:class:`searchsvc.trainer.Dataset` and a report callback (see ``searchsvc/trainer.py``).
:mod:`trainers.mlp` is built from :mod:`trainers.mlp.params` (params),
:mod:`trainers.mlp.layers` (network, init, maxout), :mod:`trainers.mlp.optim` (optimisers,
schedules, L1, max-norm), :mod:`trainers.mlp.diagnostics` (per-layer metrics, activation
histograms) and :mod:`trainers.mlp.rbm` (RBM pre-training).
"""
