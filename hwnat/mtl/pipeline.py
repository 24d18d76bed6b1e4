"""MTL-NAS end to end: task data -> per-edge latency costs on the device -> baselines and gate search ->
pruning to a latency budget -> measured on the device -> reports. What ``hwnat mtl search|prune`` run.

Implements the pipeline of issue 11 around Gao et al., "MTL-NAS" (CVPR 2020): the gates are searched
(``hwnat.mtl.search``), the network is pruned to the budget by an exact knapsack over the edges and
rebuilt physically without the dropped ones (``hwnat.mtl.prune``), exported to ONNX and timed.

Latency model. Per-edge marginal costs come from the device's latency table of the space
(``hwnat.mtl.prune.edge_costs_ms``; profiled with ``hwnat.latency.profiler.profile_blocks`` when blocks
are missing). A table sum of separately timed small blocks overstates a small network's end-to-end time
(each block pays the runtime's per-call cost), so the costs are fitted to end-to-end measurements on the
same device (``measure_costs``): the no-edge network, the all-edge network and a few random edge sets,
timed in interleaved rounds, and a least-squares line ``predicted_ms(kept) = a + b * sum(table_cost[kept])``
through them (two points: the plain anchor to the two end networks). The table decides how the fusion time
splits over the edges, the measured networks fix the scale; fitting a line through six networks instead of
two averages out the timing noise of any one of them. The RMS residual of the fit is the model's typical
error (``margin_ms``): the knapsack keeps it in reserve below a budget. Right before pruning the fit is
redone on fresh measurements (a search ran for minutes in between) of the networks pruning chooses
among: the no-edge network, the searched one and random subsets of its edges (``local_sets``): on ``cpu``
the line through random edge sets of the whole space mispredicted sparse searched networks by up to 30%
(a few edges can cost nearly nothing there, others much more than the table says). The chosen networks are
then timed in the same interleaved rounds as those calibration networks, and the reported prediction comes
from the fit to that call (the machine's speed drifts between calls; within a call the networks see the
same load); ``predicted_by_choosing_model_ms`` is the earlier fit's. The raw table prediction is reported
next to it (``table_ms``).

Output directory (resumable: trainings checkpoint every epoch under ``checkpoints/``; end-to-end
latencies measured once are kept in ``latency.json``; networks are timed in 5 interleaved rounds and
the least median kept, as load on a shared machine only adds time): ``task.json`` (data recipe and splits),
``searched.pt``, ``edges.json``, ``pruned.pt`` + ``pruned.onnx`` (with a budget), ``report.json``,
``report.md``, ``accuracy_vs_latency.png``, ``gates.png``.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from hwnat.errors import BadInputError, CheckFailedError
from hwnat.mtl.report import to_plain, write_json
from hwnat.mtl.search import Progress, SearchSettings, evaluate, load_checkpoint, save_checkpoint, train
from hwnat.mtl.tasks import MTLData, load_task

log = logging.getLogger(__name__)

SPACE = "mtl-vgg"
#: ``kind`` field of ``searched.pt``
SEARCHED_KIND = "hwnat-mtl-searched"
#: fraction points of the budget sweep between the no-fusion and the all-edges latency
SWEEP = (1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6)
#: interleaved rounds of end-to-end measurements of each network (the least median is kept: on a shared
#: machine load only adds time). 5: on a quiet machine a load spike of a few seconds still covered all 3
#: rounds of a network once in 5 prunes (-10.8% error, benchmarks/README.md); a round costs ~0.3 s a network
REPEATS = 5
#: default epochs (full) and with --quick
EPOCHS, QUICK_EPOCHS = 4, 2
#: random edge sets measured next to the no-edge and all-edge networks to fit the latency model
CALIBRATION_EXTRA = 4
#: most measurement calls of the chosen networks (with the calibration networks in the same rounds): a
#: second one when the model refitted on the first would choose other edges
CHECK_ROUNDS = 2


@dataclass
class Costs:
    """Latency model of the fusion edges on one device (ms).

    ``predict_ms(kept) = base_ms + scale * table_extra(kept)`` (the no-edge network: its own measurement
    ``none_ms`` when there is one; the fitted line runs above it), where ``table_extra`` is the table latency
    the kept edges add: per fusion op, the op with exactly its kept sources minus the op with none
    (``layers``), or, without ``layers``, the sum of the single-edge costs ``table_cost_ms``.

    Attributes:
        base_ms: predicted latency of the network with no fusion edge.
        cost_ms: predicted marginal cost of each candidate edge alone, ``(E,)`` (``scale * table_cost_ms``;
            the search's differentiable expected latency uses it).
        table_base_ms, table_cost_ms: the same straight from the latency table (uncalibrated).
        margin_ms: typical error of the prediction (RMS residual of the calibration fit, 0 with two
            points); the knapsack keeps this much below a budget.
        calibration: the measured networks the model was fitted to (``arch``, ``measured_ms``,
            ``predicted_ms``).
        scale: measured ms per table ms of the fusion ops.
        layers: ``hwnat.mtl.prune.fusion_subset_costs_ms`` of the table (None: the additive model).
        none_ms: measured latency of the no-edge network (None: predict it by the line too).
    """

    base_ms: float
    cost_ms: np.ndarray
    table_base_ms: float
    table_cost_ms: np.ndarray
    margin_ms: float = 0.0
    calibration: list = field(default_factory=list)
    scale: float = 1.0
    layers: list | None = None
    none_ms: float | None = None

    def table_extra_ms(self, kept) -> float:
        """Table latency the kept edges add to the no-edge network (exact per fusion op with ``layers``)."""
        from hwnat.mtl.prune import subset_table_ms

        kept = np.asarray(kept, dtype=bool)
        return subset_table_ms(self.layers, kept) if self.layers else float(self.table_cost_ms[kept].sum())

    def predict_ms(self, kept) -> float:
        if self.none_ms is not None and not np.asarray(kept, dtype=bool).any():
            return float(self.none_ms)
        return float(self.base_ms + self.scale * self.table_extra_ms(kept))

    def table_ms(self, kept) -> float:
        return float(self.table_base_ms + self.table_extra_ms(kept))


def fit_costs(table_base_ms: float, table_cost_ms, kept_sets, measured_ms, layers: list | None = None) -> Costs:
    """Scale the table's fusion costs to end-to-end measurements of several networks.

    Least squares ``measured = a + b * table_extra(kept)`` over the measured networks (with only the
    no-edge and the all-edge network this is the two-point anchor); ``base_ms = a``, ``scale = b >= 0``;
    ``margin_ms`` = RMS residual (``n - 2`` degrees of freedom). The no-edge network, when measured, is
    predicted by its own measurement (``none_ms``): on ``cpu`` it sits ~10-20% below the line through the
    networks with edges (a first source at an op adds a concatenation the table underrates).

    Args:
        kept_sets: one bool mask ``(E,)`` per measured network (the no-edge and the all-edge one among them).
        measured_ms: their measured latencies.
        layers: per-fusion-op subset costs (``hwnat.mtl.prune.fusion_subset_costs_ms``); None: additive.
    """
    table_cost_ms = np.asarray(table_cost_ms, dtype=np.float64)
    unscaled = Costs(0.0, table_cost_ms, float(table_base_ms), table_cost_ms, layers=layers)
    kept_sets = [np.asarray(k, dtype=bool) for k in kept_sets]
    x = np.array([unscaled.table_extra_ms(k) for k in kept_sets])
    y = np.asarray(measured_ms, dtype=np.float64)
    if len(y) < 2 or np.ptp(x) <= 0:
        a, b = float(y.min()), 0.0
    else:
        b, a = np.polyfit(x, y, 1)
        if b < 0:
            a, b = float(y.mean()), 0.0
    pred = a + b * x
    margin = float(np.sqrt(np.sum((y - pred) ** 2) / (len(y) - 2))) if len(y) > 2 else 0.0
    cal = [{"kept_edges": int(k.sum()), "measured_ms": float(m), "predicted_ms": float(p)}
           for k, m, p in zip(kept_sets, y, pred, strict=True)]
    empty = [float(m) for k, m in zip(kept_sets, y, strict=True) if not k.any()]
    return Costs(float(a), table_cost_ms * float(b), float(table_base_ms), table_cost_ms, margin, cal, float(b),
                 layers, empty[0] if empty else None)


def calibration_sets(n_edges: int, extra: int = CALIBRATION_EXTRA, seed: int = 0) -> dict[str, np.ndarray]:
    """The networks the latency model is fitted to: no edge, every edge, and ``extra`` random edge sets of
    evenly spread densities (fixed by ``seed``). Name -> kept mask."""
    rng = np.random.default_rng(seed)
    sets = {"none": np.zeros(n_edges, bool), "all": np.ones(n_edges, bool)}
    for k in range(extra):
        sets[f"random_{k}"] = rng.random(n_edges) < (k + 1) / (extra + 1)
    return sets


def local_sets(searched: np.ndarray, extra: int = CALIBRATION_EXTRA - 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Calibration networks around a search result: no edge, the searched edges, and ``extra`` random
    subsets of them of evenly spread densities. Every network pruning can choose is such a subset, so a
    line fitted to these interpolates where it predicts. Name -> kept mask."""
    rng = np.random.default_rng(seed)
    searched = np.asarray(searched, dtype=bool)
    on = np.flatnonzero(searched)
    sets = {"none": np.zeros(len(searched), bool), "searched_set": searched.copy()}
    seen = {m.tobytes() for m in sets.values()}
    for k in range(extra):
        # a subset of (k + 1) / (extra + 1) of the searched edges, at least one, none already measured (an
        # empty draw would time the no-edge network twice); fewer when the searched set has too few subsets
        size = min(max(int(round((k + 1) / (extra + 1) * len(on))), 1), max(len(on) - 1, 0))
        for _ in range(20 if size else 0):
            mask = np.zeros(len(searched), bool)
            mask[rng.choice(on, size, replace=False)] = True
            if mask.tobytes() not in seen:
                sets[f"subset_{k}"] = mask
                seen.add(mask.tobytes())
                break
    return sets


def measure_costs(space, timer: Timer, table: tuple, prefix: str = "", fresh: bool = False,
                  more: dict | None = None, sets: dict | None = None, keep: dict | None = None) -> tuple[Costs, dict]:
    """Measure the calibration networks (``calibration_sets``) interleaved and fit the latency model.

    Args:
        table: ``(table_base_ms, table_cost_ms, layers)`` from the device's latency table.
        prefix: names them ``PREFIX`` + ``none``, ... in ``latency.json`` (the start of a run and its end
            keep separate entries, so a resumed run sees the costs its search was trained with).
        more: other networks (name -> module) to time in the same rounds.
        sets: the calibration networks (name -> kept mask; default ``calibration_sets``).
        keep: name -> path: also write that network's ONNX file there (``Timer.measure_many``).

    Returns:
        ``(costs, entries)``: the fitted model, and the measurement entries by name (calibration networks
        under ``PREFIX`` + their set name, then ``more``).
    """
    sets = sets if sets is not None else calibration_sets(len(space.edges()))
    nets = {prefix + n: space.build(space.decode(k.astype(np.int64))) for n, k in sets.items()}
    entries = timer.measure_many({**nets, **(more or {})}, space.input_shape(), keep=keep, fresh=fresh)
    costs = fit_costs(table[0], table[1], list(sets.values()), [entries[prefix + n]["median_ms"] for n in sets],
                      table[2])
    for row, n in zip(costs.calibration, sets, strict=True):
        row["arch"] = space.format(space.decode(sets[n].astype(np.int64)))
    return costs, entries


def open_space(data: MTLData, options: dict | None = None):
    """The ``mtl-vgg`` space sized for the data (K tasks, their classes, the image shape)."""
    from hwnat.spaces import get_space

    opts = {"classes": list(data.classes), "in_shape": list(data.in_shape), **(options or {})}
    return get_space(SPACE, **opts), opts


def ensure_table(space, device, table_path=None, progress: Progress | None = None):
    """The device's latency table of the space, with every block of this space measured (resumable)."""
    from hwnat.latency.profiler import profile_blocks
    from hwnat.latency.table import LatencyTable, default_table_path, find_table

    path = Path(table_path) if table_path else None
    blocks = space.all_blocks()
    if path is None:
        found = find_table(device.name, space.name)
        if found is not None:
            table = LatencyTable.load(found, space=space.name, device=device.name)
            if all(b.key in table.entries for b in blocks):
                return table
        path = default_table_path(device.name, space.name)
    return profile_blocks(space, device, blocks, path, progress=progress)


class Timer:
    """End-to-end measurements of whole networks on one device, kept in ``latency.json`` (resume reuses
    them, so a resumed search sees the same calibrated costs).

    Each network is timed ``repeats`` times with the device's protocol and the run with the least median
    is kept: on a shared machine other load only ever adds time.
    """

    def __init__(self, device, out: Path, repeats: int = REPEATS):
        self.device, self.path, self.repeats = device, out / "latency.json", max(int(repeats), 1)
        self.cache: dict = {}
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text())
            except (OSError, json.JSONDecodeError):
                data = {}
            if data.get("device") == device.name:
                self.cache = data.get("networks", {})

    def measure(self, name: str, module, input_shape, keep: Path | None = None, fresh: bool = False) -> dict:
        """Median and spread (ms) of ``module`` on the device; ``keep``: also write the ONNX file there."""
        return self.measure_many({name: module}, input_shape, {name: keep} if keep else None, fresh)[name]

    def measure_many(self, modules: dict, input_shape, keep: dict | None = None, fresh: bool = False) -> dict:
        """Time several networks, interleaved: each of ``repeats`` rounds times every network once, so a
        change of load between rounds hits them alike; per network the least round median is kept.

        Args:
            modules: name -> module; a name already in ``latency.json`` is not timed again unless
                ``fresh`` (or listed in ``keep``).
            keep: name -> path: also write that network's ONNX file there.

        Returns:
            name -> entry (``median_ms``, spread, ``repeat_medians_ms``), in the order of ``modules``.
        """
        from hwnat.export import export_for_format
        from hwnat.export.onnx import export_onnx

        keep = keep or {}
        todo = [n for n in modules if fresh or n in keep or n not in self.cache]
        if todo:
            runs: dict[str, list] = {n: [] for n in todo}
            with tempfile.TemporaryDirectory(prefix="hwnat-mtl-") as tmp:
                files = {}
                for n in todo:
                    if n in keep:
                        export_onnx(modules[n], input_shape, keep[n])
                    if self.device.model_format == "onnx":
                        files[n] = keep.get(n) or export_onnx(modules[n], input_shape, Path(tmp) / f"{n}.onnx")
                    else:
                        files[n] = export_for_format(self.device.model_format, modules[n], input_shape,
                                                     Path(tmp) / n)
                for _ in range(self.repeats):
                    for n in todo:
                        runs[n].append(self.device.measure(str(files[n]), tuple(input_shape)))
            for n, rs in runs.items():
                m = min(rs, key=lambda r: r.median_ms)
                entry = {k: float(v) for k, v in m.summary().items() if isinstance(v, (int, float))}
                entry["repeat_medians_ms"] = [float(r.median_ms) for r in rs]
                self.cache[n] = entry
            write_json(self.path, {"device": self.device.name, "networks": self.cache})
        return {n: self.cache[n] for n in modules}


