"""``hwnat search`` on ofa-mbv3 with the weight-sharing supernet, end to end at tiny settings: warm-up on
sklearn's digits, NAT iterations with online adaptation, a latency predictor fitted on the shipped ofa-mbv3
dataset (the table path is covered on NAS-Bench-201: profiling 94 ofa blocks would dominate this test),
picks exported with the supernet's inherited weights and verified with ONNX Runtime on this CPU."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from hwnat.cli.main import cli

sys.path.insert(0, str(Path(__file__).parent))
from test_latency_model import tiny_device  # noqa: E402

TINY = ["--task", "digits", "--resolution", "192", "--warmup-epochs", "1", "--max-train", "128",
        "--max-val", "64", "--adapt-steps", "2", "--initial", "4", "--candidates", "2", "--iterations", "1",
        "--population", "8", "--generations", "2", "--picks", "1", "--quick"]


@pytest.mark.slow
def test_ofa_supernet_search_end_to_end(tmp_path, monkeypatch):
    from hwnat.data import latency_dataset
    from hwnat.latency.predictor import LatencyPredictor

    monkeypatch.chdir(tmp_path)
    dev = tiny_device(tmp_path / "tinycpu.yaml")
    df = pd.read_csv(latency_dataset("ofa-mbv3")).head(20)
    LatencyPredictor.fit("ofa-mbv3", df["arch"].tolist(), df["v100_1"].to_numpy()).save(tmp_path / "p.json")
    out = tmp_path / "run"
    args = ["search", "--device", dev, "--latency-model", "predictor", "--predictor", str(tmp_path / "p.json"),
            "--latency-ms", "1000", "--out", str(out), *TINY]
    r = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    state = json.loads((out / "state.json").read_text())
    src = state["accuracy_source"]
    assert src["name"] == "supernet:digits" and src["epochs_done"] == {"1.0": 1} and src["adapted_steps"] == 2
    assert state["history"][0]["adapted"] is True
    archive = pd.read_csv(out / "archive.csv")
    assert len(archive) == 6 and (archive["accuracy_evaluated_at"] == 1).all()  # re-evaluated after adapting
    assert ((archive["accuracy"] >= 0) & (archive["accuracy"] <= 100)).all()
    picks = pd.read_csv(out / "picks.csv")
    assert picks["accuracy"].iloc[0] == archive["accuracy"].max()  # every arch is within 1000 ms
    assert (picks["measured_ms"] > 0).all() and picks["within_budget"].all()
    report = (out / "report.md").read_text()
    assert "constraint was never active" in report and src["val_images"] == 64
    assert "## Budget use" in report and "(measured) of the 1000 ms budget" in report
    assert list(Path("supernets").glob("ofa-mbv3-digits-*.pt")), "the warmed-up supernet is kept for reuse"

    # the exported pick is the supernet's subnet with its inherited weights (same outputs in ORT)
    import onnxruntime as ort
    import torch

    from hwnat.search.supernet import SupernetAccuracy
    from hwnat.search.tasks import load_task
    from hwnat.spaces import get_space

    task = load_task("digits", seed=0, max_train=128)
    sp = get_space("ofa-mbv3", resolutions=(192,), classes=task.classes)
    acc = SupernetAccuracy(sp, task, supernet_path=out / "supernet.pt", progress=False)
    arch = sp.parse(picks["arch"].iloc[0])
    module = acc.nets["1.0"].extract(arch).eval()
    x = torch.randn(*sp.input_shape(arch))
    with torch.no_grad():
        want = module(x).numpy()
    sess = ort.InferenceSession(str(out / "picks" / "pick-0.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    assert np.allclose(got.reshape(want.shape), want, atol=1e-4)

    # a second run on the same task reuses the warmed-up supernet (no new warm-up epochs)
    out2 = tmp_path / "run2"
    args2 = [a if a != str(out) else str(out2) for a in args] + ["--iterations", "0", "--picks", "0", "--no-verify"]
    r2 = CliRunner().invoke(cli, args2, catch_exceptions=False)
    assert r2.exit_code == 0, r2.output
    assert json.loads((out2 / "state.json").read_text())["accuracy_source"]["epochs_done"] == {"1.0": 1}
