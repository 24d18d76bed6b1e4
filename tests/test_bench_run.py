"""``hwnat bench run`` + ``compare`` with real measurements on the cpu device (small protocol, ~15 s).

Models are conv stacks (``hwnat.bench.synthetic``) whose cost is set by their number of layers, and one
NAS-Bench-201 subnet. The same entry names are used in every suite, so a heavier model under the same
name is what a candidate with a real slowdown looks like.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from hwnat.bench.synthetic import write_conv_stack
from hwnat.cli.main import cli
from hwnat.errors import DeviceError, HwnatError

pytestmark = pytest.mark.slow

NB201 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
SMALL_PROTOCOL = {"warmup_s": 0.02, "warmup_runs": 2, "min_round_s": 0.03}


def invoke(args):
    r = CliRunner().invoke(cli, [str(a) for a in args])
    if isinstance(r.exception, HwnatError):
        return r.exception.exit_code, r.stdout, f"error: {r.exception}"
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.stdout, r.stderr


def write_suite(path: Path, main_model: str, rounds: int = 10, **extra) -> Path:
    suite = {"name": "t", "device": "cpu", "rounds": rounds, "protocol": SMALL_PROTOCOL,
             "contention_retries": 1, "contention_backoff_s": 0.05,
             "entries": [{"name": "main", "model": main_model},
                         {"name": "other", "model": "stack10.onnx"},
                         {"name": "nb201", "space": "nasbench201", "arch": NB201}], **extra}
    path.write_text(json.dumps(suite))  # JSON is YAML
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Results of four real runs: the suite twice, a 4x heavier `main`, a ~2% heavier `main`."""
    d = tmp_path_factory.mktemp("bench")
    for blocks in (10, 40, 41, 160):
        write_conv_stack(d / f"stack{blocks}.onnx", blocks)
    suites = {"a1": "stack40.onnx", "a2": "stack40.onnx", "heavy": "stack160.onnx", "tiny": "stack41.onnx"}
    out = {}
    for key, model in suites.items():
        s = write_suite(d / f"{key}.yaml", model)
        out[key] = d / f"{key}.json"
        code, stdout, stderr = invoke(["bench", "run", "--suite", s, "--out", out[key], "--work-dir", d / "work"])
        assert code == 0, stderr
        assert "main" in stdout and "[pass 10/10" in stderr
    out["dir"] = d
    return out


def test_result_file_keeps_raw_samples_protocol_fingerprint_and_interleaving(runs):
    data = json.loads(runs["a1"].read_text())
    assert data["complete"] is True and data["rounds"] == 10
    assert data["protocol"]["rounds"] == 1 and data["protocol"]["min_round_s"] == 0.03
    assert data["fingerprint"]["runtime"] == "onnxruntime" and data["fingerprint"]["threads"] == 1
    by = {e["name"]: e for e in data["entries"]}
    assert set(by) == {"main", "other", "nb201"}
    assert all(len(e["rounds_ms"]) == 10 and all(len(r) >= 3 for r in e["rounds_ms"]) for e in by.values())
    assert by["nb201"]["source"] == {"space": "nasbench201", "arch": NB201}
    # entries are interleaved: each pass times every entry once, in a shuffled order
    positions = [[info["position"] for info in by[n]["round_info"]] for n in by]
    assert {tuple(p[k] for p in positions) for k in range(10)} != {(0, 1, 2)}
    assert all(sorted(p[k] for p in positions) == [0, 1, 2] for k in range(10))
    assert [info["pass"] for info in by["main"]["round_info"]] == list(range(10))


def test_same_suite_twice_compares_clean(runs):
    code, out, err = invoke(["bench", "compare", runs["a1"], runs["a2"]])
    assert code == 0, out + err
    assert "REGRESSED" not in out


