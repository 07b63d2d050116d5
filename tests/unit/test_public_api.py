"""Every module of the shared package (and the HTTP functions' own helpers) says what it exports:
an `__all__` of names it really has. Names outside `__all__` are the module's own business."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

import agentmarket

PACKAGE = Path(agentmarket.__file__).resolve().parent


def package_modules(package: Path = PACKAGE) -> list[str]:
    """Every module under a package except its packages' __init__ and __main__."""
    return [
        ".".join(path.relative_to(package.parent).with_suffix("").parts)
        for path in sorted(package.rglob("*.py"))
        if path.stem not in ("__init__", "__main__")
    ]


# The shared package, and the product's two processes (their modules build on each other too).
MODULES = [
    *package_modules(),
    *package_modules(PACKAGE.parent / "functions"),
    *package_modules(PACKAGE.parent / "workers"),
]


@pytest.mark.parametrize("name", MODULES)
def test_the_module_declares_all_with_names_it_has(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    assert isinstance(exported, list | tuple)
    assert all(isinstance(item, str) for item in exported)
    assert len(set(exported)) == len(exported), f"{name}.__all__ repeats a name"
    assert [item for item in exported if not hasattr(module, item)] == []


def test_the_module_list_is_complete() -> None:
    """A sanity check of the walk: the layers are all there and nothing private slipped in."""
    layers = {name.split(".")[1] for name in package_modules() if name.count(".") >= 2}
    assert {"core", "db", "domain", "llm", "services", "ops", "devtools"} <= layers
    assert {"agentmarket.cli", "functions.app", "functions.routers.chat", "workers.job"} <= set(
        MODULES
    )
    assert not [name for name in MODULES if name.endswith(("__init__", "__main__"))]
