"""``hwnat devices list | show NAME | check NAME``: the device files, and whether a device is ready."""

from __future__ import annotations

from pathlib import Path

import click

from hwnat.cli._common import echo_json, json_option
from hwnat.errors import DeviceError


@click.group("devices", epilog="\b\nExample:\n  hwnat devices check jetson-orin-nano")
def devices() -> None:
    """Device files (devices/*.yaml): list them, show one, check that a device is reachable and ready."""


def _where(spec) -> str:
    t = spec.transport
    if t.kind == "ssh":
        return f"ssh {t.user + '@' if t.user else ''}{t.host}:{t.port}"
    if t.kind == "adb":
        return f"adb {t.serial or '(only device)'}"
    return t.kind


def _find_file(name: str) -> Path | None:
    from hwnat.devices.spec import devices_dirs

    p = Path(name).expanduser()
    if p.is_file():
        return p
    for d in devices_dirs():
        if (d / f"{name}.yaml").is_file():
            return d / f"{name}.yaml"
    return None


@devices.command("list", epilog="\b\nExample:\n  hwnat devices list")
@json_option
def list_cmd(as_json: bool) -> None:
    """List the device files found (repository devices/ and $HWNAT_DEVICES_PATH)."""
    import yaml

    from hwnat.devices.spec import list_devices, load_device
    from hwnat.errors import BadInputError

    rows = []
    for name in list_devices():
        path = _find_file(name)
        try:
            raw = yaml.safe_load(path.read_text()) if path else {}
            alias = raw.get("alias_of") if isinstance(raw, dict) else None
            spec = load_device(name)
        except BadInputError as e:
            rows.append({"name": name, "transport": "?", "runtime": "?", "description": f"INVALID: {e}"})
            continue
        desc = spec.description + (f" (alias of {alias})" if alias else "")
        rt = spec.runtime.kind + (f"/{spec.runtime.harness}" if spec.runtime.harness != "agent" else "")
        rows.append({"name": name, "transport": _where(spec), "runtime": rt, "description": desc})
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no device files found (looked in devices/ and $HWNAT_DEVICES_PATH)", err=True)
        return
    w = {k: max(len(k), *(len(r[k]) for r in rows)) for k in ("name", "transport", "runtime")}
    click.echo(f"{'NAME':<{w['name']}}  {'TRANSPORT':<{w['transport']}}  {'RUNTIME':<{w['runtime']}}  "
               "DESCRIPTION")
    for r in rows:
        click.echo(f"{r['name']:<{w['name']}}  {r['transport']:<{w['transport']}}  "
                   f"{r['runtime']:<{w['runtime']}}  {r['description']}")


@devices.command("show", epilog="\b\nExample:\n  hwnat devices show pixel-7-cpu")
@click.argument("name")
@json_option
def show_cmd(name: str, as_json: bool) -> None:
    """Show one device: its file's notes (what it is, what must be installed) and its validated fields."""
    import yaml

    from hwnat.devices.spec import load_device

    spec = load_device(name)
    data = spec.model_dump(mode="json")
    path = _find_file(name)
    if as_json:
        echo_json({"file": str(path) if path else None, **data})
        return
    if path:
        click.echo(f"# file: {path}")
        for line in path.read_text().splitlines():
            if not line.startswith("#"):
                break
            click.echo(line)
    click.echo(yaml.safe_dump(data, sort_keys=False).rstrip())


def _fmt_check(rep: dict) -> list[str]:
    where = rep["transport"] if rep["transport"] == rep["host"] else f"{rep['transport']} {rep['host']}"
    lines = [f"device      {rep['device']} ({where})"]
    lines.append(f"python      {rep.get('python') or 'not found'}")
    rt = f"{rep['runtime']} {rep.get('runtime_version') or '(not installed)'}"
    provs = (rep.get("runtimes") or {}).get("onnxruntime_providers")
    if provs and rep["runtime"] == "onnxruntime":
        rt += f" (providers: {', '.join(provs)})"
    lines.append(f"runtime     {rt}; timed by {rep.get('harness')}")
    found = {k: v for k, v in (rep.get("harnesses") or {}).items() if v}
    lines.append(f"harnesses   {', '.join(f'{k}={v}' for k, v in found.items()) or 'none on PATH'}")
    lines.append(f"governor    {', '.join(rep.get('governors') or []) or 'not readable'}")
    freqs = rep.get("cpu_freq_khz") or {}
    if freqs:
        lo, hi = min(freqs.values()) / 1000, max(freqs.values()) / 1000
        lines.append(f"cpu clock   {lo:.0f}-{hi:.0f} MHz over {len(freqs)} cores")
    else:
        lines.append("cpu clock   not readable")
    for name, d in (rep.get("devfreq") or {}).items():
        if "cur_hz" in d:
            lines.append(f"devfreq     {name}: {d['cur_hz'] / 1e6:.0f} MHz"
                         + (f" ({d['governor']})" if d.get("governor") else ""))
    temps = rep.get("temperatures_c") or {}
    lines.append("temps       " + (", ".join(f"{k.split(':', 1)[-1]} {v:.1f} C" for k, v in temps.items())
                                   or "not readable"))
    j = rep.get("jetson")
    if j:
        lines.append(f"jetson      L4T {j.get('l4t_release') or '?'}; nvpmodel: "
                     f"{j.get('nvpmodel') or j.get('nvpmodel_status') or 'unknown'}; jetson_clocks: "
                     f"{'likely on' if j.get('jetson_clocks_likely_on') else 'off or unknown'}")
    a = rep.get("android")
    if a:
        lines.append("android     " + ", ".join(f"{k}={v}" for k, v in a.items()))
    for s in rep.get("setup") or []:
        lines.append(f"setup       {s}   (run it yourself before measuring)")
    lines.append("missing     " + ("; ".join(rep["missing"]) if rep["missing"] else "nothing: ready"))
    return lines


@devices.command("check", epilog="\b\nExample:\n  hwnat devices check jetson-orin-nano --json")
@click.argument("name")
@json_option
def check_cmd(name: str, as_json: bool) -> None:
    """Connect to a device and report runtime versions, clocks, governor, temperatures and what is
    missing. Exit 3 when the device is unreachable or something it needs is missing.
    """
    from hwnat.devices.remote import check_device

    rep = check_device(name)
    if as_json:
        echo_json(rep)
    else:
        for line in _fmt_check(rep):
            click.echo(line)
    if rep["missing"]:
        raise DeviceError(f"{rep['device']}: not ready: {'; '.join(rep['missing'])}")
