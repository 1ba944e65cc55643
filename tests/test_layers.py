"""The library's layers run one way: no import cycle between its modules, function-level imports included."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "twostream_lib"


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(parts) or "__init__"


def import_graph() -> dict[str, set[str]]:
    """Module -> the library modules it imports anywhere in its file (top level or inside functions)."""
    mods = {module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, path in mods.items():
        package = m.rsplit(".", 1)[0] if path.name != "__init__.py" and "." in m else (m if path.name == "__init__.py" else "")
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from .x import y / from . import x
                    base = package.split(".") if package else []
                    base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                    stem = ".".join(base + ([node.module] if node.module else []))
                elif (node.module or "").startswith("twostream_lib"):
                    stem = node.module[len("twostream_lib"):].lstrip(".")
                else:
                    continue
                targets = [f"{stem}.{a.name}".strip(".") for a in node.names] + [stem]
            elif isinstance(node, ast.Import):
                targets = [a.name[len("twostream_lib"):].lstrip(".") for a in node.names
                           if a.name.startswith("twostream_lib")]
            for t in targets:
                while t and t not in mods:
                    t = t.rsplit(".", 1)[0] if "." in t else ""
                if t and t != m and t != "__init__":
                    graph[m].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (c := visit(d)):
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_detector_sees_function_level_imports(tmp_path):
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    g = import_graph()
    assert "train" not in g["evaluate"], "evaluate must not pull in the trainer"
    assert {"checkpoint", "runtime", "data", "models"} <= g["evaluate"]


if __name__ == "__main__":  # print the module graph: python tests/test_layers.py
    for m, deps in sorted(import_graph().items()):
        print(f"{m:12s} -> {', '.join(sorted(deps)) or '-'}")
