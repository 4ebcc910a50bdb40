"""The on-disk members directory, the self-contained form of an ensemble (what the MLflow model
stores as its ``members`` artifact): the only place for its layout and manifest, for writing it
(:func:`write_members_dir`, :func:`save_members_dir`), reading it back (:func:`read_manifest`,
:func:`load_members_dir`) and rebuilding a member's network from its params and state dict
(:func:`rebuild_network`). The layout is ``<dir>/members.json`` (the manifest, see
:func:`write_members_dir`) and per member ``<dir>/member_000_trial_12/state_dict.pt``
(``torch.save`` of the state dict, loaded with ``weights_only=True``) beside ``params.json`` (a
copy of the trial params, for humans). Pure numpy/torch: no Ray, Optuna or MLflow.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from searchsvc.ensemble.predictor import Ensemble, Member, _check_feature_range
from searchsvc.errors import EnsembleError, SearchsvcError, first_line
from searchsvc.trainer import Trainer

__all__ = [
    "MANIFEST_NAME",
    "MANIFEST_VERSION",
    "TrainerResolver",
    "load_members_dir",
    "read_manifest",
    "rebuild_network",
    "save_members_dir",
    "write_members_dir",
]

logger = logging.getLogger(__name__)

MANIFEST_NAME = "members.json"
MANIFEST_VERSION = 1

TrainerResolver = Callable[[str], Trainer]
"""Maps a trainer reference (``mlp`` or ``module:object``) to a trainer object."""


def rebuild_network(
    trainer: Trainer,
    params: Mapping[str, Any],
    n_features: int,
    n_classes: int,
    state_dict: Mapping[str, Any],
    *,
    who: str = "member",
) -> nn.Module:
    """Builds the network for ``params`` and loads ``state_dict`` into it (strict), eval mode.

    Raises:
        EnsembleError: building fails or the state dict does not fit the network.
    """
    try:
        net = trainer.build_network(dict(params), int(n_features), int(n_classes))
    except Exception as exc:  # a trainer's own errors: report which member and why
        raise EnsembleError(f"{who}: build_network failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(net, nn.Module):
        raise EnsembleError(f"{who}: build_network returned {type(net).__name__}, not nn.Module")
    try:
        net.load_state_dict(state_dict)
    except RuntimeError as exc:
        raise EnsembleError(
            f"{who}: state dict does not fit the network: {first_line(exc)}"
        ) from exc
    return net.eval()


def _member_dirname(index: int, trial_number: int) -> str:
    return f"member_{index:03d}_trial_{trial_number}"


def _json_default(obj: Any) -> Any:
    """Lets numpy scalars from Optuna params pass through json.dump."""
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def write_members_dir(
    entries: Sequence[tuple[Member, str | os.PathLike[str]]],
    out_dir: str | os.PathLike[str],
    *,
    trainer_ref: str,
    n_features: int,
    n_classes: int,
    class_names: Sequence[str] | None = None,
    feature_range: tuple[float, float] | None = None,
) -> Path:
    """Writes a members directory from saved state-dict files (e.g. each trial's
    ``model/state_dict.pt``), copying them in.

    The manifest ``members.json`` is::

        {"format_version": 1, "trainer": "<ref>", "n_features": 784, "n_classes": 10,
         "class_names": [...] | null,
         "feature_range": {"min": 0.0, "max": 1.0} | null,
         "members": [{"trial_number": 12, "weight": 0.4, "params": {...},
                      "val_score": 0.31 | null, "trainer": "<ref>",
                      "dir": "member_000_trial_12", "state_dict": "state_dict.pt",
                      "params_file": "params.json"}, ...]}

    Args:
        entries: ``(member, path to its torch-saved state dict)`` pairs, weights > 0.
        out_dir: the directory to create (may exist if empty).
        trainer_ref: how to find the trainer at load time (``mlp`` or ``module:object``).
        n_features: input features of the networks.
        n_classes: classes they predict.
        class_names: optional class names.
        feature_range: ``(min, max)`` of the training features (see
            :func:`feature_range_of`), so that prediction can refuse unscaled input.

    Returns:
        ``out_dir`` as a Path.
    """
    feature_range = _check_feature_range(feature_range, "write_members_dir")
    if len(entries) == 0:
        raise EnsembleError("cannot write an ensemble with no members")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise EnsembleError(f"members directory {out} already exists and is not empty")
    out.mkdir(parents=True, exist_ok=True)
    manifest_members = []
    for index, (member, state_path) in enumerate(entries):
        state_path = Path(state_path)
        if not state_path.is_file():
            raise EnsembleError(f"trial {member.trial_number}: no state dict at {state_path}")
        if not (math.isfinite(float(member.weight)) and member.weight > 0):
            raise EnsembleError(f"trial {member.trial_number}: weight must be > 0")
        sub = _member_dirname(index, member.trial_number)
        (out / sub).mkdir()
        shutil.copyfile(state_path, out / sub / "state_dict.pt")
        (out / sub / "params.json").write_text(
            json.dumps(member.params, indent=2, sort_keys=True, default=_json_default)
        )
        entry = asdict(member)
        entry.update(trainer=trainer_ref, dir=sub, state_dict="state_dict.pt")
        entry["params_file"] = "params.json"
        manifest_members.append(entry)
    manifest = {
        "format_version": MANIFEST_VERSION,
        "trainer": trainer_ref,
        "n_features": int(n_features),
        "n_classes": int(n_classes),
        "class_names": list(class_names) if class_names is not None else None,
        # Optional key: manifests without it (older ensembles) still load, with no range check.
        "feature_range": (
            None if feature_range is None else {"min": feature_range[0], "max": feature_range[1]}
        ),
        "members": manifest_members,
    }
    (out / MANIFEST_NAME).write_text(
        json.dumps(manifest, indent=2, sort_keys=True, default=_json_default)
    )
    logger.info("wrote %d ensemble members to %s", len(entries), out)
    return out


def save_members_dir(
    ensemble: Ensemble, out_dir: str | os.PathLike[str], *, trainer_ref: str
) -> Path:
    """Writes an in-memory :class:`Ensemble` as a members directory (see write_members_dir).

    Args:
        ensemble: the ensemble; its networks' current weights are saved (moved to CPU).
        out_dir: the directory to create (may exist if empty).
        trainer_ref: how to find the trainer that builds every member's network.

    Returns:
        ``out_dir`` as a Path.
    """
    with tempfile.TemporaryDirectory(prefix="searchsvc-members-") as staging:
        entries = []
        for index, (member, net) in enumerate(
            zip(ensemble.members, ensemble.networks, strict=True)
        ):
            path = Path(staging) / f"{index}.pt"
            torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, path)
            entries.append((member, path))
        return write_members_dir(
            entries,
            out_dir,
            trainer_ref=trainer_ref,
            n_features=ensemble.n_features,
            n_classes=ensemble.n_classes,
            class_names=ensemble.class_names,
            feature_range=ensemble.feature_range,
        )


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Reads and checks ``members.json`` of a members directory (see write_members_dir)."""
    path = Path(path)
    manifest_path = path / MANIFEST_NAME
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise EnsembleError(f"no {MANIFEST_NAME} in {path}; not a members directory") from None
    except json.JSONDecodeError as exc:
        raise EnsembleError(f"{manifest_path} is not valid JSON: {exc}") from None
    version = manifest.get("format_version")
    if version != MANIFEST_VERSION:
        raise EnsembleError(
            f"{manifest_path}: unsupported format_version {version!r} (expected "
            f"{MANIFEST_VERSION})"
        )
    for key in ("n_features", "n_classes", "members"):
        if key not in manifest:
            raise EnsembleError(f"{manifest_path}: missing key {key!r}")
    if not manifest["members"]:
        raise EnsembleError(f"{manifest_path}: no members")
    _check_feature_range(manifest.get("feature_range"), f"{manifest_path}")
    return manifest


