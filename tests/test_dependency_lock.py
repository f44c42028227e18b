"""requirements.lock agrees with pyproject.toml: every declared dependency is pinned there,
at a version its specifier allows, and nothing else is declared as direct.

The check is offline: it reads the two files, and the installed metadata of the packages
whose extras pyproject asks for (``psycopg[binary]``, ``uvicorn[standard]``). When it fails,
``make lock`` re-resolves the lock.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import REPO_ROOT

PROJECT = "stockcast"
FIX = "run `make lock` to re-resolve requirements.lock"


def declared(pyproject: Path) -> list[Requirement]:
    """Every requirement of the project and of all its extras, self-references left out."""
    project = tomllib.loads(pyproject.read_text())["project"]
    lines = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        lines.extend(extra)
    return [r for r in map(Requirement, lines) if canonicalize_name(r.name) != PROJECT]


def locked(lock: Path) -> tuple[dict[str, list[Version]], set[str]]:
    """``({package: pinned versions}, {packages the lock says pyproject asks for})``.

    A package has several pins when they depend on the Python version (environment markers).
    """
    pins: dict[str, list[Version]] = {}
    direct: set[str] = set()
    current = ""
    for line in lock.read_text().splitlines():
        pin = re.match(r"^([A-Za-z0-9._-]+)==(\S+)", line)
        if pin:
            current = canonicalize_name(pin.group(1))
            pins.setdefault(current, []).append(Version(pin.group(2)))
        elif re.match(rf"^\s+#\s+(via\s+)?{PROJECT} \(pyproject\.toml\)", line):
            direct.add(current)
    return pins, direct


def disagreements(pyproject: Path, lock: Path) -> list[str]:
    """What a reader must fix, one line per package; empty when the two files agree."""
    pins, direct = locked(lock)
    problems: list[str] = []
    wanted = declared(pyproject)
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        if name not in pins:
            problems.append(f"{requirement} is in pyproject.toml but not in the lock")
            continue
        outside = [str(v) for v in pins[name] if not requirement.specifier.contains(v, True)]
        if outside:
            problems.append(f"{requirement}: the lock pins {', '.join(outside)}")
    stale = direct - {canonicalize_name(r.name) for r in wanted}
    problems.extend(f"{name} is locked as a dependency of pyproject.toml, which no longer "
                    "asks for it" for name in sorted(stale))  # fmt: skip
    return problems


def test_every_declared_dependency_is_pinned_at_an_allowed_version() -> None:
    problems = disagreements(REPO_ROOT / "pyproject.toml", REPO_ROOT / "requirements.lock")
    assert not problems, "\n".join([*problems, FIX])


def test_the_lock_pins_exact_versions_for_every_extra_and_python() -> None:
    text = (REPO_ROOT / "requirements.lock").read_text()
    assert "make lock" in text.splitlines()[1]  # the command that regenerates it
    requirements = [line for line in text.splitlines() if line and not line[0].isspace()
                    and not line.startswith("#")]  # fmt: skip
    assert requirements
    assert all("==" in line for line in requirements)
    pins, _ = locked(REPO_ROOT / "requirements.lock")
    for package in ("tensorflow-cpu", "mlflow", "mlflow-skinny", "fastapi", "yfinance", "pytest"):
        assert package in pins, package  # one lock for every extra: ml, api, pipeline, dev
    # the API's mlflow-skinny and the ML image's mlflow are one release
    assert pins["mlflow"] == pins["mlflow-skinny"]


@pytest.mark.parametrize("package", ["psycopg", "uvicorn"])
def test_extras_of_dependencies_are_pinned_too(package: str) -> None:
    """``psycopg[binary]`` and ``uvicorn[standard]`` pull more packages: each is pinned."""
    (requirement,) = [r for r in declared(REPO_ROOT / "pyproject.toml") if r.name == package]
    assert requirement.extras
    pins, _ = locked(REPO_ROOT / "requirements.lock")
    for line in metadata.requires(package) or []:
        needed = Requirement(line)
        if needed.marker is None or not any(
            needed.marker.evaluate({"extra": extra}) for extra in requirement.extras
        ):
            continue
        assert canonicalize_name(needed.name) in pins, f"{package}[…] needs {needed}; {FIX}"


def test_a_changed_pyproject_is_reported(tmp_path: Path) -> None:
    """A new dependency, a raised minimum and a removed one each show up, named."""
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    changed = pyproject.replace('"numpy>=1.26",', '"numpy>=99",\n    "left-pad>=1.0",')
    changed = changed.replace('    "cachetools>=5.3",\n', "")
    assert changed.count("numpy>=99") == 1 and "cachetools" not in changed
    (tmp_path / "pyproject.toml").write_text(changed)
    problems = disagreements(tmp_path / "pyproject.toml", REPO_ROOT / "requirements.lock")
    assert any(p.startswith("numpy>=99: the lock pins ") for p in problems)
    assert "left-pad>=1.0 is in pyproject.toml but not in the lock" in problems
    assert any(p.startswith("cachetools is locked as a dependency") for p in problems)
