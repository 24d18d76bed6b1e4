"""Plumbing shared by the ``benchmarks/search_*.py`` scripts: run ``hwnat`` exactly as a user does (a
subprocess of this checkout's CLI), read a search's output folder, describe the machine, write results.

Search runs go to ``benchmarks/results/search_work/<benchmark>/...`` (git-ignored) and run there, so the
caches a search keeps in its working folder (``latency_tables/``, ``supernets/``) stay out of the
checkout; a run whose ``picks.csv`` exists is not repeated, so an interrupted benchmark resumes.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
WORK = RESULTS / "search_work"


def hwnat(args: list[str], log: Path, timeout_s: float | None = None, cwd: Path | None = None) -> tuple[int, float]:
    """Run ``hwnat ARGS`` from this checkout in folder ``cwd`` (default: the benchmark's work folder, where
    ``latency_tables/`` and ``supernets/`` caches then live); stdout+stderr go to ``log``.

    Returns:
        (exit code, wall seconds)
    """
    cwd = Path(cwd) if cwd is not None else WORK
    cwd.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.setdefault("OMP_NUM_THREADS", "1")
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "hwnat.cli.main", *[str(a) for a in args]]
    # python -m puts the working folder first on sys.path; PYTHONPATH names this checkout
    t0 = time.perf_counter()
    with open(log, "ab") as f:
        f.write(("$ hwnat " + " ".join(cmd[3:]) + "\n").encode())
        f.flush()
        try:
            rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                timeout=timeout_s).returncode
        except subprocess.TimeoutExpired:
            rc = 124
    return rc, time.perf_counter() - t0


def search(out: Path, args: list[str], timeout_s: float | None = None, rerun: bool = False,
           cwd: Path | None = None) -> dict:
    """Run ``hwnat search ARGS --out OUT`` (in ``cwd``, see ``hwnat``) unless ``OUT/picks.csv`` exists (then
    reuse it).

    Returns ``{"rc", "wall_s", "reused", "out"}``; the wall time of a reused run is the one recorded when
    it ran (``OUT/bench_run.json``).
    """
    out = Path(out)
    rec = out / "bench_run.json"
    if not rerun and (out / "picks.csv").exists() and rec.exists():
        r = json.loads(rec.read_text())
        return dict(r, reused=True)
    rc, wall = hwnat(["search", *args, "--out", out.resolve()], out.parent / f"{out.name}.log", timeout_s, cwd)
    r = {"rc": rc, "wall_s": round(wall, 2), "out": str(out), "args": [str(a) for a in args]}
    if out.exists():
        rec.write_text(json.dumps(r))
    return dict(r, reused=False)


def _in_process(job: tuple[Path, list[str], Path]) -> dict:
    """One ``hwnat search`` through the CLI's own command object in this (worker) process, without
    exporting the picks to ONNX: with ``--no-verify`` nothing reads the files, and exporting one
    NAS-Bench-201 network took ~50 s on the loaded benchmark machine. Exit codes as the CLI's."""
    out, args, cwd = job
    import contextlib

    import click

    import hwnat.search.verify as verify
    from hwnat.cli.search import search as command
    from hwnat.errors import HwnatError

    verify.export_picks = lambda space, picks, out_dir, module_for=None: []
    os.chdir(cwd)
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rc, msg = 0, None
    with open(out.parent / f"{out.name}.log", "a") as log, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log):
        print("$ hwnat search " + " ".join(args) + f" --out {out}  (in process, picks not exported)", flush=True)
        try:
            command.main(args=[*args, "--out", str(out)], prog_name="hwnat search", standalone_mode=False)
        except HwnatError as e:
            rc, msg = e.exit_code, str(e)
        except click.ClickException as e:
            rc, msg = e.exit_code, e.format_message()
        except Exception as e:  # noqa: BLE001  (recorded per run; the benchmark goes on with the others)
            rc, msg = 1, f"{type(e).__name__}: {e}"
        if msg:
            print(f"error: {msg}", flush=True)
    r = {"rc": rc, "wall_s": round(time.perf_counter() - t0, 2), "out": str(out), "args": args,
         "in_process": True, "picks_exported": False, "error": msg}
    if out.exists():
        (out / "bench_run.json").write_text(json.dumps(r))
    return dict(r, reused=False)


def search_many(jobs: list[tuple[Path, list]], workers: int = 1, cwd: Path | None = None) -> dict[str, dict]:
    """Run many ``--no-verify`` searches in ``workers`` parallel processes (in process, see
    ``_in_process``); finished ones (``picks.csv`` + ``bench_run.json``) are reused. Returns out -> record."""
    import multiprocessing as mp

    cwd = Path(cwd) if cwd is not None else WORK
    cwd.mkdir(parents=True, exist_ok=True)
    done, todo = {}, []
    for out, args in jobs:
        out = Path(out).resolve()
        rec = out / "bench_run.json"
        if (out / "picks.csv").exists() and rec.exists():
            done[str(out)] = dict(json.loads(rec.read_text()), reused=True)
        else:
            todo.append((out, [str(a) for a in args], cwd))
    if todo:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        with mp.get_context("spawn").Pool(max(1, min(workers, len(todo))), maxtasksperchild=1) as pool:
            for r in pool.imap_unordered(_in_process, todo):
                done[r["out"]] = r
                print(f"  search done: {r['out']} (exit {r['rc']}, {r['wall_s']:.0f} s)", file=sys.stderr, flush=True)
    return done


def read_csv(path: Path) -> pd.DataFrame | None:
    """A CSV of a search's output folder, or None when it was not written."""
    return pd.read_csv(path) if Path(path).exists() else None


def machine() -> dict:
    """Where and under what load the numbers were taken."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpu": cpu,
            "cores": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version()}


def _plain(o):
    if isinstance(o, dict):
        return {str(k): _plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_plain(v) for v in o]
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return _plain(o.tolist())
    if isinstance(o, float) and not np.isfinite(o):
        return None
    return o


def save(name: str, data: dict) -> Path:
    """Write ``benchmarks/results/search_<name>.json`` atomically and return its path."""
    sys.path.insert(0, str(ROOT))
    from hwnat.export.onnx import write_atomic

    path = RESULTS / f"search_{name}.json"
    write_atomic(path, (json.dumps(_plain(data), indent=1) + "\n").encode())
    return path
