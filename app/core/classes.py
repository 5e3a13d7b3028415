"""A model's class names (its ``classes`` metadata) and labels read as class indices: shared
by the contract's accuracy and the replay's verdicts, so both read a label the same way."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

NEVER_PREDICTED = -2  # a label that names no class: no prediction ever equals it


def class_names(meta: Mapping[str, str] | None) -> list[str]:
    """The class names a model carries in its metadata (``classes``: comma-separated or a
    JSON list), in index order; empty when it carries none."""
    text = (meta or {}).get("classes", "")
    if not text:
        return []
    try:
        names = json.loads(text)
        if isinstance(names, list):
            return [str(x) for x in names]
    except ValueError:
        pass
    return [x.strip() for x in text.split(",")]


def label_index(label: str, names: Sequence[str]) -> int:
    """A label as a class index: the label itself when it is a whole number, else its
    position among the model's class names; ``NEVER_PREDICTED`` when neither."""
    if label.lstrip("-").isdigit():
        return int(label)
    return list(names).index(label) if label in names else NEVER_PREDICTED