def check_budget(budget_ms: float | None, no_fusion_ms: float) -> None:
    """Refuse a budget below the cheapest network (the one without fusion edges)."""
    if budget_ms is None:
        return
    if not budget_ms > 0:
        raise BadInputError(f"--latency-ms {budget_ms}: expected a positive number of milliseconds")
    if budget_ms < no_fusion_ms:
        raise BadInputError(f"--latency-ms {budget_ms:g}: no network reaches this budget: the network with no "
                            f"fusion edge measures {no_fusion_ms:.4g} ms on this device; give at least that")


def anchor(space, dev, out: Path, table, budget_ms: float | None, progress: Progress | None = None):
    """Per-edge costs on the device: the table (profiled where blocks are missing) fitted to measured
    networks (``measure_costs``); refuses a budget below the no-fusion latency before timing the rest.

    Returns:
        ``(timer, costs, latency_ms)`` with ``latency_ms`` of ``single_task``, ``no_fusion``, ``all_edges``.
    """
    from hwnat.mtl.prune import edge_costs_ms, fusion_subset_costs_ms

    lut = ensure_table(space, dev, table, progress)
    timer = Timer(dev, out)
    no_fusion = timer.measure("none", space.build("none"), space.input_shape())["median_ms"]
    check_budget(budget_ms, no_fusion)
    costs, entries = measure_costs(space, timer, (*edge_costs_ms(space, lut), fusion_subset_costs_ms(space, lut)),
                                   more={"backbones": space.build_backbones()})
    return timer, costs, {"single_task": entries["backbones"]["median_ms"], "no_fusion": no_fusion,
                          "all_edges": entries["all"]["median_ms"]}