def busy_note(base: Path, cand: Path) -> str | None:
    """Why the comparison has no verdict for some entry, when other processes kept the machine busy
    during the runs (the bench then leaves contended rounds out and reports insufficient data)."""
    code, out, _ = invoke(["bench", "compare", base, cand, "--json"])
    short = [e for e in json.loads(out)["entries"] if e["verdict"] == "insufficient data"]
    return short[0]["note"] if short else None


def test_heavier_model_under_the_same_name_is_caught(runs, tmp_path):
    junit = tmp_path / "j.xml"
    args = ["bench", "compare", runs["a1"], runs["heavy"], "--junit", junit]
    if busy_note(runs["a1"], runs["heavy"]):
        # a busy machine slows a run by up to ~2x; a 4x heavier model is still caught with every round
        args.append("--include-contended")
    code, out, err = invoke(args)
    assert code == 1, out + err
    assert "regression in main (+" in err and "other" not in err and "nb201" not in err
    assert "model file differs" in out
    assert junit.read_text().count("<failure") == 1


def test_tiny_real_change_below_threshold_is_not_flagged(runs):
    code, out, err = invoke(["bench", "compare", runs["a1"], runs["tiny"], "--json"])
    assert code == 0, out + err
    main = {e["name"]: e for e in json.loads(out)["entries"]}["main"]
    assert main["verdict"] in ("unchanged", "insufficient data") and main["model_changed"]


def test_baseline_round_trip_with_real_results(runs, tmp_path):
    store = tmp_path / "store"
    assert invoke(["bench", "baseline", "save", runs["a1"], "--dir", store, "--commit", "abc"])[0] == 0
    assert invoke(["bench", "compare", store, runs["a2"]])[0] == 0
    extra = ["--include-contended"] if busy_note(runs["a1"], runs["heavy"]) else []
    assert invoke(["bench", "compare", store, runs["heavy"], *extra])[0] == 1


@pytest.mark.parametrize("patch,message", [
    ({"bogus": 1}, "field bogus: unknown field"),
    ({"protocol": {"rounds": 3}}, "set the suite's top-level `rounds`"),
    ({"protocol": {"min_round_s": -1}}, "min_round_s"),
    ({"rounds": 1}, "field rounds"),
    ({"entries": [{"name": "x", "model": "m.onnx"}, {"name": "x", "model": "m.onnx"}]}, "duplicate entry name 'x'"),
    ({"entries": [{"name": "x", "space": "nasbench201"}]}, "needs `model: PATH.onnx` or both"),
    ({"entries": [{"name": "x", "model": "missing.onnx"}]}, "model file"),
    ({"entries": [{"name": "x", "space": "nasbench201", "arch": "|bad|"}]}, "entry 'x'"),
    ({"entries": [{"name": "x", "space": "nospace", "arch": "a"}]}, "unknown search space"),
])
def test_bad_suites_are_exit_2_with_one_line(tmp_path, patch, message):
    s = write_suite(tmp_path / "s.yaml", "stack40.onnx")
    data = {**json.loads(s.read_text()), **patch}
    s.write_text(json.dumps(data))
    code, _, err = invoke(["bench", "run", "--suite", s, "--out", tmp_path / "r.json"])
    last = err.strip().splitlines()[-1]
    assert code == 2 and message in last and last.startswith("error: ") and "Traceback" not in err, err
    assert not (tmp_path / "r.json").exists()


def test_unknown_suite_name_and_bad_yaml(tmp_path):
    code, _, err = invoke(["bench", "run", "--suite", "no-such-suite", "--out", tmp_path / "r.json"])
    assert code == 2 and "suite file not found" in err and "default" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    code, _, err = invoke(["bench", "run", "--suite", bad, "--out", tmp_path / "r.json"])
    assert code == 2 and "not valid YAML" in err


