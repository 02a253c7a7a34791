"""The code's own rules, read from its source: each name spelled once."""

from __future__ import annotations

import ast
from pathlib import Path

from vae.metric_names import MetricName

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = [path for folder in ("vae", "analysis", "sweeps", "bench") for path in sorted((ROOT / folder).glob("*.py"))]


def string_literals(path: Path) -> list[tuple[int, str]]:
    """(line, value) of every string constant in a module (f-string parts included)."""
    return [(node.lineno, node.value) for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def test_metric_names_are_spelled_only_in_the_schema():
    names = {name.value for name in MetricName} - {"epoch"}  # "epoch" is also every result's step key
    found = [f"{path.relative_to(ROOT)}:{line}: {value!r}" for path in PRODUCT if path != ROOT / "analysis/metrics.py"
             for line, value in string_literals(path) if value in names]
    assert not found, "write MetricName.<name> (vae/metric_names.py) instead of:\n" + "\n".join(found)


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
    return modules


def crossings(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    return [f"{path.relative_to(ROOT)} imports {module}" for path in sorted((ROOT / folder).glob("*.py"))
            for module in sorted(imported_modules(path)) if module.startswith(forbidden)]


def test_sweeps_is_laid_out_by_process_and_imports_do_not_cross_its_lines():
    trial, driver, readers = "sweeps.trial", "sweeps.driver", "sweeps.readers"
    assert not crossings("sweeps/trial", (driver, readers)), "the trial side imports neither the driver nor the readers"
    assert not crossings("sweeps/readers", (driver, trial)), "the readers import nothing of the driver or the trial"
    shared = [path for path in (ROOT / "sweeps").glob("*.py") if path.name != "cli.py"]  # the CLI runs them all
    found = [f"{path.name} imports {module}" for path in shared for module in imported_modules(path)
             if module.startswith((trial, driver, readers))]
    assert not found, "what all three share imports none of them"
    assert imported_modules(ROOT / "sweeps/layout.py").isdisjoint({"ray", "torch", "mlflow"})


def test_the_model_layer_imports_nothing_above_it():
    assert not crossings("vae", ("analysis", "sweeps")), "vae/ is plain PyTorch: the names it produces are its own"


def test_the_drivers_modules_import_each_other_in_no_circle():
    modules = {f"sweeps.driver.{path.stem}": path for path in (ROOT / "sweeps/driver").glob("*.py")}
    graph = {name: {module for module in imported_modules(path) if module in modules} for name, path in modules.items()}
    state: dict[str, str] = {}

    def circle_from(name: str, path: list[str]) -> list[str] | None:
        state[name] = "open"
        for other in sorted(graph[name]):
            if state.get(other) == "open":
                cycle = [*path, name, other]
                return cycle[cycle.index(other):]
            if other not in state and (found := circle_from(other, [*path, name])):
                return found
        state[name] = "done"
        return None

    for name in sorted(graph):
        if name not in state:
            assert (found := circle_from(name, [])) is None, " -> ".join(found)
