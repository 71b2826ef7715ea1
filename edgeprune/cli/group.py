"""The `edgeprune` group, and `main`, which turns what a command raises into its exit code and one line."""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from edgeprune import __version__
from edgeprune.cli import compress, measure
from edgeprune.errors import EdgepruneError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgeprune")
def app() -> None:
    """edgeprune: measure, prune, export and verify neural networks on real edge devices."""


for command in (
    measure.targets,
    measure.export,
    measure.verify,
    measure.profile,
    compress.prune,
    compress.build,
    compress.train,
):
    app.add_command(command)


def main() -> None:
    from edgeprune.progress import interrupt_requested, watch_interrupts

    watch_interrupts()
    try:
        code = app(standalone_mode=False)
    except click.exceptions.ClickException as exc:  # bad flags: click's message, exit 2
        exc.show()
        sys.exit(2)
    except EdgepruneError as exc:
        if interrupt_requested():  # a library caught the Ctrl-C and failed its own way: the user stopped it
            _interrupted()
        click.echo(f"edgeprune: error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, click.exceptions.Abort):
        _interrupted()
    except Exception as exc:
        import traceback

        from edgeprune.fileio import disk_error

        full = disk_error(exc)  # a full or read-only disk under code that does not write through edgeprune.fileio
        if full is not None:
            click.echo(f"edgeprune: error: {full.message}", err=True)
            sys.exit(full.exit_code)
        if interrupt_requested():
            _interrupted()
        traceback.print_exc()
        click.echo("edgeprune: this is a bug in edgeprune; please report it with the traceback above", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


def _interrupted() -> NoReturn:
    click.echo("edgeprune: interrupted; rerun the command (files already written under --out are kept)", err=True)
    sys.exit(130)  # the shell's code for a SIGINT death (128 + 2); 2 would read as a user error
