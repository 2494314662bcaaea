"""A :class:`Potential` as a ``torch.export`` program that runs without equipot's Python code
(``equipot export MODEL`` on the command line).

The artifact (``.pt2``) maps ``(positions [N, 3] Å, numbers [N] int64, edge_index [2, E] int64,
edge_shift [E, 3], cell [B, 3, 3] Å, batch [N] int64)`` to ``(energy [B] eV (float64), forces
[N, 3] eV/Å)``, with N, E and B dynamic. Edges follow equipot's convention (row 0 sender j,
row 1 receiver i, vector x_j - x_i + shift @ cell[batch[i]]), within the cutoff stored in the
file's metadata. Load it with::

    import json, torch
    extra = {"equipot.json": ""}
    program = torch.export.load("model.pt2", extra_files=extra)
    meta = json.loads(extra["equipot.json"])          # cutoff, elements, dtype, inputs
    energy, forces = program.module()(positions, numbers, edge_index, edge_shift, cell, batch)

How: ``torch.export`` cannot yet trace ``torch.autograd.grad`` with dynamic shapes, so the
energy-and-forces function is first traced into a graph of plain ATen operations (forward and
backward) by ``make_fx`` with symbolic shapes, and that graph is exported. TorchScript is not
offered: ``torch.jit.script`` cannot compile the backbones (dynamic backend dispatch, imports in
functions). Atomic numbers must be ones the model was built for (not checked inside the program).
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from torch import Tensor, nn

from .graph import AtomicGraph
from .ops.backends import use_backend
from .potentials.base import Potential, atom_energies
from .safe_write import atomic_write


class EnergyForces(nn.Module):
    """(positions, numbers, edge_index, edge_shift, cell, batch) -> (energy [B] eV, forces [N, 3] eV/Å).

    The same energy as :meth:`Potential.forward`: reference energy of each element plus the scaled
    backbone output relative to an isolated atom (precomputed here: it depends only on the weights).
    """

    def __init__(self, potential: Potential):
        super().__init__()
        self.backbone = potential.backbone
        dtype = next(potential.parameters()).dtype
        device = next(potential.parameters()).device
        self.register_buffer("z_to_index", potential.z_to_index.clone())
        with torch.no_grad():
            isolated = potential._isolated_energies(dtype, device)
        self.register_buffer("isolated", isolated.detach().clone())
        self.register_buffer("reference", potential.reference_energies(device).detach())
        self.scale = float(potential.config.scale)

    def forward(self, positions: Tensor, numbers: Tensor, edge_index: Tensor, edge_shift: Tensor, cell: Tensor,
                batch: Tensor) -> tuple[Tensor, Tensor]:
        positions = positions.detach().requires_grad_(True)
        species = self.z_to_index[numbers]
        sender, receiver = edge_index[0], edge_index[1]
        edge_vec = positions[sender] - positions[receiver] + torch.einsum(
            "ek,ekl->el", edge_shift.to(positions.dtype), cell[batch[receiver]])
        num_graphs = cell.shape[0]
        out = self.backbone(species, positions, edge_index, edge_vec, batch, num_graphs)
        node = atom_energies(out, species, self.isolated, self.reference, self.scale)
        energy = torch.zeros(num_graphs, dtype=node.dtype, device=node.device).index_add(0, batch, node)
        (grad,) = torch.autograd.grad([energy.sum()], [positions])
        return energy.detach(), -grad.detach()


def example_graph(potential: Potential, sizes: tuple[int, ...] = (5, 7), seed: int = 0,
                  dtype: torch.dtype = torch.float64, device: str = "cpu") -> AtomicGraph:
    """A batch of small random clusters of the model's elements (the tracing example)."""
    g = torch.Generator().manual_seed(seed)
    elements = potential.config.elements
    structures = []
    spacing = 0.45 * potential.cutoff
    for n in sizes:
        numbers = [elements[k % len(elements)] for k in range(n)]
        positions = torch.rand(n, 3, generator=g, dtype=torch.float64) * spacing * 2 + torch.arange(n)[:, None] * 0.3
        structures.append((numbers, positions.numpy(), None, None))
    return potential.graph_builder()(structures, dtype=dtype, device=device)


