"""One search from settings to files: what ``hwnat search`` calls (the CLI only parses and prints).

``run_search(request)`` builds the space, the latency model of every device, the accuracy source (a table
via ``--accuracy``, the table shipped for the space, or the OFA supernet warmed up on a task), runs the
NAT loop (``hwnat.search.nat``), exports the picks to ONNX, verifies them on the devices, and writes
``archive.csv``, ``pareto.csv``, ``picks.csv``, ``pareto.png``, ``report.md``, ``state.json`` (and
``supernet.pt``) into the output folder. Rerunning the same request resumes.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hwnat.errors import BadInputError, CheckFailedError
from hwnat.latency.model import CalibratedLatency, open_latency_model
from hwnat.search.nat import NATSearch, SearchResult, SearchSettings, write_outputs
from hwnat.search.problem import Objectives, objective_names

log = logging.getLogger(__name__)

#: settings of ``--quick`` (smoke tests: <= 3 min on 2 CPU cores for ofa-mbv3 on MNIST with a table)
#: (one resolution, 224, unless --resolution is given: 94 blocks to profile instead of 868)
QUICK = {"initial": 8, "iterations": 2, "candidates": 4, "pop_size": 24, "generations": 8,
         "warmup_epochs": 1, "max_train": 1000, "max_val": 400, "adapt_steps": 5, "picks": 2,
         "resolutions": (224,), "calibrate": 5}
#: defaults of a full run (``hwnat search --latency-ms 20``: sized for <= 15 min on 2 idle CPU cores
#: including the first-time table profile (868 blocks, ~7 min) and the supernet warm-up (2 epochs of 2,000
#: MNIST images, ~3 min from the supernet benchmark's ~0.046 CPU s per image-epoch); an estimate from
#: per-phase costs, not a measured run: per-phase times are in every report.md)
FULL = {"initial": 16, "iterations": 4, "candidates": 6, "pop_size": 60, "generations": 20,
        "warmup_epochs": 2, "max_train": 2000, "max_val": 1000, "adapt_steps": 10, "picks": 3,
        "resolutions": (), "calibrate": 8}
#: verification rounds: a pick measured over its budget is replaced by the next candidate (and the
#: calibration refitted) at most this many times
REPAIR_ROUNDS = 3


@dataclass
class SearchRequest:
    """Everything ``hwnat search`` was asked (plain data; ``None`` = the default of the mode).

    Attributes:
        space: search space name.
        devices: device names (or YAML paths; for ``csv`` models, any label naming the dataset column).
        budgets_ms: device -> latency budget in ms.
        latency_models: device -> ``table`` | ``predictor`` | ``measure`` | ``csv:PATH:COLUMN``.
        predictors: device -> predictor JSON path (``predictor`` models).
        confidence: constrain the upper bound at this probability (predictor intervals), or None.
        objectives: objective kinds.
        accuracy: ``CSV[:COLUMN]`` (table) or None (shipped table, else the supernet).
        task: the supernet's task (``mnist``, ``digits``, ``fashion-mnist``, a folder, an ``.npz``).
        supernet: a supernet checkpoint to start from.
        proxy_scale: the supernet's training/evaluation scale (None: 0.15 on CPU, 1.0 on CUDA).
        width: supernet width multiplier (1.0 or 1.2).
        resolutions: restrict the space's resolutions (spaces that search them).
        quick: the ``QUICK`` defaults instead of ``FULL``.
        verify: export and measure the picks on the devices.
        torch_device: where the supernet trains (``cpu`` or ``cuda``).
        out: output folder.
        overrides: any of ``FULL``'s keys set explicitly (initial, iterations, candidates, ...).
    """

    space: str = "ofa-mbv3"
    devices: tuple[str, ...] = ("cpu",)
    budgets_ms: dict = field(default_factory=dict)
    latency_models: dict = field(default_factory=dict)
    predictors: dict = field(default_factory=dict)
    confidence: float | None = None
    objectives: tuple[str, ...] = ("error", "latency")
    accuracy: str | None = None
    task: str = "mnist"
    supernet: str | None = None
    proxy_scale: float | None = None
    width: float = 1.0
    resolutions: tuple[int, ...] = ()
    quick: bool = False
    verify: bool = True
    seed: int = 0
    torch_device: str = "cpu"
    out: str | Path = "runs/search"
    overrides: dict = field(default_factory=dict)

    def setting(self, key: str):
        v = self.overrides.get(key)
        return (QUICK if self.quick else FULL)[key] if v is None else v


class _Relay:
    """A ``(done, total, label)`` callback forwarding to whichever phase bar is open (else nothing)."""

    def __init__(self):
        self.target = None

    def __call__(self, done, total, label):
        if self.target is not None:
            self.target(done, total, label)


def run_search(req: SearchRequest, phase=None) -> tuple[SearchResult, NATSearch]:
    """Run (or resume) a search and write its outputs.

    Args:
        req: the ``SearchRequest``.
        phase: ``name -> context manager yielding a (done, total, label) callback`` (progress per phase).

    Raises:
        BadInputError: any bad input (before anything long starts where it can be known up front).
        CheckFailedError: no pick meets the budget (predicted, or measured when verifying), after every
            output is written.
        DeviceError: a device failed (what was evaluated is kept in the output folder).
    """
    phase = phase or (lambda name: contextlib.nullcontext(None))
    t0 = time.perf_counter()
    out = Path(req.out)
    if out.exists() and not out.is_dir():
        raise BadInputError(f"--out {out}: exists and is not a folder")
    from hwnat.spaces import get_space

    get_space(req.space)  # unknown space: the registry's message lists the valid ones
    devices = tuple(dict.fromkeys(req.devices))
    for d in req.budgets_ms:
        if d not in devices:
            raise BadInputError(f"--latency-ms {d}={req.budgets_ms[d]:g}: {d!r} is not one of the --device "
                                f"values ({', '.join(devices)})")
    missing = [d for d in devices if d not in req.budgets_ms]
    if missing:
        raise BadInputError(f"no --latency-ms for device {missing[0]!r}; give one value for every device or "
                            "DEVICE=MS per device")
    names = objective_names(tuple(req.objectives), devices)
    for spec in req.latency_models.values():
        if spec not in ("table", "predictor", "measure") and not spec.startswith("csv:"):
            from hwnat.latency.model import KINDS

            raise BadInputError(f"unknown latency model {spec!r}; expected one of: {', '.join(KINDS)}")
    if req.verify:
        from hwnat.search.verify import check_devices

        check_devices(list(devices))

    # ---- accuracy source kind, task, space -------------------------------------------------------------
    use_supernet = req.accuracy is None and not _has_shipped_accuracy(req.space)
    task = None
    space_opts: dict = {}
    if req.resolutions:
        space_opts["resolutions"] = tuple(req.resolutions)
    elif req.setting("resolutions") and "resolutions" in inspect.signature(
            type(get_space(req.space)).__init__).parameters:
        space_opts["resolutions"] = tuple(req.setting("resolutions"))
    if use_supernet:
        if get_space(req.space).name != "ofa-mbv3":
            raise BadInputError(f"space {req.space!r} has no accuracy source: pass --accuracy CSV[:COLUMN] "
                                "(the supernet covers ofa-mbv3 only)")
        from hwnat.search.tasks import load_task

        task = load_task(req.task, seed=req.seed, max_train=req.setting("max_train"))
        space_opts.update(classes=task.classes, widths=(float(req.width),))
    space = _space(req.space, space_opts)
    # canonical device names (aliases resolve to their target) where a device file exists
    canon = {d: _device_name(d, req.latency_models.get(d, "table")) for d in devices}
    devices = tuple(canon[d] for d in devices)
    budgets = {canon[d]: float(b) for d, b in req.budgets_ms.items()}
    specs = {canon[d]: req.latency_models.get(d, "table") for d in canon}
    names = objective_names(tuple(req.objectives), devices)

    # ---- latency models (a missing table is profiled here, resumably) -----------------------------------
    models = {}
    times: dict[str, float] = {}
    t1 = time.perf_counter()
    for d_in, d in canon.items():
        with phase(f"latency model {d}: {specs[d]}") as cb:
            models[d] = open_latency_model(specs[d], space, d_in, predictor=req.predictors.get(d_in),
                                           cache_dir=out, progress=cb)
    n_cal = int(req.setting("calibrate"))
    if req.verify and n_cal > 0:
        from hwnat.latency.model import calibrate

        for d_in, d in canon.items():
            if specs[d] == "table":  # a predictor is fitted on whole networks already; csv/measure are exact
                with phase(f"calibrate the {d} table on {n_cal} whole networks") as cb:
                    models[d] = calibrate(models[d], n_cal, out / f"calibration-{d}.csv", progress=cb,
                                          seed=req.seed, device=d_in)
                log.info("%s: table calibrated on %d networks: %s", d, n_cal, models[d].describe()["calibration"])
    times["latency models (incl. profiling)"] = time.perf_counter() - t1
    obj = Objectives(space, names, models, budgets, req.confidence)
    proxy = _proxy_scale(req) if use_supernet else 1.0
    acc_name = f"supernet:{task.name}" if use_supernet else None
    acc = None
    if not use_supernet:
        from hwnat.search.accuracy import open_table_accuracy

        acc = open_table_accuracy(space, req.accuracy)
        acc_name = acc.name
    settings = SearchSettings(
        space=space.name, devices=devices, budgets_ms=budgets, latency_models=specs,
        objectives=tuple(req.objectives), confidence=req.confidence, accuracy=acc_name,
        initial=req.setting("initial"), iterations=req.setting("iterations"),
        candidates=req.setting("candidates"), picks=req.setting("picks"), pop_size=req.setting("pop_size"),
        generations=req.setting("generations"), adapt=use_supernet, seed=req.seed, proxy_scale=proxy,
        extra={"task": task.record() if task else None, "quick": req.quick, "width": req.width,
               "resolutions": list(getattr(space, "resolutions", []) or [])})
    search = NATSearch(settings, space, obj, acc, out, phase=phase)
    if search.resume() and search.verified:
        refit_calibration(search)  # a finished run: the calibration its verification refitted
    search.check_budgets()  # a budget below the fastest architecture fails before any training

    # ---- the supernet (warm-up once per task/space/width/proxy; reused by later runs) ---------------------
    if use_supernet:
        t1 = time.perf_counter()
        acc = _supernet(req, space, task, proxy, out, phase)
        times["supernet (load or warm-up)"] = time.perf_counter() - t1
        search.acc = acc
        search.checkpoint = _supernet_saver(acc)
    t1 = time.perf_counter()
    result = search.run()
    times["NAT loop (this run)"] = time.perf_counter() - t1
    picks = result.picks
    write_outputs(search, picks)

    # ---- export and verify ----------------------------------------------------------------------------
    from hwnat.search.verify import export_picks

    module_for = _module_for(acc)
    with phase("export picks to ONNX") as cb:
        if cb:
            cb(0, len(picks), "")
        paths = export_picks(space, picks, out / "picks", module_for)
        if cb:
            cb(len(picks), len(picks), "done")
    replaced: list[dict] = []
    if req.verify and picks:
        t1 = time.perf_counter()
        with phase("verify picks on the device") as cb:
            picks, paths, replaced = _verify(search, space, picks, paths, list(canon), budgets, module_for,
                                             out, cb)
        times["verification"] = time.perf_counter() - t1
    write_outputs(search, picks)
    wall = time.perf_counter() - t0
    from hwnat.search.report import plot_pareto, write_report

    plot_pareto(search, picks, out / "pareto.png")
    extra = {"accuracy source state": _short(search.acc.state())} if search.acc is not None else {}
    extra["seconds per phase (this run)"] = ", ".join(f"{k} {v:.0f}" for k, v in times.items())
    for d, m in search.obj.models.items():
        cal = m.describe().get("calibration")
        if cal:
            extra[f"{d} calibration"] = (f"table x {cal['a']:.4f} from {cal['points']} "
                                         f"networks measured end to end (mean error on them "
                                         f"{cal['mean_abs_error_pct_before']}% before, "
                                         f"{cal['mean_abs_error_pct_after']}% after)")
    if replaced:
        extra["replaced picks"] = "; ".join(
            f"{r['arch']} (predicted {r['predicted_ms']:.3f} ms, measured {r['measured_ms']:.3f} ms on {r['device']})"
            for r in replaced) + " measured over the budget and were replaced by the next candidates"
    if req.quick and "resolutions" in space_opts and not req.resolutions:
        extra["quick mode"] = f"resolutions {list(space_opts['resolutions'])} only (smoke test)"
    write_report(search, picks, out / "report.md", verified=req.verify and bool(picks), wall_s=wall, extra=extra)
    result.wall_s = wall
    if not picks:
        raise CheckFailedError(f"no architecture within the budget was found ({out / 'report.md'})")
    if req.verify and not any(p.get("within_budget") for p in picks):
        raise CheckFailedError(f"no pick meets the budget when measured on the device; see {out / 'picks.csv'}")
    return result, search


def _verify(search, space, picks, paths, devices, budgets, module_for, out: Path, progress):
    """Measure the picks on the devices; a pick measured over a budget is replaced by the next candidate of
    the archive (at most ``REPAIR_ROUNDS`` times), after refitting calibrated models with every
    measurement so far. Returns the final picks, their ONNX paths, and the replaced picks."""
    from hwnat.search.verify import export_picks, measure_picks

    measured = search.verified  # arch -> measured_ms_<device>, kept in state.json: a rerun measures nothing again
    replaced: list[dict] = []
    for rnd in range(REPAIR_ROUNDS + 1):
        todo = [(p, path) for p, path in zip(picks, paths, strict=True) if p["arch"] not in measured]
        if todo:
            measure_picks(space, [p for p, _ in todo], [q for _, q in todo], devices, budgets, progress=progress)
            for p, _ in todo:
                measured[p["arch"]] = {k: v for k, v in p.items() if k.startswith("measured_")}
            search.save()
        for p in picks:
            p.update(measured[p["arch"]])
            p["within_budget"] = all(p.get(f"measured_ms_{d}", float("inf")) <= b for d, b in budgets.items())
        over = [p for p in picks if not p["within_budget"]]
        if not over or rnd == REPAIR_ROUNDS:
            break
        for p in over:
            for d, b in budgets.items():
                if p.get(f"measured_ms_{d}", 0) > b:
                    replaced.append({"arch": p["arch"], "device": d, "predicted_ms": p[f"latency_ms_{d}"],
                                     "measured_ms": p[f"measured_ms_{d}"]})
        search.rejected.update(p["arch"] for p in over)
        refit_calibration(search)
        search.save()
        picks = search.select_picks()
        if not picks:
            break
        paths = export_picks(space, picks, out / "picks", module_for)
    return picks, paths, replaced


def refit_calibration(search) -> None:
    """Refit every calibrated latency model on its calibration networks plus every verified pick
    (``search.verified``), and recompute the archive's latencies and feasibility."""
    changed = False
    for d, m in search.obj.models.items():
        if not isinstance(m, CalibratedLatency):
            continue
        known = {a for a, _, _ in m.points}
        extra = [(a, r[f"measured_ms_{d}"]) for a, r in search.verified.items()
                 if f"measured_ms_{d}" in r and a not in known]
        if extra:
            g = np.stack([search.space.encode(search.space.parse(a)) for a, _ in extra])
            base = m.base.ms(g)
            m.refit(m.points + [(a, float(b), ms) for (a, ms), b in zip(extra, base, strict=True)])
            changed = True
    if changed:
        search.refresh_hardware()


