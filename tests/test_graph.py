"""AtomicGraph: batching, edge vectors, device/dtype moves."""
import numpy as np
import torch
from ase import Atoms
from ase.build import bulk, molecule

from equipot import AtomicGraph


def test_batch_layout_and_edge_vectors():
    mol = molecule("H2O")
    crystal = bulk("Si", "diamond", a=5.43)
    graph = AtomicGraph.from_atoms([mol, crystal], cutoff=3.0)
    assert graph.num_graphs == 2 and graph.num_nodes == 5
    assert graph.ptr.tolist() == [0, 3, 5]
    assert graph.batch.tolist() == [0, 0, 0, 1, 1]
    assert graph.cell.shape == (2, 3, 3) and not graph.pbc[0].any() and graph.pbc[1].all()
    receivers = graph.edge_index[1]
    assert torch.all(receivers[1:] >= receivers[:-1])
    vec = graph.edge_vectors()
    dist = vec.norm(dim=-1)
    assert torch.all(dist <= 3.0 + 1e-12) and torch.all(dist > 0)
    # every edge stays inside its structure
    assert torch.equal(graph.batch[graph.edge_index[0]], graph.batch[graph.edge_index[1]])
    # Si-Si nearest-neighbour distance in diamond: a * sqrt(3) / 4, four per atom
    si = dist[graph.batch[graph.edge_index[1]] == 1]
    assert torch.isclose(si.min(), torch.tensor(5.43 * np.sqrt(3) / 4, dtype=si.dtype))
    assert int((si < 2.5).sum()) == 8
    ptr = graph.receiver_ptr()
    assert ptr[-1] == graph.num_edges and ptr.numel() == graph.num_nodes + 1


def test_to_casts_floats_only():
    graph = AtomicGraph.from_atoms(Atoms("H2", positions=[[0, 0, 0], [0.7, 0, 0]]), cutoff=2.0)
    g32 = graph.to(dtype=torch.float32)
    assert g32.positions.dtype == torch.float32 and g32.edge_shift.dtype == torch.float32
    assert g32.numbers.dtype == torch.int64 and g32.edge_index.dtype == torch.int64
    assert g32.pbc.dtype == torch.bool


def _edge_set(graph):
    vec = graph.edge_vectors()
    return sorted((int(j), int(i), tuple(np.round(v.tolist(), 9)))
                  for (j, i), v in zip(graph.edge_index.T.tolist(), vec))


def test_every_neighbour_source_gives_the_same_graph():
    """matscipy, the torch list and given Verlet edges (cutoff + skin, pruned to the cutoff)
    all build the same edges: the one structures -> graph road serves loader and calculator."""
    from equipot.verlet import VerletList

    crystal = bulk("Si", "diamond", a=5.43) * (2, 1, 1)
    crystal.rattle(0.05, seed=0)
    mol = molecule("CH3CH2OH")
    structures = [(a.numbers, a.positions, a.cell.array, a.pbc) for a in (crystal, mol)]
    reference = AtomicGraph.from_structures(structures, 3.0)
    by_torch = AtomicGraph.from_structures(structures, 3.0, neighbors="torch")
    edges = [VerletList(3.0, skin=0.8).get(p, n, c, b) for n, p, c, b in structures]
    by_verlet = AtomicGraph.from_structures(structures, 3.0, edges=edges)
    assert by_verlet.num_edges == reference.num_edges < sum(len(e[0]) for e in edges)
    assert _edge_set(by_torch) == _edge_set(reference) == _edge_set(by_verlet)


def test_graph_builder_builds_the_graphs_of_its_cutoff():
    """A GraphBuilder is the structures -> graph road at one cutoff: the same edges, picklable
    (DataLoader workers), and a bad cutoff is refused where it is made."""
    import pickle

    import pytest

    from equipot import GraphBuilder

    mol = molecule("CH3CH2OH")
    structures = [(mol.numbers, mol.positions, None, None)]
    builder = GraphBuilder(2.0)
    assert builder(structures, dtype=torch.float32).positions.dtype == torch.float32
    graph = builder(structures)
    assert _edge_set(graph) == _edge_set(AtomicGraph.from_structures(structures, 2.0))
    assert _edge_set(graph) != _edge_set(GraphBuilder(3.0)(structures))
    assert pickle.loads(pickle.dumps(builder)) == builder
    for bad in (0.0, -1.0, float("nan"), "far"):
        with pytest.raises(ValueError, match="cutoff"):
            GraphBuilder(bad)
