"""equipot in LAMMPS (``pair_style mliap unified``), float64.

Two kinds of tests. Without LAMMPS: the adapter on ranks of a domain decomposition built here the
way LAMMPS builds them (local atoms of a brick of the box, ghost atoms and periodic images within
the communication cutoff, full neighbour lists), summed over the ranks and compared with EquiCalc
on the whole system. With LAMMPS (``lammps`` fixture, see conftest.py; skipped where there is
none): the same comparison through ``mpirun -np 1, 2, 4`` with processor grids that cut through
the system, the errors a user can provoke, and NVE.

Tolerances: energies, forces and virials 1e-10 (eV, eV/Å, eV): the same float64 arithmetic summed
in another order (round-off measured ~1e-15; the issue asks for 1e-8). The default R3×S2 model
is not exactly rotation invariant (orientation-grid quadrature), so the off-diagonal virial that
LAMMPS sums as Σ x_a f_b differs from the symmetric-strain stress of EquiCalc by the model's
torque; it is compared with Σ over edges of -r_a ∂E/∂r_b, whose symmetric part is EquiCalc's
stress × volume (checked), and with r3_only (exactly invariant) with EquiCalc directly.
"""
from __future__ import annotations

import pickle
import pickletools
import re

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import molecule
from ase.md.verlet import VelocityVerlet

from equipot import AtomicGraph, EquiCalc, build_potential, save_model
from equipot.cli.main import main
from equipot.interfaces.lammps import LAMMPSInputError, MLIAPEquipot, ghost_cutoff, write_lammps_model
from equipot.interfaces.lammps_run import read_dump, thermo_table, write_data
from equipot.neighbors import neighbor_list
from equipot.potentials.base import atom_energies

ELEMENTS = (1, 6, 8)
CUTOFF = 4.0
SKIN = 1.0
LAYERS = 3
COMM_CUTOFF = LAYERS * CUTOFF + SKIN
NKTV2P = 1.6021765e6  # LAMMPS metal units: bar per eV/Å^3 (update.cpp)


def small_model(r3_only: bool = False):
    """The default R3×S2 backbone (orientation grid and all) with 3 layers, small and scaled so that
    untrained forces are O(0.1) eV/Å."""
    torch.manual_seed(0)
    return build_potential("ponita", elements=list(ELEMENTS), cutoff=CUTOFF, hidden=8, layers=LAYERS, basis_size=8,
                           kernel_dim=8, radial_hidden=16, scale=10.0, r3_only=r3_only)


def water_box() -> Atoms:
    """64 water molecules (192 atoms) in a 12.4 Å periodic box, rattled off the grid."""
    from benchmarks.common import water_box as box

    atoms = box(4)
    atoms.rattle(0.05, seed=1)
    atoms.wrap()
    return atoms


def molecule_in_box() -> Atoms:
    """Biphenyl in the middle of a 30 Å box (not periodic): the grids' mid-planes cut through it."""
    atoms = molecule("biphenyl")
    atoms.rotate(30, "x")
    atoms.rotate(20, "y")
    atoms.cell = [30.0, 30.0, 30.0]
    atoms.center()
    atoms.positions += [0.11, -0.07, 0.05]  # no atom on a domain boundary
    return atoms


SYSTEMS = {"water": water_box, "molecule": molecule_in_box}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """{r3_only: (path of the model file, path of the LAMMPS file)}."""
    root = tmp_path_factory.mktemp("models")
    out = {}
    for r3 in (False, True):
        path = root / f"model_r3_{r3}.pt"
        save_model(small_model(r3), path)
        write_lammps_model(path, root / f"model_r3_{r3}.pkl")
        out[r3] = (path, root / f"model_r3_{r3}.pkl")
    return out