def _has_shipped_accuracy(space: str) -> bool:
    from hwnat.data import ACCURACY
    from hwnat.spaces import get_space

    return get_space(space).name in ACCURACY


def _space(name: str, opts: dict):
    from hwnat.spaces import get_space

    accepted = inspect.signature(type(get_space(name)).__init__).parameters
    if "resolutions" in opts and "resolutions" not in accepted:
        raise BadInputError(f"space {name!r} has a fixed input size; --resolution applies to spaces that "
                            "search resolutions")
    return get_space(name, **{k: v for k, v in opts.items() if k in accepted})


def _device_name(device: str, model_spec: str) -> str:
    from hwnat.devices.spec import load_device

    try:
        return load_device(device).name
    except BadInputError:
        if model_spec.startswith("csv:") or model_spec == "predictor":
            return device  # a published dataset's column or a predictor's device: a label, not a device file
        raise


def _proxy_scale(req: SearchRequest) -> float:
    if req.proxy_scale is not None:
        if not 0 < req.proxy_scale <= 1:
            raise BadInputError(f"--proxy-scale {req.proxy_scale}: expected a number in (0, 1]")
        return float(req.proxy_scale)
    from hwnat.search.supernet import CPU_PROXY_SCALE

    return 1.0 if str(req.torch_device).startswith("cuda") else CPU_PROXY_SCALE


