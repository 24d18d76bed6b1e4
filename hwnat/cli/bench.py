"""``hwnat bench``: CI regression checks of device latencies (run a suite, compare with a baseline,
keep baselines)."""

from __future__ import annotations

from pathlib import Path

import click

from hwnat.cli._common import echo_json, err, json_option
from hwnat.errors import BadInputError, CheckFailedError, DeviceError


@click.group(epilog="\b\nExample:\n  hwnat bench run --suite default --out candidate.json\n"
                    "  hwnat bench compare baseline.json candidate.json --threshold 5% --markdown summary.md")
def bench() -> None:
    """Measure a fixed suite of models and catch latency regressions (see docs/ci.md)."""


#: options of the measuring commands (run and ab), defined once
_device_opt = click.option("--device", "-d", "device", default=None,
                           help="Device name or YAML path; default: the suite's `device`.")
_rounds_opt = click.option("--rounds", type=click.IntRange(3, 1000), default=None,
                           help="Interleaved passes over the entries; default: the suite's `rounds` (`ab_rounds` for `bench ab`).")
_work_dir_opt = click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                             help="Keep exported models here and reuse them on the next run (default: a temp dir).")
_commit_opt = click.option("--commit", default=None,
                           help="Git commit to record; default: $GITHUB_SHA or `git rev-parse HEAD`.")


def _measuring(what: str, n: int, passes: int, device: str):
    """(context manager giving a progress callback or None, start time): a bar on a terminal, a line
    per pass in logs (CI), nothing with -q."""
    import contextlib
    import time

    from hwnat.cli._common import is_tty
    from hwnat.cli._progress import progress_bar

    quiet = click.get_current_context().find_root().params.get("quiet", False)
    if not quiet:
        err(f"{what}: {n} entries x {passes} passes on {device}")
    t0 = time.perf_counter()
    done = {"n": 0}

    @contextlib.contextmanager
    def progress():
        with (progress_bar("timing", True) if is_tty() and not quiet else contextlib.nullcontext()) as bar:

            def step(k: int, total: int, name: str, median_ms: float) -> None:
                done["n"] += 1
                if bar is not None:
                    bar(done["n"], total * n, f"pass {k + 1}/{total} {name}")
                elif not quiet and done["n"] % n == 0:
                    err(f"[pass {k + 1}/{total}] {n} entries timed, {time.perf_counter() - t0:.1f} s")

            yield step

    return progress(), quiet


@bench.command("run", epilog="\b\nExample:\n  hwnat bench run --suite benchmarks/suites/default.yaml --device cpu --out result.json")
@click.option("--suite", "suite_path", required=True,
              help="Suite YAML file, or the name of a shipped suite (benchmarks/suites/NAME.yaml).")
