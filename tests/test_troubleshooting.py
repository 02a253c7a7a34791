"""docs/how-to/troubleshooting.md, read against the code: its table quotes only lines the product prints,
and every error the product raises for a user has a row.

Messages change with the code, and a page that quotes them goes stale silently, both ways: a row for a
line the product does not print sends a reader looking for the wrong cause, and an error without a row
leaves them with none. So the product's source is read with ``ast`` (nothing is imported, no Ray, no
MLflow), and a failure names the rows or the messages (file:line) at fault:

1. Every row's message is a string of vae/, analysis/ or sweeps/. A row's ``...`` stands for a variable
   part; a string's formatted parts (and a literal ``...`` in it, the product's own elision) take what
   the row has there: a ``...``, or text that is itself such a string, nested up to two levels deep (an
   error's text inside ``vaesweep: error: ...``, a ``data_problem`` inside ``train: ...``). The table
   leaves out the ``vaesweep: error: `` of errors, and the two spaces that indent ``run``'s progress and
   summary lines. Wording of argparse and pydantic (``LIBRARY_WORDING``) counts as variable text.
2. Every message the product gives a user (``must_have_rows``: the user-error exceptions the CLI turns
   into one line, the config validators' errors, the lines of the message builders, the driver's
   ``vaesweep: ...`` lines) has a row: the first 30 characters of its longest fixed part appear in a
   row's message. A message passed as a variable has no template and is skipped (``SKIPPED`` sites at
   most): each such site passes on a message that is checked where it is written (``port_problem``,
   ``data_problem``, ``space_problem`` and ``refusal``, builders below; the ``str(err)`` of a
   ``TrialsFileError`` or of ``normalized_spec``'s ValueError, a validator; a ``NonFiniteLossError``
   restored from a checkpoint, whose text ``divergence`` wrote).
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "how-to" / "troubleshooting.md"
SOURCES = sorted(path for folder in ("vae", "analysis", "sweeps") for path in (ROOT / folder).rglob("*.py"))

WILD, HOLE = "\0", "\1"  # a row's `...`; a string's formatted part
DEPTH = 2  # strings inside strings inside a row: vaesweep: error: (--...: (a validator's message))
# The exceptions sweeps/cli.py turns into one line (exit 2; 1 for NonFiniteLossError and TrackingError), with
# argparse's ArgumentTypeError of a flag's value, and FailedBefore, the error of a grid point that failed so
# before (sweeps/failures.py).
USER_ERRORS = {"UsageError", "ConfigError", "DataError", "CheckpointError", "RunDirError", "TrialsFileError",
               "NonFiniteLossError", "TrackingError", "FailedBefore", "ArgumentTypeError"}
# Functions whose returned (or appended) lines are raised or printed whole, or are the body of such a line.
MESSAGE_BUILDERS = {"data_problem", "space_problem", "port_problem", "store_problem", "refusal", "describe",
                    "rebuild", "start_growth", "prune_superseded", "cheaper_ways", "failure_summary"}
# Library wording a row quotes: argparse's usage errors, pydantic's own descriptions of a bad value.
LIBRARY_WORDING = ("the following arguments are required: ", "unrecognized arguments: ", "invalid choice: ",
                   "expected one argument", "argument ", "invalid int value: ", "invalid float value: ",
                   "Input should be ", "String should match pattern ")
KEY_LENGTH = 30
SKIPPED = 9  # sites that raise a message held in a variable (the module docstring lists them)


def template(node: ast.expr) -> str | None:
    """A string expression as text with HOLE for each formatted part (None: not a string literal)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return re.sub(r"\{\w*\}", HOLE, node.value).replace("...", HOLE)  # str.format's fields too
    if isinstance(node, ast.JoinedStr):
        parts = [value.value if isinstance(value, ast.Constant) else HOLE for value in node.values]
        return "".join(parts).replace("...", HOLE)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = template(node.left), template(node.right)
        return left + right if left is not None and right is not None else None
    return None


