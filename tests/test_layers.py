"""The architecture, checked: every import inside the package points down the layer order, and no
two modules import each other (directly or round a longer cycle), lazy imports included.

The layer order is written once, here (and mirrored in the README's architecture map). Packages
on one line are one layer: siblings, which must not import each other.
"""

import ast
from collections import defaultdict
from pathlib import Path

import poisonlab

LAYERS = [
    "errors",
    "_version devices figures paths registry options seeding storage validation",
    "cache component data provenance",
    "artifacts models",
    "training",
    "autodiff",
    "theory pretrain",
    "attacks defenses generative",
    "reporting",
    "protocol",
    "sweeps",
    "api",
    "evaluation",
    "interop",
    "cli",
    "__main__ __init__",
]
RANK = {name: i for i, line in enumerate(LAYERS) for name in line.split()}
ROOT = Path(poisonlab.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, int]]:
    """(imported module, line) for every import of the package in ``path``, at any depth (lazy ones too);
    ``from X import name`` counts as an import of X.name when that is a module, else of X."""
    mod = _module_name(path)
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("poisonlab"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.append((sub if _exists(sub) else target, node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.startswith("poisonlab")]
    return out


def _exists(module: str) -> bool:
    rel = Path(*module.split(".")[1:])
    return (ROOT / rel).with_suffix(".py").is_file() or (ROOT / rel / "__init__.py").is_file()


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _graph() -> dict[str, list[tuple[str, int]]]:
    return {_module_name(p): _imports(p) for p in sorted(ROOT.rglob("*.py"))}


def test_every_package_has_a_layer():
    tops = {_top(m) for m in _graph()}
    assert tops <= set(RANK), f"packages without a layer in LAYERS: {sorted(tops - set(RANK))}"


def test_imports_point_down_the_layers():
    bad = []
    for mod, imports in _graph().items():
        a = _top(mod)
        for target, line in imports:
            b = _top(target)
            if a != b and RANK[b] >= RANK[a]:
                bad.append(f"{mod}:{line} imports {target} ({a} is layer {RANK[a]}, {b} is layer {RANK[b]})")
    assert not bad, "upward or sideways imports:\n" + "\n".join(bad)


def test_no_import_cycles_between_modules():
    graph = _graph()
    edges = defaultdict(set)
    for mod, imports in graph.items():
        for target, _ in imports:
            if target != mod and target in graph and not mod.startswith(target + "."):
                # a module importing its own package's __init__ (for a re-export) is not counted as a cycle
                # with that __init__ re-exporting it; every other mutual import is.
                edges[mod].add(target)
    for mod in list(edges):  # a package __init__ re-exporting its own submodules is the package's interface
        if mod in graph and (ROOT / Path(*mod.split(".")[1:]) / "__init__.py").is_file():
            edges[mod] = {t for t in edges[mod] if not t.startswith(mod + ".")}
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)