@_device_opt
@click.option("--out", "-o", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Result JSON to write (every raw sample, the protocol and the fingerprint).")
@_rounds_opt
@_work_dir_opt
@_commit_opt
@json_option
def run_cmd(suite_path: str, device: str | None, out: Path, rounds: int | None, work_dir: Path | None,
            commit: str | None, as_json: bool) -> None:
    """Measure every entry of a suite and write the result file.

    Entries are interleaved: each of ROUNDS passes times every entry once (shuffled order, fresh
    runtime session, warm-up, one timed round). Progress goes to stderr, a summary to stdout.
    """
    import numpy as np

    from hwnat.bench.run import run_suite
    from hwnat.bench.suite import load_suite

    loaded = load_suite(suite_path)
    n = len(loaded.suite.entries)
    progress, quiet = _measuring(f"bench {loaded.suite.name}", n, rounds or loaded.suite.rounds,
                                 device or loaded.suite.device)
    with progress as step:
        res = run_suite(loaded, device=device, rounds=rounds, out=out, work_dir=work_dir, commit=commit,
                        progress=step)
    rows = []
    for e in res.entries:
        meds = np.array([np.median(r) for r in e.rounds_ms])
        rows.append({"entry": e.name, "median_ms": float(np.median(meds)),
                     "round_spread": float((meds.max() - meds.min()) / np.median(meds)),
                     "rounds": len(meds), "contended": len(e.contended_rounds()),
                     "samples": int(sum(len(r) for r in e.rounds_ms))})
    if as_json:
        echo_json({"out": str(out), "wall_s": res.wall_s, "entries": rows})
        return
    width = max(len(r["entry"]) for r in rows)
    click.echo(f"{'entry'.ljust(width)}  median ms  round spread  rounds  contended  samples")
    for r in rows:
        click.echo(f"{r['entry'].ljust(width)}  {r['median_ms']:9.3f}  {r['round_spread']:12.1%}  "
                   f"{r['rounds']:6d}  {r['contended']:9d}  {r['samples']:7d}")
    busy = sum(r["contended"] for r in rows)
    if busy and not quiet:
        err(f"warning: {busy} of {sum(r['rounds'] for r in rows)} rounds stayed contended (other processes "
            "preempted the runtime or kept the CPUs busy); compare leaves them out"
            + ("; on a machine that stays busy, use `hwnat bench ab`" if busy * 2 > sum(r["rounds"] for r in rows)
               else ""))
    if not quiet:
        err(f"wrote {out} ({res.wall_s:.1f} s)")


def _threshold(ctx, param, value):
    from hwnat.bench.compare import parse_threshold

    return parse_threshold(value)


def _alpha(ctx, param, value):
    from hwnat.bench.compare import parse_alpha

    return parse_alpha(value)


_CLOCK_HELP = ("wall: latency; cpu: this process's CPU time per call (local devices), which leaves out time "
               "spent waiting for a CPU on an oversubscribed machine")


def _verdict_options(f):
    """Options of the commands that give verdicts (compare and ab), defined once (``--clock`` apart)."""
    for opt in reversed([
        click.option("--threshold", default="5%", show_default=True, callback=_threshold,
                     help="Smallest slowdown that counts: the whole confidence interval must lie above it."),
        click.option("--alpha", default="0.01", show_default=True, callback=_alpha,
                     help="Significance level of the test (interval confidence = 1 - alpha)."),
        click.option("--metric", type=click.Choice(["median", "p90"]), default="median", show_default=True,
                     help="Per-round statistic compared."),
        click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False, path_type=Path),
                     default=None, help="Write a Markdown report (append it to $GITHUB_STEP_SUMMARY)."),
        click.option("--junit", "junit_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="Write JUnit XML: one testcase per entry."),
        click.option("--strict", "--fail-on-insufficient", "strict", is_flag=True,
                     help="Exit 3 when an entry has no verdict (insufficient data: too few rounds, or the "
                          "device was busy). Without it such a job passes with a warning."),
        click.option("--allow-missing", is_flag=True,
                     help="Do not fail (exit 2) when baseline entries are missing from the candidate."),
        json_option,
    ]):
        f = opt(f)
    return f


def _judge(comp, *, candidate: Path, markdown_path: Path | None, junit_path: Path | None, strict: bool,
           allow_missing: bool, as_json: bool) -> None:
    """Print and write the reports of a comparison, then map its verdicts to the exit code: 1 on a
    regression, 2 on missing entries (unless allowed), 3 with ``strict`` on insufficient data."""
    from hwnat._io import write_atomic
    from hwnat.bench.compare import INSUFFICIENT
    from hwnat.bench.report import junit_xml, markdown, text_table

    if markdown_path is not None:
        write_atomic(markdown_path, markdown(comp).encode())
    if junit_path is not None:
        write_atomic(junit_path, junit_xml(comp).encode())
    if as_json:
        echo_json(comp.to_dict())
    else:
        click.echo(text_table(comp))
    missing = ", ".join(e.name for e in comp.missing)
    if comp.regressed:
        raise CheckFailedError("regression in " + "; ".join(
            f"{e.name} ({e.change:+.1%}, interval {e.ci_low:+.1%}..{e.ci_high:+.1%}, p={e.p_value:.1e})"
            for e in comp.regressed) + (f"; also missing: {missing}" if missing else ""))
    if missing and not allow_missing:
        raise BadInputError(f"{candidate}: entries of the baseline are missing: {missing} "
                            "(use --allow-missing to accept)")
    short = comp.by_verdict(INSUFFICIENT)
    if not short:
        return
    names = ", ".join(e.name for e in short)
    if strict:
        raise DeviceError(f"no verdict (insufficient data) for {names}: too few rounds, or the device was "
                          "busy; see the notes" + ("" if comp.method == "paired" else
                                                   ", or time both in one job with `hwnat bench ab`"))
    err(f"warning: no verdict (insufficient data) for {names}; this is not `unchanged` (use --strict to "
        "fail such a job)")


@bench.command("compare", epilog="\b\nExample:\n  hwnat bench compare baselines/ result.json --threshold 5% --alpha 0.01 --junit bench.xml")
@click.argument("baseline", type=click.Path(path_type=Path))
@click.argument("candidate", type=click.Path(path_type=Path))
@_verdict_options
@click.option("--clock", type=click.Choice(["wall", "cpu"]), default="wall", show_default=True,
              help=_CLOCK_HELP + ".")
