"""MTL-NAS end to end: task data -> per-edge latency costs on the device -> baselines and gate search ->
pruning to a latency budget -> measured on the device -> reports. What ``hwnat mtl search|prune`` run.

Implements the pipeline of issue 11 around Gao et al., "MTL-NAS" (CVPR 2020): the gates are searched
(``hwnat.mtl.search``), the network is pruned to the budget by an exact knapsack over the edges and
rebuilt physically without the dropped ones (``hwnat.mtl.prune``), exported to ONNX and timed.

Latency model. Per-edge marginal costs come from the device's latency table of the space
(``hwnat.mtl.prune.edge_costs_ms``; profiled with ``hwnat.latency.profiler.profile_blocks`` when blocks
are missing). A table sum of separately timed small blocks overstates a small network's end-to-end time
(each block pays the runtime's per-call cost), so the costs are anchored to two end-to-end measurements
on the same device: ``predicted_ms(kept) = no_fusion_ms + (all_edges_ms - no_fusion_ms) *
sum(cost[kept]) / sum(cost)``; the table decides how the fusion time splits over the edges, the two
measured networks fix the scale. The raw table prediction is reported next to it (``table_ms``).

Output directory (resumable: trainings checkpoint every epoch under ``checkpoints/``; end-to-end
latencies measured once are kept in ``latency.json``; each network is timed 3 times and the least median
kept, as load on a shared machine only adds time): ``task.json`` (data recipe and splits),
``searched.pt``, ``edges.json``, ``pruned.pt`` + ``pruned.onnx`` (with a budget), ``report.json``,
``report.md``, ``accuracy_vs_latency.png``, ``gates.png``.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict, dataclass
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
#: end-to-end measurements of each network (the least median is kept)
REPEATS = 3
#: default epochs (full) and with --quick
EPOCHS, QUICK_EPOCHS = 4, 2


@dataclass
class Costs:
    """Latency model of the fusion edges on one device (ms).

    Attributes:
        base_ms: predicted latency of the network with no fusion edge.
        cost_ms: predicted marginal cost of each candidate edge, ``(E,)``.
        table_base_ms, table_cost_ms: the same straight from the latency table (uncalibrated).
    """

    base_ms: float
    cost_ms: np.ndarray
    table_base_ms: float
    table_cost_ms: np.ndarray

    def predict_ms(self, kept) -> float:
        return float(self.base_ms + self.cost_ms[np.asarray(kept, dtype=bool)].sum())

    def table_ms(self, kept) -> float:
        return float(self.table_base_ms + self.table_cost_ms[np.asarray(kept, dtype=bool)].sum())


def calibrate(table_base_ms: float, table_cost_ms, no_fusion_ms: float, all_edges_ms: float) -> Costs:
    """Anchor table costs to the two measured networks (see the module docstring)."""
    table_cost_ms = np.asarray(table_cost_ms, dtype=np.float64)
    total = float(table_cost_ms.sum())
    scale = (all_edges_ms - no_fusion_ms) / total if total > 0 else 0.0
    cost = table_cost_ms * max(scale, 0.0)
    return Costs(float(no_fusion_ms), cost, float(table_base_ms), table_cost_ms)


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
        from hwnat.export.onnx import export_onnx
        from hwnat.latency.profiler import measure_module

        if name in self.cache and not fresh and keep is None:
            return self.cache[name]
        with tempfile.TemporaryDirectory(prefix="hwnat-mtl-") as tmp:
            if keep is not None:
                export_onnx(module, input_shape, keep)
            if self.device.model_format == "onnx":
                path = keep or export_onnx(module, input_shape, Path(tmp) / "net.onnx")
                runs = [self.device.measure(str(path), tuple(input_shape)) for _ in range(self.repeats)]
            else:
                runs = [measure_module(self.device, module, input_shape, Path(tmp), "net")
                        for _ in range(self.repeats)]
        m = min(runs, key=lambda r: r.median_ms)
        entry = {k: float(v) for k, v in m.summary().items() if isinstance(v, (int, float))}
        entry["repeat_medians_ms"] = [float(r.median_ms) for r in runs]
        self.cache[name] = entry
        write_json(self.path, {"device": self.device.name, "networks": self.cache})
        return entry


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
    """Per-edge costs on the device: the table (profiled where blocks are missing) anchored to the
    measured no-fusion and all-edges networks; refuses a budget below the no-fusion latency.

    Returns:
        ``(timer, costs, latency_ms)`` with ``latency_ms`` of ``single_task``, ``no_fusion``, ``all_edges``.
    """
    from hwnat.mtl.prune import edge_costs_ms

    lut = ensure_table(space, dev, table, progress)
    timer = Timer(dev, out)
    shape = space.input_shape()
    no_fusion = timer.measure("no_fusion", space.build("none"), shape)["median_ms"]
    check_budget(budget_ms, no_fusion)
    all_edges = timer.measure("all_edges", space.build("all"), shape)["median_ms"]
    backbones = timer.measure("backbones", space.build_backbones(), shape)["median_ms"]
    costs = calibrate(*edge_costs_ms(space, lut), no_fusion, all_edges)
    return timer, costs, {"single_task": backbones, "no_fusion": no_fusion, "all_edges": all_edges}


def choose_edges(gates: np.ndarray, costs: Costs, budget_ms: float) -> np.ndarray:
    """Kept edges at a budget: the exact knapsack over the edges the search kept (gate >= 0.5; the others
    were trained towards 0 and never come back), value = gate, cost = predicted marginal ms, capacity =
    ``budget_ms - base_ms``."""
    from hwnat.mtl.prune import knapsack

    searched = np.flatnonzero(gates >= 0.5)
    kept = np.zeros(len(gates), dtype=bool)
    if len(searched) and budget_ms >= costs.base_ms:  # below the base (noisy anchors): nothing fits
        kept[searched] = knapsack(gates[searched], costs.cost_ms[searched], budget_ms - costs.base_ms)
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
               progress: Progress | None = None, sweep: bool = True) -> dict:
    """Search fusion gates on ``task``, train the baselines, and (with a budget) prune into ``out``.

    Returns:
        The report (also written to ``out/report.json``).

    Raises:
        BadInputError: bad task data, K < 2, a budget below the no-fusion network's latency.
        CheckFailedError: the pruned network measures over the budget (after writing every output).
        DeviceError: the device failed.
    """
    from hwnat.devices.device import open_device

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_task(task, seed=seed, quick=quick)
    write_json(out / "task.json", data.record())
    space, space_opts = open_space(data)
    settings = settings or SearchSettings(epochs=QUICK_EPOCHS if quick else EPOCHS, seed=seed)
    if budget_ms is not None and not budget_ms > 0:
        raise BadInputError(f"--latency-ms {budget_ms}: expected a positive number of milliseconds")
    with open_device(device) as dev:
        timer, costs, latency = anchor(space, dev, out, table, budget_ms, progress)
        n_edges = len(space.edges())
        ck = out / "checkpoints"
        torch.manual_seed(seed)
        single = train(space.build_backbones(), data, settings, "fixed", checkpoint=ck / "backbones.pt",
                       progress=progress, label="single-task")
        torch.manual_seed(seed)
        full = train(space.build("all"), data, settings, "fixed", checkpoint=ck / "all_edges.pt",
                     progress=progress, label="all edges")
        torch.manual_seed(seed)
        run = train(space.build("all"), data, settings, "search", n_edges=n_edges,
                    costs=(costs.base_ms, costs.cost_ms) if budget_ms is not None else None,
                    budget_ms=budget_ms, checkpoint=ck / "search.pt", progress=progress, label="search")
        gates = run.gates
        discrete = (gates >= 0.5).astype(np.float64)
        results = {
            "accuracy": {"single_task": evaluate(single.net, data), "all_edges": evaluate(full.net, data),
                         "searched_relaxed": evaluate(run.net, data, gates=gates),
                         "searched": evaluate(run.net, data, gates=discrete)},
            "latency_ms": latency,
            "losses": {"single_task": single.losses, "all_edges": full.losses, "search": run.losses},
        }
        searched = {"kind": SEARCHED_KIND, "version": 1, "space": space.name, "space_options": space_opts,
                    "task": data.recipe, "settings": asdict(settings), "device": dev.name,
                    "budget_ms": budget_ms, "state_dict": run.net.state_dict(),
                    "alpha": torch.as_tensor(run.alpha), "gate_history": torch.tensor(run.gate_history),
                    "history_epochs": torch.tensor(run.history_epochs), "results": to_plain(results)}
        save_checkpoint(out / "searched.pt", searched)
        return finish(out, space, data, dev, timer, costs, run.net, gates, searched, budget_ms, sweep=sweep)


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
           searched: dict, budget_ms: float | None, sweep: bool = True) -> dict:
    """Measure the searched network, prune to the budget and a sweep of budgets, write every report."""
    from hwnat.mtl import report as rep

    shape = space.input_shape()
    res = searched.get("results") or {}
    lat = dict(res.get("latency_ms") or {})
    acc = dict(res.get("accuracy") or {})
    no_ms, all_ms = lat["no_fusion"], lat["all_edges"]
    discrete = gates >= 0.5
    searched_net = _rebuild(space, full, discrete)
    lat["searched"] = timer.measure("searched", searched_net, shape, fresh=True)["median_ms"]
    acc.setdefault("searched", evaluate(searched_net, data))
    report = {"space": space.name, "space_options": searched.get("space_options"), "device": dev.name,
              "task": data.name, "tasks": list(data.task_names), "n_edges": int(len(gates)),
              "no_fusion_ms": no_ms, "all_edges_ms": all_ms, "searched_ms": lat["searched"],
              "searched_arch": space.format(space.decode(discrete.astype(np.int64))),
              "searched_predicted_ms": costs.predict_ms(discrete),
              "gates_near_binary": float(np.mean(np.minimum(gates, 1 - gates) <= 0.05)),
              "accuracy": acc, "latency_ms": lat, "search_budget_ms": searched.get("budget_ms"),
              "latency_model": "table costs anchored to measured no-fusion and all-edges networks",
              "fingerprint": dev.fingerprint()}
    kept = None
    if budget_ms is not None:
        kept = choose_edges(gates, costs, budget_ms)
        pruned = _rebuild(space, full, kept)
        m = timer.measure("pruned", pruned, shape, keep=out / "pruned.onnx", fresh=True)
        masked = MaskedNet(full, kept).eval()
        mm = timer.measure("masked", masked, shape, fresh=True)
        acc["pruned"] = evaluate(pruned, data)
        lat["pruned"] = m["median_ms"]
        save_checkpoint(out / "pruned.pt", {"kind": "hwnat-mtl-pruned", "space": space.name,
                                            "space_options": searched.get("space_options"),
                                            "arch": space.format(space.decode(kept.astype(np.int64))),
                                            "state_dict": pruned.state_dict()})
        report.update({"budget_ms": float(budget_ms), "predicted_ms": costs.predict_ms(kept),
                       "table_ms": costs.table_ms(kept), "measured_ms": m["median_ms"],
                       "measured_p10_ms": m.get("p10_ms"), "measured_p90_ms": m.get("p90_ms"),
                       "masked_ms": mm["median_ms"], "arch": space.format(space.decode(kept.astype(np.int64))),
                       "kept_edges": int(kept.sum()), "within_budget": bool(m["median_ms"] <= budget_ms)})
    if sweep:
        report["sweep"] = []
        for f in SWEEP:
            b = no_ms + f * (all_ms - no_ms)
            k = choose_edges(gates, costs, b)
            net = _rebuild(space, full, k)
            m = timer.measure(f"sweep_{f:.3f}", net, shape, fresh=True)
            report["sweep"].append({"budget_ms": b, "kept_edges": int(k.sum()), "predicted_ms": costs.predict_ms(k),
                                    "table_ms": costs.table_ms(k), "measured_ms": m["median_ms"],
                                    "accuracy": evaluate(net, data),
                                    "arch": space.format(space.decode(k.astype(np.int64)))})
    rep.write_edges(out / "edges.json", space, gates, costs, kept)
    rep.write_report(out, report, searched)
    if budget_ms is not None and not report["within_budget"]:
        raise CheckFailedError(f"the pruned network measures {report['measured_ms']:.4g} ms on {dev.name}, over "
                               f"the budget of {budget_ms:g} ms (predicted {report['predicted_ms']:.4g} ms); "
                               f"outputs are in {out}")
    return report


class MaskedNet(torch.nn.Module):
    """The full network with the dropped edges multiplied by zero (what the released MTL-NAS code runs):
    it computes what the pruned one does, at the full network's cost."""

    def __init__(self, full, kept):
        super().__init__()
        self.net = full
        self.register_buffer("gates", torch.as_tensor(np.asarray(kept, dtype=np.float32)))

    def forward(self, x):
        return self.net(x, gates=self.gates)
