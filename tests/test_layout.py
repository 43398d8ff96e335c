"""The package layout the project promises: imports point one way (services → supernet_worker →
controller_policy), supernets never import RLlib, and no two modules of services/ import each other."""
import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("controller_policy", "supernet_worker", "services")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module the file imports, at the top or inside functions, relative imports resolved."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from . import storage`
    return found


def sources(package: str) -> list[Path]:
    return [p for p in sorted((ROOT / package).rglob("*.py")) if "proto" not in p.parts]


@pytest.mark.parametrize("package, forbidden", [
    ("controller_policy", ("supernet_worker", "services")),
    ("supernet_worker", ("services", "ray.rllib", "ray.tune")),
])
def test_imports_point_one_way(package, forbidden):
    bad = [(module_name(p), name) for p in sources(package) for name in imports_of(p)
           if any(name == f or name.startswith(f + ".") for f in forbidden)]
    assert not bad, f"{package} imports what it must not: {bad}"


def test_services_modules_import_no_cycle():
    modules = {module_name(p): p for p in sources("services")}
    graph = {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}
    # A package's __init__ importing its own submodules is how cli/ registers its groups, not a cycle.
    graph = {name: {m for m in deps if not m.startswith(name + ".")} for name, deps in graph.items()}
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == "done":
            return
        assert state.get(name) != "open", "import cycle: " + " -> ".join(trail + [name])
        state[name] = "open"
        for dep in sorted(graph[name]):
            visit(dep, trail + [name])
        state[name] = "done"

    for name in sorted(graph):
        visit(name, [])


def test_the_cycle_check_sees_a_cycle(tmp_path, monkeypatch):
    """The check above must be able to fail: two modules importing each other are reported."""
    pkg = tmp_path / "services"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from .b import g\n")
    (pkg / "b.py").write_text("from .a import f\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    with pytest.raises(AssertionError, match="import cycle: services.a -> services.b -> services.a"):
        test_services_modules_import_no_cycle()


def test_the_presets_directory_is_found_from_every_package_that_uses_it():
    """services/ moved into sub-packages once and the service's default presets path broke silently."""
    from services.api.server import ServiceConfig
    from services.config import PRESETS_DIR

    assert Path(ServiceConfig().presets_dir) == PRESETS_DIR == ROOT / "configs"
    assert (PRESETS_DIR / "tabular-nb201.yaml").is_file() and list(PRESETS_DIR.glob("retrain-*.yaml"))
