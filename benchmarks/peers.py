"""Peer models for the benchmarks: MACE (small, medium), NequIP and SchNet (SchNetPack).

Each peer is built in its own function that imports its package inside a try/except and raises
:class:`PeerUnavailable` (an ``ImportError``) naming the missing package, so every benchmark runs
where a peer is missing and says which one. Install the peers in their own environment with
``bash benchmarks/peers_env.sh VENV`` and run the benchmarks with ``VENV/bin/python``.

Settings (untrained weights: the timings do not depend on the values):

- ``mace-small`` / ``mace-medium``: the rMD17 settings of Batatia et al. (NeurIPS 2022):
  r_max 5 Å, 8 Bessel functions, polynomial envelope p = 5, spherical harmonics up to l = 3,
  2 interaction layers, correlation order 3, radial MLP [64, 64, 64]; the widths are those of
  the MACE-OFF23 small and medium models (96x0e, L = 0; 128x0e+128x1o, L = 1), as in
  ``benchmarks/speed.py``. ``mace-rmd17`` is the paper's own rMD17 model (256 channels, L = 2);
  it is not in the default list because it is slow on a CPU.
- ``nequip``: the (r)MD17 model of Batzner et al. (Nat. Commun. 2022): 5 interaction layers,
  64 features, l_max 3 with both parities, r_max 5 Å, 8 trainable Bessel functions,
  polynomial cutoff p = 6, radial MLP of depth 2 and width 64; built with the nequip >= 0.7
  model builder (``NequIPGNNModel``) and run through its ``NequIPCalculator``.
- ``schnet``: SchNetPack's own MD17 experiment (``configs/experiment/md17.yaml``): SchNet with
  128 features, 6 interactions, 20 Gaussians, cosine cutoff 5 Å, atomwise energy sum and forces
  by autograd, run through ``SpkCalculator`` with a matscipy neighbour list.
"""
from __future__ import annotations

import contextlib
import os
import sys
import typing
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

if not __package__:  # run as `python benchmarks/peers.py`: import the benchmarks package from the repository
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import CUTOFF, ELEMENTS

# e3nn 0.4/0.6 pickles that MACE loads need the old torch.load default; harmless for the rest.
os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

PEERS = ("mace-small", "mace-medium", "nequip", "schnet")
ALL_PEERS = PEERS + ("mace-rmd17", "mace-train")
#: hidden irreps per MACE size; ``mace-train`` is the MACE that ``train_md17.py`` trains against equipot
MACE_HIDDEN = {"mace-small": "96x0e", "mace-medium": "128x0e+128x1o", "mace-rmd17": "256x0e+256x1o+256x2e",
               "mace-train": "32x0e+32x1o"}
INSTALL_HINT = "install the peers with `bash benchmarks/peers_env.sh VENV` and run with VENV/bin/python"


class PeerUnavailable(ImportError):
    """A peer's package is not installed (or does not import) in this environment."""


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Temporarily set torch's default dtype (MACE and SchNetPack build modules in it)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _as_dtype(dtype: str | torch.dtype) -> torch.dtype:
    return getattr(torch, dtype) if isinstance(dtype, str) else dtype


def _dtype_name(dtype: str | torch.dtype) -> str:
    return str(_as_dtype(dtype)).replace("torch.", "")


# ----------------------------------------------------------------------------------------- MACE
def mace_model(
    kind: str = "mace-small",
    dtype: str | torch.dtype = "float64",
    elements: Sequence[int] = ELEMENTS,
    r_max: float = CUTOFF,
    avg_num_neighbors: float = 8.0,
    atomic_energies: Sequence[float] | None = None,
    scale: float = 1.0,
    shift: float = 0.0,
    seed: int = 0,
    *,
    hidden: str | None = None,
    max_ell: int = 3,
    correlation: int = 3,
    num_interactions: int = 2,
) -> torch.nn.Module:
    """A ``ScaleShiftMACE`` at the rMD17 settings (see the module docstring), untrained.

    Args:
        kind: ``mace-small``, ``mace-medium`` or ``mace-rmd17``; sets the hidden irreps.
        elements: atomic numbers, in MACE's z-table order.
        r_max: cutoff radius, Å.
        avg_num_neighbors: mean neighbour count within ``r_max`` (MACE's message normalisation).
        atomic_energies: isolated-atom energies (eV) per element, zeros when None.
        scale, shift: eV applied to the interaction energy (MACE's atomic_inter_scale/shift).
        hidden: hidden irreps instead of those of ``kind`` (e.g. ``"32x0e + 32x1o"``).
        max_ell, correlation, num_interactions: spherical-harmonics order, body order - 1 and
            message-passing layers.
    """
    try:
        from e3nn import o3
        from mace import modules
    except ImportError as exc:
        raise PeerUnavailable(f"MACE needs mace-torch and e3nn, not importable here ({exc}); {INSTALL_HINT}") from None
    if hidden is None and kind not in MACE_HIDDEN:
        raise ValueError(f"unknown MACE size {kind!r}; choose from {sorted(MACE_HIDDEN)}")
    block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    e0 = np.zeros(len(elements)) if atomic_energies is None else np.asarray(atomic_energies, dtype=float)
    torch.manual_seed(seed)
    with default_dtype(_as_dtype(dtype)):
        return modules.ScaleShiftMACE(
            r_max=r_max, num_bessel=8, num_polynomial_cutoff=5, max_ell=max_ell,
            interaction_cls=block, interaction_cls_first=block, num_interactions=num_interactions,
            num_elements=len(elements), hidden_irreps=o3.Irreps(hidden or MACE_HIDDEN[kind]),
            MLP_irreps=o3.Irreps("16x0e"), gate=torch.nn.functional.silu, atomic_energies=e0,
            avg_num_neighbors=avg_num_neighbors, atomic_numbers=list(elements), correlation=correlation,
            radial_MLP=[64, 64, 64], radial_type="bessel", atomic_inter_scale=scale,
            atomic_inter_shift=shift,
        )