def choose_edges(gates: np.ndarray, costs: Costs, budget_ms: float) -> np.ndarray:
    """Kept edges at a budget: the exact knapsack over the edges the search kept (gate >= 0.5; the others
    were trained towards 0 and never come back), value = gate, cost = predicted ms, capacity =
    ``budget_ms - base_ms - margin_ms`` (the model's typical error is kept in reserve). With per-fusion-op
    costs (``costs.layers``) it is the multiple-choice knapsack over the fusion ops, each choosing one
    subset of its searched sources at that op's own cost; else the 0/1 knapsack over the edges."""
    from hwnat.mtl.prune import group_knapsack, knapsack

    searched = np.flatnonzero(gates >= 0.5)
    kept = np.zeros(len(gates), dtype=bool)
    room = budget_ms - costs.base_ms - costs.margin_ms
    if not len(searched) or room < 0:  # below the base (noisy anchors): nothing fits
        return kept
    if not costs.layers:
        kept[searched] = knapsack(gates[searched], costs.cost_ms[searched], room)
        return kept
    groups, masks = [], []
    for cand, extra in costs.layers:
        bits = [k for k, n in enumerate(cand) if gates[n] >= 0.5]
        opts = [sum(2 ** bits[j] for j in range(len(bits)) if sub >> j & 1) for sub in range(2 ** len(bits))]
        masks.append(opts)
        groups.append([(float(sum(gates[cand[k]] for k in range(len(cand)) if m >> k & 1)),
                        max(costs.scale * float(extra[m]), 0.0)) for m in opts])
    for (cand, _), opts, j in zip(costs.layers, masks, group_knapsack(groups, room), strict=True):
        for k, n in enumerate(cand):
            kept[n] = bool(opts[j] >> k & 1)
    return kept