def _resolve_trainer(ref: str) -> Trainer:
    """The default resolver of :func:`load_members_dir`: ``searchsvc.registry.resolve_trainer``.

    Imported here rather than at module level, to keep this module free of heavy imports.

    Raises:
        EnsembleError: the trainer cannot be found or has no ``build_network``.
    """
    if not isinstance(ref, str) or not ref.strip():
        raise EnsembleError(f"trainer reference must be a non-empty string; got {ref!r}")
    from searchsvc.registry import resolve_trainer

    try:
        obj = resolve_trainer(ref)
    except SearchsvcError as exc:
        raise EnsembleError(f"cannot rebuild ensemble members: {exc}") from exc
    if not callable(getattr(obj, "build_network", None)):
        raise EnsembleError(f"trainer {ref!r} resolved to {obj!r}, which has no build_network()")
    return obj


def load_members_dir(
    path: str | os.PathLike[str],
    *,
    resolver: TrainerResolver | None = None,
    device: str | torch.device = "cpu",
) -> Ensemble:
    """Rebuilds an :class:`Ensemble` from a members directory.

    Args:
        path: the directory written by :func:`write_members_dir` / :func:`save_members_dir`.
        resolver: maps a trainer reference to a trainer; default
            ``searchsvc.registry.resolve_trainer`` (imported when needed), so a members
            directory resolves trainers exactly as a study file does.
        device: where to put the networks.

    Returns:
        The ensemble, networks in eval mode.

    Raises:
        EnsembleError: the manifest or a state dict is missing or does not fit, or the
            default resolver cannot find a trainer or finds one without ``build_network``.
    """
    root = Path(path)
    manifest = read_manifest(root)
    resolve = resolver or _resolve_trainer
    trainers: dict[str, Trainer] = {}
    members: list[Member] = []
    networks: list[nn.Module] = []
    for entry in manifest["members"]:
        member = Member(
            trial_number=int(entry["trial_number"]),
            weight=float(entry["weight"]),
            params=dict(entry["params"]),
            val_score=None if entry.get("val_score") is None else float(entry["val_score"]),
            seed=None if entry.get("seed") is None else int(entry["seed"]),
            reseed=int(entry.get("reseed") or 0),
            best_epoch=None if entry.get("best_epoch") is None else int(entry["best_epoch"]),
        )
        ref = entry.get("trainer") or manifest.get("trainer")
        if ref not in trainers:
            trainers[ref] = resolve(ref)
        state_path = root / entry["dir"] / entry.get("state_dict", "state_dict.pt")
        who = f"trial {member.key}"  # "trial 7", "trial 7-reseed-1"
        try:
            # weights_only: a state dict is tensors only, and this refuses arbitrary pickles.
            state = torch.load(state_path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise EnsembleError(f"{who}: missing state dict {state_path}") from None
        except Exception as exc:
            raise EnsembleError(f"{who}: cannot load {state_path}: {exc}") from exc
        networks.append(
            rebuild_network(
                trainers[ref],
                member.params,
                manifest["n_features"],
                manifest["n_classes"],
                state,
                who=who,
            )
        )
        members.append(member)
    return Ensemble(
        members,
        networks,
        manifest["n_features"],
        manifest["n_classes"],
        manifest.get("class_names"),
        device=device,
        feature_range=_check_feature_range(
            manifest.get("feature_range"), f"{root / MANIFEST_NAME}"
        ),
    )
