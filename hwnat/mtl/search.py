"""Gate search of MTL-NAS: relaxed-Bernoulli fusion gates, minimum entropy, and an expected-latency hinge.

Implements the single-shot gradient search of Gao et al., "MTL-NAS: Task-Agnostic Neural Architecture
Search towards General-Purpose Multi-Task Learning" (CVPR 2020): every candidate fusion edge ``e`` has a
gate ``sigmoid(alpha_e)``; the network weights train on relaxed-Bernoulli samples of the gates
(Maddison et al., "The Concrete Distribution", ICLR 2017: ``sigmoid((alpha + log u - log(1-u)) / tau)``)
with a temperature ``tau`` that anneals geometrically from ``tau_start`` to ``tau_end``; the gate logits
train on the deterministic gates, on a separate split of the training data, alternating one weight
step and one architecture step. The minimum-entropy regulariser (the mean binary entropy of the gates)
drives every gate to 0 or 1 so that the discretised network is used without retraining.

The device enters through the expected latency ``E[latency_ms] = base_ms + sum_e sigmoid(alpha_e) *
cost_ms_e`` (per-edge marginal costs from the device's latency table); the architecture loss adds
``latency_weight * max(0, E[latency_ms] - budget_ms) / budget_ms``, i.e. ``lambda = latency_weight /
budget_ms`` per ms of overshoot (scale-free across devices).

Training is resumable at epoch granularity: after every epoch a checkpoint with the model, gate logits,
both optimisers, the RNG states and the gate history is written atomically and read back with
``torch.load(..., weights_only=True)``. Seeds are explicit.

Example:
    >>> from hwnat.mtl.search import SearchSettings, train
    >>> # net = space.build(all_edges); data = load_task("multimnist", quick=True)
    >>> # run = train(net, data, SearchSettings(epochs=2), mode="search", costs=(base_ms, cost_ms),
    >>> #             budget_ms=1.0, checkpoint=Path("out/checkpoints/search.pt"))
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hwnat._io import write_atomic
from hwnat.errors import BadInputError
from hwnat.mtl.tasks import MTLData

log = logging.getLogger(__name__)

#: progress callback: (done, total, label)
Progress = Callable[[int, int, str], None]

#: training modes: "fixed" trains weights with every built edge on (gates None); "search" trains gates too
MODES = ("fixed", "search")


@dataclass(frozen=True)
class SearchSettings:
    """Hyper-parameters of one training run (recorded in every checkpoint and in ``searched.pt``)."""

    epochs: int = 6  #: passes over the weight split
    batch_size: int = 64  #: images per step (weight and architecture steps alike)
    lr: float = 3e-3  #: peak Adam learning rate of the network weights (cosine decay to lr / 20)
    arch_lr: float = 0.05  #: Adam learning rate of the gate logits
    tau_start: float = 1.0  #: relaxed-Bernoulli temperature at the first step
    tau_end: float = 0.05  #: temperature at the last step (geometric annealing per step)
    entropy_weight: float = 0.2  #: weight of the mean gate entropy (the minimum-entropy regulariser)
    latency_weight: float = 5.0  #: weight of the relative overshoot max(0, E[lat] - budget) / budget
    alpha_init: float = 0.0  #: initial gate logit (0 -> gate 0.5)
    seed: int = 0  #: fixes initial weights, batch order and gate samples
    records_per_epoch: int = 4  #: gate-history points per epoch (for the plot of gates over training)

    def __post_init__(self):
        for name in ("epochs", "batch_size", "records_per_epoch"):
            if getattr(self, name) < 1:
                raise BadInputError(f"search setting {name} = {getattr(self, name)}; expected >= 1")
        for name in ("lr", "arch_lr", "tau_start", "tau_end"):
            if not getattr(self, name) > 0:
                raise BadInputError(f"search setting {name} = {getattr(self, name)}; expected > 0")
        for name in ("entropy_weight", "latency_weight"):
            if getattr(self, name) < 0:
                raise BadInputError(f"search setting {name} = {getattr(self, name)}; expected >= 0")


@dataclass
class TrainResult:
    """What a training run leaves: the trained network and, for a search, its gates and their history.

    Attributes:
        net: the trained network (eval mode).
        alpha: final gate logits ``(n_edges,)`` (search only, else None).
        history_epochs: fractional epoch of every gate-history point.
        gate_history: gate values ``sigmoid(alpha)`` at those points, ``(points, n_edges)``.
        losses: mean training loss per epoch (task cross-entropy, summed over tasks).
    """

    net: object
    alpha: np.ndarray | None = None
    history_epochs: list[float] = field(default_factory=list)
    gate_history: list[list[float]] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)

    @property
    def gates(self) -> np.ndarray | None:
        return None if self.alpha is None else 1.0 / (1.0 + np.exp(-self.alpha))


def temperature(settings: SearchSettings, step: int, total_steps: int) -> float:
    """Relaxed-Bernoulli temperature at ``step`` of ``total_steps`` (geometric from tau_start to tau_end)."""
    frac = step / max(total_steps - 1, 1)
    return settings.tau_start * (settings.tau_end / settings.tau_start) ** frac


def weight_lr(settings: SearchSettings, step: int, total_steps: int) -> float:
    """Learning rate of the network weights at ``step``: a cosine from ``lr`` down to ``lr / 20`` over
    the run (a function of the step alone, so a resumed run continues the same schedule)."""
    frac = step / max(total_steps - 1, 1)
    lo = settings.lr / 20
    return lo + 0.5 * (settings.lr - lo) * (1 + math.cos(math.pi * frac))


def relaxed_bernoulli(alpha, tau: float, generator):
    """One relaxed-Bernoulli (binary Concrete) sample per gate: ``sigmoid((alpha + logistic noise) / tau)``."""
    import torch

    u = torch.rand(alpha.shape, generator=generator).clamp_(1e-6, 1 - 1e-6)
    return torch.sigmoid((alpha + torch.log(u) - torch.log1p(-u)) / tau)


def gate_entropy(gates):
    """Mean binary entropy (nats) of gate values in (0, 1): 0 when every gate is exactly 0 or 1."""
    import torch

    g = gates.clamp(1e-6, 1 - 1e-6)
    return -(g * torch.log(g) + (1 - g) * torch.log1p(-g)).mean()


def expected_latency_ms(gates, base_ms: float, cost_ms):
    """``base_ms + sum_e gates_e * cost_ms_e`` (differentiable in the gates)."""
    return base_ms + (gates * cost_ms).sum()


def latency_penalty(gates, base_ms: float, cost_ms, budget_ms: float):
    """Relative hinge ``max(0, E[latency_ms] - budget_ms) / budget_ms``."""
    import torch

    return torch.relu(expected_latency_ms(gates, base_ms, cost_ms) - budget_ms) / budget_ms


def task_loss(logits, y):
    """Sum over tasks of the mean cross-entropy; ``y`` is ``(batch, K)``."""
    import torch.nn.functional as F

    return sum(F.cross_entropy(out, y[:, k]) for k, out in enumerate(logits))


def evaluate(net, data: MTLData, split: str = "test", gates=None, batch_size: int = 500) -> list[float]:
    """Per-task accuracy (fraction correct) of ``net`` on a split, in eval mode.

    Args:
        gates: ``None`` (every built edge on) or gate values ``(n_edges,)`` (array or tensor) passed to
            ``net(x, gates=...)``.
    """
    import torch

    x, y = data.split(split)
    g = None if gates is None else torch.as_tensor(np.asarray(gates, dtype=np.float32))
    net.eval()
    correct = np.zeros(data.tasks)
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb = torch.from_numpy(x[i:i + batch_size])
            outs = net(xb) if g is None else net(xb, gates=g)
            for k, out in enumerate(outs):
                correct[k] += (out.argmax(1).numpy() == y[i:i + batch_size, k]).sum()
    return [float(c / len(x)) for c in correct]


def _signature(settings: SearchSettings, mode: str, n_params: int, n_edges: int, data: MTLData,
               budget_ms, costs) -> dict:
    """What a checkpoint must match to be resumed (plain data)."""
    sig = {"settings": asdict(settings), "mode": mode, "n_params": n_params, "n_edges": n_edges,
           "data": {k: v["sha256"] for k, v in data.record()["splits"].items()},
           "budget_ms": None if budget_ms is None else float(budget_ms)}
    if costs is not None:
        sig["base_ms"] = float(costs[0])
        sig["cost_ms"] = [float(c) for c in np.asarray(costs[1])]
    return sig


def train(net, data: MTLData, settings: SearchSettings, mode: str = "fixed", n_edges: int = 0, costs=None,
          budget_ms: float | None = None, checkpoint: str | Path | None = None,
          progress: Progress | None = None, label: str = "") -> TrainResult:
    """Train ``net`` on ``data`` (resumable at epoch granularity through ``checkpoint``).

    Args:
        net: an ``MTLNet``; ``forward(x, gates=None)`` returns one logit tensor per task.
        mode: ``"fixed"``: weights only, every built edge on (single-task and all-edges baselines);
            ``"search"``: alternate a weight step on the ``weight`` split with relaxed-Bernoulli gate
            samples and an architecture step on the ``arch`` split with the deterministic gates.
        n_edges: number of candidate edges (gates) of ``net`` (search only).
        costs: ``(base_ms, cost_ms per edge)`` for the expected-latency term (search with a budget).
        budget_ms: latency budget; None: no latency term.
        checkpoint: file rewritten atomically after every epoch; an existing one is resumed when its
            settings, data and network match (else ``BadInputError``).

    Returns:
        The trained network with gates and their history (search).
    """
    import torch

    if mode not in MODES:
        raise BadInputError(f"training mode {mode!r}; expected one of {MODES}")
    n_edges = int(n_edges) if mode == "search" else 0
    if mode == "search" and n_edges == 0:
        raise BadInputError("the search network has no candidate fusion edges")
    if budget_ms is not None and mode == "search" and costs is None:
        raise BadInputError("a latency budget needs per-edge costs (base_ms, cost_ms)")
    torch.manual_seed(settings.seed)
    gen = torch.Generator().manual_seed(settings.seed)
    params = [p for p in net.parameters()]
    opt = torch.optim.Adam(params, lr=settings.lr)
    alpha = torch.full((n_edges,), float(settings.alpha_init), requires_grad=True)
    aopt = torch.optim.Adam([alpha], lr=settings.arch_lr, betas=(0.5, 0.999)) if n_edges else None
    base_ms, cost_ms = (0.0, torch.zeros(n_edges)) if costs is None else (
        float(costs[0]), torch.as_tensor(np.asarray(costs[1], dtype=np.float32)))
    sig = _signature(settings, mode, sum(p.numel() for p in params), n_edges, data, budget_ms, costs)
    result = TrainResult(net)
    start_epoch = 0
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None and ckpt.exists():
        state = load_checkpoint(ckpt)
        if state.get("signature") != sig:
            raise BadInputError(f"{ckpt}: checkpoint of another run (settings, data, budget or network "
                                "differ); remove it or choose another --out")
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        if aopt is not None:
            with torch.no_grad():
                alpha.copy_(state["alpha"])
            aopt.load_state_dict(state["aopt"])
        torch.set_rng_state(state["torch_rng"])
        gen.set_state(state["gen_rng"])
        start_epoch = int(state["epoch"])
        result.history_epochs = list(state["history_epochs"])
        result.gate_history = [list(h) for h in state["gate_history"]]
        result.losses = list(state["losses"])
        log.info("resuming %s at epoch %d of %d", ckpt, start_epoch, settings.epochs)

    xw, yw = (torch.from_numpy(a) for a in data.split("weight"))
    xa, ya = (torch.from_numpy(a) for a in data.split("arch"))
    steps_per_epoch = math.ceil(len(xw) / settings.batch_size)
    total = settings.epochs * steps_per_epoch
    record_at = {int(round(steps_per_epoch * (r + 1) / settings.records_per_epoch)) - 1
                 for r in range(settings.records_per_epoch)}
    if n_edges and not result.gate_history:
        result.history_epochs.append(0.0)
        result.gate_history.append(torch.sigmoid(alpha).tolist())

    for epoch in range(start_epoch, settings.epochs):
        net.train()
        order_w = torch.randperm(len(xw), generator=gen)
        order_a = torch.randperm(len(xa), generator=gen)
        losses = []
        for s in range(steps_per_epoch):
            step = epoch * steps_per_epoch + s
            idx = order_w[s * settings.batch_size:(s + 1) * settings.batch_size]
            for group in opt.param_groups:
                group["lr"] = weight_lr(settings, step, total)
            # weight step (relaxed-Bernoulli gate samples; gate logits held fixed)
            if n_edges:
                gates = relaxed_bernoulli(alpha.detach(), temperature(settings, step, total), gen)
                logits = net(xw[idx], gates=gates)
            else:
                logits = net(xw[idx])
            loss = task_loss(logits, yw[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            # architecture step (deterministic gates, the other split; weights held fixed)
            if n_edges:
                j = (s * settings.batch_size) % max(len(xa) - settings.batch_size + 1, 1)
                ida = order_a[j:j + settings.batch_size]
                gates = torch.sigmoid(alpha)
                aloss = task_loss(net(xa[ida], gates=gates), ya[ida])
                aloss = aloss + settings.entropy_weight * gate_entropy(gates)
                if budget_ms is not None:
                    aloss = aloss + settings.latency_weight * latency_penalty(gates, base_ms, cost_ms, budget_ms)
                aopt.zero_grad(set_to_none=True)
                opt.zero_grad(set_to_none=True)
                aloss.backward()
                aopt.step()
                if s in record_at:
                    result.history_epochs.append(round(epoch + (s + 1) / steps_per_epoch, 4))
                    result.gate_history.append(torch.sigmoid(alpha).detach().tolist())
            if progress:
                progress(step + 1, total, f"{label} epoch {epoch + 1}/{settings.epochs} loss {losses[-1]:.3f}")
        opt.zero_grad(set_to_none=True)
        result.losses.append(float(np.mean(losses)))
        if ckpt is not None:
            state = {"signature": sig, "epoch": epoch + 1, "model": net.state_dict(), "opt": opt.state_dict(),
                     "torch_rng": torch.get_rng_state(), "gen_rng": gen.get_state(),
                     "history_epochs": result.history_epochs, "gate_history": result.gate_history,
                     "losses": result.losses}
            if aopt is not None:
                state["alpha"] = alpha.detach().clone()
                state["aopt"] = aopt.state_dict()
            save_checkpoint(ckpt, state)
    if progress:
        progress(total, total, f"{label} done")
    net.eval()
    if n_edges:
        result.alpha = alpha.detach().numpy().astype(np.float64)
    return result


def save_checkpoint(path: str | Path, state: dict) -> Path:
    """Write a ``torch.save`` file atomically (temp file + rename)."""
    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    write_atomic(Path(path), buf.getvalue())
    return Path(path)


def load_checkpoint(path: str | Path, what: str = "checkpoint") -> dict:
    """Read a ``torch.save`` file with ``weights_only=True`` (no pickle code runs).

    Raises:
        BadInputError: missing, corrupt or not a dictionary of tensors and plain data.
    """
    import torch

    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise BadInputError(f"{path}: {what} not found") from None
    except Exception as e:  # torch raises many untyped errors for a bad file
        raise BadInputError(f"{path}: not a readable {what} ({str(e).splitlines()[0][:200]})") from None
    if not isinstance(state, dict):
        raise BadInputError(f"{path}: {what} holds a {type(state).__name__}; expected a dictionary")
    return state