@functools.cache
def trees() -> dict[str, ast.Module]:
    return {str(path.relative_to(ROOT)): ast.parse(path.read_text()) for path in SOURCES}


@functools.cache
def product_strings() -> tuple[str, ...]:
    """Every string literal and f-string of the product, as templates (with fixed text, or two parts joined)."""
    found = {text for tree in trees().values() for node in ast.walk(tree) if (text := template(node)) is not None}
    return tuple(sorted(text for text in found if text.strip(HOLE) or text.count(HOLE) > 1))  # "{}" adds nothing


def called_name(call: ast.Call) -> str:
    func = call.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def decorator_names(function: ast.FunctionDef) -> set[str]:
    return {called_name(d) if isinstance(d, ast.Call) else getattr(d, "id", getattr(d, "attr", ""))
            for d in function.decorator_list}


@functools.cache
def after_validators() -> frozenset[str]:
    """Names of the functions an ``AfterValidator(...)`` of the product runs (``normalized_spec``)."""
    return frozenset(arg.id for tree in trees().values() for node in ast.walk(tree)
                     if isinstance(node, ast.Call) and called_name(node) == "AfterValidator"
                     for arg in node.args if isinstance(arg, ast.Name))


def validator_functions(tree: ast.Module) -> Iterator[ast.FunctionDef]:
    """Pydantic validators: decorated ones, and the functions an ``AfterValidator(...)`` names."""
    named = after_validators()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and (
                decorator_names(node) & {"field_validator", "model_validator"} or node.name in named):
            yield node


def must_have_rows() -> tuple[list[tuple[str, str]], int]:
    """(where, template) of every message a user meets that the page must explain, and how many sites
    passed a message that is not a literal (skipped: see the module docstring)."""
    sites, skipped = [], 0

    def add(where: str, node: ast.AST, first: ast.expr | None) -> None:
        nonlocal skipped
        text = template(first) if first is not None else None
        if text is None:
            skipped += 1
        else:
            sites.append((f"{where}:{node.lineno}", text))

    for name, tree in trees().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and called_name(node) in USER_ERRORS:  # raised, or returned to raise
                add(name, node, node.args[0] if node.args else None)
            elif isinstance(node, ast.Call) and called_name(node) in ("print", "note", "say") and node.args and (
                    called_name(node) != "print" or (template(node.args[0]) or "").startswith("vaesweep: ")):
                add(name, node, node.args[0])
        for function in validator_functions(tree):
            for node in ast.walk(function):
                if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and \
                        called_name(node.exc) == "ValueError":
                    add(name, node, node.exc.args[0])
        for function in ast.walk(tree):
            if isinstance(function, ast.FunctionDef) and function.name in MESSAGE_BUILDERS:
                for node in ast.walk(function):
                    if isinstance(node, ast.Return) and node.value is not None and template(node.value) is not None:
                        add(name, node, node.value)
                    elif isinstance(node, ast.Call) and called_name(node) == "append" and node.args and \
                            template(node.args[0]) is not None:  # a line; not the grouping of errors
                        add(name, node, node.args[0])
    return sites, skipped


def chunks(text: str) -> list[str]:
    return [part for part in text.split(HOLE) if part]


@functools.cache
def shape(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(map(re.escape, pattern.split(HOLE))), re.DOTALL)


def fits(text: str, pattern: str, depth: int) -> bool:
    """Whether row ``text`` (WILD for `...`) can be printed by the string ``pattern`` (HOLE for each
    formatted part): its fixed text matches exactly, and each HOLE takes a run of WILDs (or nothing) or,
    ``depth`` permitting, text that some product string prints in turn."""
    @functools.cache
    def rest(i: int, j: int) -> bool:
        if j == len(pattern):
            return i == len(text)
        if pattern[j] != HOLE:
            return i < len(text) and text[i] == pattern[j] and rest(i + 1, j + 1)
        after = pattern[j + 1] if j + 1 < len(pattern) else None
        for end in range(i, len(text) + 1):  # where the HOLE's part ends: before the next fixed character
            if after is None and end < len(text) or after not in (None, HOLE) and text[end:end + 1] != after:
                continue
            if filled(text[i:end], depth) and rest(end, j + 1):
                return True
        return False

    return rest(0, 0)


