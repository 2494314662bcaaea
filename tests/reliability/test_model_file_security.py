"""A model file that would run code when unpickled is refused, and the code never runs.

The payload calls ``os.system`` to create a marker file: if any loader unpickled it, the marker
would exist after the call. Every way a user can open a model file is tried.
"""
from __future__ import annotations

import os
import pickle
import shlex

import pytest
import torch

from equipot import EquiCalc, build_potential, load_model, save_model


class _Payload:
    """Unpickling this runs ``touch MARKER`` through os.system."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


def _model_dict(payload) -> dict:
    """A dict that looks like an equipot model file, with the payload where a tensor would be."""
    model = build_potential("ponita", elements=[1, 8], cutoff=3.0, hidden=4, layers=1, grid_size=2)
    state = {k: v.detach() for k, v in model.state_dict().items()}
    first = next(iter(state))
    state[first] = payload
    from dataclasses import asdict

    return {"format": "equipot.model", "version": 1, "config": asdict(model.config), "state_dict": state}


def _evil_files(tmp_path, marker):
    payload = _Payload(marker)
    files = {}
    files["torch_zip_state_dict"] = tmp_path / "state.pt"
    torch.save(_model_dict(payload), files["torch_zip_state_dict"])
    files["torch_zip_config"] = tmp_path / "config.pt"
    bad_config = _model_dict(torch.zeros(1))
    bad_config["config"]["backbone_options"] = {"hidden": payload}
    torch.save(bad_config, files["torch_zip_config"])
    files["torch_legacy_format"] = tmp_path / "legacy.pt"
    torch.save(_model_dict(payload), files["torch_legacy_format"], _use_new_zipfile_serialization=False)
    files["raw_pickle"] = tmp_path / "raw.pt"
    files["raw_pickle"].write_bytes(pickle.dumps(payload))
    files["raw_pickle_protocol0"] = tmp_path / "raw0.pt"
    files["raw_pickle_protocol0"].write_bytes(pickle.dumps(payload, protocol=0))
    return files


def test_payload_is_live(tmp_path):
    """The payload really runs code when unpickled the unsafe way, so the tests below mean something."""
    marker = tmp_path / "pwned-control"
    pickle.loads(pickle.dumps(_Payload(marker)))
    assert marker.exists()


@pytest.mark.parametrize("kind", ["torch_zip_state_dict", "torch_zip_config", "torch_legacy_format", "raw_pickle",
                                  "raw_pickle_protocol0"])
def test_load_model_refuses_code_and_never_runs_it(tmp_path, kind):
    marker = tmp_path / "pwned"
    path = _evil_files(tmp_path, marker)[kind]
    with pytest.raises(ValueError, match=str(path.name)):
        load_model(path)
    assert not marker.exists(), "load_model ran code from a model file"
    with pytest.raises(ValueError):
        EquiCalc(path)
    assert not marker.exists(), "EquiCalc ran code from a model file"


def test_honest_file_still_loads(tmp_path):
    model = build_potential("ponita", elements=[1, 8], cutoff=3.0, hidden=4, layers=1, grid_size=2)
    save_model(model, tmp_path / "ok.pt")
    assert load_model(tmp_path / "ok.pt").config == model.config
