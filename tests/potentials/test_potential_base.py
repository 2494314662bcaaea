"""What every Potential guarantees: reference energies, bad input, save/load."""
import pickle

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

from equipot import AtomicGraph, build_potential, load_model, save_model
from equipot.testing import predict


def small(**kw):
    torch.manual_seed(0)
    return build_potential("ponita", elements=[1, 6, 8], cutoff=4.0, hidden=16, layers=2, grid_size=6, **kw).double()


def test_isolated_atoms_have_reference_energy_and_zero_force():
    model = small(atomic_energies=[-13.6, -1029.0, -2041.0], shift=0.5)
    atoms = Atoms("HCO", positions=[[0, 0, 0], [10, 0, 0], [0, 10, 0]])
    out = predict(model, atoms)
    assert abs(out["energy"][0] - (-13.6 - 1029.0 - 2041.0 + 1.5)) < 1e-9
    np.testing.assert_array_equal(out["forces"], 0.0)


def test_energy_continuous_at_cutoff():
    model = small()
    e = [predict(model, Atoms("CO", positions=[[0, 0, 0], [d, 0, 0]]))["energy"][0] for d in (3.999999, 4.000001)]
    assert abs(e[0] - e[1]) < 1e-9


def test_unknown_element_names_the_atom():
    model = small()
    graph = AtomicGraph.from_atoms(Atoms("CHN", positions=[[0, 0, 0], [1, 0, 0], [0, 1, 0]]), 4.0)
    with pytest.raises(ValueError, match="atom 2 has atomic number 7"):
        model(graph)


def test_fit_atomic_energies_recovers_references():
    model = small()
    rng = np.random.default_rng(0)
    e0 = np.array([-13.6, -1029.0, -2041.0])
    frames = [rng.choice([1, 6, 8], size=rng.integers(2, 9)) for _ in range(30)]
    energies = [sum(e0[[1, 6, 8].index(z)] for z in f) for f in frames]
    np.testing.assert_allclose(model.fit_atomic_energies(frames, energies), e0, atol=1e-8)
    assert model.config.atomic_energies == pytest.approx(list(e0))


def test_float32_keeps_large_reference_energies_exact():
    model = build_potential("ponita", elements=[6], cutoff=4.0, hidden=8, layers=1, grid_size=4,
                            atomic_energies=[-1029.123456])
    out = predict(model, Atoms("C3", positions=[[0, 0, 0], [20, 0, 0], [40, 0, 0]]))
    assert out["energy"].dtype == np.float64
    assert abs(out["energy"][0] - 3 * -1029.123456) < 1e-9


def test_save_load_round_trip(tmp_path):
    model = small(atomic_energies=[-1.0, -2.0, -3.0], min_pair_distance=0.9)
    path = tmp_path / "model.pt"
    save_model(model, path)
    assert not (tmp_path / "model.pt.tmp").exists()
    loaded = load_model(path).double()
    atoms = molecule("CH3OH")
    np.testing.assert_allclose(predict(loaded, atoms)["forces"], predict(model, atoms)["forces"], atol=1e-12)
    assert loaded.config == model.config


def test_energy_correction_shifts_energies_only(tmp_path):
    """The learned per-element correction adds sum_i c[z_i] to the energy, moves the isolated-atom
    energies with it, leaves forces bit-identical, survives save/load, and is zeroed by new references."""
    model = small(atomic_energies=[-13.6, -1029.0, -2041.0])
    atoms = molecule("CH3OH")
    before = predict(model, atoms)
    with torch.no_grad():
        model.energy_correction.copy_(torch.tensor([0.01, -0.2, 0.3], dtype=torch.float64))
    after = predict(model, atoms)
    assert after["energy"][0] - before["energy"][0] == pytest.approx(4 * 0.01 - 0.2 + 0.3, abs=1e-10)
    np.testing.assert_array_equal(after["forces"], before["forces"])
    np.testing.assert_allclose(model.reference_energies().detach().numpy(), [-13.59, -1029.2, -2040.7], atol=1e-12)
    lone = predict(model, Atoms("C", positions=[[0, 0, 0]]))
    assert lone["energy"][0] == pytest.approx(-1029.2, abs=1e-10)

    path, old = tmp_path / "m.pt", tmp_path / "old.pt"
    save_model(model, path)
    assert predict(load_model(path).double(), atoms)["energy"][0] == pytest.approx(after["energy"][0], abs=1e-10)
    # A file written before the correction existed loads with a zero correction.
    payload = torch.load(path, weights_only=True)
    del payload["state_dict"]["energy_correction"]
    torch.save(payload, old)
    assert predict(load_model(old).double(), atoms)["energy"][0] == pytest.approx(
        before["energy"][0], abs=1e-10)

    model.set_reference(atomic_energies=[-13.6, -1029.0, -2041.0])
    assert not model.energy_correction.detach().any()


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_load_model_refuses_pickled_code(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"format": "equipot.model", "version": 1, "config": {}, "state_dict": {}, "x": _Evil()}, path)
    with pytest.raises(ValueError, match="holds Python objects that an equipot model file never contains"):
        load_model(path)
    assert "must never run" not in capsys.readouterr().out
    path.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(ValueError):
        load_model(path)
    assert "must never run" not in capsys.readouterr().out


def test_load_model_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an equipot model"):
        load_model(tmp_path / "other.pt")


def test_bad_config_is_a_value_error():
    with pytest.raises(ValueError, match="unknown backbone"):
        build_potential("nope")
    with pytest.raises(ValueError, match="bad options"):
        build_potential("ponita", hiden=3)
    with pytest.raises(ValueError, match="distinct"):
        build_potential("ponita", elements=[1, 1])
