"""Training configuration: a YAML file mapped onto dataclasses, with dotted overrides.

A config has three sections::

    model:                      # PotentialConfig fields + the backbone's own options, flat
      backbone: ponita
      cutoff: 5.0
      hidden: 64                # -> PonitaConfig.hidden (validated against the backbone)
    data:                       # DataSection
      train_file: ethanol.h5
      train_split: train
      valid_size: 50
    train:                      # TrainSection
      lr: 5.0e-3
      epochs: 200

Command-line overrides are ``section.key=value`` with the value parsed by
``yaml.safe_load`` (``train.lr=5e-4``, ``model.elements=[1,6,8]``, ``train.ema_decay=null``).
Unknown keys raise ``ValueError`` naming the key and listing the valid ones.
:func:`config_to_dict` gives the resolved config (every default filled in, backbone options
included) that is saved as ``config.yaml`` in the run directory.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import yaml

from ..coerce import attribute_docs, coerce_fields
from ..potentials.config import PotentialConfig
from ..safe_write import atomic_write
from .targets import POTENTIAL_BATCH, POTENTIAL_LR, PROPERTY_BATCH, property_lr, readout_of

SECTIONS = ("model", "data", "train")
LOSSES = ("mse", "huber", "l1")
SCHEDULERS = ("auto", "plateau", "cosine", "linear", "constant")
# What may change when a run is resumed: how long it trains and how it runs, never what it learns.
RESUME_KEYS = frozenset({"train.epochs", "train.max_steps", "train.max_time", "train.progress", "train.threads",
                         "train.checkpoint_every", "train.device", "data.num_workers", "data.valid_batch_size"})
_DURATION_UNITS = {"s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "hour": 3600.0, "d": 86400.0}


def parse_duration(value: Any, key: str) -> float:
    """Seconds from a number (seconds) or a text such as ``90s``, ``8min``, ``1.5h``; ValueError
    naming ``key`` with the accepted forms."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip().lower().replace(" ", "")
        number = text.rstrip("abcdefghijklmnopqrstuvwxyz")
        unit = text[len(number):] or "s"
        try:
            seconds = float(number) * _DURATION_UNITS[unit]
        except (KeyError, ValueError):
            raise ValueError(f"{key}: {value!r} is not a duration (seconds, or e.g. 90s, 8min, 1.5h)") from None
    if not seconds > 0:
        raise ValueError(f"{key} must be positive, got {value!r}")
    return seconds


@dataclass
class DataSection:
    """Where the frames come from (equipot HDF5 files; see ``equipot convert``).

    Attributes:
        train_file: HDF5 file with the training frames.
        train_split: named split of ``train_file`` used for training (null = all frames).
        valid_file: HDF5 file with validation frames (default ``train_file``).
        valid_split: named split for validation; when neither ``valid_file`` nor ``valid_split``
            is given, ``valid_size`` frames are drawn at random (seed ``seed``) from the training frames.
        valid_size: fraction (< 1) or number of training frames held out for validation.
        n_train: use at most this many training frames (a seeded random subset).
        n_valid: use at most this many validation frames.
        test_file: HDF5 file evaluated once with the final model (default ``train_file`` when
            ``test_split`` is given).
        test_split: named split for the final test.
        batch_size: structures per optimiser step (global: divided among DDP ranks); null: 5 for
            a potential, 32 for a property (``train.property``).
        valid_batch_size: structures per validation batch (per rank).
        num_workers: DataLoader worker processes building neighbour lists.
        seed: seed of the random train/validation split and subsets.
        stats_frames: frames used for avg_num_neighbors/min_pair_distance/force RMS (null = all).
    """

    train_file: str | None = None
    train_split: str | None = None
    valid_file: str | None = None
    valid_split: str | None = None
    valid_size: float = 0.05
    n_train: int | None = None
    n_valid: int | None = None
    test_file: str | None = None
    test_split: str | None = None
    batch_size: int | None = None
    valid_batch_size: int = 16
    num_workers: int = 0
    seed: int = 0
    stats_frames: int | None = None


