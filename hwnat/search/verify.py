"""Verification of a search's picks: each one exported to ONNX (kept in ``out/picks/``) and measured end to
end on every budgeted device with the device's own measurement protocol.

The predicted latency came from a model (table, predictor, dataset); what is measured here is what the
user will see. Each pick gets ``measured_ms_<device>`` and ``within_budget`` (measured <= budget on every
device). ``hwnat search`` exits 1 when no pick meets the budget when measured.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

from hwnat.errors import BadInputError

log = logging.getLogger(__name__)


def export_picks(space, picks: list[dict], out_dir: Path, module_for: Callable | None = None) -> list[Path]:
    """Export every pick to ``out_dir/pick-<i>.onnx`` (with inherited weights when ``module_for`` gives a
    module, else ``space.build``); the file path goes into ``pick["onnx"]``. ``out_dir/index.json`` says
    which architecture each file holds, so a file is exported again only when its pick changed."""
    from hwnat._io import read_json, write_atomic
    from hwnat.export.onnx import export_onnx

    out_dir.mkdir(parents=True, exist_ok=True)
    index_path = out_dir / "index.json"
    index = read_json(index_path, "picks index") if index_path.exists() else {}
    paths = []
    for i, p in enumerate(picks):
        arch = space.parse(p["arch"])
        path = out_dir / f"pick-{i}.onnx"
        if not path.exists() or index.get(path.name) != p["arch"]:
            module = module_for(arch) if module_for is not None else None
            if module is None:
                module = space.build(arch)
            index.pop(path.name, None)
            write_atomic(index_path, json.dumps(index, indent=1).encode())
            export_onnx(module.eval(), space.input_shape(arch), path)
            index[path.name] = p["arch"]
            write_atomic(index_path, json.dumps(index, indent=1).encode())
        p["onnx"] = str(path.relative_to(out_dir.parent)) if path.is_relative_to(out_dir.parent) else str(path)
        paths.append(path)
    return paths


def check_devices(devices: list[str]) -> None:
    """Every device to verify on must have a device file (a dataset column name is not a device).

    Raises:
        BadInputError: names the device and says how to skip verification.
    """
    from hwnat.devices.spec import load_device

    for d in devices:
        try:
            load_device(d)
        except BadInputError as e:
            raise BadInputError(f"cannot verify picks on {d!r} ({e}); pass --no-verify to search on a "
                                "published dataset without the device") from None


def measure_picks(space, picks: list[dict], paths: list[Path], devices: list[str], budgets_ms: dict,
                  progress: Callable[[int, int, str], None] | None = None) -> None:
    """Measure every exported pick on every device; adds ``measured_ms_<device>`` and ``within_budget``."""
    from hwnat.devices.device import open_device
    from hwnat.latency.profiler import measure_module

    total = len(picks) * len(devices)
    done = 0
    for d in devices:
        with open_device(d) as dev:
            for p, path in zip(picks, paths, strict=True):
                if progress:
                    progress(done, total, f"{dev.name}: {p['arch']}")
                arch = space.parse(p["arch"])
                shape = space.input_shape(arch)
                if dev.model_format == "onnx":
                    m = dev.measure(str(path), tuple(shape))
                else:
                    with tempfile.TemporaryDirectory(prefix="hwnat-verify-") as tmp:
                        m = measure_module(dev, space.build(arch), shape, Path(tmp), "pick")
                p[f"measured_ms_{dev.name}"] = float(m.median_ms)
                p[f"measured_p90_ms_{dev.name}"] = float(m.p90_ms)
                done += 1
    for p in picks:
        p["within_budget"] = all(p.get(f"measured_ms_{d}", float("inf")) <= b for d, b in budgets_ms.items())
    if progress:
        progress(total, total, "done")
