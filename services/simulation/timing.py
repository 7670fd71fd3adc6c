"""Human seconds per question type, for simulations of the dialog policy.

Documented priors (``services.common.question_timing``): answering a box verification question takes
about 1.8 s and drawing a box with extreme clicking about 7 s. Interactive segmentation is timed click by click with the simulated
annotator's own model (``annotator.py``: finding the object, then per click a reaction, a look at the
mask and a Fitts'-law movement, occasional pauses), so the two never drift apart.

    timer = QuestionTimer(Profile(), rng)
    timer.verify_s(); timer.box_s(); timer.segment_s(clicks, (height, width), object_seen=True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from services.common.clicks import Click
from services.common.question_timing import BOX_S, VERIFY_S
from services.simulation.annotator import Profile, SimulatedAnnotator

LOOK_SD = 0.25  # lognormal spread of the verification and box times between questions


def expected_click_s(profile: Profile = Profile(), typical_move_px: float = 200.0) -> tuple[float, float]:
    """(first click incl. finding the object, each further click), expected seconds of ``annotator.py``'s
    model at a typical on-screen movement; the cost model's documented SEGMENT prior."""
    lognormal = lambda sd: math.exp(sd * sd / 2)  # noqa: E731 - mean of exp(N(0, sd))
    movement = 0.1 + 0.15 * math.log2(1 + typical_move_px / 12.0)
    think = 0.35 * lognormal(0.35) + profile.look_s * lognormal(0.4)
    pause = profile.pause_p * 6.0
    return ((profile.find_s * lognormal(0.4) + movement) / profile.speed,
            (think + movement) / profile.speed + pause)


class QuestionTimer:
    """Samples the seconds a person with ``profile`` spends on each kind of question."""

    def __init__(self, profile: Profile = Profile(), rng: np.random.Generator | None = None) -> None:
        self.profile = profile
        self.rng = rng or np.random.default_rng()

    def _look(self, mean_s: float) -> float:
        return mean_s * math.exp(self.rng.normal(-LOOK_SD * LOOK_SD / 2, LOOK_SD)) / self.profile.speed

    def verify_s(self) -> float:
        return self._look(VERIFY_S)

    def box_s(self) -> float:
        return self._look(BOX_S)

    def segment_s(self, clicks: Sequence[Click], shape: tuple[int, int], object_seen: bool = False) -> float:
        """Seconds of an interactive segmentation with these clicks, timed by the simulated annotator.
        ``object_seen``: the person already looked at this object (a proposal was just shown), so the
        first click needs no search (a think time instead of ``find_s``)."""
        if not clicks:
            return 0.0
        annotator = SimulatedAnnotator(np.zeros(shape, bool), self.profile, self.rng)
        durations = []
        for click in clicks:
            annotator.clicks.append(click)
            before = annotator.t_ms
            annotator._advance(annotator._click_s(click))
            durations.append((annotator.t_ms - before) / 1000.0)
        if object_seen:  # drawn last, so every other draw stays the same (common random numbers)
            first = clicks[0]
            distance = math.hypot(first.x - shape[1] / 2, first.y - shape[0] / 2) * annotator.scale
            movement = (0.1 + 0.15 * math.log2(1 + distance / 12.0)) / self.profile.speed
            think = 0.35 * math.exp(self.rng.normal(0, 0.35)) + self.profile.look_s * math.exp(self.rng.normal(0, 0.4))
            durations[0] = max(0.05, think / self.profile.speed + movement)  # no distraction pause here
        return float(sum(durations))
