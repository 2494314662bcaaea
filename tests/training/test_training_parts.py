"""Pieces of the trainer: sampler, schedule, EMA, losses, error statistics, metrics CSV, checkpoints."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from equipot.data import H5Dataset
from equipot.graph import AtomicGraph
from equipot.potentials.base import build_potential
from equipot.training.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from equipot.training.ema import EMA
from equipot.training.energy_fit import MIN_FRAMES, EnergyFit, refit_size
from equipot.training.losses import LossWeights, combine, loss_terms
from equipot.training.metrics import ErrorStats, MetricsCSV, read_metrics
from equipot.training.sampler import EpochSampler
from equipot.training.schedule import LRSchedule


def test_sampler_ddp_union_equals_single_process_batches():
    """With global batch B split over W ranks, the ranks' batch k together is the single-process batch k."""
    size, batch, world = 23, 4, 2
    single = EpochSampler(size, seed=3).indices(epoch=5)
    ranks = [EpochSampler(size, seed=3, rank=r, world_size=world).indices(epoch=5) for r in range(world)]
    local = batch // world
    for k in range(size // batch):  # the last, padded batch differs
        together = sorted(i for r in ranks for i in r[k * local:(k + 1) * local])
        assert together == sorted(single[k * batch:(k + 1) * batch])
    assert sorted(single) == list(range(size))
    assert EpochSampler(size, seed=3).indices(6) != single  # a new order every epoch


def test_sampler_resumes_mid_epoch():
    s = EpochSampler(10, seed=1)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2, start=6)
    assert list(s) == full[6:] and len(s) == 4


def test_schedule_warmup_plateau_cosine():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    s = LRSchedule(opt, peak=1e-2, warmup_steps=10, kind="plateau", factor=0.5, patience=1, min_lr=1e-3)
    assert s.set_step(1) == pytest.approx(1e-3) and s.set_step(10) == pytest.approx(1e-2)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-2)
    for score in (1.0, 2.0, 2.0):  # two validations without improvement > patience 1
        s.observe(score)
    assert s.set_step(20) == pytest.approx(5e-3)
    for _ in range(20):
        s.observe(3.0)
    assert s.set_step(30) == pytest.approx(1e-3)  # never below min_lr
    c = LRSchedule(opt, peak=1.0, warmup_steps=0, kind="cosine", min_lr=0.1)
    assert c.lr_at(1, 0.0) == pytest.approx(1.0) and c.lr_at(50, 0.5) == pytest.approx(0.55)
    assert c.lr_at(100, 1.0) == pytest.approx(0.1)
    lin = LRSchedule(opt, peak=1.0, warmup_steps=0, kind="linear", min_lr=0.1)
    assert lin.lr_at(1, 0.25) == pytest.approx(0.775)
    # extending at 60 % of the new budget decays again from the rate reached, to min_lr at the new end
    c.set_step(50, 0.5)
    c.extend(0.6)
    assert c.lr_at(51, 0.6) == pytest.approx(0.55) and c.lr_at(75, 0.8) == pytest.approx(0.325)
    assert c.lr_at(100, 1.0) == pytest.approx(0.1)
    state = s.state_dict()
    s2 = LRSchedule(opt, peak=1e-2, kind="plateau")
    s2.load_state_dict(state)
    assert s2.lr_at(20) == s.lr_at(20)


@pytest.mark.parametrize("n_train, frames, expected", [
    (950, 500, 95),            # revised MD17's benchmark split: a tenth of it, not 500
    (110_000, 500, 500),       # QM9-sized: the configured cap
    (200, 500, MIN_FRAMES),    # small sets keep enough frames for a least-squares fit
    (30, 500, 30),             # never more than there are
    (950, 20, 20),             # the configured number bounds it from above
])
def test_energy_refit_size(n_train, frames, expected):
    assert refit_size(n_train, frames) == expected


def test_energy_fit_takes_refit_size_frames_and_removes_an_offset(ethanol_h5):
    """The trainer's fit draws ``refit_size`` frames (120 training frames: 50) and, on a model
    whose energies are all off by one constant, brings the mean residual on them to ~0 (1e-6 eV:
    float64 least squares of one composition)."""
    train = H5Dataset(ethanol_h5, split="train")
    model = build_potential("ponita", elements=(1, 6, 8), cutoff=4.0, hidden=8, layers=1, r3_only=True,
                            learn_atomic_energies=True).double()
    fit = EnergyFit(train, None, model, 500, seed=0, batch_size=25)
    assert len(fit.values) == refit_size(len(train), 500) == MIN_FRAMES
    assert len(EnergyFit(train, None, model, 20, seed=0, batch_size=25).values) == 20
    fit.refit(model)
    model.eval()
    with torch.no_grad():
        predicted = torch.cat([model(graph, compute_forces=False)["energy"] for graph, _ in fit.loader])
    assert abs(float(np.mean(fit.values - predicted.numpy()))) < 1e-6


