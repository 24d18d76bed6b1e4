"""The weight-sharing OFA-MobileNetV3 supernet of NAT: warm-up, subnet accuracy, online adaptation.

Cai et al., "Once-for-All: Train One Network and Specialize it for Efficient Deployment", ICLR 2020
(elastic kernel/expand/depth, kernel transformation matrices); Yu et al., "BigNAS: Scaling Up Neural
Architecture Search with Big Single-Stage Models", ECCV 2020 (sandwich rule, in-place distillation);
Lu et al., "Neural Architecture Transfer", TPAMI 2021 (one supernet per width multiplier; online
adaptation on subnets sampled from the archive's best encodings).

``OFASupernet`` covers exactly the ``ofa-mbv3`` space at one width: its fixed blocks (stem, first block,
final expand, head) are the space's own modules, and its 20 elastic layers (``hwnat.nn.elastic``) are
built from the space's block specs. ``extract(arch)`` returns ``space.build(arch)`` holding the inherited
weights, so what is evaluated for accuracy is the network the device times.

``SupernetAccuracy`` is the ``AccuracySource`` the NAT loop calls. Training and evaluation run at a proxy
resolution ``proxy_px(r) = max(MIN_PX, round(r * proxy_scale))`` on CPU (the architecture's own resolution
``r`` with ``proxy_scale = 1`` on CUDA); latency is always measured at ``r`` by the latency model.

Checkpoint file (``torch.save``; loaded with ``weights_only=True``): ``{"format": "hwnat-ofa-supernet",
"version": 1, "widths", "classes", "task", "proxy_scale", "epochs_done", "adapt_steps", "models": {width
text: state_dict}, "optimizers": {...}, "rng": {...}}``.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hwnat.errors import BadInputError
from hwnat.nn.elastic import ElasticMBConv
from hwnat.search.tasks import Task, resize
from hwnat.spaces.ofa_mbv3 import (
    DEPTHS,
    EXPANDS,
    KERNELS,
    MAX_DEPTH,
    N_LAYERS,
    N_STAGES,
    SUPPORTED_WIDTHS,
    OFAArch,
    OFAMobileNetV3Space,
)

log = logging.getLogger(__name__)

#: progress callback: (done, total, label)
Progress = Callable[[int, int, str], None]
FORMAT, VERSION = "hwnat-ofa-supernet", 1
#: smallest proxy input side (pixels): the 5 stride-2 stages leave a 1x1 map at 24
MIN_PX = 24
#: default proxy scale on CPU: r = 192..256 trains/evaluates at 24..32 px
CPU_PROXY_SCALE = 0.125


#: version of the warm-up recipe (initialisation and training); part of the supernet cache's file name, so
#: a supernet warmed up by an older recipe is not reused as if it were this one's. 2: zero-gamma init of
#: the residual layers (``hwnat.nn.elastic``).
RECIPE = 2


def proxy_input(x: torch.Tensor, px: int) -> torch.Tensor:
    """A batch resized to ``px`` in channels-last layout (2-2.5x faster depthwise convs on CPU, measured)."""
    return resize(x, px).contiguous(memory_format=torch.channels_last)


def proxy_px(r: int, proxy_scale: float) -> int:
    """Training/evaluation input side (pixels) of a subnet of resolution ``r``."""
    return max(MIN_PX, int(round(r * proxy_scale)))


def _width_key(w: float) -> str:
    return f"{float(w):.1f}"


class OFASupernet(nn.Module):
    """OFA-MobileNetV3 supernet at one width multiplier.

    Args:
        width: 1.0 or 1.2 (NAT trains one supernet per width).
        classes: classifier outputs.

    Example:
        >>> net = OFASupernet(1.0, classes=10)
        >>> arch = net.largest(224)
        >>> net.set_active(arch)
        >>> net(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self, width: float = 1.0, classes: int = 1000):
        super().__init__()
        if float(width) not in SUPPORTED_WIDTHS:
            raise BadInputError(f"supernet width {width!r}: expected one of {list(SUPPORTED_WIDTHS)}")
        self.width, self.classes = float(width), int(classes)
        self.space = OFAMobileNetV3Space(widths=(self.width,), classes=self.classes)
        blocks = self.space.blocks(self.largest(224))
        self.stem = self.space.build_block(blocks[0])
        self.first = self.space.build_block(blocks[1])
        self.layers = nn.ModuleList(
            ElasticMBConv(b.in_shape[0], b.out_shape[0], b.param("s"), b.param("act"), bool(b.param("se")),
                          KERNELS, EXPANDS) for b in blocks[2:2 + N_LAYERS])
        self.final = self.space.build_block(blocks[-2])
        self.head = self.space.build_block(blocks[-1])
        self.depth = (max(DEPTHS),) * N_STAGES
        self.train()

    def largest(self, r: int) -> OFAArch:
        """The largest subnet (kernel 7, expand 6, depth 4) at resolution ``r``."""
        return OFAArch((max(KERNELS),) * N_LAYERS, (max(EXPANDS),) * N_LAYERS, (max(DEPTHS),) * N_STAGES,
                       r, self.width)

    def smallest(self, r: int) -> OFAArch:
        """The smallest subnet (kernel 3, expand 3, depth 2) at resolution ``r``."""
        return OFAArch((min(KERNELS),) * N_LAYERS, (min(EXPANDS),) * N_LAYERS, (min(DEPTHS),) * N_STAGES,
                       r, self.width)

    def set_active(self, arch: OFAArch) -> None:
        """Make ``forward`` run the subnet ``arch`` (its resolution is that of the input given)."""
        if float(arch.w) != self.width:
            raise BadInputError(f"arch width {arch.w} does not match this supernet's width {self.width}")
        for layer, k, e in zip(self.layers, arch.ks, arch.e, strict=True):
            layer.set_active(k, e)
        self.depth = tuple(arch.d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first(self.stem(x))
        for s in range(N_STAGES):
            for j in range(self.depth[s]):
                x = self.layers[s * MAX_DEPTH + j](x)
        return self.head(self.final(x))

    def subnet_state(self, arch: OFAArch) -> dict[str, torch.Tensor]:
        """State dict of ``space.build(arch)`` holding this supernet's weights for ``arch``."""
        parts = [self.stem.state_dict(), self.first.state_dict()]
        parts += [self.layers[i].subnet_state(arch.ks[i], arch.e[i]) for i in arch.active_layers()]
        parts += [self.final.state_dict(), self.head.state_dict()]
        return {f"{i}.{n}": t.detach().clone() for i, p in enumerate(parts) for n, t in p.items()}

    def extract(self, arch: OFAArch) -> nn.Module:
        """Standalone ``space.build(arch)`` with the inherited weights (same structure, same block keys)."""
        if float(arch.w) != self.width:
            raise BadInputError(f"arch width {arch.w} does not match this supernet's width {self.width}")
        with torch.device("meta"):
            model = self.space.build(arch)
        model.load_state_dict(self.subnet_state(arch), strict=True, assign=True)
        return model.to(next(self.parameters()).device).eval()


# ---- training pieces (plain functions; the class below holds the state) ----------------------------

def distill_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) per sample, averaged: in-place distillation to the largest subnet's soft labels."""
    return F.kl_div(F.log_softmax(student_logits, dim=1), teacher_probs, reduction="batchmean")


