"""The code's own rules, read from its source: each name spelled once."""

from __future__ import annotations

import ast
import re
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


LAYERS = ("vae", "analysis", "sweeps")  # each imports only from those before it
SOURCE = [path for layer in LAYERS for path in sorted((ROOT / layer).rglob("*.py"))]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_module_imports_a_layer_above_its_own():
    found = [f"{module_name(path)} imports {module}" for path in SOURCE for module in imported_modules(path)
             if module.split(".")[0] in LAYERS
             and LAYERS.index(module.split(".")[0]) > LAYERS.index(module_name(path).split(".")[0])]
    assert not found, "vae/ < analysis/ < sweeps/: " + "; ".join(found)
    ray_in_analysis = [module_name(p) for p in (ROOT / "analysis").glob("*.py") if any(
        m.split(".")[0] == "ray" for m in imported_modules(p))]
    assert not ray_in_analysis, "analysis/ holds no Ray concept"


def test_the_product_modules_import_each_other_in_no_circle():
    modules = {module_name(path): path for path in SOURCE}
    graph = {name: {m for m in imported_modules(path) if m in modules and m != name} for name, path in modules.items()}
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for other in sorted(graph[name]):
            assert state.get(other) != "open", "import circle: " + " -> ".join([*path, name, other])
            if other not in state:
                visit(other, [*path, name])
        state[name] = "done"
        order.append(name)

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert len(order) == len(modules)


LABEL = re.compile(r"a\{[^}]*\}_k\{[^}]*\}_s\{")  # the grid point's label: a0.5_k30_s1


def test_the_grid_point_label_is_spelled_once():
    found = [f"{path.relative_to(ROOT)}:{n}" for path in [*SOURCE, *sorted((ROOT / "bench").glob("*.py"))]
             for n, line in enumerate(path.read_text().splitlines(), 1) if LABEL.search(line) and "f\"" in line]
    assert found == ["vae/config.py:" + str(label_line())], f"the label is built in vae.config.grid_point_label only: {found}"


def label_line() -> int:
    lines = (ROOT / "vae/config.py").read_text().splitlines()
    return next(n for n, line in enumerate(lines, 1) if LABEL.search(line))


# A file of this repository named in a comment or docstring of the product: vae/x.py, docs/y.md ...
NAMED_FILE = re.compile(r"(?<![\w./-])((?:vae|analysis|sweeps|tests|bench|docs|k8s|mlflow|\.ci)/[\w./-]*\w\."
                        r"(?:py|md|yaml|yml|sh|json|csv|toml))")


def test_every_file_named_in_the_products_comments_exists():
    named = [(path, n, match) for path in [*SOURCE, *sorted((ROOT / "bench").glob("*.py"))]
             for n, line in enumerate(path.read_text().splitlines(), 1) for match in NAMED_FILE.findall(line)
             if not re.search(r"/[A-Z]+\.", match)]  # sweeps/presets/NAME.yaml: a placeholder
    missing = [f"{path.relative_to(ROOT)}:{n}: {match}" for path, n, match in named if not (ROOT / match).exists()]
    assert len(named) > 50 and not missing, "\n".join(missing)


HISTORY = re.compile(r"\b(used to|no longer|previously|formerly|anymore)\b", re.I)


def test_the_products_comments_tell_no_history():
    found = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}" for path in SOURCE
             for n, line in enumerate(path.read_text().splitlines(), 1) if HISTORY.search(line)]
    assert not found, "say what the code does today:\n" + "\n".join(found)


EARLIER_FORMAT = re.compile(r"""["']configs["'] (not )?in |earlier vaesweep|MEMBER_METRICS_OF_FORMAT""")


def test_earlier_file_formats_are_read_or_refused_in_one_module():
    found = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}" for path in SOURCE if path != ROOT / "vae/formats.py"
             for n, line in enumerate(path.read_text().splitlines(), 1) if EARLIER_FORMAT.search(line)]
    assert not found, "tell an earlier format's files apart in vae/formats.py:\n" + "\n".join(found)


def test_every_benchmark_imports_what_the_product_still_defines():
    import importlib.util

    for path in sorted((ROOT / "bench").glob("*.py")):
        spec = importlib.util.spec_from_file_location(f"bench_{path.stem}", path)
        spec.loader.exec_module(importlib.util.module_from_spec(spec))  # ImportError names a moved name
