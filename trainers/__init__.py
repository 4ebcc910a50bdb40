"""Training code for searchsvc: data set loaders and the fully-connected (MLP) trainer.

Nothing here imports Ray, Optuna or MLflow: a trainer sees only its params, a
:class:`searchsvc.trainer.Dataset` and a report callback (see ``searchsvc/trainer.py``).

- :mod:`trainers.datasets`: ``load_dataset`` for MNIST, Fashion-MNIST, sklearn digits,
  user ``.npz`` files and a synthetic problem (with :mod:`trainers.idx_files` for the
  IDX files' lookup, checksums and download, and :mod:`trainers.npz_files` for ``.npz``).
- :mod:`trainers.mlp`: ``trainer``, the MLP trainer (``trainer: trainers.mlp:trainer``), built
  from :mod:`trainers.mlp_params` (params), :mod:`trainers.layers` (network, init, maxout),
  :mod:`trainers.optim` (optimisers, schedules, L1, max-norm) and
  :mod:`trainers.diagnostics` (per-layer metrics, activation histograms).
"""
