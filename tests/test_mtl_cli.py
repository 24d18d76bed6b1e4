"""`hwnat mtl search | prune` end to end at a tiny size: real torch training, a real latency table of
mtl-vgg profiled on this machine, ONNX export and ONNX Runtime timing; every output file, resume, the
budget check, and every bad input (exit 2, one line)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest
import torch
from _hw import fast_device, one_line_error, run_cli
from test_mtl_search import one_thread, tiny_npz  # noqa: F401  (one_thread: an autouse fixture)

from hwnat.mtl.search import load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mtl")
    dev = fast_device(tmp)
    task = tiny_npz(tmp / "tiny.npz", n=80)
    out = tmp / "search"
    args = ["-q", "mtl", "search", "--task", task, "--device", dev, "--epochs", "1", "--table", tmp / "lut.json",
            "--out", out]
    r = run_cli(args)
    assert r.exit_code == 0, r.output
    return {"tmp": tmp, "dev": dev, "task": task, "out": out, "args": args,
            "report": json.loads((out / "report.json").read_text())}


def _with_anchors(searched, name):
    """A prune output directory that reuses the search's measured end points (latency.json), so the
    budget check sees the numbers the test computed its budget from."""
    out = searched["tmp"] / name
    out.mkdir()
    shutil.copy(searched["out"] / "latency.json", out / "latency.json")
    return out


def test_search_writes_every_output(searched):
    out, rep = searched["out"], searched["report"]
    for name in ("searched.pt", "edges.json", "report.json", "report.md", "task.json", "gates.png",
                 "accuracy_vs_latency.png", "latency.json"):
        assert (out / name).is_file(), name
    assert rep["space"] == "mtl-vgg" and rep["tasks"] == ["task0", "task1"]
    assert 0 < rep["no_fusion_ms"] and 0 < rep["all_edges_ms"]
    assert set(rep["accuracy"]) >= {"single_task", "all_edges", "searched", "searched_relaxed"}
    assert all(len(a) == 2 and all(0 <= v <= 1 for v in a) for a in rep["accuracy"].values())
    assert "budget_ms" not in rep and len(rep["sweep"]) == 5
    no_ms, all_ms = rep["no_fusion_ms"], rep["all_edges_ms"]
    budgets = [s["budget_ms"] for s in rep["sweep"]]
    assert budgets == pytest.approx([no_ms + f * (all_ms - no_ms) for f in (1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6)])
    for s in rep["sweep"]:  # the model that chose the edges kept its margin (a budget below base + margin keeps none)
        assert s["kept_edges"] == 0 or \
            s["predicted_by_choosing_model_ms"] <= s["budget_ms"] - rep["choosing_model_margin_ms"] + 1e-9
        assert s["measured_ms"] > 0 and s["predicted_ms"] > 0  # predicted: the fit to the measuring call
    cal = rep["calibration"]  # the final fit: no edge, the searched edges, 3 random subsets of them
    assert len(cal) == 5 and cal[0]["arch"] == "none" and cal[1]["arch"] == rep["searched_arch"]
    searched_edges = set(rep["searched_arch"].split("+"))
    assert all(set(c["arch"].split("+")) <= searched_edges for c in cal[2:] if c["arch"] != "none")
    assert set(rep["phases"]) >= {"anchors", "train_single_task", "train_all_edges", "search", "prune_and_measure"}
    edges = json.loads((out / "edges.json").read_text())["edges"]
    assert len(edges) == rep["n_edges"] == 18
    assert all({"edge", "gate", "cost_ms", "kept"} <= set(e) and 0 < e["gate"] < 1 for e in edges)
    state = load_checkpoint(out / "searched.pt")
    assert state["space"] == "mtl-vgg" and tuple(state["alpha"].shape) == (18,)
    assert state["gate_history"].shape[1] == 18
    md = (out / "report.md").read_text()
    assert "single-task backbones" in md and "| network | measured ms |" in md and "gates.png" in md
    task = json.loads((out / "task.json").read_text())
    assert task["splits"]["test"]["n"] == 16 and task["task_names"] == ["task0", "task1"]


def test_search_rerun_resumes_from_finished_checkpoints(searched):
    before = load_checkpoint(searched["out"] / "searched.pt")["alpha"]
    r = run_cli([*searched["args"], "--no-sweep"])
    assert r.exit_code == 0, r.output
    after = load_checkpoint(searched["out"] / "searched.pt")["alpha"]
    torch.testing.assert_close(after, before)


def test_prune_to_a_budget_exports_measures_and_reports(searched):
    rep, tmp = searched["report"], searched["tmp"]
    # the budget check reads the start-of-run anchor in latency.json; the report has the refitted end points
    anchor = json.loads((searched["out"] / "latency.json").read_text())["networks"]["none"]["median_ms"]
    low = max(anchor, rep["no_fusion_ms"])
    budget = low + max(rep["all_edges_ms"] - low, 0.0) / 2
    out = _with_anchors(searched, "pruned")
    r = run_cli(["-q", "mtl", "prune", "--model", searched["out"] / "searched.pt", "--latency-ms", budget,
                 "--device", searched["dev"], "--table", tmp / "lut.json", "--no-sweep", "--out", out])
    pr = json.loads((out / "report.json").read_text())
    # the verdict follows the measurement (timing on a shared machine decides which one we get)
    assert r.exit_code == (0 if pr["measured_ms"] <= budget else 1), r.output
    assert pr["within_budget"] == (pr["measured_ms"] <= budget)
    assert pr["budget_ms"] == pytest.approx(budget)
    assert pr["kept_edges"] == 0 or \
        pr["predicted_by_choosing_model_ms"] <= budget - pr["choosing_model_margin_ms"] + 1e-9
    for k in ("no_fusion_ms", "all_edges_ms", "measured_ms", "masked_ms", "table_ms"):
        assert pr[k] > 0, k
    assert set(pr["accuracy"]) >= {"single_task", "all_edges", "searched", "pruned"}
    edges = json.loads((out / "edges.json").read_text())["edges"]
    kept = [e["kept"] for e in edges]
    assert sum(kept) == pr["kept_edges"] and all(e["searched"] for e in edges if e["kept"])
    sess = ort.InferenceSession(str(out / "pruned.onnx"), providers=["CPUExecutionProvider"])
    outs = sess.run(None, {sess.get_inputs()[0].name: np.zeros((1, 1, 8, 8), np.float32)})
    assert [o.shape for o in outs] == [(1, 2), (1, 2)]
    pruned = load_checkpoint(out / "pruned.pt")
    assert pruned["arch"] == pr["arch"] and "state_dict" in pruned


def test_over_budget_measurement_exits_1_after_writing_the_report(searched, monkeypatch):
    """A test double on the timing only: the pruned network 'measures' twice the budget."""
    from hwnat.mtl import pipeline

    real = pipeline.Timer.measure_many

    def slow_pruned(self, modules, input_shape, keep=None, fresh=False):
        m = real(self, modules, input_shape, keep=keep, fresh=fresh)
        return {n: {**e, "median_ms": 1e3} if n == "pruned" else e for n, e in m.items()}

    monkeypatch.setattr(pipeline.Timer, "measure_many", slow_pruned)
    rep, tmp = searched["report"], searched["tmp"]
    out = _with_anchors(searched, "over")
    r = run_cli(["-q", "mtl", "prune", "--model", searched["out"] / "searched.pt", "--latency-ms", rep["all_edges_ms"] * 2,
                 "--device", searched["dev"], "--table", tmp / "lut.json", "--no-sweep", "--out", out])
    assert r.exit_code == 1
    assert "over the budget" in one_line_error(r)
    assert json.loads((out / "report.json").read_text())["within_budget"] is False


def test_budget_below_the_no_fusion_network_exits_2_and_says_its_latency(searched):
    tmp = searched["tmp"]
    for cmd in (["mtl", "search", "--task", searched["task"], "--epochs", "1"],
                ["mtl", "prune", "--model", searched["out"] / "searched.pt"]):
        r = run_cli(["-q", *cmd, "--latency-ms", "0.0001", "--device", searched["dev"], "--table", tmp / "lut.json",
                     "--out", tmp / "low"])
        assert r.exit_code == 2, r.output
        line = one_line_error(r)
        assert "no fusion edge measures" in line and " ms" in line
    assert not (tmp / "low" / "checkpoints").exists()  # refused before any training


def test_bad_task_files_exit_2(searched, tmp_path):
    np.savez(tmp_path / "one.npz", x=np.zeros((20, 8, 8), np.float32), only=np.zeros(20, int))
    np.savez(tmp_path / "short.npz", x=np.zeros((20, 8, 8), np.float32), a=np.zeros(20, int), b=np.zeros(19, int))
    for name, match in (("one.npz", "K >= 2"), ("short.npz", "'b' has shape")):
        r = run_cli(["-q", "mtl", "search", "--task", tmp_path / name, "--device", searched["dev"], "--out", tmp_path / "o"])
        assert r.exit_code == 2, r.output
        assert match in one_line_error(r)


def test_bad_model_files_exit_2(searched, tmp_path):
    other = save_checkpoint(tmp_path / "other.pt", {"space": "nasbench201", "state_dict": {}})
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"junk")
    for path, match in ((other, "space 'nasbench201'"), (junk, "not a readable"),
                        (tmp_path / "missing.pt", "not found")):
        r = run_cli(["-q", "mtl", "prune", "--model", path, "--latency-ms", "1", "--device", searched["dev"],
                     "--out", tmp_path / "o"])
        assert r.exit_code == 2, r.output
        assert match in one_line_error(r)
