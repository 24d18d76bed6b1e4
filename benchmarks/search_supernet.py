"""Does the OFA supernet rank subnets like training them does? And what do warm-up and evaluation cost?

NAT's premise (Lu et al., TPAMI 2021): the accuracy a subnet inherits from the supernet ranks
architectures like their stand-alone accuracy. Here, on a task (default Fashion-MNIST: MNIST leaves every
subnet at ~99%):
  1. warm up a supernet (sandwich rule + in-place distillation) on the task, at the proxy resolution;
  2. pick N subnets spread over the FLOPs range (N quantiles of 200 random ones);
  3. inherited accuracy: extract, recalibrate BN, evaluate (``SupernetAccuracy.evaluate``);
  4. from-scratch accuracy: ``space.build(arch)`` trained alone on the same data, same proxy size;
  5. Kendall tau (and Spearman) between the two, and of FLOPs vs from-scratch as a baseline ranking.
With ``--timing``, first times one warm-up epoch and per-subnet evaluation at the search defaults (MNIST).

Resumable: the supernet checkpoint and each finished from-scratch subnet are kept in --workdir.
Writes JSON (default benchmarks/results/search_supernet.json) and prints a table.

    python benchmarks/search_supernet.py --subnets 10 --timing
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats

from hwnat.search.supernet import CPU_PROXY_SCALE, SupernetAccuracy, accuracy_percent, proxy_input, proxy_px
from hwnat.search.tasks import load_task
from hwnat.spaces.ofa_mbv3 import OFAMobileNetV3Space


def _cpu_s() -> float:
    return time.process_time()


def train_from_scratch(space, arch, task, *, epochs: int, batch_size: int, lr: float, proxy_scale: float,
                       seed: int, max_val: int) -> tuple[float, float]:
    """Train ``space.build(arch)`` alone (SGD, cosine, cross-entropy); return (val top-1 %, seconds)."""
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    model = space.build(arch).train().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=3e-5)
    rng = np.random.default_rng(seed)
    n = len(task.y_train)
    steps = max(1, n // batch_size)
    px = proxy_px(arch.r, proxy_scale)
    for epoch in range(epochs):
        perm = torch.as_tensor(rng.permutation(n))
        for i in range(steps):
            for g in opt.param_groups:
                g["lr"] = 0.5 * lr * (1 + math.cos(math.pi * (epoch * steps + i) / (epochs * steps)))
            idx = perm[i * batch_size:(i + 1) * batch_size]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(proxy_input(task.x_train[idx], px)), task.y_train[idx]).backward()
            opt.step()
    acc = accuracy_percent(model, task.x_val[:max_val], task.y_val[:max_val], px)
    return acc, time.perf_counter() - t0


def timing(args) -> dict:
    """One warm-up epoch and ``--timing-evals`` evaluations at the search's default settings (MNIST)."""
    task = load_task("mnist", seed=args.seed)
    space = OFAMobileNetV3Space(classes=task.classes)
    acc = SupernetAccuracy(space, task, seed=args.seed, max_val=args.timing_max_val, progress=True)
    c0, t0 = _cpu_s(), time.perf_counter()
    acc.warm_up(1, Path(args.workdir) / "timing-mnist.pt")
    epoch = {"wall_s": time.perf_counter() - t0, "cpu_s": _cpu_s() - c0,
             "steps": len(task.y_train) // acc.batch_size, "images": len(task.y_train)}
    archs = [space.format(a) for a in space.sample(np.random.default_rng(args.seed + 7), args.timing_evals)]
    c0, t0 = _cpu_s(), time.perf_counter()
    accs = acc.evaluate(archs)
    ev = {"wall_s_per_subnet": (time.perf_counter() - t0) / len(archs),
          "cpu_s_per_subnet": (_cpu_s() - c0) / len(archs), "n": len(archs), "max_val": args.timing_max_val,
          "calib_images": len(acc._calib), "accuracy_after_1_epoch": accs.tolist()}
    return {"task": task.record(), "proxy_scale": acc.proxy_scale, "warm_up_epoch": epoch, "evaluate": ev}


def tau(args) -> dict:
    task = load_task(args.task, seed=args.seed, max_train=args.max_train)
    space = OFAMobileNetV3Space(classes=task.classes)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    acc = SupernetAccuracy(space, task, seed=args.seed, proxy_scale=args.proxy_scale, max_val=args.max_val,
                           batch_size=args.batch_size, lr=args.lr, progress=True)
    c0, t0 = _cpu_s(), time.perf_counter()
    tag = f"{Path(task.name).name}-n{len(task.y_train)}-p{acc.proxy_scale:g}-s{args.seed}"
    acc.warm_up(args.warmup_epochs, work / f"supernet-{tag}-e{args.warmup_epochs}.pt")
    warm = {"wall_s": time.perf_counter() - t0, "cpu_s": _cpu_s() - c0, "epochs": args.warmup_epochs,
            "epoch_s_this_run": acc.timing["epoch_s"]}
    # N subnets spread over the FLOPs range
    pool = space.sample(np.random.default_rng(args.seed + 1), 200)
    pool.sort(key=space.flops)
    archs = [pool[int(round(q))] for q in np.linspace(0, len(pool) - 1, args.subnets)]
    strings = [space.format(a) for a in archs]
    done_dir = work / f"scratch-{tag}-e{args.scratch_epochs}"
    done_dir.mkdir(exist_ok=True)
    shard, shards = (int(v) for v in args.shard.split("/"))
    for i, (a, s) in enumerate(zip(archs, strings, strict=True)):
        path = done_dir / f"{i:03d}.json"
        if path.exists() or i % shards != shard:
            continue
        top1, sec = train_from_scratch(space, a, task, epochs=args.scratch_epochs, batch_size=args.batch_size,
                                       lr=args.lr, proxy_scale=acc.proxy_scale, seed=args.seed,
                                       max_val=args.max_val)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"arch": s, "accuracy": top1, "train_s": sec}))
        os.replace(tmp, path)
        print(f"[{i + 1}/{len(archs)}] from scratch {top1:.2f}% ({sec:.0f} s)", flush=True)
    files = [done_dir / f"{i:03d}.json" for i in range(len(archs))]
    if not all(f.exists() for f in files):
        raise SystemExit(f"shard {args.shard} done; other shards still training in {done_dir}")
    done = {}
    for f, s in zip(files, strings, strict=True):
        d = json.loads(f.read_text())
        if d["arch"] != s:
            raise SystemExit(f"{f}: holds {d['arch']}, expected {s} (changed settings? remove {done_dir})")
        done[s] = d
    c0, t0 = _cpu_s(), time.perf_counter()
    inherited = acc.evaluate(strings)
    eval_s = (time.perf_counter() - t0) / len(strings)
    eval_cpu_s = (_cpu_s() - c0) / len(strings)
    scratch = np.array([done[s]["accuracy"] for s in strings])
    flops = np.array([space.flops(a) / 1e6 for a in archs])
    kt = stats.kendalltau(inherited, scratch)
    sp = stats.spearmanr(inherited, scratch)
    kf = stats.kendalltau(flops, scratch)
    rows = [{"arch": s, "flops_m": f, "proxy_px": proxy_px(a.r, acc.proxy_scale), "inherited": float(i_),
             "scratch": float(sc), "scratch_train_s": done[s]["train_s"]}
            for s, a, f, i_, sc in zip(strings, archs, flops, inherited, scratch, strict=True)]
    return {"task": task.record(), "proxy_scale": acc.proxy_scale, "subnets": len(archs),
            "warm_up": warm, "supernet_state": acc.state(), "scratch_epochs": args.scratch_epochs,
            "eval_wall_s_per_subnet": eval_s, "eval_cpu_s_per_subnet": eval_cpu_s,
            "kendall_tau": float(kt.statistic), "kendall_p": float(kt.pvalue),
            "spearman": float(sp.statistic), "kendall_tau_flops_vs_scratch": float(kf.statistic),
            "inherited_range": [float(inherited.min()), float(inherited.max())],
            "scratch_range": [float(scratch.min()), float(scratch.max())], "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="fashion-mnist")
    ap.add_argument("--subnets", type=int, default=10)
    ap.add_argument("--max-train", type=int, default=3000, help="training images (a seeded subset)")
    ap.add_argument("--max-val", type=int, default=2000)
    ap.add_argument("--warmup-epochs", type=int, default=4)
    ap.add_argument("--scratch-epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--proxy-scale", type=float, default=CPU_PROXY_SCALE)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--shard", default="0/1", help="K/N: train from scratch only subnets i with i %% N == K "
                    "(run N processes; the last one to finish, or a rerun, computes tau)")
    ap.add_argument("--timing", action="store_true", help="also time warm-up and evaluation on MNIST defaults")
    ap.add_argument("--skip-tau", action="store_true", help="only the --timing part")
    ap.add_argument("--timing-evals", type=int, default=10)
    ap.add_argument("--timing-max-val", type=int, default=500)
    ap.add_argument("--workdir", default="benchmarks/results/search_supernet_work")
    ap.add_argument("--out", default="benchmarks/results/search_supernet.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result = {"benchmark": "search_supernet", "date": date.today().isoformat(), "host": platform.node(),
              "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
              "load_avg_start": list(os.getloadavg()), "settings": vars(args)}
    if args.timing:
        result["timing_mnist"] = timing(args)
        print(json.dumps(result["timing_mnist"], indent=1), flush=True)
    if args.skip_tau:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
        return
    result["tau"] = tau(args)
    result["load_avg_end"] = list(os.getloadavg())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    t = result["tau"]
    print(f"\n{t['subnets']} subnets on {t['task']['name']} ({t['task']['n_train']} train, proxy scale "
          f"{t['proxy_scale']}): Kendall tau inherited vs from-scratch = {t['kendall_tau']:.3f} "
          f"(p={t['kendall_p']:.3g}), Spearman {t['spearman']:.3f}; FLOPs vs from-scratch tau "
          f"{t['kendall_tau_flops_vs_scratch']:.3f}")
    for r in t["rows"]:
        print(f"  {r['flops_m']:8.1f} MFLOPs  {r['proxy_px']:3d}px  inherited {r['inherited']:6.2f}%  "
              f"scratch {r['scratch']:6.2f}%")


if __name__ == "__main__":
    main()
