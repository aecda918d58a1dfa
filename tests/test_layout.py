"""The package's structure: layers import one way, no import circle, short functions.

Every `import` of a samrefiner module counts, inside functions too (a lazy import is still a
dependency). Layers, top down: the CLI; dataset runs, evaluation, review, integrations; the core
(prompts, refine, adaption); models and io; the leaves (errors, config, types and small helpers).
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "src" / "samrefiner"
LAYERS = (
    ("cli", "__main__", "commands"),
    ("run", "evaluation", "review", "integrations", "__init__"),
    ("refine", "prompts", "mining", "mask_prompt", "distances", "adapter", "adapt", "embedding_cache"),
    ("models", "io"),
    ("errors", "config", "types", "timing", "cpus", "pipeline", "regions"),
)
MAX_FUNCTION_LINES = 60


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    parts = module.split(".")
    top = "__init__" if len(parts) == 1 else parts[1]
    for rank, names in enumerate(LAYERS):
        if top in names:
            return rank
    raise AssertionError(f"{module}: in no layer of tests/test_layout.py")


def imported(path: Path) -> set[str]:
    """The samrefiner modules `path` imports (a `from package import name` counts as the module
    `package.name` when that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("samrefiner"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("samrefiner"):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in MODULES else node.module)
    return found


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}
GRAPH = {name: imported(path) - {name} for name, path in MODULES.items()}


def test_every_module_has_a_layer():
    for name in MODULES:
        layer(name)


def test_no_import_runs_up_a_layer():
    upward = [
        f"{name} -> {target}"
        for name, targets in GRAPH.items()
        for target in targets
        if target in MODULES and layer(target) < layer(name)
    ]
    assert upward == []


def test_no_import_circle():
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for target in sorted(GRAPH[name] & MODULES.keys()):
            if state.get(target) == 1:
                cycle = trail[trail.index(target) :] + [target]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, [*trail, target])
        state[name] = 2

    for name in sorted(MODULES):
        if name not in state:
            visit(name, [name])


def test_functions_are_short():
    long = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno, *(decorator.lineno for decorator in node.decorator_list)])
                if node.end_lineno - start + 1 > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {node.end_lineno - start + 1} lines")
    assert long == []


def test_the_checks_see_a_circle_and_an_upward_import(tmp_path):
    """The graph reader finds lazy imports: refine imports prompts inside a function here."""
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from samrefiner.prompts import PromptMiner\n    import samrefiner.cli\n")
    assert {"samrefiner.prompts", "samrefiner.cli"} <= imported(source)
    assert layer("samrefiner.cli") < layer("samrefiner.prompts")


def context_reached_into(path: Path) -> list[str]:
    """Where `path` uses a sample's `.context` other than by a named field (`sample.context.path`):
    indexed, unpacked, iterated or passed on, each as `line: code`."""
    tree = ast.parse(path.read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr == "context"
        and not (isinstance(parents.get(node), ast.Attribute) and parents[node].value is node)
    ]
    return [f"{node.lineno}: {ast.unparse(parents.get(node, node))}" for node in sorted(found, key=lambda n: n.lineno)]


def test_only_io_knows_a_formats_sample_context():
    """A sample's context is its format's own (`samrefiner.io`): code elsewhere asks the dataset
    (`MaskFolders.object_files`, `LabelMaps.map_file`) instead of knowing the format's fields by position."""
    reaching = [
        f"{name}:{place}"
        for name, path in MODULES.items()
        if not name.startswith("samrefiner.io.")
        for place in context_reached_into(path)
    ]
    assert reaching == []


def test_the_context_check_sees_indexing_unpacking_and_iterating(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "a = sample.context[0]\n"
        "for path, _ in sample.context:\n    pass\n"
        "b, c = sample.context\n"
        "d = sample.context.path\n"
    )
    assert [place.split(":")[0] for place in context_reached_into(source)] == ["1", "2", "4"]
