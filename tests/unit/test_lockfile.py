"""requirements/dev.lock pins every dependency pyproject.toml declares (the dev extras included)
at a version pyproject.toml allows. When this fails, run ./scripts/lock and commit the lock."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements" / "dev.lock"
# A pin: `name==version`, at the start of a line (hashes, comments and continuations are not).
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", re.MULTILINE)


def normalise(name: str) -> str:
    """PEP 503: case-insensitive, runs of `-`, `_` and `.` are one `-`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project.get("optional-dependencies", {})
    return [Requirement(line) for line in [*project["dependencies"], *extras.get("dev", [])]]


def pins() -> dict[str, Version]:
    text = LOCK.read_text(encoding="utf-8")
    return {normalise(name): Version(version) for name, version in _PIN.findall(text)}


def test_normalise_follows_pep_503() -> None:
    for name in ("PyJWT", "pyjwt", "Py_JWT", "py.jwt", "py-_.jwt"):
        assert normalise(name) in ("pyjwt", "py-jwt")
    assert normalise("types-PyYAML") == "types-pyyaml" == canonicalize_name("types_PyYAML")
    assert normalise("psycopg_pool") == normalise("psycopg-pool") == "psycopg-pool"


def test_every_requirement_in_the_lock_is_pinned_with_hashes() -> None:
    text = LOCK.read_text(encoding="utf-8")
    # Requirement lines start in column 0; hashes and `# via` comments are indented.
    lines = [line for line in text.splitlines() if line and not line[0].isspace()]
    requirements = [line for line in lines if not line.startswith(("#", "-"))]
    assert requirements, "no requirement in the lock"
    assert [line for line in requirements if not _PIN.match(line)] == []
    assert text.count("--hash=sha256:") >= len(requirements)


@pytest.mark.parametrize("requirement", declared(), ids=str)
def test_every_declared_dependency_is_pinned_within_its_range(requirement: Requirement) -> None:
    pinned = pins()
    name = normalise(requirement.name)
    assert name in pinned, f"{requirement.name} is not in {LOCK.name}: run ./scripts/lock"
    assert requirement.specifier.contains(pinned[name], prereleases=True), (
        f"{LOCK.name} pins {requirement.name}=={pinned[name]}, outside {requirement}: "
        "run ./scripts/lock"
    )


@pytest.mark.parametrize("requirement", [r for r in declared() if r.extras], ids=str)
def test_the_dependencies_of_requested_extras_are_pinned(requirement: Requirement) -> None:
    """`psycopg[binary]` needs psycopg-binary in the lock too: the project itself is installed
    with --no-deps, so only what the lock lists gets installed."""
    pinned = pins()
    needed = []
    for line in importlib.metadata.requires(requirement.name) or []:
        dependency = Requirement(line)
        marker = dependency.marker
        if marker is None:
            continue  # a base dependency: pip-compile pins those like any other
        if any(marker.evaluate({"extra": extra}) for extra in requirement.extras):
            needed.append(normalise(dependency.name))
    assert needed, f"{requirement} names extras that add nothing"
    missing = [name for name in needed if name not in pinned]
    assert missing == [], f"{missing} (from {requirement}) not in {LOCK.name}: run ./scripts/lock"
