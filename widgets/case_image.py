"""An image-shaped input as the case view draws it: which inputs are images (``image_of``),
the values drawn black and white and the caption that says so (``image_scale``), the QImage
(``to_qimage``) and the label that scales it to its room with square pixels
(``PictureLabel``). Apart from the case view, which only chooses between this and the table
of named features. Thread: GUI.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage, QPixmap, QResizeEvent
from PySide6.QtWidgets import QLabel, QSizePolicy

# How far past 0 and 1 an image's values may stray and still be drawn on the fixed 0..1 scale.
_NOISE_MARGIN = 0.1


def image_of(array: np.ndarray) -> np.ndarray | None:
    """A 2-D grey or HxWx3 view when the input looks like an image, else None."""
    a = np.asarray(array)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[2] not in (1, 3):
        a = np.moveaxis(a, 0, -1)  # CHW -> HWC
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    grey = a.ndim == 2 and min(a.shape) >= 8
    colour = a.ndim == 3 and a.shape[2] == 3 and min(a.shape[:2]) >= 8
    return a if grey or colour else None


def _value(v: float) -> str:
    return f"{v:.2f}" if 0.01 <= abs(v) < 1000 or v == 0 else f"{v:.3g}"


def image_scale(a: np.ndarray) -> tuple[float, float, str]:
    """The values drawn black and white, and the caption that says so. Values within [0, 1]
    (give or take a little noise past either end) are drawn on that fixed scale, so a faint
    input (all under 0.3) looks faint; others are stretched to their own range, and the
    caption gives it: either way a faint input can be told from a normal one."""
    finite = a[np.isfinite(a)]
    if not finite.size:
        return 0.0, 1.0, "no finite values"
    vmin, vmax = float(finite.min()), float(finite.max())
    values = f"values {_value(vmin)}\u2013{_value(vmax)}"
    if vmin >= 0.0 and vmax <= 1.0:
        return 0.0, 1.0, f"{values}, shown on 0\u20131 (black\u2013white)"
    # A 0..1 image with a little noise past its ends (augmentation, a camera's offset) is
    # still a 0..1 image: stretched to its own range, a faint one would look normal.
    if vmin >= -_NOISE_MARGIN and vmax <= 1.0 + _NOISE_MARGIN:
        outside = int(np.count_nonzero((finite < 0.0) | (finite > 1.0)))
        return 0.0, 1.0, (f"{values}, shown on 0\u20131 (black\u2013white; "
                          f"{outside} outside it drawn at its ends)")
    return vmin, vmax, f"{values}, stretched to black\u2013white"


def to_qimage(a: np.ndarray) -> tuple[QImage, str]:
    """The image for ``a`` and the caption of its scale (``image_scale``)."""
    a = a.astype(np.float64)
    lo, hi, caption = image_scale(a)
    scaled = np.zeros(a.shape, np.uint8) if hi <= lo else \
        np.clip((np.nan_to_num(a, nan=lo) - lo) / (hi - lo) * 255, 0, 255).astype(np.uint8)
    scaled = np.ascontiguousarray(scaled)
    h, w = scaled.shape[:2]
    if scaled.ndim == 2:
        return QImage(scaled.data, w, h, w, QImage.Format.Format_Grayscale8).copy(), caption
    return QImage(scaled.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy(), caption


class PictureLabel(QLabel):
    """An image scaled to the room it has, pixels kept square and sharp (nearest neighbour:
    a 28x28 input is read pixel by pixel). Its pixmap never sets its size, so a short dock
    shows the whole image smaller instead of its top strip."""

    def __init__(self) -> None:
        super().__init__(alignment=Qt.AlignmentFlag.AlignCenter)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
        self.setMinimumSize(48, 48)
        self._source: QImage | None = None

    def set_image(self, image: QImage | None) -> None:
        self._source = image
        self._fit()

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._fit()

    def _fit(self) -> None:
        if self._source is None:
            self.clear()
            return
        self.setPixmap(QPixmap.fromImage(self._source).scaled(
            self.size(), Qt.AspectRatioMode.KeepAspectRatio,
            Qt.TransformationMode.FastTransformation))