def edge_virial(model_path, atoms: Atoms) -> np.ndarray:
    """W [3, 3] eV, W_ab = -Σ_edges r_a ∂E/∂r_b: what Σ x_a f_b over atoms and images gives."""
    calc = EquiCalc(model_path)
    model = calc.model
    graph = AtomicGraph.from_atoms(atoms, model.cutoff, dtype=torch.float64)
    vec = graph.edge_vectors().detach().requires_grad_(True)
    species = model.species_index(graph.numbers)
    out = model.backbone(species, graph.positions, graph.edge_index, vec, graph.batch, 1)
    energy = atom_energies(out, species, model._isolated_energies(torch.float64, vec.device),
                           model.reference_energies(), model.config.scale).sum()
    (grad,) = torch.autograd.grad(energy, vec)
    return -(vec.detach().T @ grad).numpy()


def reference(model_path, atoms: Atoms) -> dict:
    calc = EquiCalc(model_path)
    atoms = atoms.copy()
    atoms.calc = calc
    ref = {"energy": atoms.get_potential_energy(), "energies": atoms.get_potential_energies(),
           "forces": atoms.get_forces(), "virial": edge_virial(model_path, atoms)}
    if atoms.pbc.all():
        stress_volume = atoms.get_stress(voigt=False) * atoms.get_volume()
        np.testing.assert_allclose(0.5 * (ref["virial"] + ref["virial"].T), -stress_volume, atol=1e-10, rtol=0)
        ref["stress_virial"] = -stress_volume
    return ref


# ----------------------------------------------------------------- ranks built here, without LAMMPS
def rank_views(atoms: Atoms, grid: tuple[int, int, int], comm_cutoff: float = COMM_CUTOFF, ghost_lists: bool = True):
    """LAMMPS's view on each rank of a brick decomposition of an orthorhombic box: per rank
    ``(numbers [N], nlocal, receiver [P], sender [P], vectors [P, 3], owner [N], positions [N, 3],
    with_lists)``, local atoms first, then ghosts: every atom or periodic image within
    ``comm_cutoff`` of the rank's brick (per axis, as LAMMPS's brick communication does)."""
    length = np.diag(atoms.cell.array)
    x = atoms.positions.copy()
    x[:, atoms.pbc] %= length[atoms.pbc]
    reps = [int(np.ceil(comm_cutoff / length[d])) + 1 if atoms.pbc[d] else 0 for d in range(3)]
    shifts = np.array(np.meshgrid(*[np.arange(-r, r + 1) for r in reps], indexing="ij")).reshape(3, -1).T
    images = (x[None] + shifts[:, None] * length).reshape(-1, 3)
    owner = np.tile(np.arange(len(x)), len(shifts))
    original = np.repeat((shifts == 0).all(1), len(x))
    for brick in np.ndindex(*grid):
        lo, hi = np.array(brick) / grid * length, (np.array(brick) + 1) / grid * length
        local = np.flatnonzero(((x >= lo) & (x < hi)).all(1))
        near = ((images >= lo - comm_cutoff) & (images <= hi + comm_cutoff)).all(1)
        ghost = np.flatnonzero(near & ~(original & np.isin(owner, local)))
        positions = np.concatenate([x[local], images[ghost]])
        own = np.concatenate([local, owner[ghost]])
        sender, receiver, _ = neighbor_list(positions, CUTOFF)
        with_lists = len(positions) if ghost_lists else len(local)
        keep = receiver < with_lists
        sender, receiver = sender[keep], receiver[keep]
        yield (atoms.numbers[own], len(local), receiver, sender, positions[sender] - positions[receiver], own,
               positions, with_lists)


def decomposed(adapter: MLIAPEquipot, atoms: Atoms, grid) -> dict:
    """Energy, per-atom energies, forces and virial summed over the ranks of ``grid``."""
    out = {"energy": 0.0, "energies": np.zeros(len(atoms)), "forces": np.zeros((len(atoms), 3)),
           "virial": np.zeros((3, 3))}
    for numbers, nlocal, receiver, sender, vectors, owner, positions, with_lists in rank_views(atoms, grid):
        energies, moved, forces = adapter.evaluate(numbers, nlocal, receiver, sender, vectors, with_lists)
        out["energy"] += energies.sum()
        out["energies"][owner[:nlocal]] = energies
        np.add.at(out["forces"], owner[moved], forces)
        out["virial"] += positions[moved].T @ forces  # what LAMMPS's virial_fdotr sums
    return out


