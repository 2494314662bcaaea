"""Batches of AtomicGraph from an HDF5 dataset, with neighbour lists built in worker processes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk

from equipot.data import H5Dataset, HDF5Writer, collate, convert_rmd17, make_loader
from equipot.graph import GraphBuilder


@pytest.fixture(scope="module")
def ethanol(rmd17_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("loader") / "ethanol.h5"
    return convert_rmd17([rmd17_dir / "rmd17_ethanol_train_01.npz", rmd17_dir / "rmd17_ethanol_test_01.npz"],
                         out, limit=40)


def test_collate_shapes_and_targets(ethanol):
    ds = H5Dataset(ethanol, split="train")
    frames = [ds[k] for k in range(5)]
    graph, targets = collate(frames, GraphBuilder(4.0))
    assert torch.equal(collate(frames, 4.0)[0].edge_index, graph.edge_index)  # a bare cutoff in Å: the same
    assert graph.num_graphs == 5 and graph.num_nodes == 45
    assert targets["energy"].shape == (5,) and targets["energy"].dtype == torch.float64
    assert targets["forces"].shape == (45, 3)
    assert targets["old_indices"].dtype == torch.int64 and targets["old_forces"].shape == (45, 3)
    np.testing.assert_array_equal(targets["forces"].numpy(), np.concatenate([f.forces for f in frames]))
    # every pair of atoms of a molecule closer than the cutoff is an edge, within its own molecule
    vec = graph.edge_vectors()
    assert (vec.norm(dim=1) < 4.0).all()
    assert (graph.batch[graph.edge_index[0]] == graph.batch[graph.edge_index[1]]).all()
    n_pairs = sum(int(((np.linalg.norm(f.positions[:, None] - f.positions[None], axis=-1) < 4.0).sum()) - 9)
                  for f in frames)
    assert graph.num_edges == n_pairs
    g32, t32 = collate(frames, GraphBuilder(4.0), dtype=torch.float32)
    assert g32.positions.dtype == torch.float32 and t32["energy"].dtype == torch.float32


def test_collate_periodic_with_stress(tmp_path):
    path = tmp_path / "si.h5"
    with HDF5Writer(path) as w:
        for k in range(3):
            atoms = bulk("Si", "diamond", a=5.43)
            atoms.rattle(0.01, seed=k)
            w.add(atoms.numbers, atoms.positions, energy=-10.0 - k, forces=np.zeros((2, 3)), cell=atoms.cell.array,
                  pbc=atoms.pbc, stress=np.eye(3) * 1e-3 * k)
    graph, targets = collate(list(H5Dataset(path)), GraphBuilder(3.0))
    assert graph.pbc.all() and targets["stress"].shape == (3, 3, 3)
    # each Si has 4 neighbours at 2.35 Å in diamond
    assert graph.num_edges == 3 * 2 * 4
    assert torch.allclose(graph.edge_vectors().norm(dim=1), torch.full((24,), 2.35, dtype=torch.float64), atol=0.05)


def test_loader_with_workers_matches_serial(ethanol):
    ds = H5Dataset(ethanol)
    serial = list(make_loader(ds, GraphBuilder(5.0), batch_size=7))
    parallel = list(make_loader(ds, GraphBuilder(5.0), batch_size=7, num_workers=2))
    assert len(serial) == len(parallel) == 12
    for (g1, t1), (g2, t2) in zip(serial, parallel):
        assert torch.equal(g1.positions, g2.positions) and torch.equal(g1.edge_index, g2.edge_index)
        assert torch.equal(t1["energy"], t2["energy"]) and torch.equal(t1["forces"], t2["forces"])
    ds[0]  # the parent's handle is open; forked workers must open their own
    again = list(make_loader(ds, GraphBuilder(5.0), batch_size=40, num_workers=2, shuffle=True, seed=3))
    order = [torch.cat([g.positions for g, _ in again])]
    again2 = list(make_loader(ds, GraphBuilder(5.0), batch_size=40, num_workers=2, shuffle=True, seed=3))
    assert torch.equal(order[0], torch.cat([g.positions for g, _ in again2]))
    assert not torch.equal(order[0], torch.cat([g.positions for g, _ in serial]))