def graph_inputs(graph: AtomicGraph) -> tuple[Tensor, ...]:
    return (graph.positions, graph.numbers, graph.edge_index, graph.edge_shift, graph.cell, graph.batch)


def export_model(potential: Potential, path: str | Path, dtype: torch.dtype = torch.float64, device: str = "cpu",
                 check: bool = True) -> Path:
    """Write ``potential`` as a ``torch.export`` program to ``path`` (atomically); returns the path."""

    import torch.fx.experimental._config as fx_config
    from torch.export import Dim
    from torch.fx.experimental.proxy_tensor import make_fx

    if not potential.config.is_potential:
        raise ValueError(f"a property model (it predicts {potential.config.target!r} in "
                         f"{potential.config.target_unit}) has no energies and forces to export")
    path = Path(path)
    potential = potential.to(device=device, dtype=dtype).eval()
    potential.requires_grad_(False)
    module = EnergyForces(potential)
    example = example_graph(potential, dtype=dtype, device=device)
    args = graph_inputs(example)
    # Sizes that happen to be equal (or equal to a constant) must not be merged into one symbol.
    with use_backend("torch"), fx_config.patch(use_duck_shape=False):
        graph_module = make_fx(module, tracing_mode="symbolic", _allow_non_fake_inputs=True)(*args)
    n, e, b = Dim("num_atoms", min=1), Dim("num_edges", min=1), Dim("num_graphs", min=1)
    dynamic = ({0: n}, {0: n}, {1: e}, {0: e}, {0: b}, {0: n})
    program = torch.export.export(graph_module, args, dynamic_shapes=dynamic, strict=False)
    meta = {
        "format": "equipot.export", "version": 1, "cutoff": potential.cutoff,
        "elements": potential.config.elements, "dtype": str(dtype).replace("torch.", ""), "device": str(device),
        "inputs": ["positions [N,3] Angstrom", "numbers [N] int64", "edge_index [2,E] int64 (sender, receiver)",
                   "edge_shift [E,3]", "cell [B,3,3] Angstrom", "batch [N] int64"],
        "outputs": ["energy [B] eV float64", "forces [N,3] eV/Angstrom"],
        "potential_config": _plain(potential.config),
    }
    with atomic_write(path, keep_suffix=True) as tmp:  # torch.export wants the .pt2 suffix
        torch.export.save(program, str(tmp), extra_files={"equipot.json": json.dumps(meta)})
    if check:
        check_export(potential, path, dtype, device)
    return path


def _plain(config) -> dict:
    return json.loads(json.dumps(asdict(config), default=str))


def check_export(potential: Potential, path: str | Path, dtype: torch.dtype = torch.float64,
                 device: str = "cpu") -> tuple[float, float]:
    """Largest energy (eV) and force (eV/Å) differences between the saved program and ``potential``
    on a batch of other sizes than the tracing example; ValueError when they disagree."""
    program = torch.export.load(str(path)).module()
    graph = example_graph(potential, sizes=(3, 9, 6), seed=1, dtype=dtype, device=device)
    ref = {k: v.detach() for k, v in potential(graph, compute_forces=True).items()}
    energy, forces = program(*graph_inputs(graph))
    de = float((energy - ref["energy"]).abs().max())
    df = float((forces - ref["forces"]).abs().max())
    tol = 1e-8 if dtype == torch.float64 else 1e-3
    if de > tol * max(1.0, float(ref["energy"].abs().max())) or df > tol * max(1.0, float(ref["forces"].abs().max())):
        raise ValueError(f"the exported program disagrees with the model: energy {de:.3g} eV, forces {df:.3g} eV/Å")
    return de, df
