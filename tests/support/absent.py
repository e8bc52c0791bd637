"""Python packages made absent in a child process, as on a machine that never installed them
(a rented GPU holding only the checkout): ``import`` fails with ModuleNotFoundError, while
``importlib.util.find_spec``, which libraries call to probe, still answers (torch's compiler
probes for tqdm and stops at an exception)."""

from __future__ import annotations

#: What a GPU machine holding only a checkout and its data packs lacks (deploy/gpu/).
SERVICE_PACKAGES = ("pydicom", "highdicom", "sqlalchemy", "pydantic", "pydantic_settings",
                    "celery", "redis", "tqdm", "nibabel")  # fmt: skip


def absent_source(packages: tuple[str, ...] = SERVICE_PACKAGES) -> str:
    """Python code (for ``python -c`` or a ``sitecustomize.py``) that makes ``packages``
    unimportable in the process that runs it."""
    return f"""
import importlib.abc, importlib.machinery, sys
class _Absent(importlib.abc.Loader):
    def create_module(self, spec):
        raise ModuleNotFoundError(f"No module named {{spec.name!r}} (absent here)", name=spec.name)
    def exec_module(self, module):
        pass
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {packages!r}:
            return importlib.machinery.ModuleSpec(name, _Absent())
        return None
sys.meta_path.insert(0, _Block())
"""