def sandwich_step(net: OFASupernet, x: torch.Tensor, y: torch.Tensor, largest: OFAArch,
                  others: Sequence[OFAArch], proxy_scale: float) -> float:
    """Accumulate the gradients of one sandwich step (no optimizer step): the largest subnet on the labels,
    every other subnet on the largest's soft labels. Returns the largest subnet's loss."""
    net.set_active(largest)
    logits = net(proxy_input(x, proxy_px(largest.r, proxy_scale)))
    loss = F.cross_entropy(logits, y)
    loss.backward()
    soft = F.softmax(logits.detach(), dim=1)
    value = loss.item()
    for arch in others:
        net.set_active(arch)
        distill_loss(net(proxy_input(x, proxy_px(arch.r, proxy_scale))), soft).backward()
    return value


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Sequence[torch.Tensor]) -> None:
    """Reset every BatchNorm's statistics and re-estimate them (cumulative average) on ``batches``."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for x in batches:
        model(x)
    for m, mom in zip(bns, saved, strict=True):
        m.momentum = mom
    model.eval()


@torch.no_grad()
def accuracy_percent(model: nn.Module, x: torch.Tensor, y: torch.Tensor, px: int, batch: int = 500) -> float:
    """Top-1 accuracy (percent) of ``model`` in eval mode on ``x`` resized to ``px``."""
    model.eval()
    correct = 0
    for i in range(0, len(y), batch):
        xb = proxy_input(x[i:i + batch], px)
        correct += int((model(xb).argmax(1) == y[i:i + batch]).sum())
    return 100.0 * correct / max(1, len(y))


def save_atomic(obj: dict, path: Path) -> None:
    """``torch.save`` to a temp file next to ``path``, fsync, ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise BadInputError(f"{path}: cannot write: {e.strerror or e}") from None


