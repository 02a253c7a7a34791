"""The command-line reference (docs/cli.md), generated from the CLI's own argparse parsers: every command and
subcommand, each argument with its default and help, and the exit codes, so that the page cannot leave a
flag out or disagree with `--help` (``tests/test_cli_conventions.py`` checks it is current).

Regenerate with ``python -m sweeps.cli_reference > docs/cli.md``.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from sweeps import exit_codes
from sweeps.cli import build_parser

HEAD = """# Command-line reference

Generated from the CLI's parsers by `python -m sweeps.cli_reference > docs/cli.md`; `vaesweep COMMAND --help`
prints the same. A flag's default is what the command uses when the flag is left out.
"""


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser's subcommands by name (none for a leaf command)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def helps(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Each subcommand's one-line help, by name."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {choice.dest: choice.help or "" for choice in action._choices_actions}
    return {}


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def argument_rows(parser: argparse.ArgumentParser) -> Iterator[str]:
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        name = ", ".join(f"`{flag}`" for flag in action.option_strings) or f"`{action.dest.upper()}`"
        if action.option_strings and action.nargs != 0:
            name += f" `{action.metavar or action.dest.upper()}`"
        if action.default is None or action.default == argparse.SUPPRESS or action.nargs == 0 or not action.option_strings:
            default = "-"
        else:
            default = f"`{action.default}`"
        yield f"| {name} | {default} | {cell(action.help or '')} |"


def command_section(path: str, parser: argparse.ArgumentParser, summary: str) -> Iterator[str]:
    children = subcommands(parser)
    rows = list(argument_rows(parser))
    if rows or not children:
        yield f"## `{path}`\n"
        if summary:
            yield f"{summary[0].upper()}{summary[1:]}.\n"
        yield f"```\n{' '.join(parser.format_usage().split())}\n```\n"
        if rows:
            yield "| argument | default | meaning |\n|---|---|---|"
            yield from rows
            yield ""
    for name, child in children.items():
        yield from command_section(f"{path} {name}", child, helps(parser).get(name, ""))


def reference() -> str:
    """The whole page."""
    parser = build_parser()
    summary = (parser.description or "").rstrip(".")
    lines = [HEAD, *command_section("vaesweep", parser, summary), "## Exit codes\n", "```", exit_codes.HELP, "```"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(reference(), end="")
