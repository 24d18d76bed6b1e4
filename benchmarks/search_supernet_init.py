"""Does a short warm-up leave the supernet ranking deep subnets below shallow ones? Zero-gamma init on/off.

The search's default warm-up on CPU is short (2 epochs of 2,000 MNIST images, 62 sandwich steps). The
layers that only deeper subnets use (the 3rd and 4th of a stage) start as random residual branches; if
they are still noise after the warm-up, deeper subnets score *lower* and the search returns small
networks that leave the latency budget unused. Zero-gamma init (the last BatchNorm of every residual
layer starts at gamma = 0, so the layer starts as the identity; Goyal et al., arXiv 1706.02677, sec.
5.1) is what ``hwnat.nn.elastic`` now does; ``--init one-gamma`` restores the previous init (gamma = 1)
before the warm-up, for the comparison.

Per init: warm up with the search's default settings (``--epochs``, ``--max-train``, lr 0.05, proxy
scale 0.125, resolutions 192/224/256, width 1.0, seed 0), evaluate ``--subnets`` random subnets plus the
largest and the smallest (r = 224) as the search does (extract, recalibrate BN, validation top-1), and
report the mean and spread of their accuracy and its Spearman correlation with FLOPs and with total depth.

    python benchmarks/search_supernet_init.py            # both inits, MNIST: ~5 min on 2 cores

Writes benchmarks/results/search_supernet_init.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from hwnat.search.supernet import SupernetAccuracy
from hwnat.search.tasks import load_task
from hwnat.spaces.ofa_mbv3 import OFAMobileNetV3Space


def one_gamma(acc: SupernetAccuracy) -> int:
    """Set the last BatchNorm gamma of every residual layer back to 1 (the init before zero-gamma)."""
    n = 0
    for net in acc.nets.values():
        for layer in net.layers:
            if layer.skip:
                torch.nn.init.ones_(layer.project_bn.weight)
                n += 1
    return n


def run(init: str, args) -> dict:
    sp = OFAMobileNetV3Space(resolutions=(192, 224, 256), widths=(1.0,))
    task = load_task(args.task, seed=0, max_train=args.max_train)
    acc = SupernetAccuracy(sp, task, width=1.0, seed=0, progress=False, max_val=args.max_val, lr=args.lr)
    reset = one_gamma(acc) if init == "one-gamma" else 0
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hwnat-init-") as tmp:
        acc.warm_up(args.epochs, Path(tmp) / "supernet.pt")
    warm_s = time.perf_counter() - t0
    net = acc.nets["1.0"]
    archs = sp.sample(np.random.default_rng(args.seed), args.subnets)
    archs += [net.largest(224), net.smallest(224)]
    a = acc.evaluate([sp.format(x) for x in archs])
    flops = np.array([sp.flops(x) for x in archs])
    depth = np.array([sum(x.d) for x in archs])
    rnd = a[:args.subnets]
    return {"init": init, "residual_gammas_reset": reset, "warm_up_s": round(warm_s, 1),
            "accuracy_mean": float(rnd.mean()), "accuracy_sd": float(rnd.std(ddof=1)),
            "accuracy_min": float(rnd.min()), "accuracy_max": float(rnd.max()),
            "largest": float(a[-2]), "smallest": float(a[-1]),
            "spearman_flops": float(stats.spearmanr(a, flops)[0]),
            "spearman_depth": float(stats.spearmanr(a, depth)[0]),
            "archs": [{"arch": sp.format(x), "accuracy": float(v), "mflops": float(f), "depth": int(d)}
                      for x, v, f, d in zip(archs, a, flops, depth, strict=True)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--init", nargs="+", default=["one-gamma", "zero-gamma"], choices=["one-gamma", "zero-gamma"])
    ap.add_argument("--task", default="mnist")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--max-train", type=int, default=2000)
    ap.add_argument("--max-val", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--subnets", type=int, default=24)
    ap.add_argument("--seed", type=int, default=5, help="seed of the subnets sampled for evaluation")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "search_supernet_init.json")
    args = ap.parse_args()
    runs = []
    for init in args.init:
        r = run(init, args)
        runs.append(r)
        print(f"{init:>10}: warm-up {r['warm_up_s']:.0f} s; accuracy of {args.subnets} random subnets "
              f"{r['accuracy_mean']:.1f} +- {r['accuracy_sd']:.1f}% ({r['accuracy_min']:.1f}..{r['accuracy_max']:.1f}); "
              f"largest {r['largest']:.1f}, smallest {r['smallest']:.1f}; Spearman with FLOPs "
              f"{r['spearman_flops']:+.2f}, with depth {r['spearman_depth']:+.2f}", flush=True)
    out = {"benchmark": "search_supernet_init", "date": date.today().isoformat(), "cpus": os.cpu_count(),
           "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
           "python": platform.python_version(), "settings": {k: (str(v) if isinstance(v, Path) else v)
                                                             for k, v in vars(args).items()},
           "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