def mace_calculator(kind: str, dtype: str | torch.dtype = "float64", device: str = "cpu",
                    elements: Sequence[int] = ELEMENTS, model: torch.nn.Module | None = None):
    """ASE calculator (mace's ``MACECalculator``) around :func:`mace_model` or a given model."""
    try:
        from mace.calculators import MACECalculator
    except ImportError as exc:
        raise PeerUnavailable(f"MACE needs mace-torch, not importable here ({exc}); {INSTALL_HINT}") from None
    model = mace_model(kind, dtype, elements) if model is None else model
    with default_dtype(_as_dtype(dtype)):  # the calculator sets the global default; keep ours
        return MACECalculator(models=model, device=device, default_dtype=_dtype_name(dtype))


# --------------------------------------------------------------------------------------- NequIP
def nequip_model(dtype: str | torch.dtype = "float64", elements: Sequence[int] = ELEMENTS, r_max: float = CUTOFF,
                 avg_num_neighbors: float = 8.0, seed: int = 0) -> torch.nn.Module:
    """NequIP at the (r)MD17 settings of its paper (see the module docstring), untrained, eval mode."""
    try:
        from ase.data import chemical_symbols
        from nequip.model import NequIPGNNModel
        from nequip.utils.global_state import set_global_state
    except ImportError as exc:
        raise PeerUnavailable(f"NequIP needs nequip >= 0.7, not importable here ({exc}); {INSTALL_HINT}") from None
    import warnings

    with default_dtype(torch.get_default_dtype()):  # nequip's global state sets float64 as the default
        set_global_state()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "set per_type_energy_scales/shifts": irrelevant for timing
        model = NequIPGNNModel(
            seed=seed, model_dtype=_dtype_name(dtype), type_names=[chemical_symbols[z] for z in elements],
            r_max=r_max, num_layers=5, l_max=3, parity=True, num_features=64, num_bessels=8,
            bessel_trainable=True, polynomial_cutoff_p=6, radial_mlp_depth=2, radial_mlp_width=64,
            avg_num_neighbors=avg_num_neighbors, per_type_energy_scales=1.0, per_type_energy_shifts=0.0,
        )
    return model.eval()


def nequip_calculator(dtype: str | torch.dtype = "float64", device: str = "cpu",
                      elements: Sequence[int] = ELEMENTS, r_max: float = CUTOFF):
    """nequip's ``NequIPCalculator`` around :func:`nequip_model` (uncompiled, eager mode)."""
    try:
        from ase.data import chemical_symbols
        from nequip.data.transforms import ChemicalSpeciesToAtomTypeMapper, NeighborListTransform
        from nequip.integrations.ase import NequIPCalculator
    except ImportError as exc:
        raise PeerUnavailable(f"NequIP needs nequip >= 0.7, not importable here ({exc}); {INSTALL_HINT}") from None
    names = [chemical_symbols[z] for z in elements]
    model = nequip_model(dtype, elements, r_max)
    transforms = [
        ChemicalSpeciesToAtomTypeMapper(model_type_names=names),
        NeighborListTransform(r_max=r_max),
    ]

    class _Float64Data(NequIPCalculator):
        # nequip keeps its data (positions, cells) in the default dtype, which it expects to be
        # float64 whatever the model's dtype; we do not leave the global default changed.
        def calculate(self, *args, **kwargs):
            with default_dtype(torch.float64):
                super().calculate(*args, **kwargs)

    return _Float64Data(model=model, device=device, transforms=transforms)