@pytest.mark.parametrize("system", sorted(SYSTEMS))
@pytest.mark.parametrize("r3_only", [False, True], ids=["r3s2", "r3"])
def test_decomposed_ranks_reproduce_equicalc(models, system, r3_only):
    atoms = SYSTEMS[system]()
    model_path, _ = models[r3_only]
    adapter = MLIAPEquipot(model_path)
    ref = reference(model_path, atoms)
    assert np.abs(ref["forces"]).max() > 1e-2  # the comparison means something
    for grid in [(1, 1, 1), (1, 1, 2), (2, 2, 1)]:
        got = decomposed(adapter, atoms, grid)
        assert abs(got["energy"] - ref["energy"]) < 1e-10, grid
        np.testing.assert_allclose(got["energies"], ref["energies"], atol=1e-10, rtol=0)
        np.testing.assert_allclose(got["forces"], ref["forces"], atol=1e-10, rtol=0)
        np.testing.assert_allclose(got["virial"], ref["virial"], atol=1e-10, rtol=0)
    if r3_only and "stress_virial" in ref:
        np.testing.assert_allclose(got["virial"], ref["stress_virial"], atol=1e-10, rtol=0)


def evaluate_ranks(adapter, atoms, grid, **kw):
    for numbers, nlocal, receiver, sender, vectors, _, _, with_lists in rank_views(atoms, grid, **kw):
        adapter.evaluate(numbers, nlocal, receiver, sender, vectors, with_lists)


@pytest.mark.parametrize("comm_cutoff", [CUTOFF + SKIN, 2 * CUTOFF + SKIN])
def test_shallow_ghost_shell_is_an_error(models, comm_cutoff):
    adapter = MLIAPEquipot(models[False][0])
    with pytest.raises(LAMMPSInputError, match=r"ghost atoms reach only .* needs 12 Å: set comm_modify cutoff"):
        evaluate_ranks(adapter, water_box(), (1, 1, 2), comm_cutoff=comm_cutoff)
    evaluate_ranks(MLIAPEquipot(models[False][0], ghost_check=False), water_box(), (1, 1, 2), comm_cutoff=comm_cutoff)


def test_deep_enough_shell_passes_also_for_a_split_molecule_and_a_slab(models):
    adapter = MLIAPEquipot(models[False][0])
    for grid in [(1, 1, 1), (2, 1, 1), (2, 2, 1), (2, 2, 2)]:
        evaluate_ranks(adapter, molecule_in_box(), grid)
        adapter._checked_ghosts = None
    slab = water_box()
    slab.set_cell(np.diag(slab.cell.array) + [0.0, 0.0, 15.0])  # vacuum above the water, periodic in x and y
    slab.pbc = (True, True, False)
    evaluate_ranks(adapter, slab, (2, 1, 1))


def test_missing_ghost_neighbour_lists_is_an_error(models):
    adapter = MLIAPEquipot(models[False][0])
    with pytest.raises(LAMMPSInputError, match=r"ghost atoms need their own neighbour lists: end the pair_style"):
        evaluate_ranks(adapter, water_box(), (1, 1, 2), ghost_lists=False)


class FakeData:
    """What LAMMPS's ML-IAP hands to compute_forces (mliap_unified_couple.pyx), for one rank."""

    def __init__(self, numbers, nlocal, receiver, sender, vectors, with_lists):
        self.ntotal, self.nlistatoms, self.natomneigh = len(numbers), nlocal, with_lists
        self.elems = (numbers - 1).astype(np.int32)
        self.iatoms = np.arange(with_lists, dtype=np.int32)
        self.iatoms[:nlocal] = self.iatoms[:nlocal][::-1]  # LAMMPS's ilist order need not be 0, 1, ...
        self.pair_i, self.pair_j = receiver.astype(np.int32), sender.astype(np.int32)
        self.rij = np.ascontiguousarray(vectors)
        self.f = np.zeros((len(numbers), 3))
        self.vflag, self.eatoms, self.energy = 2, None, None