@functools.cache
def filled(part: str, depth: int) -> bool:
    """Whether a HOLE can take ``part``: only WILDs, or text that a product string prints."""
    if not part.strip(WILD):
        return True
    return depth > 0 and any(fits(part, pattern, depth - 1) for pattern in candidates(part))


@functools.cache
def by_start() -> dict[str, list[str]]:
    """The product strings by the first three characters of their longest fixed part (all of it when shorter)."""
    index: dict[str, list[str]] = {}
    for pattern in product_strings():
        index.setdefault(max(chunks(pattern), key=len, default="")[:3], []).append(pattern)
    return index


@functools.cache
def candidates(text: str) -> list[str]:
    """The product strings whose fixed parts are in ``text`` in their order (the others cannot match it)."""
    starts = {"", *(text[i:i + n] for n in (1, 2, 3) for i in range(len(text) - n + 1))}
    return [pattern for start in starts for pattern in by_start().get(start, ()) if shape(pattern).fullmatch(text)]


def as_pattern(message: str) -> str:
    """A row's message with WILD for each `...` and for the library's wording."""
    for words in LIBRARY_WORDING:
        message = message.replace(words, WILD)
    return re.sub(f"{WILD}+", WILD, message.replace("...", WILD))


def printed(message: str) -> bool:
    """Whether the product prints the row's message: as it stands, after ``vaesweep: error: `` (the table
    leaves it out), or indented by two spaces (``run``'s progress and summary lines)."""
    return any(filled(as_pattern(prefix + message), DEPTH) for prefix in ("", "vaesweep: error: ", "  "))


def table_messages() -> list[str]:
    """The message column of the page's table: each cell's code span, unquoted."""
    rows = [re.split(r"(?<!\\)\|", line.strip().strip("|")) for line in PAGE.read_text().splitlines()
            if line.startswith("|")]
    column = next(n for n, cell in enumerate(rows[0]) if cell.strip().lower().startswith("message"))
    messages = []
    for cells in rows[2:]:
        cell = cells[column].strip().replace("\\|", "|")
        quoted = re.fullmatch(r"(`+) ?(.*?) ?\1", cell)
        assert quoted, f"a message is one code span: {cell}"
        messages.append(quoted.group(2))
    return messages


def test_every_row_quotes_a_line_the_product_prints():
    messages = table_messages()
    assert len(messages) >= 100
    unknown = [message for message in messages if len(message.replace("...", "")) < 8 or not printed(message)]
    assert not unknown, ("rows whose message no string of vae/, analysis/ or sweeps/ prints (reword the row "
                         "as the code words the line, or remove it):\n" + "\n".join(unknown))


def test_every_message_a_user_meets_has_a_row():
    sites, skipped = must_have_rows()
    messages = "\n".join(prefix + message for message in table_messages() for prefix in ("", "vaesweep: error: "))
    missing = [f"{where}: {text.replace(HOLE, '...')}" for where, text in sites
               if chunks(text) and max(chunks(text), key=len)[:KEY_LENGTH] not in messages]
    assert len(sites) >= 150
    assert skipped <= SKIPPED, (f"{skipped - SKIPPED} more site(s) raise a message held in a variable, which this "
                                "test cannot read: write it as a literal, or in a MESSAGE_BUILDERS function")
    assert not missing, (f"messages without a row in {PAGE.relative_to(ROOT)} (add one quoting the message, "
                         "its cause and its fix):\n" + "\n".join(missing))


def test_the_pages_links_resolve():
    text = PAGE.read_text()
    links = re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", text)
    assert links
    for target in links:
        path, _, anchor = target.partition("#")
        linked = (PAGE.parent / path).resolve()
        assert linked.is_file(), target
        if anchor:
            headings = re.findall(r"^#+\s+(.*)$", linked.read_text(), re.MULTILINE)
            assert anchor in {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}, target
