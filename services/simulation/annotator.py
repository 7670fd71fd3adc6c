"""A human-like simulated annotator: the standard clicker's intent, carried out imperfectly and timed.

Each click starts from where the standard clicker would click (the centre of the largest error), then:
the hand jitters (Gaussian, in pixels of the displayed image), a careless click lands anywhere in the
error region instead of its centre, a wrong-sign click flips the label (and is undone when the annotator
notices the mask got worse). The annotator stops when the mask *looks* good enough (true IoU seen
through noise against a personal target), gives up with a per-click hazard, or at a click budget.
Time (``t_ms`` since the session start) follows a simple model: finding the object first, then per
click a reaction, a Fitts'-law pointer movement and a look at the updated mask, scaled by the
annotator's speed, with occasional long pauses.

    annotator = SimulatedAnnotator(annotation, profile, np.random.default_rng(seed))
    action = annotator.next_action(mask)   # Action("click" | "undo", click, t_ms) or None (submit)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from services.common.clicks import Click
from services.common.masks import iou
from services.models.clicker import Clicker

DISPLAY_LONG_SIDE_PX = 800  # the image is shown at about this size; jitter and movement are on screen


@dataclass(frozen=True)
class Profile:
    """One annotator's habits. Probabilities are per click; times are seconds at speed 1."""

    jitter_px: float = 3.0  # sd of the hand's error on screen
    careless_p: float = 0.05  # click somewhere in the error region instead of its centre
    wrong_sign_p: float = 0.02  # press the other button
    notice_p: float = 0.8  # undo a click that made the mask visibly worse
    target_iou: float = 0.90  # stop once the mask looks at least this good
    perception_sd: float = 0.03  # how well the annotator judges IoU by eye
    give_up_p: float = 0.02  # per-click hazard of submitting whatever is there (from the 4th click)
    max_clicks: int = 15
    speed: float = 1.0  # > 1 faster
    pause_p: float = 0.05  # a long pause (distraction) before a click
    find_s: float = 1.5  # finding the object before the first click
    look_s: float = 0.6  # looking at the updated mask after each click


PROFILES: dict[str, Profile] = {
    "careful": Profile(jitter_px=2.0, careless_p=0.02, wrong_sign_p=0.01, target_iou=0.93,
                       perception_sd=0.02, give_up_p=0.01, speed=0.8, look_s=0.9),
    "typical": Profile(),
    "hasty": Profile(jitter_px=5.0, careless_p=0.12, wrong_sign_p=0.04, notice_p=0.6, target_iou=0.85,
                     perception_sd=0.05, give_up_p=0.06, max_clicks=12, speed=1.5, look_s=0.35),
    "sloppy": Profile(jitter_px=9.0, careless_p=0.25, wrong_sign_p=0.08, notice_p=0.4, target_iou=0.80,
                      perception_sd=0.08, give_up_p=0.12, max_clicks=8, speed=1.3, pause_p=0.1,
                      look_s=0.3),
}


def sample_profile(rng: np.random.Generator, weights: dict[str, float] | None = None) -> Profile:
    """A named profile (by ``weights``, default mostly typical) with each habit perturbed a little."""
    weights = weights or {"careful": 0.25, "typical": 0.4, "hasty": 0.2, "sloppy": 0.15}
    names = list(weights)
    p = np.asarray([weights[n] for n in names], float)
    base = PROFILES[names[int(rng.choice(len(names), p=p / p.sum()))]]
    wobble = lambda v, sd: float(v * math.exp(rng.normal(0, sd)))  # noqa: E731
    return replace(base, jitter_px=wobble(base.jitter_px, 0.3), speed=wobble(base.speed, 0.25),
                   target_iou=float(np.clip(base.target_iou + rng.normal(0, 0.02), 0.6, 0.99)),
                   give_up_p=float(np.clip(wobble(base.give_up_p, 0.3), 0, 0.5)))


@dataclass(frozen=True)
class Action:
    kind: str  # "click" or "undo"
    t_ms: int
    click: Click | None = None