def test_ema_average_and_state():
    model = torch.nn.Linear(2, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)  # effective decay min(0.5, 2/11) = 2/11
    assert ema.shadow.weight.flatten()[0].item() == pytest.approx(9 / 11)
    assert not ema.shadow.weight.requires_grad
    other = EMA(model, decay=0.5)
    other.load_state_dict(ema.state_dict())
    assert other.updates == 1 and torch.equal(other.shadow.weight, ema.shadow.weight)


def _toy_batch():
    graph = AtomicGraph.from_structures([([1, 1], np.array([[0, 0, 0], [0.7, 0, 0]]), None, None),
                                         ([8, 1, 1], np.random.default_rng(0).normal(size=(3, 3)), None, None)], 3.0)
    pred = {"energy": torch.tensor([1.0, 2.0], dtype=torch.float64),
            "forces": torch.arange(15, dtype=torch.float64).reshape(5, 3) / 10}
    targets = {"energy": torch.tensor([0.0, 0.5], dtype=torch.float64),
               "forces": torch.zeros(5, 3, dtype=torch.float64)}
    return graph, pred, targets


def test_losses_values_and_ddp_normalisation():
    graph, pred, targets = _toy_batch()
    w = LossWeights(energy=2.0, forces=10.0)
    terms = w.terms({"energy", "forces"})
    sums, counts = loss_terms(pred, targets, graph, w, terms)
    loss, parts = combine(sums, counts, w)
    e = ((1.0 / 2) ** 2 + (1.5 / 3) ** 2) / 2
    f = float((pred["forces"] ** 2).mean())
    assert parts["energy"] == pytest.approx(e) and parts["forces"] == pytest.approx(f)
    assert float(loss) == pytest.approx(2 * e + 10 * f)
    # two "ranks" holding one structure each: the average of their losses equals the global loss
    halves = []
    for b, atoms in ((0, slice(0, 2)), (1, slice(2, 5))):
        g = AtomicGraph.from_structures([([1, 1], np.zeros((2, 3)) + [[0, 0, 0], [0.7, 0, 0]], None, None)]
                                        if b == 0 else [([8, 1, 1], np.zeros((3, 3)), None, None)], 3.0)
        p = {"energy": pred["energy"][b:b + 1], "forces": pred["forces"][atoms]}
        t = {"energy": targets["energy"][b:b + 1], "forces": targets["forces"][atoms]}
        s, _ = loss_terms(p, t, g, w, terms)
        halves.append(combine(s, counts, w, world_size=2)[0])
    assert float(sum(halves) / 2) == pytest.approx(float(loss))


def test_property_and_huber_losses():
    graph, pred, _ = _toy_batch()
    w = LossWeights(property_name="gap", kind="huber", huber_delta=0.1)
    assert w.terms({"energy", "forces", "gap"}) == ["property"]
    sums, counts = loss_terms(pred, {"gap": torch.tensor([1.05, 0.0])}, graph, w, ["property"])
    loss, _ = combine(sums, counts, w)
    expected = (0.5 * 0.05 ** 2 + 0.1 * (2.0 - 0.05)) / 2
    assert float(loss) == pytest.approx(expected)


def test_error_stats_units():
    graph, pred, targets = _toy_batch()
    stats = ErrorStats(["energy", "energy_per_atom", "forces"])
    stats.update(pred, targets, graph)
    m = stats.compute()
    assert m["energy_mae"] == pytest.approx(1.25) and m["energy_per_atom_mae"] == pytest.approx(0.5)
    assert m["forces_rmse"] == pytest.approx(math.sqrt(float((pred["forces"] ** 2).mean())))


def test_metrics_csv_truncates_on_resume(tmp_path):
    csv = MetricsCSV(tmp_path / "metrics.csv", ["epoch", "step", "forces_mae"])
    for step in (10, 20, 30):
        csv.append({"epoch": step // 10, "step": step, "forces_mae": 0.1 * step})
    assert csv.rows() == 3
    csv.truncate_to(2)
    csv.append({"epoch": 3, "step": 30, "forces_mae": 1.0})
    cols = read_metrics(tmp_path / "metrics.csv")
    assert cols["step"] == [10, 20, 30] and cols["forces_mae"][-1] == 1.0
    csv.reset()
    assert csv.rows() == 0 and read_metrics(tmp_path / "metrics.csv")["step"] == []


def test_checkpoint_rng_round_trip(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    state = rng_state()
    a = (torch.rand(3), np.random.rand(3), random.random())
    save_checkpoint(tmp_path / "c.pt", {"rng": state, "step": 7})
    loaded = load_checkpoint(tmp_path / "c.pt")  # weights_only=True
    set_rng_state(loaded["rng"])
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    assert loaded["step"] == 7 and not (tmp_path / "c.pt.tmp").exists()
    (tmp_path / "bad.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        load_checkpoint(tmp_path / "bad.pt")