# --------------------------------------------------------------------------------------- SchNet
def _import_schnetpack():
    """schnetpack 2.1 imports ``T_co`` from torch's dataloader, a private name torch 2.13 dropped."""
    try:
        import torch.utils.data.dataloader as dataloader

        if not hasattr(dataloader, "T_co"):
            dataloader.T_co = typing.TypeVar("T_co", covariant=True)
        import schnetpack
    except ImportError as exc:
        raise PeerUnavailable(f"SchNet needs schnetpack, not importable here ({exc}); {INSTALL_HINT}") from None
    return schnetpack


def schnet_model(cutoff: float = CUTOFF, seed: int = 0) -> torch.nn.Module:
    """SchNet as in SchNetPack's MD17 experiment config (see the module docstring), untrained."""
    spk = _import_schnetpack()
    torch.manual_seed(seed)
    representation = spk.representation.SchNet(
        n_atom_basis=128, n_interactions=6, radial_basis=spk.nn.GaussianRBF(n_rbf=20, cutoff=cutoff),
        cutoff_fn=spk.nn.CosineCutoff(cutoff),
    )
    return spk.model.NeuralNetworkPotential(
        representation=representation,
        input_modules=[spk.atomistic.PairwiseDistances()],
        output_modules=[
            spk.atomistic.Atomwise(n_in=128, output_key="energy", aggregation_mode="sum"),
            spk.atomistic.Forces(energy_key="energy", force_key="forces"),
        ],
        postprocessors=[spk.transform.CastTo64()],
    )


def schnet_calculator(dtype: str | torch.dtype = "float64", device: str = "cpu", cutoff: float = CUTOFF):
    """SchNetPack's ``SpkCalculator`` around :func:`schnet_model` (eV and Å throughout)."""
    spk = _import_schnetpack()
    from schnetpack.interfaces import SpkCalculator

    model = schnet_model(cutoff)

    class _InMemory(SpkCalculator):
        # SpkCalculator only loads models from files; hand it ours instead.
        def _load_model(self, model_file):
            return model.to(torch.float64).eval()

    return _InMemory(
        model_file="<in memory>", neighbor_list=spk.transform.MatScipyNeighborList(cutoff=cutoff),
        energy_unit="eV", position_unit="Angstrom", device=device, dtype=_as_dtype(dtype),
    )


# ------------------------------------------------------------------------------------- front end
def peer_calculator(name: str, dtype: str | torch.dtype = "float64", device: str = "cpu",
                    elements: Sequence[int] = ELEMENTS):
    """An ASE calculator for peer ``name`` (one of :data:`ALL_PEERS`).

    Raises:
        PeerUnavailable: the peer's package is missing; the message names it.
        ValueError: unknown name.
    """
    if name.startswith("mace-"):
        return mace_calculator(name, dtype, device, elements)
    if name == "nequip":
        return nequip_calculator(dtype, device, elements)
    if name == "schnet":
        return schnet_calculator(dtype, device)
    raise ValueError(f"unknown peer {name!r}; choose from {ALL_PEERS}")


def peer_status(names: Sequence[str] = PEERS) -> dict[str, str]:
    """``{peer: "ok ..." or why it cannot run}`` for this environment (builds each once, on the CPU).

    "ok" also means finite float64 forces on ethanol and an energy that a rotation changes by less
    than 1e-8 eV (a check that the installed e3nn works for MACE and NequIP)."""
    from ase.build import molecule

    status = {}
    rotation = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0]
    for name in names:
        try:
            calc = peer_calculator(name, "float64")
            atoms = molecule("CH3CH2OH")
            atoms.calc = calc
            energy, forces = atoms.get_potential_energy(), atoms.get_forces()
            turned = atoms.copy()
            turned.positions = atoms.positions @ rotation.T
            turned.calc = calc
            error = abs(turned.get_potential_energy() - energy)
            if not np.isfinite(forces).all():
                status[name] = "broken: non-finite forces"
            elif error > 1e-8:
                status[name] = f"broken: a rotation changes the energy by {error:.2e} eV"
            else:
                status[name] = f"ok (rotation changes the energy by {error:.0e} eV)"
        except PeerUnavailable as exc:
            status[name] = f"missing: {exc}"
        except Exception as exc:  # a peer that imports but fails to run is reported, not fatal
            status[name] = f"broken: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return status


if __name__ == "__main__":
    for peer, state in peer_status(ALL_PEERS).items():
        print(f"{peer:12s} {state}")
