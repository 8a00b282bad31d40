"""The evaluation plots' shared style: colours, and writing figures as PNGs without a display.

Figures are `matplotlib.figure.Figure` objects drawn on the Agg canvas (no
pyplot state, no backend to select), so plotting is safe in any process.
PNGs are written through `tf.io.gfile` (any filesystem).
"""

import io

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from nlr_tf.data import files

RIGHT, WRONG, UNKNOWN = "#1a9850", "#d73027", "#808080"
MODEL, BASELINE = "#2166ac", "#b2182b"
_SERIES_COLORS = tuple(colormaps["tab10"].colors)


def series_style(i: int) -> dict:
    """Colour, line style and marker of the i-th line of a plot with many: no two of the first 20 alike."""
    return {
        "color": _SERIES_COLORS[i % len(_SERIES_COLORS)],
        "linestyle": "-" if (i // len(_SERIES_COLORS)) % 2 == 0 else "--",
        "marker": "osD^v<>PX*"[i % 10],
    }


def save_figure(fig: Figure, path: str) -> None:
    """Lays out and writes a figure as a PNG (at the figure's own dpi)."""
    fig.tight_layout()
    buffer = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buffer)
    files.write_bytes(path, buffer.getvalue())


def figure_pixels(fig: Figure) -> np.ndarray:
    """A figure rendered as uint8 RGB pixels [H, W, 3]."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_png(pixels: np.ndarray, path: str) -> None:
    """Writes uint8 RGB pixels [H, W, 3] as a PNG."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    files.write_bytes(path, buffer.getvalue())
