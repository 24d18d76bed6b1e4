"""``hwnat import-log`` through click's CliRunner: printing, JSON, dataset rows, exit codes."""

from __future__ import annotations

import csv
import json
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from hwnat.cli.import_log import EXAMPLE
from hwnat.cli.main import cli
from hwnat.errors import BadInputError, HwnatError
from hwnat.latency.dataset import add_to_dataset

FIX = Path(__file__).parent / "fixtures" / "harness"
NB201 = "|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_1x1~1|skip_connect~2|"


def invoke(*args, input=None):
    """Run ``hwnat import-log ...``; return (exit code, stdout, stderr)."""
    r = CliRunner().invoke(cli, ["import-log", *[str(a) for a in args]], input=input)
    if isinstance(r.exception, HwnatError):  # raised past the CLI's error mapping
        return r.exception.exit_code, r.stdout, f"error: {r.exception}"
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.stdout, r.stderr


def read_csv(p: Path) -> list[dict]:
    with open(p, newline="") as f:
        return list(csv.DictReader(f))


def test_help_ends_with_a_real_example():
    code, out, _ = invoke("--help")
    assert code == 0
    tail = out.rstrip().splitlines()
    assert tail[-2].strip().startswith("hwnat import-log --harness trtexec")
    assert "--out latency.csv" in tail[-1]


def test_the_help_example_runs(tmp_path):
    """The example in --help, run as written (with a fixture as the log)."""
    line = EXAMPLE.split("Example:\n", 1)[1].replace("\\\n", " ")
    argv = shlex.split(line)[2:]  # drop "hwnat import-log"
    log = tmp_path / "trtexec-orin.log"
    log.write_text((FIX / "trtexec__8.6.log").read_text())
    argv = [str(log) if a == "trtexec-orin.log" else str(tmp_path / a) if a == "latency.csv" else a
            for a in argv]
    code, out, errs = invoke(*argv)
    assert code == 0, errs
    rows = read_csv(tmp_path / "latency.csv")
    assert rows == [{"arch": NB201, "jetson-orin-nano": "4.23999"}]


@pytest.mark.parametrize("harness,fixture,value", [
    ("trtexec", "trtexec__8.6.log", "4.23999"),
    ("benchmark_model", "benchmark_model__percentiles.log", "1.034"),
    ("ort", "onnxruntime_perf_test__current.log", "4.49103"),
    ("onnxruntime_perf_test", "onnxruntime_perf_test__2019.log", "58.7108"),
])
def test_prints_the_measurement(harness, fixture, value):
    code, out, _ = invoke("--harness", harness, FIX / fixture)
    assert code == 0
    assert f": {value} ms" in out and len(out.strip().splitlines()) == 1