def test_compute_forces_fills_lammps_arrays(models):
    atoms = water_box()
    adapter = MLIAPEquipot(models[True][0])
    ref = reference(models[True][0], atoms)
    forces = np.zeros((len(atoms), 3))
    for numbers, nlocal, receiver, sender, vectors, owner, _, with_lists in rank_views(atoms, (1, 1, 2)):
        data = FakeData(numbers, nlocal, receiver, sender, vectors, with_lists)
        adapter.compute_forces(data)
        np.testing.assert_allclose(data.eatoms, ref["energies"][owner[data.iatoms[:nlocal]]], atol=1e-10, rtol=0)
        assert abs(data.energy - ref["energies"][owner[:nlocal]].sum()) < 1e-10
        np.add.at(forces, owner, data.f)  # LAMMPS's reverse communication
    np.testing.assert_allclose(forces, ref["forces"], atol=1e-10, rtol=0)
    data.vflag = 4 | 2
    with pytest.raises(LAMMPSInputError, match="per-atom virials"):
        adapter.compute_forces(data)


def test_unknown_element_is_named(models):
    atoms = water_box()
    atoms.numbers[atoms.numbers == 8] = 7
    with pytest.raises(LAMMPSInputError, match=r"pair_coeff maps an atom type to N, which the model .* was not "
                                               r"trained on \(it knows H C O\)"):
        evaluate_ranks(MLIAPEquipot(models[False][0]), atoms, (1, 1, 1))


# -------------------------------------------------------------------------------- the model file
def test_lammps_file_holds_only_the_class_and_plain_arguments(models, tmp_path):
    model_path, pkl = models[False]
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(pkl.read_bytes())]
    strings = [arg for name, arg in ops if "UNICODE" in name]
    assert [name for name, _ in ops if "GLOBAL" in name or name in ("INST", "OBJ", "NEWOBJ", "BUILD")] == [
        "STACK_GLOBAL"]
    assert strings == ["equipot.interfaces.lammps", "MLIAPEquipot", str(model_path.resolve()), "float64", "cpu"]

    class OnlyTheAdapter(pickle.Unpickler):
        def find_class(self, module, name):
            assert (module, name) == ("equipot.interfaces.lammps", "MLIAPEquipot")
            return super().find_class(module, name)

    with open(pkl, "rb") as f:
        adapter = OnlyTheAdapter(f).load()
    assert (adapter.model_path, adapter.element_types[:8], adapter.rcutfac, adapter.hops) == (
        str(model_path.resolve()), ["H", "He", "Li", "Be", "B", "C", "N", "O"], CUTOFF / 2, LAYERS)
    assert adapter.ndescriptors == 1 and adapter.nparams == 1 and adapter.interface is None


