"""The `samrefiner` typer app: its group, `--version`, and usage errors as one line.

Each subcommand lives in `samrefiner.commands.<name>` and registers itself on `app` when imported
(`samrefiner.commands` imports them all); heavy imports (torch, transformers) happen inside the
command bodies so that `--help` is instant.

Every error is one line on stderr, `samrefiner: error: <what>: <cause>`, with exit code 2: usage
errors (a bad or missing option, printed by `OneLineErrors`) and SamRefinerError (printed by
`samrefiner.cli.main`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from samrefiner import __version__
from samrefiner.errors import show_input_warnings

ERROR_PREFIX = "samrefiner: error: "


class OneLineErrors(TyperGroup):
    """The command group: usage errors as one `samrefiner: error:` line (not typer's boxed panel),
    and flags shown without a value placeholder in `--help`."""

    def main(
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.TyperException as error:  # click's exceptions (typer vendors click)
            if not _is_a(error, "NoArgsIsHelpError"):  # that one has printed the help already
                print(ERROR_PREFIX + usage_message(error), file=sys.stderr)
            sys.exit(error.exit_code)
        except typer.Abort:
            print(ERROR_PREFIX + "aborted", file=sys.stderr)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)

    def get_params(self, ctx: typer.Context) -> list[Any]:
        return _plain_flags(super().get_params(ctx))

    def get_command(self, ctx: typer.Context, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _plain_flags(command.get_params(ctx))
        return command


def usage_message(error: typer.TyperException) -> str:
    """A usage error as one line in the CLI's terms, e.g.
    `--limit 0: input should be greater than or equal to 1 (see 'samrefiner refine --help')`."""
    param = getattr(error, "param", None)
    if _is_a(error, "MissingParameter") and param is not None:
        text = f"{_option_names(param)}: this option is required"
    elif isinstance(error, typer.BadParameter) and param is not None:
        value = _rejected_value(error)
        where = _option_names(param) + ("" if value is None else f" {value}")
        message = error.message.removeprefix("Value error, ")  # pydantic's prefix for a validator's own text
        text = f"{where}: {message[:1].lower()}{message[1:]}"
    else:
        text = error.format_message()
    context = getattr(error, "ctx", None)
    if context is not None:
        text = f"{text.rstrip('.')} (see '{context.command_path} --help')"
    return " ".join(text.splitlines())


def _is_a(error: Exception, class_name: str) -> bool:
    """Whether `error` is a click `class_name` (typer does not export them all)."""
    return any(cls.__name__ == class_name for cls in type(error).__mro__)


def _option_names(param: Any) -> str:
    return "/".join(param.opts) if getattr(param, "opts", None) else str(param.human_readable_name)


def _rejected_value(error: typer.BadParameter) -> Any:
    """The value typer's validation rejected (its pydantic error keeps it), or None."""
    details = getattr(error.__cause__, "errors", None)
    problems = details() if callable(details) else []
    found = problems[0].get("input") if problems else None
    return found if isinstance(found, (str, int, float)) else None


def _plain_flags(params: Iterable[Any]) -> list[Any]:
    """Flags take no value: give them an empty metavar so that typer's help shows no `<bool>`."""
    params = list(params)
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


app = typer.Typer(
    name="samrefiner",
    cls=OneLineErrors,
    help="Refine coarse segmentation masks with the Segment Anything Model (SAMRefiner).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"samrefiner {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", is_eager=True, callback=_print_version, help="Print the version and exit.")
    ] = False,
) -> None:
    """Refine coarse segmentation masks with the Segment Anything Model (SAMRefiner)."""
    show_input_warnings()  # every command: an input warning is one `samrefiner: warning:` line
