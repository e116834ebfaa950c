"""The packages' shape: the Airflow-free core imports without Airflow, and ``__all__`` says exactly
what each package exports.

The core (``client``, ``batch``, ``sinks``, ``governance``) is promised to run in plain scripts and
benchmarks; a stray ``from airflow ...`` in any module they import would break that only on a
machine without Airflow, which is not this one. So a subprocess makes Airflow unimportable first.
"""

from __future__ import annotations
import __future__

import importlib
import os
import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "airflow_provider_genesys_llm"
CORE = ("client", "batch", "sinks", "governance")

# Runs in a fresh interpreter: a finder first in ``sys.meta_path`` refuses ``airflow`` and every
# ``airflow.*`` module, the refusal is checked (so a broken finder cannot pass the test), then the core
# is imported.
_WITHOUT_AIRFLOW = textwrap.dedent(
    """
    import importlib, sys

    class NoAirflow:
        def find_spec(self, name, path=None, target=None):
            if name == "airflow" or name.startswith("airflow."):
                raise ImportError(f"{name} is blocked: the core must not import Airflow")
            return None

    sys.meta_path.insert(0, NoAirflow())
    assert not any(m == "airflow" or m.startswith("airflow.") for m in sys.modules), "airflow preloaded"
    try:
        import airflow.sdk
    except ImportError:
        pass
    else:
        raise SystemExit("the finder did not block airflow")
    for name in sys.argv[1:]:
        importlib.import_module(name)
    print("imported", *sys.argv[1:])
    """
)


def _run_without_airflow(*modules: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", _WITHOUT_AIRFLOW, *modules],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )


def test_core_packages_import_without_airflow() -> None:
    modules = [f"{PACKAGE}.{name}" for name in CORE]
    done = _run_without_airflow(*modules)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["imported", *modules]


def test_blocking_airflow_catches_a_module_that_needs_it() -> None:
    """The check above can fail: a module that imports Airflow is refused under the same finder."""
    done = _run_without_airflow(f"{PACKAGE}.hooks.genesys_llm")
    assert done.returncode != 0
    assert "airflow" in done.stderr and "is blocked" in done.stderr


def public_names(package: types.ModuleType) -> set[str]:
    """Names a package defines or re-exports at its top level.

    Every module attribute not starting with ``_``, except its own submodules (an import system
    side effect: ``import pkg.sub`` binds ``sub`` on ``pkg`` whether or not ``pkg`` mentions it) and
    ``from __future__`` features. Any other module (``import json`` at package level) counts: it
    should be ``_json`` or not there.
    """
    names = set()
    for name, value in vars(package).items():
        if name.startswith("_"):
            continue
        if isinstance(value, types.ModuleType) and value.__name__ == f"{package.__name__}.{name}":
            continue
        if name in __future__.all_feature_names and value is getattr(__future__, name):
            continue
        names.add(name)
    return names


def isort_key(name: str) -> tuple[int, list[int | str]]:
    """The order ruff's RUF022 keeps ``__all__`` in: SCREAMING_CASE, then CamelCase, then the rest,
    each in natural order (``V2`` before ``V10``)."""
    if re.fullmatch(r"[A-Z][A-Z0-9_]*", name) and len(name) > 1:
        group = 0
    elif name[:1].isupper():
        group = 1
    else:
        group = 2
    return group, [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


@pytest.mark.parametrize("name", ["", *CORE])
def test_all_is_exactly_the_public_names_and_sorted(name: str) -> None:
    package = importlib.import_module(f"{PACKAGE}.{name}" if name else PACKAGE)
    exported = package.__all__
    assert isinstance(exported, list)
    assert public_names(package) == set(exported), (
        f"{package.__name__}: public but not in __all__: {sorted(public_names(package) - set(exported))}; "
        f"in __all__ but not public: {sorted(set(exported) - public_names(package))}"
    )
    assert len(set(exported)) == len(exported), f"{package.__name__}.__all__ repeats a name"
    assert exported == sorted(exported, key=isort_key), f"{package.__name__}.__all__ is not sorted"


def test_public_names_sees_a_stray_import_and_ignores_submodules() -> None:
    """The definition above can fail: a module imported at package level is public, a submodule is not."""
    package = types.ModuleType("shape_probe")
    package.__dict__.update(
        json=importlib.import_module("json"),
        sub=types.ModuleType("shape_probe.sub"),
        Thing=object,
        annotations=__future__.annotations,
        _hidden=1,
    )
    assert public_names(package) == {"json", "Thing"}


def test_isort_key_orders_constants_classes_then_functions() -> None:
    names = ["run", "Model", "MAX_SIZE", "V10", "V2", "a10", "a2", "X", "A_b", "AB1c"]
    # the order ruff --fix gives these names
    assert sorted(names, key=isort_key) == ["MAX_SIZE", "V2", "V10", "AB1c", "A_b", "Model", "X", "a2", "a10", "run"]
