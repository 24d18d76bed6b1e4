"""The NAT pieces on real data: surrogates with adaptive switching on the shipped NAS-Bench-201 accuracies,
the pymoo problem (NSGA-III, budgets as constraints), spread picks, the accuracy table and the state file."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from hwnat.errors import BadInputError
from hwnat.latency.model import open_latency_model, search_bounds
from hwnat.search.accuracy import TableAccuracy, open_table_accuracy
from hwnat.search.archive import load_state
from hwnat.search.problem import (
    Objectives,
    make_problem,
    objective_names,
    reference_directions,
    run_nsga3,
    spread_picks,
)
from hwnat.search.surrogate import SURROGATES, fit_surrogate, kendall_tau
from hwnat.spaces import get_space


@pytest.fixture(scope="module")
def nb201():
    return get_space("nasbench201")


@pytest.fixture(scope="module")
def acc(nb201):
    return open_table_accuracy(nb201, None)


def test_table_accuracy_matches_file(nb201, acc):
    from hwnat.data import accuracy_dataset

    df = pd.read_csv(accuracy_dataset("nasbench201")).sample(25, random_state=0)
    assert acc.column == "cifar100_val_12ep"
    assert np.array_equal(acc.evaluate(df["arch"].tolist()), df["cifar100_val_12ep"].to_numpy())
    assert acc.adapt(df["arch"].tolist(), np.random.default_rng(0)) is False


def test_table_accuracy_bad_files(nb201, tmp_path):
    from hwnat.data import accuracy_dataset

    df = pd.read_csv(accuracy_dataset("nasbench201"))
    part = tmp_path / "part.csv"
    df[["arch", "cifar10_val_12ep"]].head(100).to_csv(part, index=False)
    with pytest.raises(BadInputError, match=r"lacks 15525 of the 15625 nasbench201 architectures"):
        TableAccuracy(nb201, part)
    with pytest.raises(BadInputError, match="no column 'nope'"):
        open_table_accuracy(nb201, f"{part}:nope")
    two = tmp_path / "two.csv"
    df[["arch", "cifar10_val_12ep", "cifar100_val_12ep"]].head(3).assign(cifar100_val_12ep="x").to_csv(two, index=False)
    with pytest.raises(BadInputError, match="row 1, column 'cifar100_val_12ep'"):
        TableAccuracy(nb201, two, "cifar100_val_12ep")
    with pytest.raises(BadInputError, match="accuracy file not found"):
        open_table_accuracy(nb201, str(tmp_path / "missing.csv"))


def test_surrogate_adaptive_switching_picks_best_cv_tau(nb201, acc):
    rng = np.random.default_rng(0)
    g = nb201.sample_genomes(rng, 80)
    y = acc.lookup(g)
    lo, hi = nb201.genome_bounds()
    s = fit_surrogate(g, y, lo, hi, seed=0)
    assert set(s.taus) == set(SURROGATES)
    assert s.taus[s.name] == max(s.taus.values())
    # the chosen model ranks unseen architectures better than chance
    g2 = nb201.sample_genomes(np.random.default_rng(1), 200)
    assert kendall_tau(s.predict(g2), acc.lookup(g2)) > 0.2
    with pytest.raises(BadInputError, match="at least 4"):
        fit_surrogate(g[:3], y[:3], lo, hi)


def test_objective_names():
    assert objective_names(("error", "latency", "flops"), ("a", "b")) == ["error", "latency_a", "latency_b", "flops"]
    with pytest.raises(BadInputError, match="unknown objective 'energy'"):
        objective_names(("energy",), ("a",))


def test_reference_directions_dimension():
    for m in (2, 3, 4):
        d = reference_directions(m, 60)
        assert d.shape[1] == m and 1 <= len(d) <= 60


def test_nsga3_honours_budget_constraint(nb201, acc):
    lat = open_latency_model("csv::pixel3", nb201, "pixel3")
    budget = float(np.percentile(pd.read_csv(__import__("hwnat.data", fromlist=["x"]).latency_dataset(
        "nasbench201"))["pixel3"], 25))
    obj = Objectives(nb201, objective_names(("error", "latency", "flops"), ("pixel3",)), {"pixel3": lat},
                     {"pixel3": budget})
    lo, hi = search_bounds(nb201)
    prob = make_problem(obj, lambda g: 100.0 - acc.lookup(g), lo, hi)
    assert prob.n_obj == 3 and prob.n_ieq_constr == 1
    X, F, G = run_nsga3(prob, nb201.sample_genomes(np.random.default_rng(0), 10), 30, 10, seed=3)
    assert X.dtype == np.int64 and np.all(X >= lo) and np.all(X <= hi)
    feas = G[:, 0] <= 0
    assert feas.sum() > 0
    # F and G are what the models say about those genomes
    assert np.allclose(F[:, 1], lat.ms(X)) and np.allclose(G[:, 0], lat.ms(X) - budget)
    assert np.allclose(F[:, 0], 100 - acc.lookup(X))


def test_spread_picks():
    F = np.array([[0.0, 10.0], [1.0, 9.0], [5.0, 5.0], [9.0, 1.0], [10.0, 0.0]])
    assert spread_picks(F, 3) == [0, 4, 2]
    assert spread_picks(F, 2, first=2)[0] == 2
    assert spread_picks(F, 10) == [0, 4, 2, 1, 3] or sorted(spread_picks(F, 10)) == [0, 1, 2, 3, 4]
    assert spread_picks(F[:0], 3) == []


def test_state_file_errors(tmp_path):
    p = tmp_path / "state.json"
    assert load_state(p) is None
    p.write_text('{"format": "hwnat-search-state", "schema_ver')
    with pytest.raises(BadInputError, match="corrupt search state"):
        load_state(p)
    p.write_text(json.dumps({"format": "other"}))
    with pytest.raises(BadInputError, match="not an hwnat search state"):
        load_state(p)


def test_best_pick_of_equally_accurate_is_the_faster(nb201, acc, tmp_path):
    """Of two feasible entries with the same accuracy the first pick is the one that dominates (less
    latency), whatever their order in the archive; an entry rejected by the verification is never picked."""
    from hwnat.search.nat import NATSearch, SearchSettings

    lat = open_latency_model("csv::pixel3", nb201, "pixel3")
    obj = Objectives(nb201, objective_names(("error", "latency"), ("pixel3",)), {"pixel3": lat}, {"pixel3": 50.0})
    s = SearchSettings(space="nasbench201", devices=("pixel3",), budgets_ms={"pixel3": 50.0},
                       latency_models={"pixel3": "csv::pixel3"}, initial=4, picks=1)
    search = NATSearch(s, nb201, obj, acc, tmp_path)
    archs = [nb201.format(x) for x in nb201.sample(np.random.default_rng(0), 4)]
    for arch, a, ms, feasible in zip(archs, (70.0, 70.0, 60.0, 90.0), (20.0, 10.0, 5.0, 60.0),
                                     (True, True, True, False), strict=True):
        search.archive.add({"arch": arch, "accuracy": a, "error": 100 - a, "latency_ms_pixel3": ms,
                            "flops_m": 1.0, "params_m": 1.0, "feasible": feasible})
    picks = search.select_picks()
    assert [p["arch"] for p in picks] == [archs[1], archs[2]]  # the 10 ms one, then the other end
    search.rejected.add(archs[1])
    assert search.select_picks()[0]["arch"] == archs[0]
    search.rejected.update(archs[:3])
    assert search.select_picks() == []
