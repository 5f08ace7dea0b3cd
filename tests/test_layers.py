"""The layers contract (pyproject.toml, [tool.importlinter]): the tree keeps it, and a wrong import
breaks it. lint-imports parses the source without importing it, so a copy of the .py files is
enough to show the contract biting."""

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
CONTRACTS = {contract["id"]: contract["name"] for contract in CONFIG["contracts"]}


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    # The console script beside this interpreter; it puts its working directory on sys.path.
    command = [str(Path(sys.executable).with_name("lint-imports")), "--no-cache", "--no-logo"]
    # Wide enough that no contract's name is wrapped.
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def broken_contracts(stdout: str) -> dict[str, str]:
    """Each broken contract's name and the imports reported under it."""
    parts = re.split(r"\n([^\n]+)\n-+\n", stdout.split("Broken contracts\n", 1)[1])
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_the_tree_keeps_every_contract():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in result.stdout


@pytest.fixture
def tree(tmp_path):
    """The root packages' .py files and pyproject.toml, nothing else."""
    for package in CONFIG["root_packages"]:
        for source in (ROOT / package).rglob("*.py"):
            copy = tmp_path / source.relative_to(ROOT)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, copy)
    shutil.copyfile(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


@pytest.mark.parametrize(("path", "statement", "contract", "reported"), [
    ("outscale/__init__.py", "import transfers", "cloud", "outscale -> transfers"),
    ("transfers/__init__.py", "from bench import load", "benchmarks", "transfers -> bench.load"),
    ("sandbox/__init__.py", "import audit.recorder", "simulator", "sandbox -> audit.recorder"),
    ("audit/__init__.py", "import accounts.models", "layers", "audit -> accounts.models"),
    ("transfers/selectors.py", "from transfers.services import requests", "transfers",
     "transfers.selectors -> transfers.services.requests"),
    ("transfers/selectors.py", "import outscale.oapi", "selectors", "transfers.selectors -> outscale.oapi"),
    ("audit/checkpoints.py", "from audit import integrity", "audit", "audit.checkpoints -> audit.integrity"),
])
def test_a_wrong_import_breaks_the_contract_it_crosses(tree, path, statement, contract, reported):
    with (tree / path).open("a") as source:
        source.write(f"\n{statement}\n")
    result = lint_imports(tree)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{CONTRACTS[contract]} BROKEN" in result.stdout
    assert f"{reported} (l." in broken_contracts(result.stdout)[CONTRACTS[contract]], result.stdout
