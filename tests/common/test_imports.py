"""The import rules of the tree, read from the source (no framework needs to import): impl_* import
common, never each other; common imports no impl_* and no bench; and no module reaches itself
through imports anywhere in the files -- a deferred import inside a function counts, since it only
hides a cycle."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("common", "impl_torch", "impl_chainer", "impl_gluon", "bench")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict:
    """{module: its file} of the project's packages (tests excluded)."""
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imports(path: Path, known: dict) -> set:
    """The project modules `path` imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module
                     for alias in node.names]
        else:
            continue
        found |= {n for n in names if n in known and n.split(".")[0] in PACKAGES}
    return found


def graph() -> dict:
    known = modules()
    return {name: imports(path, known) - {name} for name, path in known.items()}


def cycles(edges: dict) -> list:
    """Every module that reaches itself, with one path back (depth-first search)."""
    found = []
    for start in edges:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in edges.get(node, ()):
                if nxt == start:
                    found.append(" -> ".join(path + [start]))
                    stack = []
                    break
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
    return found


def test_no_module_imports_itself_through_others():
    assert not cycles(graph())


def test_the_layers_import_only_downwards():
    wrong = [f"{a} imports {b}" for a, targets in graph().items() for b in targets
             if (a.startswith("impl_") and b.startswith("impl_") and a.split(".")[0] != b.split(".")[0])
             or (a.startswith("common") and b.split(".")[0] in ("impl_torch", "impl_chainer", "impl_gluon", "bench"))]
    assert not wrong


def test_the_cycle_finder_finds_a_planted_cycle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == ["a -> b -> c -> a", "b -> c -> a -> b", "c -> a -> b -> c"]
    assert cycles({"a": {"b"}, "b": set()}) == []
