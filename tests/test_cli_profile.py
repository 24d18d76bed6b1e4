"""`hwnat profile`, `latency`, `measure`, `export`: real ONNX Runtime timing on this machine, resume after
kill -9 and Ctrl-C, and every bad input the foundation issue lists (exit code + one clear line)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from _hw import fast_device, one_line_error, run_cli

from hwnat.latency.table import LatencyTable
from hwnat.spaces import get_space

NB = get_space("nasbench201")
ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


@pytest.fixture(scope="module")
def nb_table(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prof")
    dev = fast_device(tmp)
    out = tmp / "nb.json"
    r = run_cli(["-q", "profile", "--device", dev, "--space", "nasbench201", "--out", out, "--subnets", "3"])
    assert r.exit_code == 0, r.output
    assert "table sum vs measured (3 subnets)" in r.stdout
    return dev, out


def test_profile_writes_complete_table_and_dataset(nb_table):
    dev, out = nb_table
    t = LatencyTable.load(out, space="nasbench201", device="cpu")
    assert set(t.entries) == {b.key for b in NB.all_blocks()}
    for e in t.entries.values():
        assert 0 < e["p10_ms"] <= e["median_ms"] <= e["p90_ms"] and e["n"] >= 3
    assert t.protocol["rounds"] == 3 and t.fingerprint["runtime"] == "onnxruntime"
    with open(out.with_name("nb.subnets.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and all(float(r["cpu"]) > 0 for r in rows)
    for r in rows:
        NB.parse(r["arch"])


def test_latency_sums_table_and_measures(nb_table):
    dev, out = nb_table
    r = run_cli(["latency", "--device", dev, "--space", "nasbench201", "--arch", ARCH, "--table", out,
                 "--measure", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    t = LatencyTable.load(out)
    assert d["table_ms"] == pytest.approx(sum(t.entries[b.key]["median_ms"] for b in NB.blocks(NB.parse(ARCH))))
    assert d["measured_ms"] > 0 and d["flops_m"] > 0


def test_rerun_profile_measures_nothing_new(nb_table):
    dev, out = nb_table
    before = json.loads(out.read_text())["entries"]
    r = run_cli(["-q", "profile", "--device", dev, "--space", "nasbench201", "--out", out])
    assert r.exit_code == 0
    assert json.loads(out.read_text())["entries"] == before


def _measure(dev, archs, out, tmp_path, name="archs.csv"):
    src = tmp_path / name
    with open(src, "w", newline="") as f:
        csv.writer(f).writerows([["arch"], *[[a] for a in archs]])
    return run_cli(["-q", "measure", "--device", dev, "--space", "nasbench201", "--archs", src, "--out", out])


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_measure_many_and_resume(tmp_path):
    dev = fast_device(tmp_path)
    archs = [NB.format(a) for a in NB.sample(np.random.default_rng(5), 4)]
    out = tmp_path / "m.csv"
    r = _measure(dev, archs[:1], out, tmp_path)
    assert r.exit_code == 0, r.output
    first = _rows(out)[0]
    # a torn last line, as left by kill -9 during a write, is dropped; finished rows are kept
    with open(out, "a") as f:
        f.write(f"{archs[1]},0.")
    r = _measure(dev, archs, out, tmp_path)
    assert r.exit_code == 0, r.output
    rows = _rows(out)
    assert [x["arch"] for x in rows] == archs
    assert rows[0] == first  # kept, not re-measured
    assert all(float(x["p10_ms"]) <= float(x["latency_ms"]) <= float(x["p90_ms"]) for x in rows[1:])
    meta = json.loads((tmp_path / "m.csv.meta.json").read_text())
    assert meta["device"] == "cpu" and meta["space"] == "nasbench201" and meta["protocol"]["rounds"] == 3


# ---- resuming never mixes measurements that are not comparable (issue 9, part 3) ----------------------

def test_profile_resume_with_another_protocol_is_refused(tmp_path):
    dev = fast_device(tmp_path)
    out = tmp_path / "nb.json"
    r = run_cli(["-q", "profile", "--device", dev, "--space", "nasbench201", "--out", out, "--limit", "2"])
    assert r.exit_code == 0, r.output
    before = out.read_bytes()
    dev.write_text(dev.read_text().replace("rounds: 3", "rounds: 4"))
    r = run_cli(["-q", "profile", "--device", dev, "--space", "nasbench201", "--out", out, "--limit", "2"])
    assert r.exit_code == 2
    line = one_line_error(r)
    assert str(out) in line and "measure.rounds: 3 -> 4" in line
    assert out.read_bytes() == before


def test_measure_resume_with_another_device_or_protocol_is_refused(tmp_path):
    archs = [NB.format(a) for a in NB.sample(np.random.default_rng(6), 2)]
    out = tmp_path / "m.csv"
    assert _measure(fast_device(tmp_path), archs[:1], out, tmp_path).exit_code == 0
    before = out.read_bytes()
    r = _measure(fast_device(tmp_path, "pixel"), archs, out, tmp_path)
    assert r.exit_code == 2 and "device 'cpu', not 'pixel'" in one_line_error(r)
    slow = fast_device(tmp_path)
    slow.write_text(slow.read_text().replace("rounds: 3", "rounds: 5"))
    r = _measure(slow, archs, out, tmp_path)
    assert r.exit_code == 2 and "measure.rounds: 3 -> 5" in one_line_error(r)
    assert out.read_bytes() == before


@pytest.mark.parametrize("content", [
    b"name,score\nalpha,1\nbeta,2",  # some other CSV, no newline at the end
    b"arch,latency_ms,p10_ms,p90_ms,cv\n|none~0|+|none~0|none~1|+|none~0|none~1|none~2|,1,1,1,0\nx,0.",  # no record
])
def test_foreign_output_file_is_refused_untouched(tmp_path, content):
    out = tmp_path / "other.csv"
    out.write_bytes(content)
    r = _measure(fast_device(tmp_path), [NB.format(NB.sample(np.random.default_rng(7), 1)[0])], out, tmp_path)
    assert r.exit_code == 2 and str(out) in one_line_error(r)
    assert out.read_bytes() == content


def test_rows_hold_canonical_strings(tmp_path):
    """An arch typed another way (spaces around it) is one architecture: its row holds the canonical
    string, and a rerun with the canonical string (or both in one list) measures nothing new."""
    dev = fast_device(tmp_path)
    arch = NB.format(NB.sample(np.random.default_rng(8), 1)[0])
    out = tmp_path / "m.csv"
    r = _measure(dev, [f"  {arch} ", arch], out, tmp_path)
    assert r.exit_code == 0, r.output
    rows = _rows(out)
    assert [x["arch"] for x in rows] == [arch]
    assert _measure(dev, [arch, f" {arch}"], out, tmp_path).exit_code == 0
    assert _rows(out) == rows


def _start_profile(dev, out, *extra, resolution: str | None = "128"):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    res = ["--resolution", resolution] if resolution else []
    # SIGINT back to its default in the child: a test run started as a background job of a non-interactive
    # shell (`.ci/run &`) inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler,
    # so the Ctrl-C this test sends would be dropped (a user's terminal always delivers it)
    return subprocess.Popen([sys.executable, "-m", "hwnat.cli.main", "-q", "profile", "--device", str(dev),
                             "--space", "ofa-mbv3", *res, "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_entries(out, n, proc, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if out.exists():
            try:
                k = len(json.loads(out.read_text())["entries"])
            except (json.JSONDecodeError, KeyError):  # pragma: no cover - writes are atomic
                pytest.fail("table file was seen half-written")
            if k >= n:
                return k
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.05)
    pytest.fail("profile made no progress")


@pytest.mark.parametrize("sig,code", [(signal.SIGKILL, -9), (signal.SIGINT, 130)])
def test_interrupted_profile_resumes_losing_nothing(tmp_path, sig, code):
    """The whole space (868 blocks, minutes even with the short protocol), so the signal always lands
    mid-profile however late a busy machine lets this test send it."""
    dev = fast_device(tmp_path)
    out = tmp_path / "ofa.json"
    p = _start_profile(dev, out, resolution=None)
    _wait_entries(out, 4, p)
    p.send_signal(sig)
    _, stderr = p.communicate(timeout=60)
    assert p.returncode == code
    if sig == signal.SIGINT:
        assert b"kept on disk" in stderr and b"Traceback" not in stderr
    kept = json.loads(out.read_text())["entries"]
    assert 4 <= len(kept) < 868
    r = run_cli(["-q", "profile", "--device", dev, "--space", "ofa-mbv3", "--out", out, "--limit", "3"])
    assert r.exit_code == 0, r.output
    now = json.loads(out.read_text())["entries"]
    assert len(now) == len(kept) + 3
    assert all(now[k] == v for k, v in kept.items()), "finished entries are never re-measured or lost"


# ---- bad input: exit 2 (3 for a device failure), one line, no traceback -----------------------------

def test_unknown_device_lists_names():
    r = run_cli(["profile", "--device", "no-such-board", "--space", "nasbench201"])
    assert r.exit_code == 2
    assert "expected one of:" in one_line_error(r) and "cpu" in r.output


def test_unknown_space_lists_names(tmp_path):
    r = run_cli(["profile", "--device", fast_device(tmp_path), "--space", "mobilenet9"])
    assert r.exit_code == 2 and "ofa-mbv3" in one_line_error(r)


def test_malformed_arch(nb_table):
    dev, out = nb_table
    r = run_cli(["latency", "--device", dev, "--space", "nasbench201", "--table", out,
                 "--arch", "|nor_conv_3x3~0|+|conv9~0|avg_pool_3x3~1|+|none~0|none~1|none~2|"])
    assert r.exit_code == 2 and "conv9" in one_line_error(r)


def test_corrupt_and_foreign_tables(nb_table, tmp_path):
    dev, out = nb_table
    bad = tmp_path / "t.json"
    bad.write_text(out.read_text()[:100])
    r = run_cli(["latency", "--device", dev, "--space", "nasbench201", "--arch", ARCH, "--table", bad])
    assert r.exit_code == 2 and "truncated or corrupt" in one_line_error(r)
    r = run_cli(["latency", "--device", dev, "--space", "fbnet", "--table", out,
                 "--arch", "-".join(["k3_e1"] * 22)])
    assert r.exit_code == 2 and "space 'nasbench201'" in one_line_error(r)
    other = fast_device(tmp_path, "pixel")
    r = run_cli(["profile", "--device", other, "--space", "nasbench201", "--out", out])
    assert r.exit_code == 2 and "device 'cpu'" in one_line_error(r)


def test_unwritable_output(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = run_cli(["profile", "--device", fast_device(tmp_path), "--space", "nasbench201",
                 "--out", blocker / "t.json"])
    assert r.exit_code == 2 and "not writable" in one_line_error(r)


@pytest.mark.parametrize("space,res", [("ofa-mbv3", "230"), ("ofa-mbv3", "512"), ("nasbench201", "64")])
def test_unsupported_resolution(tmp_path, space, res):
    r = run_cli(["profile", "--device", fast_device(tmp_path), "--space", space, "--resolution", res])
    assert r.exit_code == 2 and res in one_line_error(r)


def test_device_file_errors_name_file_and_field(tmp_path):
    p = tmp_path / "dev.yaml"
    p.write_text("name: x\nruntime: {kind: onnxruntime, threads: many}\n")
    r = run_cli(["profile", "--device", p, "--space", "nasbench201"])
    assert r.exit_code == 2
    line = one_line_error(r)
    assert str(p) in line and "runtime.threads" in line
    p.write_text("name: x\nmeasure: {rounds: 3, warmpu_s: 1}\n")
    r = run_cli(["profile", "--device", p, "--space", "nasbench201"])
    assert r.exit_code == 2 and "measure.warmpu_s: unknown field" in one_line_error(r)


def test_runtime_failure_is_exit_3_and_keeps_table(tmp_path):
    p = tmp_path / "gpu.yaml"
    p.write_text("name: gpu\nruntime: {kind: onnxruntime, provider: NoSuchExecutionProvider}\n")
    out = tmp_path / "t.json"
    r = run_cli(["profile", "--device", p, "--space", "nasbench201", "--out", out])
    assert r.exit_code == 3 and "NoSuchExecutionProvider" in one_line_error(r)
    assert not out.exists()


def test_export_subnet_and_block(tmp_path):
    r = run_cli(["export", "--space", "nasbench201", "--arch", ARCH, "--out", tmp_path / "n.onnx"])
    assert r.exit_code == 0 and "matches torch" in r.output
    r = run_cli(["export", "--space", "nasbench201", "--arch", ARCH, "--block", "1", "--out", tmp_path / "b.onnx"])
    assert r.exit_code == 0 and "nb201_nor_conv_3x3" in r.output
    r = run_cli(["export", "--space", "nasbench201", "--arch", ARCH, "--block", "999", "--out", tmp_path / "x.onnx"])
    assert r.exit_code == 2


def test_latency_reports_residual_predictor(tmp_path):
    """profile --subnets data trains the table+residual predictor; `latency` then shows it with an interval."""
    dev = fast_device(tmp_path)
    table = tmp_path / "nasbench201.json"
    r = run_cli(["-q", "profile", "--device", dev, "--space", "nasbench201", "--out", table, "--subnets", "12"])
    assert r.exit_code == 0, r.output
    model = tmp_path / "nasbench201.predictor.json"
    r = run_cli(["predictor", "fit", "--space", "nasbench201", "--data", tmp_path / "nasbench201.subnets.csv",
                 "--target", "cpu", "--table", table, "--no-library", "--out", model])
    assert r.exit_code == 0, r.output
    r = run_cli(["latency", "--device", dev, "--space", "nasbench201", "--arch", ARCH, "--table", table, "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["predictor"] == str(model)
    assert d["predicted_lo_ms"] <= d["predicted_ms"] <= d["predicted_hi_ms"] and d["predicted_ms"] > 0
    assert d["interval"] == "90% interval"


def test_subnet_sample_is_distinct_and_stable_for_a_seed():
    """`--subnets N` measures N different subnets (NAS-Bench-201 draws repeat) and reruns draw the same list."""
    from hwnat.latency.profiler import distinct_sample as _distinct_sample
    from hwnat.spaces import get_space

    space = get_space("nasbench201")
    a = _distinct_sample(space, 400, seed=7)
    assert len(a) == len(set(a)) == 400
    assert _distinct_sample(space, 400, seed=7) == a
    assert _distinct_sample(space, 420, seed=7)[:400] == a  # asking for more extends, so a profile resumes
