"""The Colab notebooks: stored without outputs, and each runs top to bottom on this CPU (nbmake)."""

import json
import pathlib
import subprocess
import sys

NOTEBOOKS = sorted(pathlib.Path("colabs").glob("*.ipynb"))


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