@click.option("--allow-env-change", is_flag=True,
              help="Compare even when the fingerprints differ (CPU, runtime version, threads...).")
@click.option("--include-contended", is_flag=True,
              help="Also use rounds during which other processes preempted the runtime or kept the CPUs busy.")
def compare_cmd(baseline: Path, candidate: Path, threshold: float, alpha: float, metric: str, clock: str,
                markdown_path: Path | None, junit_path: Path | None, strict: bool, allow_missing: bool,
                as_json: bool, allow_env_change: bool, include_contended: bool) -> None:
    """Compare a candidate result with a baseline, entry by entry (two runs: for a quiet, dedicated device;
    on a shared or busy machine use `hwnat bench ab`).

    BASELINE is a result file or a baseline directory (`bench baseline save --dir`); for a directory the
    newest baseline of the candidate's suite from a comparable environment is used.

    An entry regresses only when the change is significant (Mann-Whitney U, p < ALPHA) AND its
    distribution-free confidence interval lies entirely above THRESHOLD, and the candidate run was not
    measured on a busier machine than the baseline. Exit 0: no regression; 1: a regression; 2: bad input
    (unreadable or foreign files, different suites or environments, missing entries); 3: device failure,
    and with --strict an entry without a verdict (insufficient data).
    """
    from hwnat.bench.compare import compare_results
    from hwnat.bench.store import latest_baseline_for, load_result

    cand = load_result(candidate)
    if baseline.is_dir():
        found = latest_baseline_for(baseline, cand)
        err(f"baseline: {found.path} (commit {found.commit}, saved {found.saved_at})")
        baseline = found.path
    base = load_result(baseline)
    comp = compare_results(base, cand, threshold=threshold, alpha=alpha, metric=metric,
                           allow_env_change=allow_env_change, include_contended=include_contended,
                           clock=clock)
    _judge(comp, candidate=candidate, markdown_path=markdown_path, junit_path=junit_path, strict=strict,
           allow_missing=allow_missing, as_json=as_json)


@bench.command("ab", epilog="\b\nExample:\n  hwnat bench ab base/suite.yaml cand/suite.yaml --out ab.json --strict --junit bench.xml\n"
                           "  hwnat bench ab --from ab.json --threshold 10%")
@click.argument("baseline", required=False)
@click.argument("candidate", required=False)
@click.option("--out", "-o", "out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A/B result JSON to write (every raw sample of both sides, the pair order and load).")
@click.option("--from", "from_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Judge an existing A/B result instead of measuring (e.g. with another threshold).")
@_device_opt
@_rounds_opt
@_work_dir_opt
@_commit_opt
@_verdict_options
@click.option("--clock", type=click.Choice(["auto", "wall", "cpu"]), default="auto", show_default=True,
              help=_CLOCK_HELP + "; auto: cpu for a local single-threaded runtime (the default `cpu` "
                   "device), else wall.")
