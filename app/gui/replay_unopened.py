"""The stand-in target for a version that could not be opened when a replay started, so
that version's cases read "not asked" with why while the others run. No Qt.
Thread: the replay panel's worker, where the replay job opens its targets.
"""

from __future__ import annotations

import numpy as np

from app.core.replay_targets import Target, TargetDown


class Unopened(Target):
    """A version that could not be opened when the replay started (its registered file
    replaced or unreadable, a URI no target takes): every case is "not asked", with why,
    and the other versions still run. ``run_version`` turns a failing ``adapt`` into that."""

    def __init__(self, name: str, location: str, reason: str) -> None:
        self.name, self.location, self.reason = name, location, reason
        self.model_version = None

    def adapt(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise TargetDown(self.reason)

    def run(self, feeds: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
        raise TargetDown(self.reason)  # rows kept apart (odd shapes) are run one by one
