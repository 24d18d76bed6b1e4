"""Search quality measures: Pareto masks, hypervolume on hand-computed fronts, budgets, and the
exhaustive front of a tabular space (tiny CSVs and the shipped NAS-Bench-201 tables)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hwnat.errors import BadInputError
from hwnat.search.metrics import (
    hypervolume,
    load_truth,
    objectives,
    pareto_mask,
    percentile_budgets,
    reference_point,
)


def test_hypervolume_2d_staircase_by_hand():
    # three steps under ref (4, 4): columns of widths 1, 1, 1 and heights 1, 2, 3 -> 6
    F = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])
    assert hypervolume(F, [4.0, 4.0]) == pytest.approx(6.0)
    # a dominated point and a point outside the reference box change nothing
    more = np.vstack([F, [[2.5, 2.5], [5.0, 0.5], [4.0, 0.0]]])
    assert hypervolume(more, [4.0, 4.0]) == pytest.approx(6.0)
    # one point alone: its box to the reference point
    assert hypervolume(F[1], [4.0, 4.0]) == pytest.approx(4.0)


def test_hypervolume_3d_by_inclusion_exclusion():
    # boxes 2x2x1 and 1x1x2 overlapping in the 1x1x1 box from (2, 2, 2) to the ref: 4 + 2 - 1
    F = np.array([[1.0, 1.0, 2.0], [2.0, 2.0, 1.0]])
    assert hypervolume(F, [3.0, 3.0, 3.0]) == pytest.approx(5.0)


def test_hypervolume_empty_and_shape_errors():
    assert hypervolume(np.zeros((0, 2)), [1.0, 1.0]) == 0.0
    assert hypervolume(np.array([[2.0, 2.0]]), [1.0, 1.0]) == 0.0
    with pytest.raises(BadInputError, match="reference point"):
        hypervolume(np.array([[1.0, 1.0]]), [2.0, 2.0, 2.0])
    with pytest.raises(BadInputError, match="finite"):
        hypervolume(np.array([[np.nan, 1.0]]), [2.0, 2.0])


def test_pareto_mask_keeps_duplicates_drops_dominated():
    F = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [2.5, 2.5], [2.0, 2.0], [3.0, 3.0]])
    assert pareto_mask(F).tolist() == [True, True, True, False, True, False]
    assert pareto_mask(np.zeros((0, 3))).tolist() == []


def test_reference_point_pushes_nadir_out():
    F = np.array([[10.0, 1.0], [20.0, 3.0]])
    assert reference_point(F, margin=0.1).tolist() == pytest.approx([21.0, 3.2])
    with pytest.raises(BadInputError, match="empty"):
        reference_point(np.zeros((0, 2)))


def test_percentile_budgets_by_hand():
    # linear interpolation over 1..5: the 25th/50th/75th percentiles are 2, 3, 4
    assert percentile_budgets([5.0, 1.0, 3.0, 2.0, 4.0]).tolist() == pytest.approx([2.0, 3.0, 4.0])
    with pytest.raises(BadInputError):
        percentile_budgets([np.nan])


def _tiny_tables(tmp_path, drop_last_accuracy=False):
    lat = pd.DataFrame({"arch": ["a", "b", "c", "d", "e"], "dev": [1.0, 2.0, 3.0, 4.0, 2.5]})
    acc = pd.DataFrame({"arch": ["a", "b", "c", "d", "e"], "val": [50.0, 70.0, 80.0, 79.0, 60.0]})
    if drop_last_accuracy:
        acc = acc.iloc[:-1]
    lp, ap = tmp_path / "lat.csv", tmp_path / "acc.csv"
    lat.to_csv(lp, index=False)
    acc.to_csv(ap, index=False)
    return lp, ap


def test_truth_front_with_and_without_budget(tmp_path):
    lp, ap = _tiny_tables(tmp_path)
    t = load_truth("toy", "dev", "val", latency_path=lp, accuracy_path=ap)
    # d (4 ms, 79%) is dominated by c (3 ms, 80%); e (2.5 ms, 60%) by b (2 ms, 70%)
    assert t.archs[t.front()].tolist() == ["a", "b", "c"]
    assert t.archs[t.front(budget_ms=2.0)].tolist() == ["a", "b"]
    F = objectives(t.accuracy[t.front()], t.latency_ms[t.front()])
    # error 50/30/20 at 1/2/3 ms under ref (60, 4), by latency slab: 1 ms x (60-50) + 1 x (60-30)
    # + 1 x (60-20) = 10 + 30 + 40
    assert hypervolume(F, [60.0, 4.0]) == pytest.approx(80.0)
    assert t.index(["c", "a"]).tolist() == [2, 0]
    with pytest.raises(BadInputError, match="not in the toy table"):
        t.index(["zz"])


def test_truth_bad_files(tmp_path):
    lp, ap = _tiny_tables(tmp_path, drop_last_accuracy=True)
    with pytest.raises(BadInputError, match="lacks 1 arch"):
        load_truth("toy", "dev", "val", latency_path=lp, accuracy_path=ap)
    with pytest.raises(BadInputError, match="no column 'nope'"):
        load_truth("toy", "nope", "val", latency_path=lp, accuracy_path=ap)
    with pytest.raises(BadInputError, match="cannot read"):
        load_truth("toy", "dev", "val", latency_path=tmp_path / "missing.csv", accuracy_path=ap)


def test_shipped_nasbench201_exhaustive_front_is_exactly_the_nondominated_set():
    t = load_truth("nasbench201", "pixel3", "cifar100_val_12ep")
    assert len(t.archs) == 15625
    budget = float(percentile_budgets(t.latency_ms)[1])
    rows = t.front(budget)
    assert np.all(t.latency_ms[rows] <= budget)
    assert np.all(np.diff(t.latency_ms[rows]) >= 0)
    inside = np.flatnonzero(t.latency_ms <= budget)
    E = objectives(t.accuracy[inside], t.latency_ms[inside])
    P = objectives(t.accuracy[rows], t.latency_ms[rows])
    # brute force: no arch within budget dominates a front point ...
    dominates = np.all(E[:, None, :] <= P[None, :, :], axis=2) & np.any(E[:, None, :] < P[None, :, :], axis=2)
    assert not dominates.any()
    # ... and every arch within budget off the front is dominated by (or equal to) a front point
    off = np.setdiff1d(inside, rows)
    offs = objectives(t.accuracy[off], t.latency_ms[off])
    covered = np.all(P[None, :, :] <= offs[:, None, :], axis=2).any(axis=1)
    assert covered.all()


def test_budget_use_separates_noise_from_a_real_difference():
    """Controlled inputs: the slack, which archived architectures are within one binomial standard error
    of the best pick, and the verdict for slower ones."""
    from hwnat.search.report import budget_use

    # 90% on 1,000 images: standard error 0.95 points; 89.5% at 9 ms is within it and slower
    lines = budget_use((90.0, 5.0), 10.0, [(89.5, 9.0), (80.0, 3.0)], 1000, "cpu", measured_ms=6.0)
    text = "\n".join(lines)
    assert "6 ms (measured) of the 10 ms budget: slack 40.0%" in lines[0]
    assert "1 other archived architecture" in text and "0.95 points at 1000 validation images" in text
    assert "1 of them is slower (up to 9 ms)" in text and "--warmup-epochs" in text
    # with 100,000 images the standard error is 0.095 points: 89.5% is measurably worse
    text = "\n".join(budget_use((90.0, 5.0), 10.0, [(89.5, 9.0), (80.0, 3.0)], 100_000, "cpu"))
    assert "(predicted)" in text and "within one standard error" not in text
    assert "The one slower architecture within the budget scores more" in text and "measurably better" in text
    # a tabular source (exact accuracies): only the slack
    assert budget_use((90.0, 5.0), 10.0, [(89.5, 9.0)], None, "cpu") == [
        "- cpu: the best pick runs in 5 ms (predicted) of the 10 ms budget: slack 50.0%."]
    # little slack: no hint to train longer
    assert "--warmup-epochs" not in "\n".join(budget_use((90.0, 9.5), 10.0, [(89.9, 9.8)], 1000, "cpu"))
