"""CPU seconds per training step of the three phases of ``hwnat mtl search`` with its defaults (mtl-vgg
16-32-32-64 at 28x28, batch 64, one intra-op thread): a projection of the search's training time that a
loaded machine distorts less than wall time (process CPU time excludes time spent waiting for a core;
sharing caches with other jobs still inflates it somewhat).

Usage:
    PYTHONPATH=. python benchmarks/mtl_step_cost.py

Writes ``benchmarks/results/mtl_step_cost.json``.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def per_step(step, n: int = 8) -> dict:
    """CPU and wall seconds of one call of ``step`` (2 warm-up calls, mean of ``n``)."""
    for _ in range(2):
        step()
    c, w = time.process_time(), time.perf_counter()
    for _ in range(n):
        step()
    return {"cpu_s": (time.process_time() - c) / n, "wall_s": (time.perf_counter() - w) / n}


def main() -> None:
    import torch

    from hwnat.mtl.pipeline import EPOCHS
    from hwnat.mtl.search import SearchSettings, gate_entropy, relaxed_bernoulli, task_loss
    from hwnat.spaces import get_space

    torch.set_num_threads(1)
    settings = SearchSettings()
    space = get_space("mtl-vgg")
    x = torch.randn(settings.batch_size, *space.in_shape)
    y = torch.randint(0, 10, (settings.batch_size, 2))
    gen = torch.Generator().manual_seed(0)
    out = {}

    def fixed_step(net):
        opt = torch.optim.Adam(net.parameters(), lr=settings.lr)

        def step():
            loss = task_loss(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return step

    full = space.build("all").train()
    alpha = torch.zeros(len(space.edges()), requires_grad=True)
    aopt = torch.optim.Adam([alpha], lr=settings.arch_lr)
    wopt = torch.optim.Adam(full.parameters(), lr=settings.lr)

    def search_step():
        loss = task_loss(full(x, gates=relaxed_bernoulli(alpha.detach(), 0.5, gen)), y)
        wopt.zero_grad()
        loss.backward()
        wopt.step()
        g = torch.sigmoid(alpha)
        loss = task_loss(full(x, gates=g), y) + settings.entropy_weight * gate_entropy(g)
        aopt.zero_grad()
        wopt.zero_grad()
        loss.backward()
        aopt.step()

    out["single_task"] = per_step(fixed_step(space.build_backbones().train()))
    out["all_edges"] = per_step(fixed_step(space.build("all").train()))
    out["search"] = per_step(search_step)
    steps = math.ceil(3000 / settings.batch_size) * EPOCHS  # default MultiMNIST weight split: 3,000 images
    out["steps_per_phase"] = steps
    out["projected_training_cpu_s"] = steps * sum(out[k]["cpu_s"] for k in ("single_task", "all_edges", "search"))
    out["load_avg"] = os.getloadavg()[0]
    (RESULTS / "mtl_step_cost.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
