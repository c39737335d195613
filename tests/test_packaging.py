"""What `pip install acento` promises: the Python it needs, the packages it declares, the version in one place."""

import ast
import os
import re
import sys
import tomllib

from tests.helpers import ROOT

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
# import name -> distribution name, where they differ
DISTRIBUTIONS = {"yaml": "pyyaml", "sklearn": "scikit-learn", "soundfile": "soundfile", "multipart": "python-multipart"}


def minimum_python() -> tuple[int, int]:
    major, minor = re.fullmatch(r">=(\d+)\.(\d+)", PROJECT["requires-python"]).groups()
    return int(major), int(minor)


def test_the_tests_run_on_a_python_the_package_accepts_and_ci_runs_the_minimum():
    assert sys.version_info[:2] >= minimum_python()
    if os.environ.get("CI") == "true":  # .ci/run: CI checks the oldest Python the package claims to support
        assert sys.version_info[:2] == minimum_python()


def imported_packages() -> set[str]:
    names = set()
    for path in (ROOT / "acento").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"acento"}


def test_every_package_the_library_imports_is_declared():
    declared = {re.split(r"[<>=\[ ]", d)[0].lower() for d in PROJECT["dependencies"]}
    declared |= {re.split(r"[<>=\[ ]", d)[0].lower() for extra in PROJECT["optional-dependencies"].values()
                 for d in extra}
    used = {DISTRIBUTIONS.get(name, name).lower() for name in imported_packages()} - {"starlette"}  # FastAPI's
    assert used and not used - declared, f"imported but not declared: {sorted(used - declared)}"


def test_the_version_is_written_once():
    init = ast.parse((ROOT / "acento" / "__init__.py").read_text(encoding="utf-8"))
    assert any(isinstance(n, ast.Assign) and n.targets[0].id == "__version__" for n in init.body
               if isinstance(n, ast.Assign))
    assert "version" in PROJECT.get("dynamic", []) and "version" not in PROJECT
