"""Shared test helpers (paths, a fast device file, the CLI runner)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from hwnat.data import latency_dataset

ROOT = Path(__file__).resolve().parents[1]


def published(space: str) -> Path:
    """The published latency dataset of ``space`` that ships inside the package (gzip CSV; pandas and
    ``gzip.open`` read it): present on every checkout, so no test skips for missing data."""
    return latency_dataset(space)

FAST_DEVICE_YAML = """\
name: {name}
transport: {{kind: local}}
runtime: {{kind: onnxruntime, threads: 1}}
measure: {{warmup_s: 0.0, warmup_runs: 2, rounds: 3, min_round_s: 0.005, max_runs_per_round: 20,
          unstable_tolerance: 0.5, max_remeasure: 0}}
"""


def fast_device(tmp_path: Path, name: str = "cpu") -> Path:
    """A local ONNX Runtime device with a short protocol (real timing, just fewer samples)."""
    p = tmp_path / f"{name}.yaml"
    p.write_text(FAST_DEVICE_YAML.format(name=name))
    return p


def run_cli(args: list[str], **kw):
    """Invoke the ``hwnat`` group as a shell would (exit codes included)."""
    from hwnat.cli.main import cli

    return CliRunner().invoke(cli, [str(a) for a in args], **kw)


def one_line_error(result) -> str:
    """The stderr/stdout of a failed command, asserting it is a single 'error:' line, no traceback."""
    out = (result.stderr if hasattr(result, "stderr") else result.output).strip()
    assert "Traceback" not in out, out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(("error:", "Error:")), out
    return lines[0]
