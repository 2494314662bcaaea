"""equipot in LAMMPS: a model served to ``pair_style mliap unified`` (ML-IAP's Python coupling).

LAMMPS loads a small pickle written by ``equipot export MODEL --lammps -o model.pkl``
(:func:`write_lammps_model`). It holds only a reference to :class:`MLIAPEquipot` and its
arguments: the absolute path of a model file (``equipot.save_model``), the dtype, the device
and whether to check the ghost depth. Unpickling it calls ``MLIAPEquipot(path, ...)``, which
reads the model file with ``torch.load(weights_only=True)``: nothing else runs. (Give LAMMPS
the ``.pkl``, never the ``.pt``: for ``.pt`` files this LAMMPS version calls ``torch.load``
without ``weights_only``, and equipot's model file is not an ML-IAP object anyway.)

The input (units metal: Å, eV; newton on, LAMMPS's default)::

    pair_style   mliap unified model.pkl 1      # the final 1: ghost atoms get neighbour lists
    pair_coeff   * * H O                        # the element of each atom type, in type order
    comm_modify  cutoff 17.0                    # >= layers x cutoff + neighbor skin (Å)

Why: each rank computes the energies of its own atoms. A model with k rounds of message passing
(``message_passing_hops``, k = layers for ponita) sees k cutoffs deep, and LAMMPS 2 Aug 2023
cannot exchange features between layers, so the ghost atoms must reach k × cutoff beyond the
rank's domain (``comm_modify cutoff``; plus the skin, because ghosts are chosen only when the
neighbour list is rebuilt), and the ghost atoms within k - 1 hops need their own neighbour lists
(``ghostneigh`` = 1). Then a local atom's energy is exactly what it is in the whole system; the
rank evaluates the model on its atoms and the ghost atoms within k hops (:mod:`.ghosts`), takes
the forces on all of them by autograd of the sum of its local energies with respect to the pair
vectors, and writes them into LAMMPS's force array (LAMMPS sums the ghost forces into their
owners). The virial comes from LAMMPS's own sum of r·f over local and ghost atoms
(``virial_fdotr``), so ``pressure``, ``npt`` and ``box/relax`` work (its off-diagonal elements
are Σ x_a f_b: for a model that is not exactly rotation invariant, such as ponita on an
orientation grid, they differ from EquiCalc's symmetrised stress by the model's torque); per-atom
virials (``compute stress/atom``) are not provided and stop the run with an error.

Checks, each a one-line LAMMPS error: an element in ``pair_coeff`` the model was not trained
on (when an atom of that type is present), no ghost neighbour lists, a ghost shell shallower
than k × cutoff, a model file that is not an equipot model, a backbone that is not local.
The ghost depth can only be judged from the atoms themselves (LAMMPS does not hand its
communication cutoff to the model): it is checked where the rank is surrounded by atoms (bulk,
slabs; :func:`.ghosts.ghost_shell_depth`), at the first call and whenever the number of ghost
atoms changes. For a molecule or cluster split between ranks a shallow shell is
indistinguishable from the end of the molecule, so there only the input's ``comm_modify
cutoff`` guarantees exactness; ``--no-ghost-check`` turns the check off.
"""
from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

import numpy as np
import torch
from ase.data import chemical_symbols

from ..potentials.base import Potential, atom_energies
from ..potentials.model_file import load_model
from ..precision import DTYPES
from ..safe_write import atomic_write
from .ghosts import ghost_shell_depth, hop_distances, needed_atoms

#: Pickle protocol of the file LAMMPS loads (readable by every Python 3 that LAMMPS embeds).
PICKLE_PROTOCOL = 4
#: LAMMPS's vflag bits for per-atom virials (VIRIAL_ATOM, VIRIAL_CENTROID in pair.h).
PER_ATOM_VIRIAL = 4 | 8
#: Neighbour skin assumed when suggesting a communication cutoff (LAMMPS's default in metal units), Å.
DEFAULT_SKIN = 2.0


class LAMMPSInputError(ValueError):
    """A mistake in the LAMMPS input, or in the model file it names."""