def test_model_file_that_is_not_an_equipot_model(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(LAMMPSInputError, match=r"other.pt is not an equipot model file"):
        MLIAPEquipot(tmp_path / "other.pt")
    with pytest.raises(LAMMPSInputError, match=r"missing.pt does not exist"):
        MLIAPEquipot(tmp_path / "missing.pt")


def test_backbone_that_is_not_local_is_refused(tmp_path):
    torch.manual_seed(0)
    save_model(build_potential("lieconv", elements=[1, 8], cutoff=3.0, hidden=8, layers=1), tmp_path / "lie.pt")
    with pytest.raises(LAMMPSInputError, match=r"backbone 'lieconv' does not run in LAMMPS"):
        write_lammps_model(tmp_path / "lie.pt", tmp_path / "lie.pkl")
    assert not (tmp_path / "lie.pkl").exists()


def test_export_command_writes_the_file_and_the_input_lines(models, tmp_path, capsys):
    model_path, _ = models[False]
    assert main(["export", str(model_path), "--lammps", "-o", str(tmp_path / "m.pkl"), "--skin", "1.0"]) == 0
    text = capsys.readouterr().out
    assert f"pair_style mliap unified {tmp_path / 'm.pkl'} 1" in text
    assert "pair_coeff * * H C O" in text and f"comm_modify cutoff {COMM_CUTOFF:g}" in text
    with open(tmp_path / "m.pkl", "rb") as f:
        assert pickle.load(f).model_path == str(model_path.resolve())
    assert ghost_cutoff(LAYERS, CUTOFF, SKIN) == COMM_CUTOFF


# ------------------------------------------------------------------------------ through LAMMPS
def lammps_input(pkl, periodic: bool, ranks: int, body: str, comm_cutoff: float = COMM_CUTOFF,
                 ghostneigh: int = 1, elements: str = "H C O") -> str:
    grid = {1: "1 1 1", 2: "1 1 2", 4: "2 2 1"}[ranks]  # the mid-planes cut the box (and the molecule)
    return f"""units metal
atom_style atomic
atom_modify map yes
boundary {"p p p" if periodic else "f f f"}
processors {grid}
read_data system.data
pair_style mliap unified {pkl} {ghostneigh}
pair_coeff * * {elements}
neighbor {SKIN} bin
comm_modify cutoff {comm_cutoff}
{body}
"""


SINGLE_POINT = """compute virial all pressure NULL virial
compute pe_atom all pe/atom
thermo_style custom step pe vol c_virial[1] c_virial[2] c_virial[3] c_virial[4] c_virial[5] c_virial[6]
thermo_modify format float %.17g
dump forces all custom 1 forces.dump id type x y z fx fy fz c_pe_atom
dump_modify forces sort id format float %.17g
run 0
"""


@pytest.mark.parametrize("system", sorted(SYSTEMS))
@pytest.mark.parametrize("r3_only", [False, True], ids=["r3s2", "r3"])
@pytest.mark.parametrize("ranks", [1, 2, 4])
def test_lammps_matches_equicalc(lammps, models, tmp_path, system, r3_only, ranks):
    atoms = SYSTEMS[system]()
    model_path, pkl = models[r3_only]
    write_data(atoms, tmp_path / "system.data", ELEMENTS)
    result = lammps.run(lammps_input(pkl, atoms.pbc.all(), ranks, SINGLE_POINT), tmp_path, ranks)
    assert result.returncode == 0, result.stdout[-3000:]
    dump = read_dump(tmp_path / "forces.dump")
    lammps_atoms = Atoms(numbers=[ELEMENTS[int(t) - 1] for t in dump[:, 1]], positions=dump[:, 2:5],
                         cell=atoms.cell, pbc=atoms.pbc)
    ref = reference(model_path, lammps_atoms)
    step, pe, volume, *pressure = thermo_table(result.stdout)[0]
    assert abs(pe - ref["energy"]) < 1e-10
    np.testing.assert_allclose(dump[:, 8], ref["energies"], atol=1e-10, rtol=0)
    np.testing.assert_allclose(dump[:, 5:8], ref["forces"], atol=1e-10, rtol=0)
    virial = np.array(pressure) * volume / NKTV2P  # xx yy zz xy xz yz, W_ab = Σ x_a f_b
    ij = ([0, 1, 2, 0, 0, 1], [0, 1, 2, 1, 2, 2])
    np.testing.assert_allclose(virial, ref["virial"][ij], atol=1e-10, rtol=0)
    if "stress_virial" in ref:
        np.testing.assert_allclose(virial[:3], ref["stress_virial"][ij][:3], atol=1e-10, rtol=0)  # pressure
        if r3_only:
            np.testing.assert_allclose(virial, ref["stress_virial"][ij], atol=1e-10, rtol=0)


@pytest.mark.parametrize("case, message", [
    ("element", r"LAMMPSInputError: pair_coeff maps an atom type to N, which the model .* was not trained on"),
    ("ghostneigh", r"LAMMPSInputError: the model passes messages over 3 hops, so ghost atoms need their own"),
    ("comm_cutoff", r"LAMMPSInputError: ghost atoms reach only [0-9.]+ Å beyond this rank's atoms, but the model "
                    r"\(3 message-passing hops x 4 Å cutoff\) needs 12 Å"),
    ("not_equipot", r"LAMMPSInputError: .*model_r3_False.pt is not an equipot model file"),
    ("stress_atom", r"LAMMPSInputError: per-atom virials"),
])
def test_lammps_input_mistakes_are_one_line_errors(lammps, models, tmp_path, case, message):
    model_path, pkl = models[False]
    write_data(water_box(), tmp_path / "system.data", ELEMENTS)
    options, body = {}, "run 0\n"
    if case == "element":
        options["elements"] = "H C N"
    elif case == "ghostneigh":
        options["ghostneigh"] = 0
    elif case == "comm_cutoff":
        options["comm_cutoff"] = 2 * CUTOFF + SKIN
    elif case == "not_equipot":
        broken = tmp_path / "model_r3_False.pt"
        torch.save({"weights": torch.zeros(2)}, broken)

        class Exported:  # the file export writes, naming a file that is not an equipot model
            def __reduce__(self):
                return MLIAPEquipot, (str(broken), "float64", "cpu", True)

        pkl = tmp_path / "model.pkl"
        pkl.write_bytes(pickle.dumps(Exported()))
    elif case == "stress_atom":
        body = "compute s all stress/atom NULL\ncompute p all reduce sum c_s[1]\nthermo_style custom step c_p\nrun 0\n"
    result = lammps.run(lammps_input(pkl, True, 2, body, **options), tmp_path, 2)
    assert result.returncode != 0 and "ERROR" in result.stdout
    assert re.search(message, result.stdout), result.stdout[-3000:]
    assert "Traceback" not in result.stdout and "Segmentation" not in result.stdout


def test_lammps_nve_conserves_energy_like_ase(lammps, models, tmp_path):
    """40 NVE steps of 0.5 fs on the water box at 300 K with the r3 model: 1 and 2 ranks give the
    same trajectory (1e-9 eV/atom: summation order only), and the same run in ASE, started from
    LAMMPS's velocities, the same energies to 1e-6 eV/atom (LAMMPS's unit constants have 8
    digits: mvv2e = 1.0364269e-4), so both conserve energy alike."""
    model_path, pkl = models[True]
    atoms = water_box()
    write_data(atoms, tmp_path / "system.data", ELEMENTS)
    body = """velocity all create 300 4928459 mom yes rot no dist gaussian
dump v all custom 40 traj.dump id vx vy vz
dump_modify v sort id format float %.17g
fix integrate all nve
timestep 0.0005
thermo_style custom step pe ke etotal
thermo_modify format float %.17g
thermo 1
run 40
"""
    runs = {}
    for ranks in (1, 2):
        result = lammps.run(lammps_input(pkl, True, ranks, body), tmp_path, ranks)
        assert result.returncode == 0, result.stdout[-3000:]
        runs[ranks] = thermo_table(result.stdout)
        if ranks == 1:
            velocities = read_dump(tmp_path / "traj.dump")[:, 1:4]
    n = len(atoms)
    np.testing.assert_allclose(runs[2][:, 3] / n, runs[1][:, 3] / n, atol=1e-9, rtol=0)

    atoms.set_velocities(velocities / (1000 * units.fs))  # Å/ps -> ASE units
    atoms.calc = EquiCalc(model_path)
    dyn = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    energies = [atoms.get_total_energy()]
    for _ in range(40):
        dyn.run(1)
        energies.append(atoms.get_total_energy())
    energies = np.array(energies)
    np.testing.assert_allclose(runs[1][:, 3] / n, energies / n, atol=1e-6, rtol=0)


def test_lammps_benchmark_script_runs(lammps, capsys):
    """benchmarks/lammps_md.py end to end on a 24-atom box (its speed and NVE tables)."""
    from benchmarks import lammps_md

    common = ["--lammps", str(lammps.prefix), "--r3-only", "--hidden", "8", "--cores", "1"]
    assert lammps_md.main([*common, "--sides", "2", "--ranks", "2", "--steps", "1", "--no-ase"]) == 0
    assert lammps_md.main([*common, "--nve", "--side", "2", "--steps", "2"]) == 0
    out = capsys.readouterr().out
    rows = [line.split("|") for line in out.splitlines() if line.startswith("| 24 |")]
    assert [(r[2].strip(), r[3].strip()) for r in rows] == [("LAMMPS", "2 x 1")] and float(rows[0][4]) > 0
    nve = {line.split("|")[1].strip() for line in out.splitlines() if line.startswith("| LAMMPS,") or
           line.startswith("| ASE")}
    assert nve == {"LAMMPS, 1 rank", "LAMMPS, 2 ranks", "ASE + EquiCalc"}
