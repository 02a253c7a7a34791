"""The getting-started page's quick commands, run as a reader would run them, and what they print held
to the lines the page shows: a page whose commands or outputs drift from the product fails here.

The page's console blocks hold ``$ command`` lines, each followed by the lines it prints. The commands
that take under a minute (``QUICK``) run in a fresh folder; every line the page shows under one must
match a line of its output, in order, "in form": numbers, checksums and times may differ, words may not.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from sweep_helpers import VAESWEEP

PAGE = Path(__file__).resolve().parents[1] / "docs" / "getting-started.md"
QUICK = ("vaesweep --version", "vaesweep data check digits", "vaesweep train --data digits", "vaesweep run smoke --dry-run")
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
DURATION = r"(?:\d+ min \d+ s|\d+(?:\.\d+)? (?:s|h|days)\b)"  # sweeps.estimate_record.duration's forms
SIZE = r"\d+(?:\.\d+)? (?:MB|GB)"


def console_commands(page: Path) -> list[tuple[str, list[str]]]:
    """(command, the lines the page shows it printing) for every ``$`` line of the page's console blocks."""
    commands: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```console\n(.*?)```", page.read_text(), re.DOTALL):
        for line in block.splitlines():
            if line.startswith("$ "):
                commands.append((line[2:].split("#")[0].strip(), []))
            elif commands:
                commands[-1][1].append(line)
    return commands


def form(line: str) -> re.Pattern[str]:
    """A shown line as a pattern: its words fixed, each number any number, each duration any duration
    (``75 s`` or ``3 min 20 s``), each size any size, each hex digest any digest, each absolute path any
    path, a trailing ``...`` anything."""
    pattern, end = "", 0
    for token in re.finditer(rf"{DURATION}|{SIZE}|(?<![\w.])/[\w./-]+|[0-9a-f]{{16,}}|-?\d+(?:\.\d+)?|\.\.\.$", line):
        pattern += re.escape(line[end:token.start()])
        text = token.group(0)
        pattern += (".*" if text == "..." else DURATION if re.fullmatch(DURATION, text) else SIZE if re.fullmatch(SIZE, text)
                    else r"/\S+" if text.startswith("/") else "[0-9a-f]+" if len(text) >= 16 else NUMBER.pattern)
        end = token.end()
    return re.compile(pattern + re.escape(line[end:]) + "$")


def unmatched(shown: list[str], printed: list[str]) -> list[str]:
    """The shown lines that no printed line matches in form, taken in order."""
    missing, rest = [], list(printed)
    for line in shown:
        pattern = form(line)
        at = next((i for i, candidate in enumerate(rest) if pattern.match(candidate)), None)
        if at is None:
            missing.append(line)
        else:
            rest = rest[at + 1:]
    return missing


def test_the_form_of_a_line_fixes_its_words_and_frees_its_numbers():
    shown = "test log-likelihood (IS, 2000 samples): -24.955 nats"
    assert form(shown).match("test log-likelihood (IS, 2000 samples): -25.3 nats")
    assert not form(shown).match("test log-likelihood (IS samples): -25.3 nats")
    assert form("sha256 7ec527b6dfdde3d588bf71971676f61a70bcc6d237d02526fd6faad3bcc9fb96").match("sha256 " + "0" * 64)
    assert form("about 75 s (5 epochs x 2.1 s per epoch); memory about 994 MB").match(
        "about 3 min 20 s (5 epochs x 6.7 s per epoch); memory about 1.5 GB")
    assert form("sweep folder /home/me/runs/smoke; all checks").match("sweep folder /srv/x/runs/smoke; all checks")
    assert unmatched(["a 1", "b 2"], ["b 2", "a 1"]) == ["b 2"]


def test_the_page_shows_every_quick_command_with_its_output():
    shown = {command: lines for command, lines in console_commands(PAGE)}
    for quick in QUICK:
        found = [command for command in shown if command.startswith(quick)]
        assert found and all(shown[command] for command in found), f"{PAGE.name} shows no output of `{quick}`"


@pytest.mark.parametrize("quick", QUICK)
def test_a_quick_command_of_the_page_prints_what_the_page_shows(quick: str, mnist_dir: Path, tmp_path: Path):
    command, shown = next((command, lines) for command, lines in console_commands(PAGE) if command.startswith(quick))
    # in a fresh folder (the page's relative paths, runs/..., land there), both streams in their order
    done = subprocess.run([str(VAESWEEP), *shlex.split(command)[1:]], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=300, cwd=tmp_path)
    printed = [line.rstrip() for line in done.stdout.splitlines()]
    assert done.returncode == 0, "\n".join(printed[-40:])
    missing = unmatched([line.rstrip() for line in shown], printed)
    assert not missing, f"`{command}` does not print, in form:\n" + "\n".join(missing) + "\n--- it printed:\n" + \
        "\n".join(printed[-40:])