def supernet_cache_path(space, task, width: float, proxy: float, epochs: int, seed: int) -> Path:
    """Where a warmed-up supernet is kept for later runs on the same task and space:
    ``supernets/<space>-<task>-c<classes>-n<train images>-w<width>-p<proxy>-e<epochs>-s<seed>-r<recipe>.pt``
    under the current folder (a different training subset, width, proxy scale, epoch count, seed or
    training recipe is another supernet)."""
    from hwnat.search.supernet import RECIPE

    tname = Path(task.name).name.replace(" ", "_")
    n = len(task.y_train)
    return Path("supernets") / (f"{space.name}-{tname}-c{task.classes}-n{n}-w{width:g}-p{proxy:g}-e{epochs}-s{seed}"
                                f"-r{RECIPE}.pt")


def _supernet(req: SearchRequest, space, task, proxy: float, out: Path, phase):
    from hwnat.search.supernet import SupernetAccuracy

    relay = _Relay()
    opts = dict(width=float(req.width), proxy_scale=proxy, seed=req.seed, device=req.torch_device,
                progress=relay, max_val=req.setting("max_val"), adapt_steps=req.setting("adapt_steps"))
    own = out / "supernet.pt"
    if own.exists():  # resuming: the run's own (adapted) supernet
        return SupernetAccuracy(space, task, supernet_path=own, **opts)
    if req.supernet:
        acc = SupernetAccuracy(space, task, supernet_path=req.supernet, **opts)
    else:
        epochs = int(req.setting("warmup_epochs"))
        cache = supernet_cache_path(space, task, req.width, proxy, epochs, req.seed)
        acc = SupernetAccuracy(space, task, **opts)
        with phase(f"supernet warm-up ({epochs} epochs, cached in {cache})") as cb:
            relay.target = cb
            try:
                acc.warm_up(epochs, cache)
            finally:
                relay.target = None
    out.mkdir(parents=True, exist_ok=True)
    acc.save(own)
    return acc


def _supernet_saver(acc):
    """Save ``out/supernet.pt`` with the state, but only when the weights changed since the last save."""
    last = {"version": None}

    def save(folder: Path) -> None:
        if getattr(acc, "version", None) != last["version"] or not (folder / "supernet.pt").exists():
            acc.save(folder / "supernet.pt")
            last["version"] = getattr(acc, "version", None)

    return save


def _module_for(acc):
    """Subnet modules with inherited weights when the source is a supernet (else None: ``space.build``)."""
    nets = getattr(acc, "nets", None)
    if not nets:
        return None

    def build(arch):
        net = nets.get(f"{float(arch.w):.1f}")
        return net.extract(arch) if net is not None else None

    return build


def _short(state: dict) -> str:
    keep = {k: v for k, v in state.items() if not isinstance(v, (dict, list)) or k in ("epochs_done", "proxy_px")}
    return ", ".join(f"{k}={v}" for k, v in keep.items())
