"""Options and helpers shared by CLI modules (defined once, reused)."""

from __future__ import annotations

import json
import sys

import click

device_option = click.option("--device", "-d", "device", default="cpu", show_default=True,
                             help="Device name from devices/ or a path to a device YAML file.")
space_option = click.option("--space", "-s", "space", required=True,
                            help="Search space name (see `hwnat spaces list`).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


def echo_json(obj) -> None:
    """Print JSON to stdout."""
    click.echo(json.dumps(obj, indent=2, default=float))


def err(msg: str) -> None:
    """A line on stderr (logs and progress go there; results go to stdout)."""
    click.echo(msg, err=True)


def is_tty() -> bool:
    return sys.stderr.isatty()