@dataclass
class TrainSection:
    """The optimisation.

    Attributes:
        run_dir: directory for config.yaml, metrics.csv, checkpoint.pt, model.pt, plots.
        seed: seeds model initialisation and the data order.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (cuda when available).
        dtype: ``float64`` or ``float32`` (model and data).
        epochs: passes over the training frames.
        max_steps: stop after this many optimiser steps (null = no limit).
        max_time: stop after this much training time: seconds, or a duration such as ``90s``,
            ``8min``, ``2h`` (null = no limit).
        lr: peak learning rate of AdamW; null: 5e-3 for a potential, for a property 3e-3 with the
            intensive readout and 2e-3 with the others (chosen by measurement on QM9:
            benchmarks/RESULTS.md).
        weight_decay: AdamW decoupled weight decay.
        amsgrad: use the AMSGrad variant.
        warmup_steps: linear warm-up of the learning rate over this many steps.
        scheduler: ``plateau`` (ReduceLROnPlateau on the monitored score), ``cosine`` or
            ``linear`` (decay to ``min_lr`` at the end of the budget: the first of ``epochs``,
            ``max_steps`` and ``max_time`` to run out), ``constant``, or ``auto``: cosine when
            ``max_steps`` or ``max_time`` is set, else plateau.
        plateau_factor: learning-rate factor when the score stops improving.
        plateau_patience: validations without improvement before the rate is reduced.
        min_lr: lower bound of the learning rate.
        clip_grad_norm: clip the global gradient norm to this (null = no clipping).
        ema_decay: exponential moving average of the weights (null = off); the EMA weights are
            the ones validated and saved.
        energy_weight: weight of the per-atom energy MSE ((eV/atom)^2).
        energy_refit_frames: with ``model.learn_atomic_energies``, re-fit the per-element energy
            correction by least squares on at most this many training frames (a fixed seeded
            subset, at most a tenth of the training set but at least 50 frames) at the start and
            before every validation (0 = only learn it by gradient).
        forces_weight: weight of the force-component MSE ((eV/Å)^2).
        stress_weight: weight of the stress MSE ((eV/Å^3)^2), used when the data has stress.
        property: train a property model for this per-structure property (e.g. ``U0``, ``gap``,
            ``mu``) instead of a potential on energy and forces; its readout and references
            follow the property (model.target_readout, model.atomic_energies: auto).
        property_weight: weight of the property loss (the error in units of the property's
            spread, see equipot.training.targets.loss_scale).
        loss: ``mse``, ``huber`` or ``l1`` (mean absolute error).
        huber_delta: Huber transition point (in the target's unit; for a property, in units of
            its spread).
        monitor: validation score for best model, plateau and early stopping: ``loss``,
            ``energy_mae``, ``forces_mae`` or ``<property>_mae``.
        patience: stop after this many validations without improvement (null = never).
        valid_every: validate every this many epochs.
        valid_every_steps: also validate every this many optimiser steps (null = only by epochs):
            more chances to keep the best model and for the plateau schedule when epochs are long.
        checkpoint_every: write checkpoint.pt every this many steps (0 = only at the end).
        progress: show a progress bar per epoch (only on a terminal).
        threads: torch CPU threads (null: every core this process may use, shared among DDP
            processes on one machine).
    """

    run_dir: str = "runs/equipot"
    seed: int = 0
    device: str = "auto"
    dtype: str = "float64"
    epochs: int = 100
    max_steps: int | None = None
    max_time: float | str | None = None
    lr: float | None = None
    weight_decay: float = 0.0
    amsgrad: bool = True
    warmup_steps: int = 50
    scheduler: str = "auto"
    plateau_factor: float = 0.8
    plateau_patience: int = 5
    min_lr: float = 1e-6
    clip_grad_norm: float | None = 10.0
    ema_decay: float | None = 0.99
    energy_weight: float = 1.0
    energy_refit_frames: int = 500
    forces_weight: float = 100.0
    stress_weight: float = 1.0
    property: str | None = None
    property_weight: float = 1.0
    loss: str = "mse"
    huber_delta: float = 0.01
    monitor: str = "loss"
    patience: int | None = None
    valid_every: int = 1
    valid_every_steps: int | None = None
    checkpoint_every: int = 500
    progress: bool = True
    threads: int | None = None