@dataclass
class SimulatedAnnotator:
    """Annotates one object (``annotation``: 0/128/255 or boolean mask) as a person with ``profile``."""

    annotation: np.ndarray
    profile: Profile = field(default_factory=Profile)
    rng: np.random.Generator = field(default_factory=np.random.default_rng)

    def __post_init__(self) -> None:
        self.clicker = Clicker(self.annotation)
        self.height, self.width = self.clicker.gt.shape
        self.scale = DISPLAY_LONG_SIDE_PX / max(self.height, self.width)  # screen px per image px
        self.clicks: list[Click] = []
        self.t_ms = 0.0
        self.undos = 0
        self._last_iou = 0.0
        self._last_wrong = False  # the last applied click was a wrong-sign slip
        self._pointer = (self.width / 2, self.height / 2)

    # --- what the annotator sees -----------------------------------------------------------
    def true_iou(self, mask: np.ndarray | None) -> float:
        mask = np.zeros_like(self.clicker.gt) if mask is None else np.asarray(mask, bool)
        return iou(mask, self.clicker.gt, self.clicker.ignore)

    def _looks_done(self, true_iou: float) -> bool:
        seen = true_iou + self.rng.normal(0, self.profile.perception_sd)
        return seen >= self.profile.target_iou

    # --- deciding --------------------------------------------------------------------------
    def next_action(self, mask: np.ndarray | None) -> Action | None:
        """The next thing the annotator does on seeing ``mask`` (the current mask, None at the
        start); ``None`` means submit. The caller applies the action and calls again."""
        p = self.profile
        current = self.true_iou(mask)
        if self.clicks:
            if self._last_wrong and current < self._last_iou - 0.01 and self.rng.random() < p.notice_p:
                self._last_wrong = False
                self.clicks.pop()
                self.clicker.set_state(list(self.clicks))
                self.undos += 1
                self._advance(self._think_s() + 0.4 / p.speed)
                return Action("undo", int(self.t_ms))
            frustration = min(1.0, len(self.clicks) / 4)  # giving up grows over the first clicks
            if self._looks_done(current) or self.rng.random() < p.give_up_p * frustration \
                    or len(self.clicks) >= p.max_clicks:
                return None
        self._last_iou = current
        click = self._choose_click(mask)
        if click is None:  # nothing left to correct
            return None
        self.clicks.append(click)
        self.clicker.set_state(list(self.clicks))
        self._advance(self._click_s(click))
        return Action("click", int(self.t_ms), click)

    def _choose_click(self, mask: np.ndarray | None) -> Click | None:
        p = self.profile
        ideal = Clicker(self.clicker.gt, self.clicker.ignore)
        ideal.set_state(list(self.clicks))
        intended = ideal.next_click(mask)
        if intended is None:
            return None
        x, y = float(intended.x), float(intended.y)
        if self.rng.random() < p.careless_p:  # anywhere in the error region, often near its edge
            pred = np.zeros_like(self.clicker.gt) if mask is None else np.asarray(mask, bool)
            region = (self.clicker.gt != pred) & ~self.clicker.ignore
            region &= (self.clicker.gt if intended.positive else ~self.clicker.gt)
            n, labels = cv2.connectedComponents(region.astype(np.uint8))
            if n > 1:
                ys, xs = np.nonzero(labels == labels[intended.y, intended.x])
                if len(ys):
                    k = int(self.rng.integers(len(ys)))
                    x, y = float(xs[k]), float(ys[k])
        sd = p.jitter_px / self.scale
        x = float(np.clip(x + self.rng.normal(0, sd), 0, self.width - 1))
        y = float(np.clip(y + self.rng.normal(0, sd), 0, self.height - 1))
        positive = intended.positive
        self._last_wrong = bool(self.rng.random() < p.wrong_sign_p)
        if self._last_wrong:
            positive = not positive
        return Click(int(x), int(y), positive)

    # --- the timing model ------------------------------------------------------------------
    def _think_s(self) -> float:
        p = self.profile
        pause = self.rng.uniform(2.0, 10.0) if self.rng.random() < p.pause_p else 0.0
        return (0.35 * math.exp(self.rng.normal(0, 0.35)) + p.look_s * math.exp(self.rng.normal(0, 0.4))) \
            / p.speed + pause

    def _click_s(self, click: Click) -> float:
        """Reaction + look + Fitts' law movement (a + b log2(1 + D/W), D and W on screen)."""
        p = self.profile
        distance = math.hypot(click.x - self._pointer[0], click.y - self._pointer[1]) * self.scale
        self._pointer = (click.x, click.y)
        movement = (0.1 + 0.15 * math.log2(1 + distance / 12.0)) / p.speed
        if not self.clicks[:-1]:  # the first click: find the object first
            return p.find_s * math.exp(self.rng.normal(0, 0.4)) / p.speed + movement
        return self._think_s() + movement

    def _advance(self, seconds: float) -> None:
        self.t_ms += max(0.05, seconds) * 1000.0
