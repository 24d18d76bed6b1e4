"""Old vs new ``cpu`` measurement protocol on the same 60 exported nasbench201 subnets, interleaved (old,
new, old, new per subnet; the order flips every subnet), so both see the same machine: repeat agreement of
each protocol with itself. Run from a folder holding ``re60.csv`` (column ``arch``) and ``cpu_old.yaml``
(``devices/cpu.yaml`` with ``warmup_s: 0.1``, ``min_round_s: 0.06``, ``max_remeasure: 2``, ``name: cpu_old``).
"""

import pathlib
import tempfile

import numpy as np
import pandas as pd

from hwnat.devices.device import open_device
from hwnat.export.onnx import export_onnx
from hwnat.spaces import get_space

sp = get_space("nasbench201")
archs = pd.read_csv("re60.csv")["arch"].tolist()
tmp = pathlib.Path(tempfile.mkdtemp())
res = {"old": [[], []], "new": [[], []]}
with open_device("cpu_old.yaml") as dold, open_device("cpu") as dnew:
    devs = {"old": dold, "new": dnew}
    for k, a in enumerate(archs):
        f = export_onnx(sp.build(sp.parse(a)), sp.input_shape(), tmp / f"{k}.onnx")
        order = ["old", "new", "old", "new"] if k % 2 == 0 else ["new", "old", "new", "old"]
        seen = {"old": 0, "new": 0}
        for p in order:
            m = devs[p].measure(str(f), tuple(sp.input_shape()))
            res[p][seen[p]].append(m.median_ms)
            seen[p] += 1
for p in ("old", "new"):
    r = np.array(res[p][0]) / np.array(res[p][1])
    print(p, "repeat agreement within 10%:", np.mean(np.abs(r - 1) <= 0.1).round(3),
          "p10/50/90", np.percentile(r, [10, 50, 90]).round(3))
r = np.array(res["old"][0]) / np.array(res["new"][0])
print("old/new median ratio", np.median(r).round(3))