@dataclass
class Config:
    """The whole training configuration (see the module docstring)."""

    model: PotentialConfig = field(default_factory=PotentialConfig)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)

    def validate(self) -> None:
        """Check values that a type alone cannot (ValueError naming the key)."""
        t, d = self.train, self.data
        choices = {
            "train.dtype": (t.dtype, ("float32", "float64")),
            "train.scheduler": (t.scheduler, SCHEDULERS),
            "train.loss": (t.loss, LOSSES),
        }
        for key, (value, allowed) in choices.items():
            if value not in allowed:
                raise ValueError(f"{key}: {value!r} is not one of {', '.join(allowed)}")
        if t.max_time is not None:
            t.max_time = parse_duration(t.max_time, "train.max_time")
        if t.threads is not None and t.threads < 1:
            raise ValueError(f"train.threads must be >= 1 or null, got {t.threads}")
        if t.valid_every_steps is not None and t.valid_every_steps < 1:
            raise ValueError(f"train.valid_every_steps must be >= 1 or null, got {t.valid_every_steps}")
        self.resolve_defaults()
        positive = {"train.lr": t.lr, "data.batch_size": d.batch_size,
                    "data.valid_batch_size": d.valid_batch_size, "train.valid_every": t.valid_every}
        for key, value in positive.items():
            if not value > 0:
                raise ValueError(f"{key} must be positive, got {value}")
        nonneg = {"train.epochs": t.epochs, "train.warmup_steps": t.warmup_steps,
                  "train.checkpoint_every": t.checkpoint_every, "data.num_workers": d.num_workers,
                  "train.weight_decay": t.weight_decay, "data.valid_size": d.valid_size,
                  "train.energy_refit_frames": t.energy_refit_frames}
        for key, value in nonneg.items():
            if value < 0:
                raise ValueError(f"{key} must be >= 0, got {value}")
        if t.ema_decay is not None and not 0.0 <= t.ema_decay < 1.0:
            raise ValueError(f"train.ema_decay must be in [0, 1) or null, got {t.ema_decay}")
        if not 0.0 < t.plateau_factor < 1.0:
            raise ValueError(f"train.plateau_factor must be in (0, 1), got {t.plateau_factor}")
        if d.train_file is None:
            raise ValueError("data.train_file is not set (give it in the config or as data.train_file=PATH)")

    def resolve_defaults(self) -> None:
        """Fill in the values whose default depends on what is trained (a potential or a
        property): ``train.lr`` and ``data.batch_size`` (see :mod:`equipot.training.targets`)."""
        prop = self.train.property is not None
        if self.train.lr is None:
            self.train.lr = (property_lr(readout_of(self.train.property, self.model.target_readout)) if prop
                             else POTENTIAL_LR)
        if self.data.batch_size is None:
            self.data.batch_size = PROPERTY_BATCH if prop else POTENTIAL_BATCH