def test_device_failure_midway_keeps_partial_result_and_exits_3(runs, tmp_path, monkeypatch):
    from hwnat.devices import device as device_mod

    real_open = device_mod.open_device

    class Failing:
        def __init__(self, dev):
            self.dev, self.calls = dev, 0

        def __getattr__(self, name):
            return getattr(self.dev, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.dev.close()

        def measure(self, *a, **k):
            self.calls += 1
            if self.calls > 4:
                raise DeviceError("device went away")
            return self.dev.measure(*a, **k)

    monkeypatch.setattr(device_mod, "open_device", lambda name: Failing(real_open(name)))
    s = write_suite(runs["dir"] / "fail.yaml", "stack10.onnx", rounds=5, contention_retries=0)
    out = tmp_path / "partial.json"
    code, _, err = invoke(["bench", "run", "--suite", s, "--out", out])
    assert code == 3 and "device went away" in err
    data = json.loads(out.read_text())
    assert data["complete"] is False and sum(len(e["rounds_ms"]) for e in data["entries"]) == 4
    code, _, err = invoke(["bench", "baseline", "save", out, "--dir", tmp_path / "store"])
    assert code == 2 and "did not finish" in err


def test_unwritable_out_fails_before_measuring(tmp_path):
    s = write_suite(tmp_path / "s.yaml", "stack40.onnx")
    (tmp_path / "file").write_text("")
    code, _, err = invoke(["bench", "run", "--suite", s, "--out", tmp_path / "file" / "r.json"])
    assert code == 2 and "cannot create its directory" in err


def test_contention_probe_sees_a_busy_neighbour():
    import os
    import subprocess
    import sys
    import time

    from hwnat.bench.contention import Probe

    with Probe() as quiet:
        time.sleep(0.05)
    if quiet.reading.busy_frac is None:
        pytest.skip("/proc/stat or schedstat not readable here")
    spin = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time() + 2\nwhile time.time() < t: pass"])
    try:
        time.sleep(0.2)
        with Probe() as busy:
            time.sleep(0.4)
    finally:
        spin.kill()
        spin.wait()
    r = busy.reading
    assert 0 <= r.wait_frac <= 1 and r.busy_frac > 0.5 / os.cpu_count()
    assert r.contended(0.1, 0.4 / os.cpu_count())


def test_contended_passes_are_retried_marked_and_retries_stop_when_the_machine_stays_busy(monkeypatch):
    from types import SimpleNamespace

    from hwnat.bench import run as run_mod
    from hwnat.bench.contention import Reading
    from hwnat.bench.suite import Suite
    from hwnat.measure.stats import Measurement

    busy, clean = Reading(0.3, 0.0, 0.9), Reading(0.3, 0.01, 0.0)
    script = [busy, clean] + [busy] * 30          # one burst, then a machine that stays busy
    calls = []

    def fake_pass(dev, p, protocol, local):
        calls.append(p.entry.name)
        return Measurement.from_rounds([[1.0, 1.1, 0.9]]), script[len(calls) - 1]

    monkeypatch.setattr(run_mod, "_timed_pass", fake_pass)
    suite = Suite(name="t", rounds=6, shuffle=False, contention_retries=2, contention_backoff_s=0,
                  entries=[{"name": "x", "model": "x.onnx"}])
    prepared = [run_mod.PreparedEntry(suite.entries[0], Path("x.onnx"), (1, 3, 8, 8), "h")]
    data = {"entries": [{"rounds_ms": [], "round_info": []}]}
    dev = SimpleNamespace(spec=SimpleNamespace(transport=SimpleNamespace(kind="local")))
    run_mod._measure_passes(dev, prepared, data, None, 6, suite, 0.0, None, lambda s: None)
    info = data["entries"][0]["round_info"]
    # pass 0: busy then clean (kept the clean one); passes 1-3: 3 tries each, stay busy; then no retries
    assert [i["tries"] for i in info] == [2, 3, 3, 3, 1, 1]
    assert [i["contended"] for i in info] == [False, True, True, True, True, True]
    assert info[0]["busy_frac"] == 0.0 and len(calls) == 13
