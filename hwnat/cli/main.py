"""The ``hwnat`` command: a lazy click group; each verb lives in its own module under ``hwnat/cli``.

Library errors (``hwnat.errors``) become one line on stderr and the exit code DESIGN.md assigns.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys

import click

from hwnat import __version__
from hwnat.errors import HwnatError

#: verb -> "module:attribute" (imported only when the verb is used)
COMMANDS = {
    "profile": "hwnat.cli.profile:profile",
    "latency": "hwnat.cli.latency:latency",
    "measure": "hwnat.cli.latency:measure",
    "export": "hwnat.cli.export:export",
    "spaces": "hwnat.cli.spaces:spaces",
    "devices": "hwnat.cli.devices:devices",
    "import-log": "hwnat.cli.import_log:import_log",
    "predictor": "hwnat.cli.predictor:predictor",
    "bench": "hwnat.cli.bench:bench",
    "search": "hwnat.cli.search:search",
    "mtl": "hwnat.cli.mtl:mtl",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use (keeps ``hwnat --help`` fast)."""

    def list_commands(self, ctx):
        return [n for n in COMMANDS if self._spec_exists(n)]

    @staticmethod
    def _spec_exists(name: str) -> bool:
        return importlib.util.find_spec(COMMANDS[name].split(":")[0]) is not None

    def get_command(self, ctx, name):
        if name not in COMMANDS or not self._spec_exists(name):
            return None
        mod, attr = COMMANDS[name].split(":")
        return getattr(importlib.import_module(mod), attr)

    def invoke(self, ctx):
        """Map library errors to one line on stderr and their exit code (no traceback)."""
        try:
            return super().invoke(ctx)
        except HwnatError as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted; finished measurements are kept on disk (rerun to resume)", err=True)
            ctx.exit(130)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hwnat")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
def cli(verbose: int, quiet: bool) -> None:
    """hwnat: device latency tables, latency predictors and hardware-aware NAS.

    \b
    Example:
      hwnat profile --device cpu --space ofa-mbv3 --resolution 224 --subnets 50
    """
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def main(argv=None) -> None:
    """Console entry point."""
    cli.main(args=argv, prog_name="hwnat")


if __name__ == "__main__":  # pragma: no cover
    main()