def config_from_dict(values: dict[str, Any] | None) -> Config:
    """Build a :class:`Config` from nested dicts (sections model/data/train)."""
    values = values or {}
    if not isinstance(values, dict):
        raise ValueError(f"a config must be a mapping with sections {', '.join(SECTIONS)}, got {type(values).__name__}")
    unknown = [k for k in values if k not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown config section '{unknown[0]}' (sections: {', '.join(SECTIONS)})")
    config = Config()
    for name in SECTIONS:
        section = values.get(name) or {}
        if not isinstance(section, dict):
            raise ValueError(f"config section '{name}' must be a mapping, got {section!r}")
        if name == "model":
            config.model = PotentialConfig.from_flat(section)
        else:
            for key, value in coerce_fields(type(getattr(config, name)), section, name).items():
                setattr(getattr(config, name), key, value)
    return config


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=5e-4"`` -> (["train", "lr"], 0.0005); values are parsed by ``yaml.safe_load``."""
    if "=" not in text:
        raise ValueError(f"override {text!r} is not of the form section.key=value")
    key, raw = text.split("=", 1)
    path = key.strip().split(".")
    if len(path) < 2 or not all(path):
        raise ValueError(f"override {text!r}: the key must be section.key (e.g. train.lr=5e-4)")
    if path[0] not in SECTIONS:
        raise ValueError(f"unknown config section '{path[0]}' in override {text!r} (sections: {', '.join(SECTIONS)})")
    try:
        value = safe_yaml(raw, f"override {text!r}") if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ValueError(f"override {text!r}: value is not valid YAML ({yaml_error_line(exc)})") from None
    # yaml 1.1 reads "5e-4" (no dot) as a string; users mean a number.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in "eE.") else value
        except ValueError:
            pass
    return path, value


def yaml_error_line(exc: yaml.YAMLError) -> str:
    """A YAML error on one line: the problem and where (1-based line and column), for the CLI's one-line errors."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return problem + (f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "")


def apply_overrides(values: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides to nested config dicts (in place; also returned)."""
    for text in overrides:
        path, value = parse_override(text)
        node = values
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ValueError(f"override {text!r}: '{part}' is not a section")
            node = child
        node[path[-1]] = value
    return values


PRESETS = Path(__file__).resolve().parents[1] / "configs"


def presets() -> list[str]:
    """Names of the configs shipped with equipot (``equipot train NAME`` finds them)."""
    return sorted(p.stem for p in PRESETS.glob("*.yaml"))


def resolve_config_path(path: str | os.PathLike) -> Path:
    """``path`` if it is a file, else the shipped preset of that name (``rmd17_ponita``,
    ``rmd17_ponita.yaml`` or ``configs/rmd17_ponita.yaml``); FileNotFoundError names both."""
    path = Path(path)
    if path.is_file():
        return path
    preset = PRESETS / (path.stem + ".yaml")
    if path.suffix in ("", ".yaml") and path.parent.name in ("", "configs") and preset.is_file():
        return preset
    raise FileNotFoundError(f"config file {path} does not exist (shipped presets: {', '.join(presets())})")


#: a config file larger than this is not a config (the shipped presets are ~2 kB)
MAX_CONFIG_BYTES = 1 << 20


def safe_yaml(text: str, source: str) -> Any:
    """``yaml.safe_load(text)`` without aliases: an anchor and aliases nested a few levels deep
    (a few hundred bytes) expand into gigabytes when the values are walked, and a config never
    needs them. ValueError naming ``source`` and the line (yaml.YAMLError for other syntax errors)."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ValueError(f"{source}: {len(text)} bytes is too large for a config file (at most {MAX_CONFIG_BYTES})")
    if "*" in text:  # only then can there be an alias; scanning tokens is cheap
        for token in yaml.scan(text, Loader=yaml.SafeLoader):
            if isinstance(token, yaml.AliasToken):
                raise ValueError(f"{source} line {token.start_mark.line + 1}: YAML aliases (*{token.value}) are not "
                                 f"supported in equipot configs; write the values out")
    return yaml.safe_load(text)


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML config file, or a shipped preset by name, into nested dicts
    (FileNotFoundError / ValueError naming the file)."""
    path = resolve_config_path(path)
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ValueError(f"{path}: {path.stat().st_size} bytes is too large for a config file (at most "
                         f"{MAX_CONFIG_BYTES})")
    try:
        values = safe_yaml(path.read_text(), str(path))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {yaml_error_line(exc)}") from None
    if values is not None and not isinstance(values, dict):
        raise ValueError(f"{path}: a config must be a mapping with sections {', '.join(SECTIONS)}")
    return values or {}


def load_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config (or start from the defaults), apply overrides, validate."""
    values = read_yaml(path) if path is not None else {}
    where = f" in {path}" if path is not None else ""
    try:
        config = config_from_dict(apply_overrides(values, overrides))
    except ValueError as exc:
        raise ValueError(f"{exc}{where}") from None
    config.validate()
    return config


def config_to_dict(config: Config) -> dict[str, Any]:
    """The resolved config as nested plain dicts: every default filled in, backbone options flat in
    ``model`` (so the result can be read back by :func:`config_from_dict`)."""
    out = dataclasses.asdict(config)
    out["model"] = config.model.to_flat()
    return out


def describe_config(backbone: str | None = "ponita") -> str:
    """Every config key with its default and description (for ``equipot train --help``)."""
    from ..potentials.registry import get_backbone

    lines = []
    for name, cls in (("model", PotentialConfig), ("data", DataSection), ("train", TrainSection)):
        docs = attribute_docs(cls)
        lines.append(f"{name}:")
        for f in fields(cls):
            if f.name == "backbone_options":
                continue
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            lines.append(f"  {name}.{f.name} = {default!r}: {docs.get(f.name, '')}")
        if name == "model" and backbone is not None:
            try:
                bcls = get_backbone(backbone)[1]
            except ValueError:
                continue
            bdocs = attribute_docs(bcls)
            lines.append(f"  backbone options of '{backbone}' (model.<option>):")
            for f in fields(bcls):
                default = f.default_factory() if f.default is dataclasses.MISSING else f.default
                lines.append(f"  model.{f.name} = {default!r}: {bdocs.get(f.name, '')}")
    return "\n".join(lines)


def resume_config(run_dir: str | os.PathLike, overrides: Sequence[str] = ()) -> Config:
    """The config of an existing run (its config.yaml) with overrides applied.

    Only what decides how long and how the run goes on may change (:data:`RESUME_KEYS`: the
    training length, so that a run, finished or not, can be extended, and the machinery); an
    override of anything the model or its data depend on is a ValueError naming the key.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} is not a training run directory (no such folder)")
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a training run directory (no config.yaml)")
    saved = config_from_dict(read_yaml(path))
    saved.validate()
    for text in overrides:
        if parse_override(text)[0] == ["train", "run_dir"]:
            raise ValueError(f"--resume {run_dir} names the run directory; train.run_dir cannot be given with it "
                             f"(to continue elsewhere, copy the folder and resume the copy)")
    config = config_from_dict(apply_overrides(read_yaml(path), overrides))
    config.train.run_dir = str(run_dir)
    config.validate()
    before, after = config_to_dict(saved), config_to_dict(config)
    for text in overrides:
        section, *rest = parse_override(text)[0]
        key = f"{section}.{rest[0]}"
        old, new = before[section].get(rest[0]), after[section].get(rest[0])
        if key not in RESUME_KEYS and old != new:
            allowed = ", ".join(sorted(RESUME_KEYS))
            raise ValueError(f"--resume {run_dir}: {key} cannot change in a resumed run (it is {old!r} there, "
                             f"{new!r} asked); a resumed run may change only {allowed}. Start a new run "
                             f"(another train.run_dir) to change {key}")
    return config


def save_config(config: Config, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML, atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
