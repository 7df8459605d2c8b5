"""The package's modules import each other without a circle: a Lease is data, the clients own
its behaviour, and header parsing is a leaf."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "src" / "tokenvault"


def _imports() -> dict:
    graph = {}
    for path in PACKAGE.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                names = [node.module] if node.module else [a.name for a in node.names]
                deps |= {n.split(".")[0] for n in names}
        graph[path.stem] = deps & {p.stem for p in PACKAGE.glob("*.py")}
    return graph


def test_modules_import_without_a_circle():
    graph = _imports()
    done, path = set(), []

    def visit(module):
        assert module not in path, "import circle: " + " -> ".join(path + [module])
        if module in done:
            return
        path.append(module)
        for dep in sorted(graph.get(module, ())):
            visit(dep)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
    assert graph["_headers"] == set() and graph["_models"] == {"_headers"}
