"""Config: YAML onto dataclasses, dotted overrides, unknown keys named, resolved config round trip."""
from __future__ import annotations

import pytest
import yaml

from equipot.training.config import (
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    parse_override,
    save_config,
)


def write(tmp_path, values) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def test_yaml_and_overrides(tmp_path):
    path = write(tmp_path, {"model": {"backbone": "ponita", "hidden": 32, "cutoff": 4.5},
                            "data": {"train_file": "x.h5", "batch_size": 4},
                            "train": {"lr": 1e-3, "epochs": 3}})
    cfg = load_config(path, ["model.hidden=128", "train.lr=5e-4", "train.ema_decay=null",
                             "model.elements=[1,6,8]", "data.valid_size=50"])
    assert cfg.model.backbone_options == {"hidden": 128}
    assert cfg.model.cutoff == 4.5 and cfg.model.elements == [1, 6, 8]
    assert cfg.train.lr == 5e-4 and isinstance(cfg.train.lr, float)
    assert cfg.train.ema_decay is None and cfg.train.epochs == 3
    assert cfg.data.valid_size == 50.0 and cfg.data.batch_size == 4


def test_parse_override_values():
    assert parse_override("train.lr=1e-3") == (["train", "lr"], 1e-3)
    assert parse_override("train.lr=5e-4") == (["train", "lr"], 5e-4)  # YAML 1.1 reads this as a string
    assert parse_override("data.train_file=runs/e5.h5") == (["data", "train_file"], "runs/e5.h5")
    assert parse_override("train.patience=null") == (["train", "patience"], None)
    with pytest.raises(ValueError, match="section.key=value"):
        parse_override("train.lr")
    with pytest.raises(ValueError, match="unknown config section 'optim'"):
        parse_override("optim.lr=1")


@pytest.mark.parametrize("override, key", [
    ("train.lrr=1", "train.lrr"),
    ("data.batchsize=3", "data.batchsize"),
    ("model.hiden=3", "model.hiden"),
])
def test_unknown_keys_are_named(override, key):
    with pytest.raises(ValueError, match=f"unknown config key '{key}'"):
        load_config(None, ["data.train_file=x.h5", override])


def test_unknown_key_in_file_names_file(tmp_path):
    path = write(tmp_path, {"train": {"epocs": 3}, "data": {"train_file": "x.h5"}})
    with pytest.raises(ValueError, match=r"unknown config key 'train.epocs'.*config.yaml"):
        load_config(path)


@pytest.mark.parametrize("override, message", [
    ("train.epochs=many", "train.epochs: expected an integer"),
    ("model.hidden=1.5", "model.hidden: expected an integer"),
    ("train.dtype=float16", "train.dtype"),
    ("train.scheduler=step", "train.scheduler"),
    ("train.lr=-1", "train.lr must be positive"),
    ("model.r3_only=maybe", "model.r3_only: expected true or false"),
    ("model.scale=big", "model.scale"),
])
def test_bad_values(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, ["data.train_file=x.h5", override])


def test_missing_train_file():
    with pytest.raises(ValueError, match="data.train_file is not set"):
        load_config(None, [])


def test_missing_config_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_resolved_config_round_trip(tmp_path):
    cfg = load_config(None, ["data.train_file=x.h5", "model.hidden=24", "model.atomic_energies={1: -13.6}"])
    save_config(cfg, tmp_path / "config.yaml")
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    # every backbone option is written out, not only the ones given
    assert saved["model"]["hidden"] == 24 and "grid_size" in saved["model"] and "options" not in saved["model"]
    assert saved["train"]["forces_weight"] == cfg.train.forces_weight
    again = config_from_dict(saved)
    again.validate()
    assert config_to_dict(again) == config_to_dict(cfg)
    assert again.model.atomic_energies == {1: -13.6}


def test_apply_overrides_creates_sections():
    values = apply_overrides({}, ["train.lr=0.1", "model.hidden=8"])
    assert values == {"train": {"lr": 0.1}, "model": {"hidden": 8}}


def test_yaml_errors_are_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  lr: 1e-3\n  epochs: [1, 2\nmodel:\n  hidden: 8\n")
    with pytest.raises(ValueError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: not valid YAML") and "line " in message
    with pytest.raises(ValueError) as info:
        parse_override("train.lr=[1, 2")
    assert "\n" not in str(info.value) and "not valid YAML" in str(info.value)


def test_shipped_preset_loads_by_name_and_builds(tmp_path):
    """`equipot train rmd17_ponita ...` finds the preset shipped in the package; its model builds."""
    from equipot import build_potential
    from equipot.training.config import presets

    assert "rmd17_ponita" in presets()
    for name in ("rmd17_ponita", "rmd17_ponita.yaml", "configs/rmd17_ponita.yaml"):
        config = load_config(name, ["data.train_file=x.h5"])
        assert config.model.backbone_options["hidden"] == 128 and config.model.backbone_options["layers"] == 5
        assert config.train.scheduler == "cosine" and config.train.clip_grad_norm == 0.5
    model = build_potential("ponita", elements=[1, 6, 8], cutoff=config.model.cutoff, **config.model.backbone_options)
    assert model.backbone.grid.shape == (12, 3) and model.backbone.eval_grid.shape == (42, 3)
    with pytest.raises(FileNotFoundError, match="shipped presets: .*rmd17_ponita"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("property_name, options, lr", [
    (None, [], 5e-3), ("U0", [], 2e-3), ("mu", [], 2e-3), ("r2", [], 2e-3), ("homo", [], 3e-3),
    ("gap", [], 3e-3), ("homo", ["model.target_readout=extensive"], 2e-3), ("U0", ["train.lr=1e-3"], 1e-3)])
def test_learning_rate_default_follows_the_readout(tmp_path, property_name, options, lr):
    """A potential trains at 5e-3, a property at its readout's rate (intensive 3e-3, others 2e-3,
    measured on QM9), with batch 32; a readout or rate given explicitly wins."""
    prop = [f"train.property={property_name}"] if property_name else []
    cfg = load_config(write(tmp_path, {"data": {"train_file": "x.h5"}}), prop + options)
    cfg.validate()
    assert cfg.train.lr == lr and cfg.data.batch_size == (32 if property_name else 5)
