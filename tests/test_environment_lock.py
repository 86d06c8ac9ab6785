"""One environment, written once: requirements-lock.txt, and what installs or is written from it.

``./setup.sh`` installs exactly the lock; ``environment.yml`` and ``binder/`` are written from it by
``tools/lock_environment.py`` (regenerated here in memory and compared); every dependency that
pyproject.toml names is pinned in the lock at a version pyproject allows. No network.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.markers import Marker, default_environment
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("lock_environment", ROOT / "tools" / "lock_environment.py")
lock_environment = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lock_environment)
canonical = lock_environment.canonical

LOCK_TEXT = (ROOT / lock_environment.LOCK).read_text()
PINS = lock_environment.read_lock(LOCK_TEXT)


def test_lock_pins_every_package_exactly_once():
    names = [canonical(name) for name, _, _ in PINS]
    assert len(PINS) > 100, "the lock should hold the whole environment, not only the top-level packages"
    assert len(names) == len(set(names)), "one line per package (uv wrote no per-platform forks)"
    separate = {canonical(requirement.split("==")[0]) for requirement in lock_environment.NO_DEPS_EXTRAS}
    assert not ({"flowkit", "pip"} | separate) & set(names)
    assert re.search(r"^# Taken on \S+ \S+, \w+ 3\.1[12]\.\d+:", LOCK_TEXT, re.M), "the lock says where it was taken"


def test_pyproject_dependencies_are_pinned_in_the_lock_within_their_specifiers():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(line) for line in project["dependencies"] + project["optional-dependencies"]["test"]]
    pinned = {canonical(name): (version, marker) for name, version, marker in PINS}
    for requirement in wanted:
        name = canonical(requirement.name)
        assert name in pinned, f"{requirement} (pyproject.toml) is not in {lock_environment.LOCK}"
        version, marker = pinned[name]
        assert marker is None, f"{name} is flowkit's own dependency: the lock must pin it on every platform"
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{lock_environment.LOCK} pins {name}=={version}, outside pyproject.toml's {requirement}"
        )


def test_environment_files_are_written_from_the_lock():
    stale = lock_environment.stale(ROOT)
    assert not stale, f"{stale} differ from {lock_environment.LOCK}: run python tools/lock_environment.py write"
    pins = lock_environment.pip_lines(LOCK_TEXT)
    for path, tail in [(lock_environment.CONDA_ENV, ["-e .[test]"]), (lock_environment.BINDER_ENV, [])]:
        spec = yaml.safe_load((ROOT / path).read_text())
        pip_section = [entry["pip"] for entry in spec["dependencies"] if isinstance(entry, dict)]
        assert pip_section == [pins + tail], path
        assert f"python={lock_environment.CONDA_PYTHON}" in spec["dependencies"]
    postbuild = ROOT / lock_environment.BINDER_POSTBUILD
    assert os.access(postbuild, os.X_OK)
    for requirement in lock_environment.NO_DEPS_EXTRAS:
        assert f"pip install --no-deps {requirement}\n" in postbuild.read_text()


def test_setup_installs_exactly_the_lock():
    setup = (ROOT / "setup.sh").read_text()
    assert f"lock={lock_environment.LOCK}\n" in setup
    assert 'pip install --quiet --no-deps -r "$lock"' in setup
    assert "pip install --quiet --no-deps -e ." in setup
    assert 'cat "$lock" pyproject.toml setup.sh' in setup, "a new lock must trigger a reinstall"
    assert "pip check" in setup, "--no-deps would not notice a missing dependency without pip check"
    for requirement in lock_environment.NO_DEPS_EXTRAS:
        assert f"pip install --quiet --no-deps {requirement}\n" in setup


@pytest.mark.skipif(
    Path(sys.prefix).resolve() != (ROOT / ".venv").resolve() or os.environ.get("FLOWKIT_UNLOCKED") == "1",
    reason="checks the .venv that ./setup.sh installed from the lock",
)
def test_this_environment_is_the_lock():
    environment = default_environment()
    wanted = {
        canonical(name): version
        for name, version, marker in PINS
        if marker is None or Marker(marker).evaluate(environment)
    }
    installed = {canonical(dist.metadata["Name"]): dist.version for dist in importlib.metadata.distributions()}
    differ = {
        name: (version, installed.get(name)) for name, version in wanted.items() if installed.get(name) != version
    }
    assert not differ, f"lock version vs installed (re-run ./setup.sh --no-lab): {differ}"