def load_checkpoint(path: Path) -> dict:
    """Read a supernet checkpoint with ``weights_only=True``; anything unreadable -> BadInputError."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: supernet file not found")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types (UnpicklingError, RuntimeError, EOFError, ...)
        raise BadInputError(f"{path}: not a readable supernet checkpoint ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:120] if str(e) else ''})") from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT or not isinstance(ck.get("models"), dict):
        raise BadInputError(f"{path}: not an hwnat OFA supernet checkpoint (expected format {FORMAT!r})")
    if ck.get("version") != VERSION:
        raise BadInputError(f"{path}: supernet checkpoint version {ck.get('version')!r}; expected {VERSION}")
    return ck


def _rng_state(rng: np.random.Generator) -> dict:
    s = rng.bit_generator.state
    return {"bit_generator": s["bit_generator"], "state": str(s["state"]["state"]),
            "inc": str(s["state"]["inc"]), "has_uint32": int(s["has_uint32"]), "uinteger": int(s["uinteger"])}


def _set_rng_state(rng: np.random.Generator, d: dict) -> None:
    rng.bit_generator.state = {"bit_generator": d["bit_generator"],
                               "state": {"state": int(d["state"]), "inc": int(d["inc"])},
                               "has_uint32": int(d["has_uint32"]), "uinteger": int(d["uinteger"])}


class SupernetAccuracy:
    """NAT's accuracy source on ``ofa-mbv3``: supernets (one per width) trained on a task.

    Args:
        space: an ``OFAMobileNetV3Space`` (its resolutions and widths are what is sampled).
        task: the data (``hwnat.search.tasks.load_task``).
        width: one width multiplier or several (one supernet each); default: the space's widths.
        proxy_scale: training/evaluation input side = ``max(MIN_PX, round(r * proxy_scale))`` pixels; default
            ``CPU_PROXY_SCALE`` on CPU, 1.0 (the architecture's own resolution) on CUDA.
        supernet_path: a checkpoint to start from (``--supernet``); corrupt -> BadInputError naming it.
        seed: fixes initial weights, batch order, sampled subnets and calibration images.
        device: ``cpu`` or ``cuda[:N]``.
        progress: ``(done, total, label)`` callback, True for a rich bar on stderr, or None/False.
        batch_size: training batch size.
        lr: peak SGD learning rate of the warm-up (cosine decay to 0 over the warm-up's steps).
        random_subnets: random subnets per sandwich step besides the largest and the smallest.
        calib_images: training images that recalibrate BatchNorm of an extracted subnet.
        max_val: evaluate on at most this many validation images (the first ones of the fixed split).
        adapt_steps, adapt_lr: steps and learning rate of one online adaptation (``adapt``).

    Example:
        >>> acc = SupernetAccuracy(OFAMobileNetV3Space(), load_task("digits"))  # doctest: +SKIP
        >>> acc.warm_up(2, "runs/x/supernet.pt"); acc.evaluate([arch_string])  # doctest: +SKIP
    """

    def __init__(self, space, task: Task, *, width: float | Sequence[float] | None = None,
                 proxy_scale: float | None = None, supernet_path: str | os.PathLike | None = None,
                 seed: int = 0, device: str = "cpu", progress: Progress | bool | None = True,
                 batch_size: int = 64, lr: float = 0.05, random_subnets: int = 2, calib_images: int = 128,
                 max_val: int | None = 500, adapt_steps: int = 20, adapt_lr: float = 0.01):
        if not isinstance(space, OFAMobileNetV3Space):
            raise BadInputError(f"the supernet accuracy source needs the ofa-mbv3 space, got "
                                f"{getattr(space, 'name', type(space).__name__)!r}; give a table with --accuracy")
        widths = space.widths if width is None else (width,) if isinstance(width, (int, float)) else width
        self.widths = tuple(float(w) for w in widths)
        for w in self.widths:
            if w not in SUPPORTED_WIDTHS:
                raise BadInputError(f"supernet width {w}: expected one of {list(SUPPORTED_WIDTHS)}")
        if proxy_scale is None:
            proxy_scale = 1.0 if str(device).startswith("cuda") else CPU_PROXY_SCALE
        if not 0 < float(proxy_scale) <= 1.0:
            raise BadInputError(f"--proxy-scale {proxy_scale}: expected a number in (0, 1]")
        self.space, self.task = space, task
        self.proxy_scale, self.seed, self.device = float(proxy_scale), int(seed), torch.device(device)
        self.name = f"supernet:{task.name}"
        self.batch_size, self.lr, self.random_subnets = int(batch_size), float(lr), int(random_subnets)
        self.adapt_steps, self.adapt_lr, self.max_val = int(adapt_steps), float(adapt_lr), max_val
        self.progress = progress
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.nets = {_width_key(w): OFASupernet(w, task.classes).to(self.device, memory_format=torch.channels_last)
                         for w in self.widths}
        self.optimizers = {k: self._optimizer(net, self.lr) for k, net in self.nets.items()}
        self.rng = np.random.default_rng(self.seed)
        self.epochs_done = {k: 0 for k in self.nets}
        self.adapted_steps = 0
        self.version = 0
        self._cache: dict[str, float] = {}
        self.timing = {"epoch_s": [], "eval_s": [], "adapt_s": []}
        calib = np.random.default_rng(self.seed + 1).permutation(len(task.y_train))[:int(calib_images)]
        self._calib = np.sort(calib)
        if supernet_path is not None:
            self.load(supernet_path)

    # ---- helpers -----------------------------------------------------------------------------
    @staticmethod
    def _optimizer(net: nn.Module, lr: float) -> torch.optim.Optimizer:
        return torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=3e-5)

    def _batch(self, idx) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        return self.task.x_train[idx].to(self.device), self.task.y_train[idx].to(self.device)

    def _random_archs(self, rng, n: int, width: float) -> list[OFAArch]:
        g = self.space.sample_genomes(rng, n)
        g[:, 46] = SUPPORTED_WIDTHS.index(width)
        return [self.space.decode(row) for row in g]

    def _bar(self, description: str):
        return _progress(description, self.progress)

    def _arch(self, text: str) -> OFAArch:
        arch = self.space.parse(text) if isinstance(text, str) else text
        if _width_key(arch.w) not in self.nets:
            raise BadInputError(f"arch {text}: width {arch.w} has no supernet here (widths {list(self.widths)})")
        return arch

    # ---- warm-up -----------------------------------------------------------------------------
    def warm_up(self, epochs: int, path: str | os.PathLike) -> None:
        """Train every width's supernet for ``epochs`` epochs with the sandwich rule and in-place
        distillation, saving the checkpoint atomically to ``path`` after every epoch.

        Resumable: an existing ``path`` is loaded first (weights, optimizer, RNG, epochs done), and only
        the missing epochs run. The learning rate follows a cosine from ``lr`` over ``epochs`` epochs.
        """
        path = Path(path)
        if path.exists():
            self.load(path)
        n = len(self.task.y_train)
        steps = max(1, n // self.batch_size)
        r_max, r_min = max(self.space.resolutions), min(self.space.resolutions)
        todo = sum(max(0, epochs - e) for e in self.epochs_done.values()) * steps
        done = 0
        with self._bar("supernet warm-up") as bar:
            for key, net in self.nets.items():
                w, opt = float(key), self.optimizers[key]
                largest, smallest = net.largest(r_max), net.smallest(r_min)
                for epoch in range(self.epochs_done[key], epochs):
                    t0 = time.perf_counter()
                    net.train()
                    perm = self.rng.permutation(n)
                    total = 0.0
                    for i in range(steps):
                        for g in opt.param_groups:
                            g["lr"] = 0.5 * self.lr * (1 + math.cos(math.pi * (epoch * steps + i) / (epochs * steps)))
                        x, y = self._batch(perm[i * self.batch_size:(i + 1) * self.batch_size])
                        opt.zero_grad(set_to_none=True)
                        others = [smallest] + self._random_archs(self.rng, self.random_subnets, w)
                        total += sandwich_step(net, x, y, largest, others, self.proxy_scale)
                        opt.step()
                        done += 1
                        if bar:
                            bar(done, todo, f"w{key} epoch {epoch + 1}/{epochs} loss {total / (i + 1):.3f}")
                    self.epochs_done[key] = epoch + 1
                    self.timing["epoch_s"].append(time.perf_counter() - t0)
                    log.info("supernet w%s epoch %d/%d: loss %.4f (%.1f s)", key, epoch + 1, epochs,
                             total / steps, self.timing["epoch_s"][-1])
                    self._changed()
                    self.save(path)

    def _changed(self) -> None:
        self.version += 1
        self._cache.clear()

    # ---- accuracy ----------------------------------------------------------------------------
    def evaluate_one(self, arch: OFAArch) -> float:
        """Validation top-1 (percent) of one subnet: extract, recalibrate BN, evaluate at the proxy size."""
        net = self.nets[_width_key(arch.w)]
        px = proxy_px(arch.r, self.proxy_scale)
        sub = net.extract(arch).to(memory_format=torch.channels_last)
        x = self.task.x_train[torch.as_tensor(self._calib)].to(self.device)
        calib = [proxy_input(x[i:i + 128], px) for i in range(0, len(x), 128)]
        recalibrate_bn(sub, calib)
        n_val = self.n_val
        return accuracy_percent(sub, self.task.x_val[:n_val].to(self.device),
                                self.task.y_val[:n_val].to(self.device), px)

    @property
    def n_val(self) -> int:
        """Validation images each accuracy is measured on (the first ones of the fixed split)."""
        return len(self.task.y_val) if self.max_val is None else min(self.max_val, len(self.task.y_val))

    def evaluate(self, archs: Sequence[str]) -> np.ndarray:
        """Top-1 validation accuracy in percent of each architecture (canonical strings)."""
        parsed = [self._arch(a) for a in archs]
        keys = [self.space.format(a) for a in parsed]
        todo = [i for i, k in enumerate(keys) if k not in self._cache]
        with self._bar("evaluate subnets") as bar:
            for j, i in enumerate(todo):
                t0 = time.perf_counter()
                self._cache[keys[i]] = self.evaluate_one(parsed[i])
                self.timing["eval_s"].append(time.perf_counter() - t0)
                if bar:
                    bar(j + 1, len(todo), f"{self._cache[keys[i]]:.2f}%")
        return np.array([self._cache[k] for k in keys], dtype=float)

    # ---- NAT's online transfer ------------------------------------------------------------------
    def adapt(self, archs: Sequence[str], rng: np.random.Generator) -> bool:
        """Fine-tune on subnets sampled from the per-position distribution of ``archs``' genomes.

        Each of ``adapt_steps`` steps samples ``1 + random_subnets`` genomes gene by gene from the
        frequencies of each gene's values among ``archs`` (NAT's transfer step), keeps those of one width
        (drawn from the same distribution), and takes a sandwich step with that width's largest subnet as
        the teacher. Returns True (the weights changed; the caller re-evaluates its archive).
        """
        if not archs or self.adapt_steps <= 0:
            return False
        genomes = np.stack([self.space.encode(self._arch(a)) for a in archs])
        lo, hi = self.space.genome_bounds()
        probs = [np.bincount(genomes[:, j] - lo[j], minlength=hi[j] - lo[j] + 1) / len(genomes)
                 for j in range(genomes.shape[1])]
        n = len(self.task.y_train)
        r_max = max(self.space.resolutions)
        opts = {k: torch.optim.SGD(net.parameters(), lr=self.adapt_lr, momentum=0.9, nesterov=True,
                                   weight_decay=3e-5) for k, net in self.nets.items()}
        t0 = time.perf_counter()
        with self._bar("supernet adaptation") as bar:
            for step in range(self.adapt_steps):
                g = np.stack([[lo[j] + rng.choice(len(p), p=p) for j, p in enumerate(probs)]
                              for _ in range(1 + self.random_subnets)])
                g[:, 46] = g[0, 46]
                sampled = [self.space.decode(row) for row in g]
                key = _width_key(sampled[0].w)
                net = self.nets[key]
                net.train()
                x, y = self._batch(rng.choice(n, size=min(self.batch_size, n), replace=False))
                opts[key].zero_grad(set_to_none=True)
                sandwich_step(net, x, y, net.largest(r_max), sampled, self.proxy_scale)
                opts[key].step()
                if bar:
                    bar(step + 1, self.adapt_steps, f"w{key}")
        self.adapted_steps += self.adapt_steps
        self.timing["adapt_s"].append(time.perf_counter() - t0)
        self._changed()
        return True

    def state(self) -> dict:
        """Plain data for state.json and the report."""
        rs = self.space.resolutions
        return {"name": self.name, "task": self.task.record(), "widths": list(self.widths),
                "proxy_scale": self.proxy_scale, "val_images": self.n_val,
                "proxy_px": [proxy_px(min(rs), self.proxy_scale), proxy_px(max(rs), self.proxy_scale)],
                "epochs_done": dict(self.epochs_done), "adapted_steps": self.adapted_steps,
                "weights_version": self.version, "device": str(self.device), "seed": self.seed,
                "evaluated": len(self.timing["eval_s"]),
                "mean_epoch_s": float(np.mean(self.timing["epoch_s"])) if self.timing["epoch_s"] else None,
                "mean_eval_s": float(np.mean(self.timing["eval_s"])) if self.timing["eval_s"] else None}

    # ---- files -------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the checkpoint atomically (weights, optimizers, RNG, epochs; see the module docstring)."""
        task = {k: v for k, v in self.task.record().items() if k in ("name", "source", "seed", "classes")}
        save_atomic({"format": FORMAT, "version": VERSION, "widths": list(self.widths),
                     "classes": self.task.classes, "task": task, "proxy_scale": self.proxy_scale,
                     "epochs_done": dict(self.epochs_done), "adapted_steps": self.adapted_steps,
                     "models": {k: net.state_dict() for k, net in self.nets.items()},
                     "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                     "rng": _rng_state(self.rng),
                     "timing": {k: [float(v) for v in vs] for k, vs in self.timing.items()}}, Path(path))

    def load(self, path: str | os.PathLike) -> None:
        """Load a checkpoint written by ``save`` (weights_only). Bad or mismatching file -> BadInputError."""
        path = Path(path)
        ck = load_checkpoint(path)
        if ck.get("classes") != self.task.classes:
            raise BadInputError(f"{path}: supernet has {ck.get('classes')} classes; task "
                                f"{self.task.name} has {self.task.classes}")
        missing = [k for k in self.nets if k not in ck["models"]]
        if missing:
            raise BadInputError(f"{path}: no supernet of width {missing[0]} (has {sorted(ck['models'])})")
        task = ck.get("task", {})
        if task.get("name") != self.task.name:
            log.warning("%s: supernet was trained on task %r, used here on %r", path, task.get("name"),
                        self.task.name)
        try:
            for k, net in self.nets.items():
                net.load_state_dict(ck["models"][k])
                if k in ck.get("optimizers", {}):
                    self.optimizers[k].load_state_dict(ck["optimizers"][k])
            if "rng" in ck:
                _set_rng_state(self.rng, ck["rng"])
        except (RuntimeError, KeyError, ValueError, TypeError) as e:
            raise BadInputError(f"{path}: supernet weights do not fit the ofa-mbv3 supernet "
                                f"({str(e).splitlines()[0][:160]})") from None
        self.epochs_done = {k: int(ck.get("epochs_done", {}).get(k, 0)) for k in self.nets}
        self.adapted_steps = int(ck.get("adapted_steps", 0))
        # the warm-up's epoch times stay with the weights (reports show them after a resume)
        self.timing["epoch_s"] = [float(v) for v in ck.get("timing", {}).get("epoch_s", [])]
        self._changed()


class _progress:
    """Context manager yielding a ``(done, total, label)`` callback: the caller's, a rich bar on stderr
    (``True``), or None."""

    def __init__(self, description: str, progress):
        self.description, self.progress, self._bar = description, progress, None

    def __enter__(self):
        if callable(self.progress):
            return lambda done, total, label: self.progress(done, total, f"{self.description}: {label}")
        if not self.progress:
            return None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._bar = Progress(TextColumn(f"[bold]{self.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[label]}"),
                             console=Console(stderr=True), transient=True)
        self._bar.start()
        task = self._bar.add_task(self.description, total=None, label="")
        return lambda done, total, label: self._bar.update(task, completed=done, total=total, label=label)

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.stop()
        return False