def _load_net(space, state_dict):
    net = space.build("all")
    net.load_state_dict(state_dict)
    return net.eval()


def _rebuild(space, full, kept):
    from hwnat.mtl.prune import rebuild

    return rebuild(full, space, [bool(k) for k in kept]).eval()


# ---- search -------------------------------------------------------------------------------------------

def run_search(task: str = "multimnist", device: str = "cpu", budget_ms: float | None = None,
               out: str | Path = "mtl_search", quick: bool = False, seed: int = 0,
               settings: SearchSettings | None = None, table: str | Path | None = None,
               progress: Progress | None = None, sweep: bool = True, threads: int | None = None) -> dict:
    """Search fusion gates on ``task``, train the baselines, and (with a budget) prune into ``out``.

    Args:
        threads: torch intra-op threads for training (None: torch's default, every core; 1 on a machine
            that other jobs load, where threads waiting for each other cost more than they give).

    Returns:
        The report (also written to ``out/report.json``).

    Raises:
        BadInputError: bad task data, K < 2, a budget below the no-fusion network's latency.
        CheckFailedError: the pruned network measures over the budget (after writing every output).
        DeviceError: the device failed.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_task(task, seed=seed, quick=quick)
    write_json(out / "task.json", data.record())
    space, space_opts = open_space(data)
    settings = settings or SearchSettings(epochs=QUICK_EPOCHS if quick else EPOCHS, seed=seed)
    if budget_ms is not None and not budget_ms > 0:
        raise BadInputError(f"--latency-ms {budget_ms}: expected a positive number of milliseconds")
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(max(int(threads), 1))
    try:
        return _search(out, data, space, space_opts, settings, device, budget_ms, seed, table, progress, sweep)
    finally:
        torch.set_num_threads(before)


def _search(out, data, space, space_opts, settings, device, budget_ms, seed, table, progress, sweep) -> dict:
    from hwnat.devices.device import open_device

    clock = PhaseClock()
    with open_device(device) as dev:
        with clock("anchors"):
            timer, costs, latency = anchor(space, dev, out, table, budget_ms, progress)
        n_edges = len(space.edges())
        ck = out / "checkpoints"
        torch.manual_seed(seed)
        with clock("train_single_task"):
            single = train(space.build_backbones(), data, settings, "fixed", checkpoint=ck / "backbones.pt",
                           progress=progress, label="single-task")
        torch.manual_seed(seed)
        with clock("train_all_edges"):
            full = train(space.build("all"), data, settings, "fixed", checkpoint=ck / "all_edges.pt",
                         progress=progress, label="all edges")
        torch.manual_seed(seed)
        with clock("search"):
            run = train(space.build("all"), data, settings, "search", n_edges=n_edges,
                        costs=(costs.base_ms, costs.cost_ms) if budget_ms is not None else None,
                        budget_ms=budget_ms, checkpoint=ck / "search.pt", progress=progress, label="search")
        gates = run.gates
        discrete = (gates >= 0.5).astype(np.float64)
        with clock("evaluate"):
            accuracy = {"single_task": evaluate(single.net, data), "all_edges": evaluate(full.net, data),
                        "searched_relaxed": evaluate(run.net, data, gates=gates),
                        "searched": evaluate(run.net, data, gates=discrete)}
        results = {"accuracy": accuracy, "latency_ms": latency,
                   "losses": {"single_task": single.losses, "all_edges": full.losses, "search": run.losses}}
        searched = {"kind": SEARCHED_KIND, "version": 1, "space": space.name, "space_options": space_opts,
                    "task": data.recipe, "settings": asdict(settings), "device": dev.name,
                    "budget_ms": budget_ms, "state_dict": run.net.state_dict(),
                    "alpha": torch.as_tensor(run.alpha), "gate_history": torch.tensor(run.gate_history),
                    "history_epochs": torch.tensor(run.history_epochs), "results": to_plain(results)}
        save_checkpoint(out / "searched.pt", searched)
        return finish(out, space, data, dev, timer, costs, run.net, gates, searched, budget_ms, sweep=sweep,
                      clock=clock)


class PhaseClock:
    """Wall and CPU seconds of the phases of a run (``with clock("name"): ...``), for the report: on a
    shared machine wall time includes waiting for a core, CPU time does not."""

    def __init__(self):
        self.phases: dict[str, dict[str, float]] = {}

    @contextmanager
    def __call__(self, name: str):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.phases[name] = {"wall_s": round(time.perf_counter() - wall, 2),
                                 "cpu_s": round(time.process_time() - cpu, 2)}


# ---- prune --------------------------------------------------------------------------------------------

def load_searched(path: str | Path) -> dict:
    """Read ``searched.pt`` (weights only) and check it is an ``mtl-vgg`` search result.

    Raises:
        BadInputError: not a search result, or a model of another space.
    """
    state = load_checkpoint(path, "searched model")
    if state.get("kind") != SEARCHED_KIND:
        space = state.get("space")
        if space is not None and space != SPACE:
            raise BadInputError(f"{path}: a model of space {space!r}; `hwnat mtl prune` takes an {SPACE} "
                                "search result (searched.pt from `hwnat mtl search`)")
        raise BadInputError(f"{path}: not an `hwnat mtl search` result (no kind={SEARCHED_KIND!r}); expected "
                            "DIR/searched.pt")
    if state.get("space") != SPACE:
        raise BadInputError(f"{path}: a model of space {state.get('space')!r}; `hwnat mtl prune` takes an "
                            f"{SPACE} search result")
    for k in ("space_options", "task", "state_dict", "alpha"):
        if k not in state:
            raise BadInputError(f"{path}: field {k!r} missing from the search result")
    return state


def run_prune(model: str | Path, budget_ms: float, device: str = "cpu", out: str | Path = "mtl_pruned",
              table: str | Path | None = None, progress: Progress | None = None, sweep: bool = True) -> dict:
    """Prune a search result (``searched.pt``) to ``budget_ms`` on ``device`` into ``out``.

    Raises:
        BadInputError: a bad model file, its task data gone, a budget below the no-fusion latency.
        CheckFailedError: the pruned network measures over the budget (after writing every output).
    """
    from hwnat.devices.device import open_device
    from hwnat.spaces import get_space

    state = load_searched(model)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    recipe = dict(state["task"])
    data = load_task(recipe.pop("task"), **recipe)
    space = get_space(SPACE, **state["space_options"])
    try:
        net = _load_net(space, state["state_dict"])
    except RuntimeError as e:
        raise BadInputError(f"{model}: weights do not fit the recorded {SPACE} space: "
                            f"{str(e).splitlines()[0]}") from None
    alpha = np.asarray(state["alpha"], dtype=np.float64)
    if alpha.shape != (len(space.edges()),):
        raise BadInputError(f"{model}: {alpha.shape} gate logits; the space has {len(space.edges())} edges")
    gates = 1.0 / (1.0 + np.exp(-alpha))
    with open_device(device) as dev:
        timer, costs, latency = anchor(space, dev, out, table, budget_ms, progress)
        state["results"] = {**(state.get("results") or {}), "latency_ms": latency}
        return finish(out, space, data, dev, timer, costs, net, gates, state, budget_ms, sweep=sweep)


# ---- shared tail: prune, measure, report -----------------------------------------------------------

def finish(out: Path, space, data: MTLData, dev, timer: Timer, costs: Costs, full, gates: np.ndarray,
           searched: dict, budget_ms: float | None, sweep: bool = True, clock: PhaseClock | None = None) -> dict:
    """Measure the searched network, prune to the budget and a sweep of budgets, write every report.

    The latency model is fitted again on fresh measurements (``measure_costs``, names ``final_*``) just
    before the edges are chosen; then every network chosen is exported and timed in interleaved rounds
    together with the calibration networks (names ``check_*``), and the model is fitted once more on those:
    the reported prediction of a chosen network comes from networks timed under the same load as it (on a
    shared machine the speed drifts 10-30% between calls seconds apart), never from its own measurement.
    When that refit would choose other edges, the new choice is measured the same way (``CHECK_ROUNDS``).
    """
    from hwnat.mtl import report as rep

    clock = clock or PhaseClock()
    with clock("prune_and_measure"):
        report, kept, costs = _prune_and_measure(out, space, data, dev, timer, costs, full, gates, searched,
                                                 budget_ms, sweep)
    report["phases"] = clock.phases
    rep.write_edges(out / "edges.json", space, gates, costs, kept)
    rep.write_report(out, report, searched)
    if budget_ms is not None and not report["within_budget"]:
        raise CheckFailedError(f"the pruned network measures {report['measured_ms']:.4g} ms on {dev.name}, over "
                               f"the budget of {budget_ms:g} ms (predicted {report['predicted_ms']:.4g} ms); "
                               f"outputs are in {out}")
    return report


def _prune_and_measure(out, space, data, dev, timer, costs, full, gates, searched, budget_ms, sweep):
    """``finish`` up to the reports: ``(report, kept edges or None, the refitted costs)``."""
    res = searched.get("results") or {}
    lat = dict(res.get("latency_ms") or {})
    acc = dict(res.get("accuracy") or {})
    discrete = gates >= 0.5
    costs, entries = measure_costs(space, timer, (costs.table_base_ms, costs.table_cost_ms, costs.layers),
                                   prefix="final_", fresh=True, sets=local_sets(discrete),
                                   more={"final_all": space.build("all")})
    no_ms, all_ms = entries["final_none"]["median_ms"], entries["final_all"]["median_ms"]
    lat.update({"no_fusion": no_ms, "all_edges": all_ms})
    searched_net = _rebuild(space, full, discrete)
    budgets = [no_ms + f * (all_ms - no_ms) for f in SWEEP] if sweep else []
    targets = ({"pruned": budget_ms} if budget_ms is not None else {}) | \
        {f"sweep_{n}": b for n, b in enumerate(budgets)}  # chosen network -> its budget
    keep = {"pruned": out / "pruned.onnx"} if budget_ms is not None else {}
    chosen_by = costs  # the model whose choice is measured
    for rnd in range(CHECK_ROUNDS):
        picks = {n: choose_edges(gates, chosen_by, b) for n, b in targets.items()}
        nets = {"searched": searched_net, **{n: _rebuild(space, full, k) for n, k in picks.items()}}
        if budget_ms is not None:
            nets["masked"] = MaskedNet(full, picks["pruned"]).eval()
        # the calibration networks again, in the same interleaved rounds as the chosen ones: the prediction
        # of a chosen network is then made by a model fitted to other networks timed under the same load
        costs, measured = measure_costs(space, timer, (costs.table_base_ms, costs.table_cost_ms, costs.layers),
                                        prefix="check_", fresh=True, sets=local_sets(discrete), more=nets,
                                        keep=keep)
        if rnd == CHECK_ROUNDS - 1 or all((choose_edges(gates, costs, b) == picks[n]).all()
                                          for n, b in targets.items()):
            break  # the last call, or the model fitted with the measurement chooses what was measured
        chosen_by = costs  # (only when another call measures what it chooses)
    lat["searched"] = measured["searched"]["median_ms"]
    acc.setdefault("searched", evaluate(searched_net, data))
    report = {"space": space.name, "space_options": searched.get("space_options"), "device": dev.name,
              "task": data.name, "tasks": list(data.task_names), "n_edges": int(len(gates)),
              "no_fusion_ms": no_ms, "all_edges_ms": all_ms, "searched_ms": lat["searched"],
              "searched_arch": space.format(space.decode(discrete.astype(np.int64))),
              "searched_predicted_ms": costs.predict_ms(discrete),
              "gates_near_binary": float(np.mean(np.minimum(gates, 1 - gates) <= 0.05)),
              "accuracy": acc, "latency_ms": lat, "search_budget_ms": searched.get("budget_ms"),
              "latency_model": f"per-fusion-op table costs fitted to {len(costs.calibration)} networks measured "
                               f"in the same interleaved rounds as the chosen ones (no edge, the searched "
                               f"edges, random subsets of them; "
                               f"least squares), margin {costs.margin_ms:.3g} ms",
              "latency_margin_ms": costs.margin_ms, "calibration": costs.calibration,
              "choosing_model_margin_ms": chosen_by.margin_ms,
              "timing_repeats": timer.repeats, "fingerprint": dev.fingerprint()}
    kept = None
    if budget_ms is not None:
        kept = picks["pruned"]
        m, mm = measured["pruned"], measured["masked"]
        acc["pruned"] = evaluate(nets["pruned"], data)
        lat["pruned"] = m["median_ms"]
        save_checkpoint(out / "pruned.pt", {"kind": "hwnat-mtl-pruned", "space": space.name,
                                            "space_options": searched.get("space_options"),
                                            "arch": space.format(space.decode(kept.astype(np.int64))),
                                            "state_dict": nets["pruned"].state_dict()})
        report.update({"budget_ms": float(budget_ms), "predicted_ms": costs.predict_ms(kept),
                       "predicted_by_choosing_model_ms": chosen_by.predict_ms(kept),
                       "table_ms": costs.table_ms(kept), "measured_ms": m["median_ms"],
                       "measured_p10_ms": m.get("p10_ms"), "measured_p90_ms": m.get("p90_ms"),
                       "measured_repeats_ms": m["repeat_medians_ms"],
                       "masked_ms": mm["median_ms"], "arch": space.format(space.decode(kept.astype(np.int64))),
                       "kept_edges": int(kept.sum()), "within_budget": bool(m["median_ms"] <= budget_ms)})
    if sweep:
        report["sweep"] = []
        for n, b in enumerate(budgets):
            k = picks[f"sweep_{n}"]
            report["sweep"].append({"budget_ms": b, "kept_edges": int(k.sum()), "predicted_ms": costs.predict_ms(k),
                                    "predicted_by_choosing_model_ms": chosen_by.predict_ms(k),
                                    "table_ms": costs.table_ms(k), "measured_ms": measured[f"sweep_{n}"]["median_ms"],
                                    "accuracy": evaluate(nets[f"sweep_{n}"], data),
                                    "arch": space.format(space.decode(k.astype(np.int64)))})
    return report, kept, costs


class MaskedNet(torch.nn.Module):
    """The full network with the dropped edges multiplied by zero (what the released MTL-NAS code runs):
    it computes what the pruned one does, at the full network's cost."""

    def __init__(self, full, kept):
        super().__init__()
        self.net = full
        self.register_buffer("gates", torch.as_tensor(np.asarray(kept, dtype=np.float32)))

    def forward(self, x):
        return self.net(x, gates=self.gates)