def ab_cmd(baseline: str | None, candidate: str | None, out: Path | None, from_path: Path | None,
           device: str | None, rounds: int | None, work_dir: Path | None, commit: str | None,
           threshold: float, alpha: float, metric: str, clock: str, markdown_path: Path | None,
           junit_path: Path | None, strict: bool, allow_missing: bool, as_json: bool) -> None:
    """Time the BASELINE suite's and the CANDIDATE suite's models in one job, in pairs, and compare.

    BASELINE and CANDIDATE are suite files (or shipped suite names) whose entries are matched by name:
    e.g. the same suite with model files exported at the base commit and at the pull request. In every
    pass each entry's two files are timed back to back in a random order, so a busy neighbour slows both
    halves of a pair and the comparison is paired (Wilcoxon signed-rank on per-pass log ratios, with the
    same verdict rule as `compare`). This gives verdicts on shared, busy machines where two separate runs
    cannot be compared. The candidate suite sets device, passes (`ab_rounds`, default 60), calls per timing
    (`ab_runs`, default 20), protocol and contention settings. The default clock (`auto`) is the CPU clock
    for a local single-threaded runtime (a neighbour's time on the core is left out), else the wall clock.

    Exit codes as `compare`: 0 no regression, 1 a regression, 2 bad input, 3 device failure (and, with
    --strict, an entry without a verdict).
    """
    from hwnat.bench.paired import compare_ab
    from hwnat.bench.store import load_ab_result

    if from_path is not None:
        if baseline or candidate or out:
            raise BadInputError("--from judges an existing A/B result: give no suites and no --out with it")
        res = load_ab_result(from_path)
    else:
        if not (baseline and candidate and out):
            raise BadInputError("bench ab: expected BASELINE and CANDIDATE suites and --out RESULT.json "
                                "(or --from RESULT.json to judge an existing result)")
        from hwnat.bench.run import run_ab
        from hwnat.bench.suite import load_suite

        base, cand = load_suite(baseline), load_suite(candidate)
        fields = ("device", "rounds", "protocol", "shuffle", "seed", "cooldown_s", "max_wait_frac",
                  "max_busy_frac", "contention_retries", "contention_backoff_s")
        differ = [f for f in fields if getattr(base.suite, f) != getattr(cand.suite, f)]
        if differ:
            err(f"note: the suites differ in {', '.join(differ)}; the candidate suite's settings are used "
                "for both sides")
        n = len({e.name for e in base.suite.entries} & {e.name for e in cand.suite.entries})
        progress, quiet = _measuring(f"bench ab {base.suite.name} vs {cand.suite.name}", n,
                                     rounds or cand.suite.ab_rounds, device or cand.suite.device)
        with progress as step:
            res = run_ab(base, cand, device=device, rounds=rounds, out=out, work_dir=work_dir, commit=commit,
                         progress=step)
        if not quiet:
            err(f"wrote {out} ({res.wall_s:.1f} s)")
    comp = compare_ab(res, threshold=threshold, alpha=alpha, metric=metric, clock=clock)
    _judge(comp, candidate=Path(candidate or from_path), markdown_path=markdown_path, junit_path=junit_path,
           strict=strict, allow_missing=allow_missing, as_json=as_json)


@bench.group("baseline", epilog="\b\nExample:\n  hwnat bench baseline save result.json --dir baselines/\n"
                                 "  hwnat bench baseline show --dir baselines/ --suite default")
def baseline_group() -> None:
    """Keep accepted results per device fingerprint, suite and git commit."""


@baseline_group.command("save", epilog="\b\nExample:\n  hwnat bench baseline save result.json --dir baselines/ --commit \"$GITHUB_SHA\"")
@click.argument("result", type=click.Path(path_type=Path))
@click.option("--dir", "store", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Baseline directory (created if needed).")
@click.option("--commit", default=None, help="Commit to file it under; default: the one the result recorded.")
@click.option("--force", is_flag=True, help="Replace an existing baseline of the same commit.")
@json_option
def baseline_save(result: Path, store: Path, commit: str | None, force: bool, as_json: bool) -> None:
    """Store RESULT as the baseline of its suite, device fingerprint and commit."""
    from hwnat.bench.store import save_baseline

    b = save_baseline(result, store, commit=commit, force=force)
    if as_json:
        echo_json(b.row())
    else:
        click.echo(str(b.path))


@baseline_group.command("show", epilog="\b\nExample:\n  hwnat bench baseline show --dir baselines/ --like result.json --latest")
@click.option("--dir", "store", required=True, type=click.Path(path_type=Path), help="Baseline directory.")
@click.option("--suite", default=None, help="Only this suite.")
@click.option("--device", default=None, help="Only this device name.")
@click.option("--commit", default=None, help="Only this commit (a prefix is enough).")
@click.option("--like", "like", type=click.Path(path_type=Path), default=None,
              help="Only baselines comparable with this result (same suite and environment).")
@click.option("--latest", is_flag=True, help="Print only the path of the newest match (exit 2 if none).")
@json_option
def baseline_show(store: Path, suite: str | None, device: str | None, commit: str | None, like: Path | None,
                  latest: bool, as_json: bool) -> None:
    """List stored baselines, newest first."""
    from hwnat.bench.store import fingerprint_key, list_baselines, load_result

    fp_key = None
    if like is not None:
        r = load_result(like)
        suite, fp_key = suite or r.suite.name, fingerprint_key(r.fingerprint)
    found = list_baselines(store, suite=suite, device=device, fp_key=fp_key, commit=commit)
    if latest:
        if not found:
            raise BadInputError(f"{store}: no baseline matches")
        click.echo(str(found[0].path))
        return
    if as_json:
        echo_json([b.row() for b in found])
        return
    if not found:
        err(f"{store}: no baselines match")
        return
    click.echo("saved_at                   suite            device-environment        commit        entries")
    for b in found:
        click.echo(f"{b.saved_at:<26} {b.suite:<16} {b.device + '-' + b.fingerprint_key:<25} "
                   f"{b.commit[:12]:<13} {b.entries}")
