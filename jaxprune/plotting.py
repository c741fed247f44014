"""Figures for reports: matplotlib without a display, written under a temporary name and renamed into place."""

import os


def pyplot():
    """`matplotlib.pyplot` on the file-only Agg backend (imported lazily: most runs draw nothing)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: str, dpi: int = 120) -> None:
    """Writes `figure` as a PNG at `path` atomically and closes it."""
    figure.tight_layout()
    figure.savefig(f"{path}.tmp", dpi=dpi, format="png")
    pyplot().close(figure)
    os.replace(f"{path}.tmp", path)