def test_json_output_is_strict_json(tmp_path):
    code, out, _ = invoke("-H", "trtexec", FIX / "trtexec__10x.log", "--json")
    assert code == 0
    d = json.loads(out, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert d["harness"] == "trtexec" and d["version"] == "10.2.0" and d["layout"] == "10.x"
    assert d["latency_ms"] == pytest.approx(7.14139)
    assert d["run"]["unstable"] is True and d["measurement"]["unstable"] is True
    assert d["measurement"]["p10_ms"] is None  # not printed by trtexec: null, never NaN
    assert d["measurement"]["extra"]["summary_only"] is True


def test_mean_only_log_says_so(tmp_path):
    code, out, errs = invoke("-H", "benchmark_model", FIX / "benchmark_model__current.log")
    assert code == 0 and "13.5202 ms (mean)" in out and "no median" in errs


def test_trtexec_metric_option():
    code, out, _ = invoke("-H", "trtexec", FIX / "trtexec__8.2.log", "--metric", "latency")
    assert code == 0 and "latency: 1.46458 ms" in out
    code, _, errs = invoke("-H", "trtexec", FIX / "trtexec__8.2.log", "--metric", "watts")
    assert code == 2 and "gpu_compute" in errs


def test_stdin():
    code, out, _ = invoke("-H", "ort", "-", input=(FIX / "onnxruntime_perf_test__2020.log").read_text())
    assert code == 0 and "144.871 ms (mean)" in out


# ---- dataset CSV --------------------------------------------------------------------------------

def test_out_creates_appends_fills_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "data" / "latency.csv"
    log = FIX / "trtexec__8.6.log"
    assert invoke("-H", "trtexec", log, "--device", "jetson", "--arch", "a1", "--out", out)[0] == 0
    assert read_csv(out) == [{"arch": "a1", "jetson-orin-nano": "4.23999"}]  # alias resolved
    assert invoke("-H", "trtexec", FIX / "trtexec__10x.log", "-d", "jetson-orin-nano", "-a", "a2", "-o", out)[0] == 0
    # another device: a new column, empty for the other rows
    code, _, errs = invoke("-H", "benchmark_model", FIX / "benchmark_model__percentiles.log", "-d", "pixel-7-cpu",
                           "-a", "a1", "-o", out)
    assert code == 0 and "filled pixel-7-cpu = 1.034 ms" in errs
    assert read_csv(out) == [{"arch": "a1", "jetson-orin-nano": "4.23999", "pixel-7-cpu": "1.034"},
                             {"arch": "a2", "jetson-orin-nano": "7.14139", "pixel-7-cpu": ""}]
    code, _, errs = invoke("-H", "trtexec", FIX / "trtexec__10x.log", "-d", "jetson-orin-nano", "-a", "a1",
                           "-o", out)
    assert code == 2 and "already has jetson-orin-nano = 4.23999" in errs and "--replace" in errs
    code, _, errs = invoke("-H", "trtexec", FIX / "trtexec__10x.log", "-d", "jetson-orin-nano", "-a", "a1",
                           "-o", out, "--replace")
    assert code == 0 and read_csv(out)[0]["jetson-orin-nano"] == "7.14139"
    assert not list(out.parent.glob(".*.tmp"))  # the temporary file is gone


def test_out_with_space_canonicalises_and_rejects_bad_arch(tmp_path):
    out = tmp_path / "lat.csv"
    code, _, errs = invoke("-H", "ort", FIX / "onnxruntime_perf_test__current.log", "-d", "rpi-5", "--space",
                           "nasbench201", "-a", NB201, "-o", out)
    assert code == 0, errs
    assert read_csv(out) == [{"arch": NB201, "rpi-5": "4.49103"}]
    code, _, errs = invoke("-H", "ort", FIX / "onnxruntime_perf_test__current.log", "-d", "rpi-5", "--space",
                           "nasbench201", "-a", "|conv9~0|", "-o", out)
    assert code == 2 and "nasbench201" in errs
    assert len(read_csv(out)) == 1


def test_free_device_names_and_bad_ones(tmp_path):
    out = tmp_path / "lat.csv"
    assert invoke("-H", "ort", FIX / "onnxruntime_perf_test__2020.log", "-d", "my-board_2", "-a", "x", "-o", out)[0] == 0
    assert list(read_csv(out)[0]) == ["arch", "my-board_2"]
    code, _, errs = invoke("-H", "ort", FIX / "onnxruntime_perf_test__2020.log", "-d", "bad name!", "-a", "x",
                           "-o", out)
    assert code == 2 and "unknown device" in errs
    code, _, errs = invoke("-H", "ort", FIX / "onnxruntime_perf_test__2020.log", "-d", "arch", "-a", "x", "-o", out)
    assert code == 2 and "arch column" in errs


def test_bad_device_yaml_names_file_and_field(tmp_path):
    bad = tmp_path / "board.yaml"
    bad.write_text("name: board\nruntime:\n  treads: 4\n")
    code, _, errs = invoke("-H", "trtexec", FIX / "trtexec__8.6.log", "-d", bad, "-a", "x", "-o", tmp_path / "o.csv")
    assert code == 2 and str(bad) in errs and "runtime.treads" in errs


def test_out_needs_arch_and_device(tmp_path):
    code, _, errs = invoke("-H", "trtexec", FIX / "trtexec__8.6.log", "-o", tmp_path / "o.csv")
    assert code == 2 and "--arch" in errs
    code, _, errs = invoke("-H", "trtexec", FIX / "trtexec__8.6.log", "--space", "fbnet")
    assert code == 2


# ---- bad logs: exit 2, file and line named -----------------------------------------------------

@pytest.mark.parametrize("harness,fixture,line", [
    ("trtexec", "trtexec__bad-truncated.log", 32),
    ("trtexec", "trtexec__bad-failed.log", 12),
    ("benchmark_model", "benchmark_model__bad-unconsumed.log", 2),
    ("ort", "onnxruntime_perf_test__bad-stats-cut.log", 15),
])
def test_bad_log_is_exit_2_naming_file_and_line(harness, fixture, line, tmp_path):
    out = tmp_path / "lat.csv"
    code, stdout, errs = invoke("-H", harness, FIX / fixture, "-d", "cpu", "-a", "x", "-o", out)
    assert code == 2
    assert errs.startswith("error: ") and str(FIX / fixture) in errs and f"line {line}:" in errs
    assert len(errs.strip().splitlines()) == 1 and "Traceback" not in errs
    assert stdout == "" and not out.exists()


def test_missing_file_and_unknown_harness(tmp_path):
    code, _, errs = invoke("-H", "trtexec", tmp_path / "nope.log")
    assert code == 2 and "nope.log" in errs
    code, _, errs = invoke("-H", "nvprof", FIX / "trtexec__8.6.log")
    assert code == 2 and "trtexec" in errs


def test_wrong_harness_for_the_log():
    code, _, errs = invoke("-H", "benchmark_model", FIX / "trtexec__8.6.log")
    assert code == 2 and "no benchmark_model result" in errs


# ---- the dataset writer on its own --------------------------------------------------------------

def test_add_to_dataset_rejects_foreign_and_ragged_files(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("name,cpu\na,1\n")
    with pytest.raises(BadInputError, match="no 'arch' column"):
        add_to_dataset(p, "a", "cpu", 1.0)
    p.write_text("arch,cpu\na,1,2\n")
    with pytest.raises(BadInputError, match="row 2 has 3 fields"):
        add_to_dataset(p, "a", "cpu", 1.0)
    p.write_text("arch,cpu\na,1\na,2\n")
    with pytest.raises(BadInputError, match="2 rows"):
        add_to_dataset(p, "a", "cpu", 1.0)
    p.write_text("arch,cpu\n")
    assert add_to_dataset(p, '{"ks":[3,5],"r":224}', "cpu", 12.3456789) == "added"
    assert read_csv(p) == [{"arch": '{"ks":[3,5],"r":224}', "cpu": "12.3457"}]
