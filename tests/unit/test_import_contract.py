"""The import contract of the two roles and of serving against training, read from the source.

- ``worker`` never imports ``dicom_gateway``. The one exception is the console script's
  ``medseg gateway`` command (``worker.cli.main``), which starts the gateway role from inside
  the command; importing ``worker.cli`` loads no gateway code (checked in a subprocess).
- ``dicom_gateway`` imports from ``worker`` only ``worker.core``, the floor both roles stand on,
  and ``worker.core`` imports nothing else from ``worker``.
- Serving code (the models' ``serve`` modules, ``pipeline``, ``runtime``, ``export``, and
  everything they import, also inside functions) never reaches training or evaluation code.

Imports under ``if TYPE_CHECKING:`` are types only and not counted.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("worker", "dicom_gateway", "db")
#: (importer, imported) edges allowed across the roles, each with its reason.
ALLOWED_WORKER_TO_GATEWAY = {
    ("worker.cli.main", "dicom_gateway.server"),  # `medseg gateway` starts the gateway role
}
TRAINING_NAMES = ("train", "detector_train", "evaluate", "evaluate_phantoms")


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    top_level: bool  # at module level (runs on import), not inside a function


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {
        _module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if "__pycache__" not in path.parts
    }


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, top_level: bool) -> Iterator[tuple[ast.AST, bool]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            for other in child.orelse:
                yield other, top_level
                yield from _walk(other, top_level)
            continue
        inner = top_level and not isinstance(
            child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
        )
        yield child, inner
        yield from _walk(child, inner)


def _imports(module: str) -> Iterator[Import]:
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    for node, top_level in _walk(tree, True):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, top_level)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                target = candidate if candidate in MODULES else node.module
                yield Import(module, target, top_level)


IMPORTS = {module: list(_imports(module)) for module in MODULES}


def _in(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_contract_sees_the_code() -> None:
    assert "worker.core.registry" in MODULES and "dicom_gateway.completion" in MODULES
    assert any(i.imported == "worker.core.settings" for i in IMPORTS["dicom_gateway.server"])


def test_worker_does_not_import_the_gateway() -> None:
    found = {
        (i.importer, i.imported)
        for imports in IMPORTS.values()
        for i in imports
        if _in(i.importer, "worker") and _in(i.imported, "dicom_gateway")
    }
    assert found <= ALLOWED_WORKER_TO_GATEWAY, sorted(found - ALLOWED_WORKER_TO_GATEWAY)
    for importer, imported in ALLOWED_WORKER_TO_GATEWAY:
        assert not any(i.top_level for i in IMPORTS[importer] if i.imported == imported), (
            f"{importer} imports {imported} at module level"
        )


def _python(code: str) -> subprocess.CompletedProcess[str]:
    """``code`` run by a fresh interpreter in the repository root; it must exit 0."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def test_importing_the_cli_loads_no_gateway_code() -> None:
    code = (
        "import sys, worker.cli, worker.runtime.tasks, worker.ops.operations\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'dicom_gateway')\n"
        "assert not loaded, loaded\n"
    )
    _python(code)


def _edges(importer: str, imported: str, allowed: tuple[str, ...]) -> list[tuple[str, str]]:
    """Imports from package ``importer`` into package ``imported``, outside ``allowed``."""
    return sorted(
        (i.importer, i.imported)
        for imports in IMPORTS.values()
        for i in imports
        if _in(i.importer, importer)
        and _in(i.imported, imported)
        and not any(_in(i.imported, a) for a in allowed)
    )


def test_the_gateway_imports_only_the_shared_floor_of_worker() -> None:
    assert not _edges("dicom_gateway", "worker", ("worker.core",))


def test_the_shared_floor_stands_on_nothing_else_in_worker() -> None:
    # The registry discovers the model folders by importing ``worker.models`` at run time.
    found = _edges("worker.core", "worker", ("worker.core",))
    assert found == [("worker.core.registry", "worker.models")]


def _serving_roots() -> list[str]:
    roots = [m for m in MODULES if m.startswith("worker.models.") and m.endswith(".serve")]
    roots += [
        m
        for m in MODULES
        if any(_in(m, p) for p in ("worker.pipeline", "worker.runtime", "worker.export"))
    ]
    assert len([r for r in roots if r.endswith(".serve")]) >= 5
    return roots


def _reachable(roots: list[str]) -> dict[str, str]:
    """Every project module the roots import (also inside functions), with who imported it."""
    seen = {root: root for root in roots}
    stack = list(roots)
    while stack:
        module = stack.pop()
        for i in IMPORTS.get(module, []):
            if i.imported in MODULES and i.imported not in seen:
                seen[i.imported] = module
                stack.append(i.imported)
    return seen


def _is_training(module: str) -> bool:
    """Training and evaluation modules: ``train``, ``evaluate``, ``*_train``, ``*_eval``,
    ``evaluate_*`` in a model folder, and the shared training loop."""
    if module == "worker.models._nn.train":
        return True
    if not module.startswith("worker.models."):
        return False
    name = module.rsplit(".", 1)[1]
    return (
        name in TRAINING_NAMES
        or name.endswith(("_train", "_eval"))
        or name.startswith(("train_", "evaluate_"))
    )


def test_serving_code_does_not_import_training_or_evaluation_code() -> None:
    reached = _reachable(_serving_roots())
    found = {module: reached[module] for module in reached if _is_training(module)}
    assert not found, f"training/evaluation module: imported by {found}"


def test_every_model_is_one_folder_with_a_serve_module() -> None:
    from worker.core.registry import all_specs

    folders = sorted(
        p.name for p in (ROOT / "worker" / "models").iterdir() if (p / "serve.py").exists()
    )
    assert len(folders) == len(all_specs())


@pytest.mark.parametrize("kind", ["train", "evaluate", "phantoms", "pack"])
def test_every_model_command_resolves_to_a_function(kind: str) -> None:
    from worker.core.commands import commands, load

    targets = commands(kind)  # type: ignore[arg-type]
    assert targets
    for name, target in targets.items():
        assert callable(load(target)), (name, target)
        module = target.partition(":")[0]
        assert module.startswith("worker.models."), target


def test_the_training_path_runs_without_the_service_packages() -> None:
    """fetal-head and lung-cxr training (and their run summary) import only torch, numpy,
    scipy and OpenCV: the service's packages are made unimportable and the modules' own
    entry points still parse their flags."""
    from tests.support.absent import absent_source

    code = absent_source() + (
        "import worker.models.fetal_head.train as fh, worker.models.lung_cxr.recipe as cxr\n"
        "import worker.models.lung_cxr.gate_fit, worker.models.lung_cxr.pack\n"
        "import worker.models._nn.run_summary\n"
        "for main in (fh.main, cxr.main):\n"
        "    try:\n"
        "        main(['--help'])\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code == 0, exc.code\n"
    )
    done = _python(code)
    assert "--max-seconds" in done.stdout and "--max-members" in done.stdout
