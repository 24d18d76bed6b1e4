"""``hwnat bench compare`` and ``bench baseline`` through the CLI on synthetic result files: exit codes,
one-line messages for bad input, reports, the baseline store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from hwnat.cli.main import cli
from hwnat.errors import HwnatError

FP = {"cpu_model": "Test CPU", "machine": "x86_64", "logical_cores": 2, "runtime": "onnxruntime",
      "runtime_version": "1.0", "threads": 1, "precision": "fp32", "provider": "CPUExecutionProvider",
      "device": "cpu"}


def invoke(args: list[str]):
    """Run the CLI; return (exit code, stdout, stderr)."""
    r = CliRunner().invoke(cli, [str(a) for a in args])
    if isinstance(r.exception, HwnatError):  # raised past the CLI's error mapping
        return r.exception.exit_code, r.stdout, f"error: {r.exception}"
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.stdout, r.stderr


def write_result(path: Path, centers: dict, suite: str = "s", fp: dict | None = None, seed: int = 0,
                 commit: str = "c0ffee", n: int = 10) -> Path:
    rng = np.random.default_rng(seed)
    data = {"format": "hwnat-bench-result", "schema_version": 1, "suite": {"name": suite}, "device": "cpu",
            "fingerprint": fp or FP, "protocol": {}, "rounds": n, "git_commit": commit,
            "created_at": f"2025-01-01T00:00:0{seed % 10}+00:00",
            "entries": [{"name": k, "rounds_ms": [list(c * np.exp(rng.normal(0, 0.01, 15))) for _ in range(n)]}
                        for k, c in centers.items()]}
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def pair(tmp_path):
    base = write_result(tmp_path / "base.json", {"a": 5.0, "b": 2.0}, seed=1)
    same = write_result(tmp_path / "same.json", {"a": 5.0, "b": 2.0}, seed=2)
    slow = write_result(tmp_path / "slow.json", {"a": 6.0, "b": 2.0}, seed=3)
    return base, same, slow


def test_compare_clean_and_regressed_exit_codes(pair, tmp_path):
    base, same, slow = pair
    code, out, _ = invoke(["bench", "compare", base, same])
    assert code == 0 and "unchanged" in out
    md, xml = tmp_path / "r.md", tmp_path / "r.xml"
    code, out, msg = invoke(["bench", "compare", base, slow, "--markdown", md, "--junit", xml])
    assert code == 1
    assert msg.startswith("error: regression in a (+") and " b " not in msg
    assert "REGRESSED" in out
    assert "1 regression (a)" in md.read_text() and "<failure" in xml.read_text()


def test_compare_json_output(pair):
    base, _, slow = pair
    code, out, _ = invoke(["bench", "compare", base, slow, "--json", "--threshold", "25%"])
    assert code == 0
    d = json.loads(out)
    assert d["threshold"] == 0.25 and {e["name"]: e["verdict"] for e in d["entries"]} == {
        "a": "unchanged", "b": "unchanged"}


def _one_line(msg: str) -> bool:
    return msg.startswith("error: ") and "\n" not in msg.strip() and "Traceback" not in msg


def test_bad_threshold_is_exit_2(pair):
    base, same, _ = pair
    code, _, msg = invoke(["bench", "compare", base, same, "--threshold", "abc%"])
    assert code == 2 and _one_line(msg) and "--threshold" in msg and "abc%" in msg


def test_truncated_and_foreign_json_are_exit_2(pair, tmp_path):
    base, same, _ = pair
    trunc = tmp_path / "trunc.json"
    trunc.write_text(same.read_text()[:200])
    code, _, msg = invoke(["bench", "compare", base, trunc])
    assert code == 2 and _one_line(msg) and "truncated" in msg and str(trunc) in msg
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps({"benchmarks": [{"name": "x", "stats": {"mean": 1}}]}))
    code, _, msg = invoke(["bench", "compare", foreign, same])
    assert code == 2 and _one_line(msg) and "not an hwnat bench result" in msg
    code, _, msg = invoke(["bench", "compare", base, tmp_path / "nope.json"])
    assert code == 2 and "not found" in msg
    bad = json.loads(same.read_text())
    bad["entries"][0]["rounds_ms"][0] = ["x"]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    code, _, msg = invoke(["bench", "compare", base, tmp_path / "bad.json"])
    assert code == 2 and _one_line(msg) and "entries.0.rounds_ms" in msg


def test_different_suites_missing_entries_env_change(pair, tmp_path):
    base, _, _ = pair
    other = write_result(tmp_path / "other.json", {"a": 5.0, "b": 2.0}, suite="other")
    code, _, msg = invoke(["bench", "compare", base, other])
    assert code == 2 and _one_line(msg) and "different suites" in msg
    partial = write_result(tmp_path / "partial.json", {"a": 5.0}, seed=5)
    code, out, msg = invoke(["bench", "compare", base, partial])
    assert code == 2 and _one_line(msg) and "missing: b" in msg and "missing" in out
    code, _, _ = invoke(["bench", "compare", base, partial, "--allow-missing"])
    assert code == 0
    env = write_result(tmp_path / "env.json", {"a": 5.0, "b": 2.0}, fp={**FP, "runtime_version": "2.0"}, seed=6)
    code, _, msg = invoke(["bench", "compare", base, env])
    assert code == 2 and _one_line(msg) and "runtime_version: '1.0' -> '2.0'" in msg
    code, out, _ = invoke(["bench", "compare", base, env, "--allow-env-change"])
    assert code == 0 and "environments differ" in out


def test_baseline_save_show_and_compare_against_a_directory(pair, tmp_path):
    base, same, slow = pair
    store = tmp_path / "baselines"
    code, out, _ = invoke(["bench", "baseline", "save", base, "--dir", store])
    assert code == 0 and Path(out.strip()).is_file()
    code, _, msg = invoke(["bench", "baseline", "save", base, "--dir", store])
    assert code == 2 and "already exists" in msg
    newer = write_result(tmp_path / "newer.json", {"a": 5.0, "b": 2.0}, seed=7, commit="beef")
    assert invoke(["bench", "baseline", "save", newer, "--dir", store])[0] == 0
    code, out, _ = invoke(["bench", "baseline", "show", "--dir", store, "--json"])
    rows = json.loads(out)
    assert code == 0 and [r["commit"] for r in rows] == ["beef", "c0ffee"]
    code, out, _ = invoke(["bench", "baseline", "show", "--dir", store, "--like", same, "--latest"])
    assert code == 0 and out.strip().endswith("beef.json")
    code, out, _ = invoke(["bench", "baseline", "show", "--dir", store, "--commit", "c0f"])
    assert code == 0 and "c0ffee" in out and "beef " not in out
    assert invoke(["bench", "compare", store, same])[0] == 0
    assert invoke(["bench", "compare", store, slow])[0] == 1
    other_env = write_result(tmp_path / "o.json", {"a": 5.0}, fp={**FP, "cpu_model": "Other"})
    code, _, msg = invoke(["bench", "compare", store, other_env])
    assert code == 2 and "no baseline for suite 's'" in msg and "other environments" in msg


def test_help_ends_with_an_example():
    for cmd in (["bench"], ["bench", "run"], ["bench", "compare"], ["bench", "baseline", "save"],
                ["bench", "baseline", "show"]):
        code, out, _ = invoke([*cmd, "--help"])
        assert code == 0 and "hwnat bench" in out.strip().splitlines()[-1]


def test_no_verdict_passes_with_a_warning_and_fails_with_strict(tmp_path):
    """Insufficient data is not `unchanged`: the job passes with a warning naming the entries, and
    --strict (alias --fail-on-insufficient) fails it with exit 3."""
    base = write_result(tmp_path / "base.json", {"a": 5.0, "b": 2.0}, seed=1, n=3)
    cand = write_result(tmp_path / "cand.json", {"a": 5.0, "b": 2.0}, seed=2, n=3)
    code, out, err = invoke(["bench", "compare", base, cand])
    assert code == 0 and "insufficient data" in out and "unchanged" not in out.split("\n", 2)[2]
    assert "no verdict (insufficient data) for a, b" in err and "--strict" in err
    for flag in ("--strict", "--fail-on-insufficient"):
        code, _, err = invoke(["bench", "compare", base, cand, flag])
        assert code == 3 and "no verdict (insufficient data) for a, b" in err and "bench ab" in err
