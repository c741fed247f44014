"""Figures for reports: matplotlib without a display, written under a temporary name and renamed into place."""

import io

from jaxprune import files


def pyplot():
    """`matplotlib.pyplot` on the file-only Agg backend (imported lazily: most runs draw nothing)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: str, dpi: int = 120) -> None:
    """Writes `figure` as a PNG at `path` (local or gs://) atomically and closes it."""
    figure.tight_layout()
    png = io.BytesIO()  # rendered in memory: matplotlib writes local files only, epath writes anywhere
    figure.savefig(png, dpi=dpi, format="png")
    pyplot().close(figure)
    files.write_atomic(path, png.getvalue())
