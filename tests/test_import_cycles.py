"""No import cycle between the modules of ``video_attn``.

Every module's source is parsed (nothing is imported): ``import a.b``, ``from a import b`` and relative
imports anywhere in the file (functions and ``TYPE_CHECKING`` blocks included) are edges of the module graph,
restricted to ``video_attn.*``. ``from package import name`` depends on ``package.name`` when that is a
submodule, else on ``package``.
"""

from __future__ import annotations

import ast
import pkgutil
from pathlib import Path

import video_attn

PACKAGE = "video_attn"


def module_files(root: Path = Path(video_attn.__file__).parent, prefix: str = PACKAGE) -> dict[str, Path]:
    """``{module name: source file}`` of a package and all its subpackages (``__init__.py`` for packages)."""
    files = {prefix: root / "__init__.py"}
    for info in pkgutil.iter_modules([str(root)]):
        name = f"{prefix}.{info.name}"
        if info.ispkg:
            files.update(module_files(root / info.name, name))
        else:
            files[name] = root / f"{info.name}.py"
    return files


def imported_modules(module: str, source: str, is_package: bool, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``module``'s source imports."""
    package_parts = module.split(".") if is_package else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package_parts[: len(package_parts) - (node.level - 1)])
                origin = f"{base}.{node.module}" if node.module else base
            else:
                origin = node.module or ""
            submodules = [f"{origin}.{alias.name}" for alias in node.names]
            targets = [sub if sub in known else origin for sub in submodules]
        else:
            continue
        found.update(t for t in targets if t in known and t != module)
    return found


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    known = set(files)
    return {
        name: imported_modules(name, path.read_text(encoding="utf-8"), path.name == "__init__.py", known)
        for name, path in files.items()
    }


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_no_import_cycle_in_video_attn():
    graph = import_graph()
    cycles = find_cycles(graph)
    assert not cycles, "import cycles between modules of video_attn:\n" + "\n".join(
        " <-> ".join(c) for c in cycles
    )


def test_the_graph_sees_every_module_and_every_kind_of_import():
    graph = import_graph()
    assert {"video_attn", "video_attn.engine", "video_attn.engine.train_loop", "video_attn.config"} <= set(
        graph
    )
    # relative `from .x import y` and `from . import x`
    assert "video_attn.engine.train_loop" in graph["video_attn.engine.trainer"]
    assert "video_attn.engine.distributed" in graph["video_attn.engine.hooks"]
    # absolute `from video_attn.config.schema import ...`
    assert "video_attn.config.schema" in graph["video_attn.engine.lr_scheduler"]
    # an import inside an `if TYPE_CHECKING:` block
    assert "video_attn.engine.checkpoint" in graph["video_attn.engine.train_loop"]


def test_imports_are_resolved_as_documented():
    known = {"pkg", "pkg.sub", "pkg.sub.a", "pkg.sub.b", "pkg.other"}
    source = (
        "import pkg.other\n"
        "from . import b\n"  # a submodule
        "from .. import sub\n"  # a subpackage
        "from pkg.sub import NAME\n"  # a name defined in the package's __init__
        "import numpy\n"  # outside the package
        "def f():\n    from .b import g\n"
    )
    assert imported_modules("pkg.sub.a", source, False, known) == {"pkg.other", "pkg.sub.b", "pkg.sub"}
    assert imported_modules("pkg.sub", "from .a import x\nfrom . import b\n", True, known) == {
        "pkg.sub.a",
        "pkg.sub.b",
    }


def test_cycles_are_found_and_named():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"f"}, "f": {"e"}, "g": set()}
    assert find_cycles(graph) == [["a", "b", "c"], ["e", "f"]]
