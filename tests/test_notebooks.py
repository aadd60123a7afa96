"""Every shipped notebook runs headless (nbclient, a real ipykernel) on tiny settings, shows pictures, and is stored
with its outputs cleared."""
from __future__ import annotations

import pytest

from conftest import ROOT

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
TINY = {"TARGETS": 2, "GENERATIONS": 2, "STEPS": 2, "RECURRENCE": 1}  # what a notebook sets, it gets tiny


def parameters(notebook) -> "nbformat.NotebookNode":
    cells = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "a notebook has one cell tagged 'parameters' (its settings)"
    return cells[0]


def test_there_is_a_notebook_per_workflow():
    assert {p.stem for p in NOTEBOOKS} >= {"compare_networks", "walk_feature_space", "visualise_channel"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_runs_headless_on_tiny_settings_and_shows_pictures(path, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the kernel is its own process: one thread, as the tests
    notebook = nbformat.read(path, as_version=4)
    cell = parameters(notebook)
    names = {line.split("=")[0].strip() for line in cell.source.splitlines() if "=" in line and line[0] != "#"}
    cell.source += "\n" + "\n".join(f"{k} = {v!r}" for k, v in TINY.items() if k in names)
    cell.source += f"\nOUT = {str(tmp_path / 'out')!r}"
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the notebook shows its pictures"
    assert (tmp_path / "out").is_dir()