def _in_lammps() -> bool:
    # The Cython module that unpickles and calls the model is imported only inside LAMMPS.
    return "mliap_unified_couple" in sys.modules


def _user_error(message: str) -> LAMMPSInputError:
    """The error to raise for a user mistake: inside LAMMPS, which prints Python errors with their
    traceback before stopping, the traceback is switched off (the run ends there anyway)."""
    if _in_lammps():
        sys.tracebacklimit = 0
    return LAMMPSInputError(message)


def message_passing_hops(potential: Potential, where: str) -> int:
    """Rounds of message passing of the model's backbone; LAMMPSInputError when it is not local."""
    hops = getattr(potential.backbone, "message_passing_hops", None)
    if hops is None:
        raise _user_error(f"{where}: backbone {potential.config.backbone!r} does not run in LAMMPS (its energy "
                          f"is not a sum of local terms over a known number of neighbour hops); ponita does")
    return int(hops)


def ghost_cutoff(hops: int, cutoff: float, skin: float = DEFAULT_SKIN) -> float:
    """The ``comm_modify cutoff`` (Å) a model of ``hops`` rounds and ``cutoff`` needs: hops × cutoff + skin."""
    return hops * cutoff + skin


class MLIAPEquipot:
    """An equipot model behind LAMMPS's ``pair_style mliap unified`` (duck-typed to
    ``lammps.mliap.mliap_unified_abc.MLIAPUnified``, so equipot does not import LAMMPS).

    Args:
        model_path: an equipot model file (``save_model``).
        dtype: "float64" (default; energies equal EquiCalc's to round-off) or "float32".
        device: torch device of the model ("cpu", "cuda").
        ghost_check: check that the ghost atoms reach deep enough (see the module docstring).

    LAMMPS reads ``element_types`` (every element: ``pair_coeff`` may name any, and an atom of
    an element the model does not know stops the run with its name), ``rcutfac`` (half the
    pair cutoff: LAMMPS's cutoff is 2 × rcutfac), ``ndescriptors`` and ``nparams`` (unused, 1)
    and sets ``interface``; it calls :meth:`compute_forces` once per force evaluation.
    """

    def __init__(self, model_path: str | os.PathLike, dtype: str = "float64", device: str = "cpu",
                 ghost_check: bool = True):
        self.model_path = str(model_path)
        self.dtype_name, self.device_name, self.ghost_check = str(dtype), str(device), bool(ghost_check)
        if self.dtype_name not in DTYPES:
            raise _user_error(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        try:
            potential = load_model(self.model_path)
        except (OSError, ValueError) as exc:  # torch's reasons run over many lines: the first says it
            raise _user_error(str(exc).splitlines()[0]) from None
        if not potential.config.is_potential:  # a property model has no energy or forces to give LAMMPS
            cfg = potential.config
            raise _user_error(f"{self.model_path}: a property model (it predicts {cfg.target!r} in "
                              f"{cfg.target_unit}), not a potential: LAMMPS needs energies and forces")
        self.dtype, self.device = DTYPES[self.dtype_name], torch.device(self.device_name)
        self.potential = potential.to(device=self.device, dtype=self.dtype).eval()
        self.potential.requires_grad_(False)
        self.hops = message_passing_hops(self.potential, self.model_path)
        self.cutoff = float(self.potential.cutoff)
        with torch.no_grad():  # constants of the weights, as in the exported program
            self._isolated = self.potential._isolated_energies(self.dtype, self.device)
            self._reference = self.potential.reference_energies(self.device)
        self._known = set(self.potential.config.elements)
        self._checked_ghosts: int | None = None
        self.element_types = list(chemical_symbols[1:])
        self.ndescriptors = 1
        self.nparams = 1
        self.rcutfac = 0.5 * self.cutoff
        self.interface = None

    def __reduce__(self):
        # What the pickle holds: this class and plain arguments, never the weights or code.
        return (MLIAPEquipot, (self.model_path, self.dtype_name, self.device_name, self.ghost_check))

    def compute_descriptors(self, data) -> None:
        """Not used: the model computes its own features inside :meth:`compute_forces`."""

    def compute_gradients(self, data) -> None:
        """Not used: forces come from :meth:`compute_forces`."""

    def compute_forces(self, data) -> None:
        """Energies of the local atoms into ``data.eatoms`` / ``data.energy`` (eV) and forces on
        local and ghost atoms added into ``data.f`` (eV/Å), from LAMMPS's ML-IAP data: ``elems``
        [ntotal] element index per atom (local first), ``pair_i``, ``pair_j``, ``rij`` [npairs, 3]
        (x_j - x_i, Å) for pairs within the cutoff, ``nlistatoms`` local atoms, ``natomneigh``
        atoms with neighbour lists, ``iatoms`` their indices, ``vflag``."""
        if data.vflag & PER_ATOM_VIRIAL:
            raise _user_error("per-atom virials (compute stress/atom, centroid/stress/atom) are not provided by "
                              "pair_style mliap with an equipot model; remove that compute")
        nlocal, ntotal = int(data.nlistatoms), int(data.ntotal)
        if nlocal == 0:  # a rank whose domain holds no atom (vacuum): nothing to add
            data.energy = 0.0
            return
        numbers = np.asarray(data.elems)[:ntotal].astype(np.int64) + 1  # element_types index -> Z
        receiver = np.asarray(data.pair_i).astype(np.int64)
        sender = np.asarray(data.pair_j).astype(np.int64)
        vectors = np.array(data.rij, dtype=np.float64)
        energies, atoms, forces = self.evaluate(numbers, nlocal, receiver, sender, vectors, int(data.natomneigh))
        f = data.f
        f[atoms] += forces
        data.eatoms = energies[np.asarray(data.iatoms)[:nlocal]]
        data.energy = float(energies.sum())

    def evaluate(self, numbers: np.ndarray, nlocal: int, receiver: np.ndarray, sender: np.ndarray,
                 vectors: np.ndarray, with_lists: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One rank's share: (energies [nlocal] eV of the local atoms, atoms [M] indices of the
        atoms with forces, forces [M, 3] eV/Å on them, the negative gradient of the local
        energies' sum).

        ``numbers`` [N] atomic numbers, local atoms first; ``receiver``/``sender`` [P] pairs (i, j)
        with ``vectors`` [P, 3] = x_j - x_i (Å), all pairs within the cutoff of the atoms
        ``0 .. with_lists-1`` (the atoms with neighbour lists).
        """
        n = numbers.shape[0]
        hops = hop_distances(n, nlocal, receiver, sender, self.hops)
        self._check_ghosts(hops, nlocal, with_lists, receiver, sender, vectors)
        atoms, pairs = needed_atoms(hops, receiver, self.hops)
        self._check_elements(numbers[atoms])
        index = np.full(n, -1, dtype=np.int64)
        index[atoms] = np.arange(atoms.size)
        edge_index = torch.as_tensor(np.stack([index[sender[pairs]], index[receiver[pairs]]]), device=self.device)
        vec = torch.as_tensor(vectors[pairs], dtype=self.dtype, device=self.device).requires_grad_(True)
        self._check_distances(vec, receiver[pairs], sender[pairs])
        species = self.potential.species_index(torch.as_tensor(numbers[atoms], device=self.device))
        m = atoms.size
        # Local backbones (message_passing_hops) read only species and edge vectors.
        out = self.potential.backbone(species, torch.zeros(m, 3, dtype=self.dtype, device=self.device), edge_index,
                                      vec, torch.zeros(m, dtype=torch.long, device=self.device), 1)
        energy = atom_energies(out, species, self._isolated, self._reference, self.potential.config.scale)[:nlocal]
        (grad,) = torch.autograd.grad(energy.sum(), [vec], allow_unused=True)
        forces = torch.zeros(m, 3, dtype=torch.float64, device=self.device)
        if grad is not None:
            grad = grad.double()
            forces.index_add_(0, edge_index[1], grad).index_add_(0, edge_index[0], -grad)
        return energy.detach().cpu().numpy(), atoms, forces.cpu().numpy()

    def _check_ghosts(self, hops: np.ndarray, nlocal: int, with_lists: int, receiver: np.ndarray,
                      sender: np.ndarray, vectors: np.ndarray) -> None:
        needs_lists = np.flatnonzero(hops[with_lists:] <= self.hops - 1)
        if needs_lists.size:
            raise _user_error(f"the model passes messages over {self.hops} hops, so ghost atoms need their own "
                              f"neighbour lists: end the pair_style line with 1 (pair_style mliap unified "
                              f"FILE.pkl 1)")
        if not self.ghost_check or hops.size == self._checked_ghosts:
            return
        self._checked_ghosts = hops.size
        depth = ghost_shell_depth(hops.size, nlocal, receiver, sender, vectors, self.cutoff)
        needed = self.hops * self.cutoff
        if depth is not None and depth < needed:
            raise _user_error(f"ghost atoms reach only {depth:.1f} Å beyond this rank's atoms, but the model "
                              f"({self.hops} message-passing hops x {self.cutoff:g} Å cutoff) needs {needed:g} Å: set "
                              f"comm_modify cutoff to {needed:g} Å plus the neighbor skin (e.g. 'comm_modify cutoff "
                              f"{ghost_cutoff(self.hops, self.cutoff):g}' with the default {DEFAULT_SKIN:g} Å skin)")

    def _check_elements(self, numbers: np.ndarray) -> None:
        unknown = sorted(set(np.unique(numbers).tolist()) - self._known)
        if unknown and unknown[0] < 1:
            raise _user_error("pair_coeff maps an atom type to NULL: pair_style mliap with an equipot model needs an "
                              "element for every atom type")
        if unknown:
            names = ", ".join(chemical_symbols[z] for z in unknown)
            known = " ".join(chemical_symbols[z] for z in sorted(self._known))
            raise _user_error(f"pair_coeff maps an atom type to {names}, which the model {self.model_path} was not "
                              f"trained on (it knows {known})")

    @staticmethod
    def _check_distances(vec: torch.Tensor, receiver: np.ndarray, sender: np.ndarray) -> None:
        if vec.shape[0] == 0:
            return
        length = vec.detach().norm(dim=-1)
        k = int(length.argmin())
        if float(length[k]) < 1e-8:  # d|r|/dr is 0/0 there: the forces would be NaN
            raise _user_error(f"atoms {int(receiver[k])} and {int(sender[k])} (LAMMPS indices on this rank) are at "
                              f"the same position")


def write_lammps_model(model_path: str | os.PathLike, out: str | os.PathLike, dtype: str = "float64",
                       device: str = "cpu", ghost_check: bool = True) -> MLIAPEquipot:
    """Write the file ``pair_style mliap unified`` loads (atomically) for the model file
    ``model_path``; returns the adapter (the model is loaded once here, so a bad file fails now).

    The file refers to the model by its absolute path: moving the model file means exporting again.
    """
    adapter = MLIAPEquipot(Path(model_path).resolve(), dtype, device, ghost_check)
    with atomic_write(Path(out)) as tmp:
        with open(tmp, "wb") as f:
            pickle.dump(adapter, f, protocol=PICKLE_PROTOCOL)
    return adapter


def lammps_input_lines(adapter: MLIAPEquipot, pkl: str | os.PathLike, skin: float = DEFAULT_SKIN) -> str:
    """The pair_style, pair_coeff and comm_modify lines for ``adapter`` written to ``pkl``."""
    elements = " ".join(chemical_symbols[z] for z in adapter.potential.config.elements)
    return (f"pair_style mliap unified {pkl} 1\n"
            f"pair_coeff * * {elements}    # the element of each atom type, in type order\n"
            f"comm_modify cutoff {ghost_cutoff(adapter.hops, adapter.cutoff, skin):g}    # {adapter.hops} hops x "
            f"{adapter.cutoff:g} Å + {skin:g} Å neighbor skin")
