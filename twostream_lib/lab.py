"""The procedural lab datasets ``lab-ucf`` and ``lab-hmdb``, with ground-truth optical flow.

UCF-101 and HMDB-51 cannot be downloaded here, so the book runs on two rendered twins written
in **exactly the official on-disk layouts** (see :mod:`twostream_lib.splits`), so that the
real-data code path is the one exercised::

    <lab root>/lab-ucf/UCF-101/<Class>/v_<Class>_gXX_cYY.avi      (+ v_<Class>_gXX_cYY.flow.npz)
    <lab root>/lab-ucf/ucfTrainTestlist/{classInd.txt, trainlist0N.txt, testlist0N.txt}
    <lab root>/lab-hmdb/<class>/<class>_vNNN.avi                    (+ <class>_vNNN.flow.npz)
    <lab root>/lab-hmdb/testTrainMulti_7030_splits/<class>_test_splitN.txt   ("<name>.avi 1|2")
    <lab root>/lab_info.json                                        (scale, seed, sizes, class info)

``lab-ucf`` splits are by group, scaled from UCF-101 (which tests groups 1-7 / 8-14 / 15-21):
with ``G`` groups, split ``k`` tests groups ``(k-1)b+1 .. kb`` with ``b = round(7G/25)``; no
group is ever in both the train and test list of a split. ``lab-hmdb`` splits are 70/30 per
class per split (1 = train, 2 = test), as HMDB-51's ``testTrainMulti_7030_splits``.

**Content.** Articulated figures (capsule limbs in ``lab-ucf``; elliptical limbs, muted palette,
patterned backgrounds and stronger noise/camera motion in ``lab-hmdb``) with textured, shaded
limbs act over random textured backgrounds. Per clip: speed, amplitude, phase, position, scale,
colours, facing (a random mirror), length (2-4 s at 25 fps for ``small``/``full``; 12-20 frames
for ``tiny``), Gaussian sensor noise and, on about a third of the clips, camera motion (pan,
zoom, shake).

**Classes** (:data:`LAB_UCF_CLASSES`, :data:`LAB_HMDB_CLASSES`, :func:`class_info`):

* *motion-only pairs* (:data:`MOTION_PAIRS`): the second member of a pair is rendered as the
  **time reversal** of the first (pose, props and camera trajectories reversed), drawn from the
  same parameter distribution, so both members visit exactly the same set of frames: one frame
  cannot tell ``SitDown`` from ``StandUp``, only the motion can. lab-ucf: SitDown/StandUp,
  RaiseArms/LowerArms, ArmCirclesOut/ArmCirclesIn; lab-hmdb: sit_down/stand_up, fall_floor/get_up.
  (Left/right pairs such as WalkLeft/WalkRight or clockwise/anticlockwise circles are avoided on
  purpose: the paper's horizontal-flip augmentation, §3 and §5, maps one member onto the other
  for both streams, which would make them unlearnable. Every pair here is mirror-invariant.)
* *context classes* (:data:`CONTEXT_CLASSES`): a prop or background gives them away from one
  frame: BallDribble (orange ball, court floor), Swim (water), Juggle (three balls); ball_dribble,
  pull_up (a bar).
* *posture + motion*: the rest (JumpingJack, Wave, Punch, Kick, Bend, Clap, Jump; push_up,
  cartwheel, throw), with overlapping poses across classes.
* *shared* (:data:`SHARED_CLASSES`): SitDown/sit_down, StandUp/stand_up, Wave/wave and
  BallDribble/ball_dribble are the same motion in both datasets (the names differ only by case
  convention, CamelCase like UCF-101 and lower_snake like HMDB-51).

**Ground-truth flow.** ``<video stem>.flow.npz`` holds ``flow``, ``(T-1, H, W, 2)`` float16, in
pixels, x then y, *forward*: ``frame_t(p) ≈ frame_{t+1}(p + flow_t(p))``. It is exact for the
rendered scene: every pixel of frame ``t`` knows its layer (background or a limb/prop) and its
surface coordinates, and the flow is where that surface point is in frame ``t+1`` (limb rigid
motion composed with the camera). It is undefined where the point is occluded in ``t+1``.

Everything is deterministic for a seed: every clip has its own RNG seeded from
``(seed, dataset, class, clip index)``, so parallel workers give identical files.
"""
from __future__ import annotations

import colorsys
import json
import os
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

__all__ = [
    "FPS",
    "SCALES",
    "LAB_UCF_CLASSES",
    "LAB_HMDB_CLASSES",
    "MOTION_PAIRS",
    "CONTEXT_CLASSES",
    "SHARED_CLASSES",
    "DATASETS",
    "ClipSpec",
    "class_info",
    "clip_spec",
    "lab_clip_specs",
    "render_clip",
    "make_lab_datasets",
    "generate_clip",
    "flow_path",
]

FPS = 25
DATASETS = ("lab-ucf", "lab-hmdb")

# --------------------------------------------------------------------------------------------
# Classes
# --------------------------------------------------------------------------------------------
LAB_UCF_CLASSES: tuple[str, ...] = (
    "SitDown", "StandUp", "RaiseArms", "LowerArms", "ArmCirclesOut", "ArmCirclesIn",   # pairs
    "BallDribble", "Swim", "Juggle",                                                   # context
    "JumpingJack", "Wave", "Punch", "Kick", "Bend", "Clap", "Jump",                    # posture+motion
)
LAB_HMDB_CLASSES: tuple[str, ...] = (
    "sit_down", "stand_up", "fall_floor", "get_up",                                    # pairs
    "ball_dribble", "pull_up",                                                         # context
    "wave", "push_up", "cartwheel", "throw",                                           # posture+motion
)
MOTION_PAIRS: dict[str, tuple[tuple[str, str], ...]] = {
    "lab-ucf": (("SitDown", "StandUp"), ("RaiseArms", "LowerArms"), ("ArmCirclesOut", "ArmCirclesIn")),
    "lab-hmdb": (("sit_down", "stand_up"), ("fall_floor", "get_up")),
}
CONTEXT_CLASSES: dict[str, tuple[str, ...]] = {
    "lab-ucf": ("BallDribble", "Swim", "Juggle"),
    "lab-hmdb": ("ball_dribble", "pull_up"),
}
#: ``(lab-ucf name, lab-hmdb name)``: the same motion in both datasets.
SHARED_CLASSES: tuple[tuple[str, str], ...] = (
    ("SitDown", "sit_down"), ("StandUp", "stand_up"), ("Wave", "wave"), ("BallDribble", "ball_dribble"),
)

# class -> (action key, time-reversed?)
_CLASS_ACTION: dict[str, tuple[str, bool]] = {
    "SitDown": ("sit", False), "StandUp": ("sit", True),
    "RaiseArms": ("raise", False), "LowerArms": ("raise", True),
    "ArmCirclesOut": ("circles", False), "ArmCirclesIn": ("circles", True),
    "BallDribble": ("dribble", False), "Swim": ("swim", False), "Juggle": ("juggle", False),
    "JumpingJack": ("jack", False), "Wave": ("wave", False), "Punch": ("punch", False),
    "Kick": ("kick", False), "Bend": ("bend", False), "Clap": ("clap", False), "Jump": ("jump", False),
    "sit_down": ("sit", False), "stand_up": ("sit", True),
    "fall_floor": ("fall", False), "get_up": ("fall", True),
    "ball_dribble": ("dribble", False), "pull_up": ("pullup", False),
    "wave": ("wave", False), "push_up": ("pushup", False), "cartwheel": ("cartwheel", False),
    "throw": ("throw", False),
}

_DESCRIPTION = {
    "sit": "sits down on a chair (side view); its pair member is the exact time reversal",
    "raise": "raises both arms sideways above the head; pair member = time reversal",
    "circles": "small circles of both outstretched arms; pair member = time reversal",
    "dribble": "bounces an orange ball on a court floor",
    "swim": "alternate arm strokes, waist-deep in water",
    "juggle": "juggles three coloured balls",
    "jack": "jumping jacks",
    "wave": "waves one raised hand",
    "punch": "alternating forward punches (side view)",
    "kick": "repeated forward kicks (side view)",
    "bend": "bends forward at the waist and back up (side view)",
    "clap": "claps in front of the chest",
    "jump": "repeated squat jumps",
    "fall": "falls forward to the floor; pair member (get_up) = time reversal",
    "pullup": "pull-ups on a bar",
    "pushup": "push-ups (side view)",
    "cartwheel": "cartwheels across the scene (the camera follows)",
    "throw": "winds up and throws a ball (side view)",
}


def _classes(dataset: str) -> tuple[str, ...]:
    if dataset == "lab-ucf":
        return LAB_UCF_CLASSES
    if dataset == "lab-hmdb":
        return LAB_HMDB_CLASSES
    raise ValueError(f"unknown lab dataset {dataset!r}; expected one of {DATASETS}")


def class_info(dataset: str) -> dict:
    """Metadata of a lab dataset's classes.

    Returns a dict with ``classes`` (constant order), ``class_index`` (the ``classInd.txt`` /
    label order: sorted names, 0-based), ``motion_pairs`` (list of 2-tuples), ``context``,
    ``posture_motion``, ``kind`` (class -> ``"motion_pair" | "context" | "posture_motion"``),
    ``pair_of`` (class -> its pair partner), ``shared`` (class -> the same class's name in the
    other lab dataset) and ``description`` (class -> one line).
    """
    classes = _classes(dataset)
    pairs = MOTION_PAIRS[dataset]
    context = CONTEXT_CLASSES[dataset]
    pair_of = {a: b for a, b in pairs} | {b: a for a, b in pairs}
    kind = {c: "motion_pair" if c in pair_of else "context" if c in context else "posture_motion"
            for c in classes}
    if dataset == "lab-ucf":
        shared = {u: h for u, h in SHARED_CLASSES}
    else:
        shared = {h: u for u, h in SHARED_CLASSES}
    return {
        "dataset": dataset,
        "classes": list(classes),
        "class_index": sorted(classes),
        "motion_pairs": [tuple(p) for p in pairs],
        "context": list(context),
        "posture_motion": [c for c in classes if kind[c] == "posture_motion"],
        "kind": kind,
        "pair_of": pair_of,
        "shared": shared,
        "description": {c: _DESCRIPTION[_CLASS_ACTION[c][0]] for c in classes},
    }


# --------------------------------------------------------------------------------------------
# Scales and clip specs
# --------------------------------------------------------------------------------------------
#: height, width, UCF groups per class, clips per group (min, max), HMDB clips per class
#: (min, max), clip length in frames (min, max).
SCALES: dict[str, dict] = {
    "tiny": dict(height=48, width=64, ucf_groups=3, ucf_clips=(1, 2), hmdb_clips=(4, 5), frames=(12, 20)),
    "small": dict(height=96, width=128, ucf_groups=12, ucf_clips=(2, 3), hmdb_clips=(10, 14),
                  frames=(50, 100)),
    "full": dict(height=240, width=320, ucf_groups=25, ucf_clips=(4, 7), hmdb_clips=(40, 60),
                 frames=(50, 100)),
}


@dataclass(frozen=True)
class ClipSpec:
    """Everything that determines one rendered clip (its RNG is seeded from these fields).

    ``index`` is ``(group, clip)`` for lab-ucf and ``(clip, 0)`` for lab-hmdb; ``name`` is the
    file stem and ``rel`` the video path relative to the dataset root.
    """
    dataset: str
    cls: str
    index: tuple[int, int]
    seed: int
    height: int
    width: int
    n_frames: int
    name: str = ""
    rel: str = ""


def _crc(s: str) -> int:
    return zlib.crc32(s.encode("utf-8")) & 0xFFFFFFFF


def _rng(seed: int, *keys) -> np.random.Generator:
    ints = [int(seed) & 0xFFFFFFFF] + [_crc(k) if isinstance(k, str) else int(k) for k in keys]
    return np.random.default_rng(np.random.SeedSequence(ints))


def _check_scale(scale: str) -> dict:
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; expected one of {', '.join(SCALES)}")
    return SCALES[scale]


def clip_spec(dataset: str, cls: str, index: int = 0, seed: int = 0, scale: str = "tiny",
              n_frames: int | None = None) -> ClipSpec:
    """A stand-alone clip spec (for notebooks and tests), not necessarily one of the dataset's."""
    cfg = _check_scale(scale)
    if cls not in _classes(dataset):
        raise ValueError(f"class {cls!r} is not a {dataset} class; expected one of {_classes(dataset)}")
    if n_frames is None:
        n_frames = int(_rng(seed, dataset, cls, "len", index).integers(cfg["frames"][0], cfg["frames"][1] + 1))
    return ClipSpec(dataset, cls, (int(index), 9999), int(seed), cfg["height"], cfg["width"], int(n_frames),
                    name=f"{cls}_{index}", rel=f"{cls}/{cls}_{index}.avi")


def lab_clip_specs(dataset: str, scale: str = "small", seed: int = 0) -> list[ClipSpec]:
    """All clips of a lab dataset at a scale, in file order (class, group, clip)."""
    cfg = _check_scale(scale)
    out = []
    for cls in sorted(_classes(dataset)):
        lr = _rng(seed, dataset, cls, "layout")
        if dataset == "lab-ucf":
            for g in range(1, cfg["ucf_groups"] + 1):
                for c in range(1, int(lr.integers(cfg["ucf_clips"][0], cfg["ucf_clips"][1] + 1)) + 1):
                    n = int(lr.integers(cfg["frames"][0], cfg["frames"][1] + 1))
                    name = f"v_{cls}_g{g:02d}_c{c:02d}"
                    out.append(ClipSpec(dataset, cls, (g, c), seed, cfg["height"], cfg["width"], n,
                                        name, f"{cls}/{name}.avi"))
        else:
            for i in range(1, int(lr.integers(cfg["hmdb_clips"][0], cfg["hmdb_clips"][1] + 1)) + 1):
                n = int(lr.integers(cfg["frames"][0], cfg["frames"][1] + 1))
                name = f"{cls}_v{i:03d}"
                out.append(ClipSpec(dataset, cls, (i, 0), seed, cfg["height"], cfg["width"], n,
                                    name, f"{cls}/{name}.avi"))
    return out


# --------------------------------------------------------------------------------------------
# Actions: joint-angle trajectories in figure units (figure height ~ 1, y down, ground at y=0).
# An angle a is the direction (sin a, cos a): 0 points down, pi/2 right, pi up, -pi/2 left.
# Side-view actions face +x; every clip is mirrored with probability 1/2.
# --------------------------------------------------------------------------------------------
_B = dict(torso=0.30, head_r=0.075, upper=0.15, fore=0.15, thigh=0.23, shin=0.23, shoulder=0.085, hip=0.05,
          r_torso=0.07, r_upper=0.032, r_fore=0.027, r_thigh=0.043, r_shin=0.035)
_PI = np.pi


def _smooth(u):
    u = np.clip(u, 0.0, 1.0)
    return u * u * (3 - 2 * u)


def _wob(rng, t, amp):
    """A smooth random wobble (two slow sinusoids), so no two clips hold exactly the same pose."""
    out = np.zeros_like(t)
    for _ in range(2):
        out += amp * rng.uniform(0.3, 0.7) * np.sin(2 * _PI * rng.uniform(0.15, 0.8) * t + rng.uniform(0, 2 * _PI))
    return out


def _base(rng, t, view: str) -> dict:
    T = len(t)
    z = np.zeros(T)
    w = lambda a: _wob(rng, t, a)  # noqa: E731
    ch = dict(torso=_PI + w(0.05), head=w(0.12), width=np.full(T, 1.0 if view == "front" else 0.12),
              root_x=z.copy(), lift=z.copy())
    if view == "front":
        ch.update(arm_l=-0.14 + w(0.06), arm_r=0.14 + w(0.06), elb_l=0.12 + w(0.06), elb_r=-0.12 + w(0.06),
                  leg_l=-0.07 + w(0.03), leg_r=0.07 + w(0.03), kne_l=z + w(0.02), kne_r=z + w(0.02))
    else:
        ch.update(arm_l=0.05 + w(0.06), arm_r=-0.03 + w(0.06), elb_l=0.2 + w(0.06), elb_r=0.2 + w(0.06),
                  leg_l=0.03 + w(0.03), leg_r=-0.03 + w(0.03), kne_l=-0.03 + w(0.02), kne_r=-0.03 + w(0.02))
    return ch


def _transition(rng, P, lo, hi):
    """A smooth 0->1 ramp of random duration at a random time, completed inside the clip.

    The rest before and after are exchangeable, so the clip and its time reversal are
    equally likely (the motion-only pairs rely on this)."""
    dur = P["dur"]
    # the motion fills 60-90% of the clip, so most stacks of L = 10 fields see it (a short transition in a long
    # static clip would leave the temporal stream little to tell the pair members apart)
    d = min(max(rng.uniform(lo, hi) / P["speed"], 0.6 * dur), 0.9 * dur)
    t0 = rng.uniform(0, dur - d)
    return (P["t"] - t0) / d


def _act_sit(rng, t, P):
    ch = _base(rng, t, "side")
    u = _smooth(_transition(rng, P, 1.2, 2.0))
    th = rng.uniform(1.35, 1.6)
    for s in "lr":
        ch[f"leg_{s}"] = ch[f"leg_{s}"] + th * u
        ch[f"kne_{s}"] = ch[f"kne_{s}"] - th * u
        ch[f"arm_{s}"] = ch[f"arm_{s}"] + 0.5 * np.sin(_PI * u) + 0.2 * u
        ch[f"elb_{s}"] = ch[f"elb_{s}"] + 0.5 * u
    ch["torso"] = ch["torso"] - (0.5 * np.sin(_PI * u) + 0.08 * u)
    leg = (ch["leg_l"] + ch["leg_r"]) / 2
    shin = leg + (ch["kne_l"] + ch["kne_r"]) / 2
    ch["root_x"] = -(_B["thigh"] * np.sin(leg) + _B["shin"] * np.sin(shin))  # feet stay planted
    i1 = int(np.argmax(u))
    wood = _rand_color(rng, (0.05, 0.12), (0.4, 0.8), (0.35, 0.7))

    def post(J):
        hx, hy = J["hip"][0][i1], J["hip"][1][i1]
        seat_y = hy + _B["r_thigh"] + 0.02
        x0 = hx - 0.13
        T = len(t)
        return [
            _prop(T, x0, seat_y, 0.0, -seat_y, 0.018, wood, front=False),            # back leg
            _prop(T, x0 + 0.22, seat_y, 0.0, -seat_y, 0.018, wood, front=False),     # front leg
            _prop(T, x0, seat_y, _PI, 0.3, 0.02, wood, front=False),                 # backrest
            _prop(T, x0, seat_y, _PI / 2, 0.22, 0.022, wood, front=False),           # seat
        ]
    return ch, post


def _act_raise(rng, t, P):
    ch = _base(rng, t, "front")
    u = _smooth(_transition(rng, P, 1.0, 1.8))
    top = min(rng.uniform(2.4, 2.9) * P["amp"], 2.95)
    ch["arm_r"] = ch["arm_r"] + (top - 0.14) * u
    ch["arm_l"] = ch["arm_l"] - (top - 0.14) * u
    return ch, None


def _act_circles(rng, t, P):
    ch = _base(rng, t, "front")
    th = 2 * _PI * rng.uniform(0.6, 1.1) * P["speed"] * t + P["phase"]
    A, Bm = 0.5 * P["amp"], 0.6 * P["amp"]
    a = _PI / 2 + A * np.sin(th) + _wob(rng, t, 0.05)
    e = Bm * (1 + np.cos(th))
    ch.update(arm_r=a, elb_r=-e, arm_l=-a, elb_l=e)
    return ch, None


def _act_dribble(rng, t, P):
    ch = _base(rng, t, "front")
    ph = 2 * _PI * rng.uniform(1.3, 2.0) * P["speed"] * t / 2 + P["phase"]
    ch["arm_r"] = 0.55 + 0.2 * np.cos(2 * ph)
    ch["elb_r"] = -0.5 + 0.3 * np.cos(2 * ph)
    for s, sg in (("l", -1), ("r", 1)):
        ch[f"leg_{s}"] = ch[f"leg_{s}"] + sg * 0.1
        ch[f"kne_{s}"] = ch[f"kne_{s}"] - sg * 0.15
    bounce = np.abs(np.cos(ph))
    color = _rand_color(rng, (0.04, 0.09), (0.75, 0.95), (0.8, 1.0))
    rb = 0.06

    def post(J):
        hx = J["hand_r"][0].mean() + 0.01
        hy = J["hand_r"][1].mean()
        y = -rb - (-hy - 2 * rb) * bounce
        return [dict(x=np.full(len(t), hx), y=y, a=3 * ph, L=0.0, r=rb, color=color, front=True, contrast=0.6)]
    return ch, post


def _act_swim(rng, t, P):
    ch = _base(rng, t, "front")
    th = 2 * _PI * rng.uniform(0.5, 0.9) * P["speed"] * t + P["phase"]
    A = min(1.25 * P["amp"], 1.4)
    ch["arm_r"] = _PI / 2 + A * np.sin(th)
    ch["arm_l"] = -(_PI / 2 + A * np.sin(th + _PI))
    ch["leg_l"] = ch["leg_l"] + 0.15 * np.sin(2 * th)
    ch["leg_r"] = ch["leg_r"] - 0.15 * np.sin(2 * th)
    water = _rand_color(rng, (0.52, 0.6), (0.5, 0.8), (0.5, 0.8))

    def post(J):
        wy = J["hip"][1].mean() - 0.03 + 0.32
        return [dict(x=np.full(len(t), -4.0), y=np.full(len(t), wy), a=np.full(len(t), _PI / 2), L=8.0, r=0.32,
                     color=water, front=True, contrast=0.5)]
    return ch, post


def _act_juggle(rng, t, P):
    ch = _base(rng, t, "front")
    th = 2 * _PI * rng.uniform(0.7, 1.1) * P["speed"] * t + P["phase"]
    ch["arm_r"] = 0.2 + 0.05 * np.sin(3 * th)
    ch["arm_l"] = -0.2 + 0.05 * np.sin(3 * th + _PI)
    ch["elb_r"] = -1.6 + 0.25 * np.sin(3 * th)
    ch["elb_l"] = 1.6 - 0.25 * np.sin(3 * th + _PI)
    colors = [_rand_color(rng, (h, h + 0.08), (0.7, 1.0), (0.8, 1.0)) for h in rng.permutation([0.0, 0.3, 0.6])]
    height = rng.uniform(0.3, 0.42) * P["amp"]

    def post(J):
        hy = (J["hand_r"][1] + J["hand_l"][1]) / 2 - 0.03
        cx = (J["hand_r"][0] + J["hand_l"][0]) / 2
        out = []
        for i in range(3):
            b = th + 2 * _PI * i / 3
            x = cx + 0.14 * np.cos(b)
            y = hy - height * np.maximum(np.sin(b), 0) + 0.02 * np.minimum(np.sin(b), 0)
            out.append(dict(x=x, y=y, a=2 * b, L=0.0, r=0.05, color=colors[i], front=True, contrast=0.5))
        return out
    return ch, post


def _act_jack(rng, t, P):
    ch = _base(rng, t, "front")
    th = 2 * _PI * rng.uniform(0.8, 1.3) * P["speed"] * t + P["phase"]
    c = (1 - np.cos(th)) / 2
    top = min(2.7 * P["amp"], 2.9)
    ch["arm_r"] = ch["arm_r"] + (top - 0.14) * c
    ch["arm_l"] = ch["arm_l"] - (top - 0.14) * c
    ch["leg_r"] = ch["leg_r"] + 0.33 * c
    ch["leg_l"] = ch["leg_l"] - 0.33 * c
    ch["lift"] = 0.05 * np.abs(np.sin(th))
    return ch, None


def _act_wave(rng, t, P):
    ch = _base(rng, t, "front")
    th = 2 * _PI * rng.uniform(1.5, 2.5) * P["speed"] * t + P["phase"]
    up = rng.uniform(2.2, 2.6)
    ch["arm_r"] = up + _wob(rng, t, 0.08)
    ch["elb_r"] = (_PI - up) + 0.45 * P["amp"] * np.sin(th)
    return ch, None


def _act_punch(rng, t, P):
    ch = _base(rng, t, "side")
    th = 2 * _PI * rng.uniform(0.8, 1.3) * P["speed"] * t + P["phase"]
    reach = min(1.45 * P["amp"], 1.6)
    for s, off in (("r", 0.0), ("l", _PI)):
        p = np.maximum(0, np.sin(th + off)) ** 2
        ch[f"arm_{s}"] = 0.35 + (reach - 0.35) * p
        ch[f"elb_{s}"] = 2.0 * (1 - p)
    ch["torso"] = ch["torso"] - 0.12
    ch["leg_l"], ch["kne_l"] = ch["leg_l"] + 0.25, ch["kne_l"] - 0.25
    ch["leg_r"], ch["kne_r"] = ch["leg_r"] - 0.2, ch["kne_r"] - 0.2
    return ch, None


def _act_kick(rng, t, P):
    ch = _base(rng, t, "side")
    th = 2 * _PI * rng.uniform(0.5, 0.9) * P["speed"] * t + P["phase"]
    k = np.maximum(0, np.sin(th)) ** 1.5
    ch["leg_r"] = ch["leg_r"] + min(1.35 * P["amp"], 1.5) * k
    ch["kne_r"] = ch["kne_r"] - 0.8 * np.sin(_PI * k)
    for s in "lr":
        ch[f"arm_{s}"] = 0.5 + _wob(rng, t, 0.1)
        ch[f"elb_{s}"] = 1.8 + _wob(rng, t, 0.1)
    ch["torso"] = ch["torso"] + 0.3 * k
    return ch, None


def _act_bend(rng, t, P):
    ch = _base(rng, t, "side")
    th = 2 * _PI * rng.uniform(0.35, 0.7) * P["speed"] * t + P["phase"]
    b = (1 - np.cos(th)) / 2
    ch["torso"] = ch["torso"] - min(1.3 * P["amp"], 1.45) * b
    for s in "lr":
        ch[f"arm_{s}"] = ch[f"arm_{s}"] + 0.25 * b
    ch["root_x"] = -0.1 * b
    return ch, None


def _act_clap(rng, t, P):
    ch = _base(rng, t, "front")
    o = np.abs(np.sin(_PI * rng.uniform(1.2, 2.2) * P["speed"] * t + P["phase"])) * P["amp"]
    ch["arm_r"] = 0.45 + 0.45 * o
    ch["elb_r"] = -1.9 + 1.4 * o
    ch["arm_l"], ch["elb_l"] = -ch["arm_r"], -ch["elb_r"]
    return ch, None


def _act_jump(rng, t, P):
    ch = _base(rng, t, "front")
    th = 2 * _PI * rng.uniform(0.8, 1.2) * P["speed"] * t + P["phase"]
    air = np.maximum(0, np.sin(th))
    crouch = np.maximum(0, -np.sin(th))
    ch["lift"] = 0.16 * P["amp"] * air
    ch["leg_l"], ch["kne_l"] = ch["leg_l"] - 0.3 * crouch, ch["kne_l"] + 0.6 * crouch
    ch["leg_r"], ch["kne_r"] = ch["leg_r"] + 0.3 * crouch, ch["kne_r"] - 0.6 * crouch
    ch["arm_r"] = ch["arm_r"] + 1.6 * air
    ch["arm_l"] = ch["arm_l"] - 1.6 * air
    return ch, None


def _act_fall(rng, t, P):
    ch = _base(rng, t, "side")
    u = np.clip(_transition(rng, P, 0.6, 1.0), 0, 1) ** 2
    rho = u * rng.uniform(1.42, 1.52)
    ch["torso"] = ch["torso"] - rho
    fl = np.sin(_PI * u)
    for s in "lr":
        ch[f"leg_{s}"] = ch[f"leg_{s}"] - rho
        ch[f"arm_{s}"] = ch[f"arm_{s}"] - rho + 1.4 * fl + 0.3 * u
    ch["root_x"] = (_B["thigh"] + _B["shin"]) * np.sin(rho)
    return ch, None


def _act_pullup(rng, t, P):
    ch = _base(rng, t, "front")
    c = (1 - np.cos(2 * _PI * rng.uniform(0.4, 0.7) * P["speed"] * t + P["phase"])) / 2 * min(P["amp"], 1.0)
    au = _PI - 0.35 - 1.0 * c
    e = 1.2 * c
    ch.update(arm_r=au, elb_r=e, arm_l=-au, elb_l=-e)
    ch["kne_l"] = ch["kne_l"] + 0.1
    ch["kne_r"] = ch["kne_r"] - 0.1
    ch["anchor"] = "hands"
    metal = _rand_color(rng, (0.0, 1.0), (0.0, 0.15), (0.55, 0.85))

    def post(J):
        T = len(t)
        by = J["hand_r"][1].mean()
        return [_prop(T, -0.45, by, _PI / 2, 0.9, 0.022, metal, front=False),
                _prop(T, -0.45, by, 0.0, -by, 0.025, metal, front=False),
                _prop(T, 0.45, by, 0.0, -by, 0.025, metal, front=False)]
    return ch, post


def _act_pushup(rng, t, P):
    ch = _base(rng, t, "side")
    c = (1 - np.cos(2 * _PI * rng.uniform(0.5, 0.9) * P["speed"] * t + P["phase"])) / 2 * min(P["amp"], 1.0)
    beta = 0.40 - 0.20 * c
    leg_len, tor = _B["thigh"] + _B["shin"], 0.9 * _B["torso"]
    l_eff = np.clip((leg_len + tor) * np.sin(beta) + _B["r_shin"] - _B["r_fore"], 0.02, 0.3)
    e = 2 * np.arccos(np.clip(l_eff / (_B["upper"] + _B["fore"]), 0, 1))
    ch["torso"] = _PI / 2 + beta + _wob(rng, t, 0.02)
    for s in "lr":
        ch[f"leg_{s}"] = beta - _PI / 2
        ch[f"kne_{s}"] = np.zeros_like(t)
        ch[f"arm_{s}"] = -e / 2
        ch[f"elb_{s}"] = e
    ch["head"] = 0.2 + _wob(rng, t, 0.05)
    return ch, None


def _act_cartwheel(rng, t, P):
    ch = _base(rng, t, "front")
    rho = 2 * _PI * rng.uniform(0.35, 0.55) * P["speed"] * t + P["phase"]
    sp = rng.uniform(0.45, 0.65)
    ch["torso"] = _PI + rho
    ch["arm_r"], ch["arm_l"] = _PI - sp + rho, _PI + sp + rho
    ch["elb_r"], ch["elb_l"] = np.zeros_like(t), np.zeros_like(t)
    ch["leg_l"], ch["leg_r"] = -0.45 + rho, 0.45 + rho
    ch["root_x"] = -0.42 * (rho - rho[0])
    ch["anchor"] = "ground_all"
    ch["follow"] = True
    return ch, None


def _act_throw(rng, t, P):
    ch = _base(rng, t, "side")
    dur = P["dur"]
    tr = rng.uniform(0.35, 0.65) * dur
    tau = (t - tr) * P["speed"]
    kx = [-0.7, -0.25, 0.0, 0.3, 0.9]
    ch["arm_r"] = np.interp(tau, kx, [0.05, -2.3, -4.3, -5.7, -2 * _PI + 0.05])
    ch["elb_r"] = np.interp(tau, kx, [0.2, 1.2, 0.1, 0.3, 0.2])
    ch["arm_l"] = ch["arm_l"] + np.interp(tau, kx, [0.0, 1.2, 0.6, -0.3, 0.0])
    ch["torso"] = ch["torso"] + np.interp(tau, kx, [0.0, 0.2, -0.1, -0.35, 0.0])
    ch["leg_l"] = ch["leg_l"] + np.interp(tau, kx, [0.0, 0.2, 0.35, 0.35, 0.1])
    ch["leg_r"] = ch["leg_r"] + np.interp(tau, kx, [0.0, -0.1, -0.25, -0.25, -0.1])
    i_r = int(np.searchsorted(tau, 0.0))
    color = _rand_color(rng, (0.0, 1.0), (0.6, 0.9), (0.8, 1.0))

    def post(J):
        hx, hy = J["hand_r"]
        x, y = hx.copy(), hy.copy()
        if 0 < i_r < len(t):
            vx = (hx[i_r] - hx[i_r - 1]) * FPS * 1.1
            vy = (hy[i_r] - hy[i_r - 1]) * FPS * 1.1 - 0.5
            dt = t[i_r:] - t[i_r]
            x[i_r:] = hx[i_r] + vx * dt
            y[i_r:] = hy[i_r] + vy * dt + 0.5 * 5.0 * dt ** 2
        return [dict(x=x, y=y, a=6 * t, L=0.0, r=0.035, color=color, front=True, contrast=0.5)]
    return ch, post


_ACTIONS: dict[str, Callable] = {
    "sit": _act_sit, "raise": _act_raise, "circles": _act_circles, "dribble": _act_dribble,
    "swim": _act_swim, "juggle": _act_juggle, "jack": _act_jack, "wave": _act_wave, "punch": _act_punch,
    "kick": _act_kick, "bend": _act_bend, "clap": _act_clap, "jump": _act_jump, "fall": _act_fall,
    "pullup": _act_pullup, "pushup": _act_pushup, "cartwheel": _act_cartwheel, "throw": _act_throw,
}


def _prop(T, x, y, a, L, r, color, front):
    return dict(x=np.full(T, float(x)), y=np.full(T, float(y)), a=np.full(T, float(a)), L=float(L), r=float(r),
                color=color, front=front, contrast=0.35)


def _rand_color(rng, h, s, v) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(rng.uniform(*h) % 1.0, rng.uniform(*s), rng.uniform(*v)),
                    dtype=np.float32) * 255


# --------------------------------------------------------------------------------------------
# Forward kinematics: channels -> parts (x, y, angle arrays over T; length L; radius r)
# --------------------------------------------------------------------------------------------
_FIG_ORDER = ("thigh_l", "shin_l", "thigh_r", "shin_r", "torso", "head", "upper_l", "fore_l", "upper_r", "fore_r")


def _dir(a):
    return np.sin(a), np.cos(a)


def _skeleton(ch: dict) -> tuple[dict, dict]:
    """Forward kinematics. Returns (parts, joints) in figure units, grounded (y=0 is the floor)."""
    B = _B
    w = ch["width"]
    hx, hy = ch["root_x"].astype(float), np.zeros_like(ch["root_x"], dtype=float)
    ta = ch["torso"]
    tdx, tdy = _dir(ta)
    px, py = _dir(ta + _PI / 2)
    parts: dict[str, tuple] = {}
    J: dict[str, tuple] = {}
    parts["torso"] = (hx, hy, ta, B["torso"], B["r_torso"] * (0.8 + 0.2 * float(np.mean(w))))
    nx, ny = hx + B["torso"] * tdx, hy + B["torso"] * tdy
    ha = ta + ch["head"]
    hdx, hdy = _dir(ha)
    parts["head"] = (nx + (B["head_r"] + 0.02) * hdx, ny + (B["head_r"] + 0.02) * hdy, ha, 0.0, B["head_r"])
    sx, sy = hx + 0.9 * B["torso"] * tdx, hy + 0.9 * B["torso"] * tdy
    J["hip"], J["neck"] = (hx, hy), (nx, ny)
    for s, sg in (("l", 1), ("r", -1)):
        ox, oy = sx + sg * B["shoulder"] * w * px, sy + sg * B["shoulder"] * w * py
        a1 = ch[f"arm_{s}"]
        ex, ey = ox + B["upper"] * np.sin(a1), oy + B["upper"] * np.cos(a1)
        a2 = a1 + ch[f"elb_{s}"]
        parts[f"upper_{s}"] = (ox, oy, a1, B["upper"], B["r_upper"])
        parts[f"fore_{s}"] = (ex, ey, a2, B["fore"], B["r_fore"])
        J[f"hand_{s}"] = (ex + B["fore"] * np.sin(a2), ey + B["fore"] * np.cos(a2))
        qx, qy = hx + sg * B["hip"] * w * px, hy + sg * B["hip"] * w * py
        l1 = ch[f"leg_{s}"]
        kx, ky = qx + B["thigh"] * np.sin(l1), qy + B["thigh"] * np.cos(l1)
        l2 = l1 + ch[f"kne_{s}"]
        parts[f"thigh_{s}"] = (qx, qy, l1, B["thigh"], B["r_thigh"])
        parts[f"shin_{s}"] = (kx, ky, l2, B["shin"], B["r_shin"])
        J[f"foot_{s}"] = (kx + B["shin"] * np.sin(l2), ky + B["shin"] * np.cos(l2))
    # Grounding: the lowest point of the body touches the floor (minus a lift for jumps),
    # or (pull-ups) the hands hang from a fixed bar with the feet just off the floor.
    low = np.max([np.maximum(y, y + L * np.cos(a)) + r for (x, y, a, L, r) in parts.values()], axis=0)
    if ch.get("anchor") == "hands":
        hand_y = (J["hand_l"][1] + J["hand_r"][1]) / 2
        bar = -np.max(low - hand_y) - 0.03
        shift = bar - hand_y
    else:
        shift = -low - ch["lift"]
    parts = {k: (x, y + shift, a, L, r) for k, (x, y, a, L, r) in parts.items()}
    J = {k: (x, y + shift) for k, (x, y) in J.items()}
    return parts, J


# --------------------------------------------------------------------------------------------
# Textures and styles
# --------------------------------------------------------------------------------------------
_STYLE = {
    "lab-ucf": dict(shape="capsule", sat=(0.45, 0.9), val=(0.55, 1.0), noise=(1.5, 4.0), cam_p=0.33,
                    backgrounds=("noise", "blobs", "stripes", "tiles"), limb_contrast=(0.35, 0.6), stripes=0.0,
                    fig_scale=(0.6, 0.78)),
    "lab-hmdb": dict(shape="ellipse", sat=(0.12, 0.45), val=(0.3, 0.75), noise=(3.0, 7.0), cam_p=0.45,
                     backgrounds=("wallpaper", "bricks", "noise_muted"), limb_contrast=(0.25, 0.5), stripes=0.6,
                     fig_scale=(0.55, 0.72)),
}


def _octaves(rng, h, w, sigmas=(1.0, 3.0, 8.0), weights=(0.5, 0.8, 1.0)) -> np.ndarray:
    out = np.zeros((h, w), np.float32)
    for s, wt in zip(sigmas, weights):
        n = rng.standard_normal((h, w)).astype(np.float32)
        n = cv2.GaussianBlur(n, (0, 0), s)
        out += wt * n / (n.std() + 1e-6)
    return out / (out.std() + 1e-6)


def _tileable_noise(rng, n=64, sigma=2.0) -> np.ndarray:
    """Periodic band-limited noise, (n, n) float32, zero mean, unit std (for limb textures)."""
    white = rng.standard_normal((n, n))
    f = np.fft.fftfreq(n)
    g = np.exp(-(f[:, None] ** 2 + f[None, :] ** 2) * (2 * _PI * sigma) ** 2 / 2)
    out = np.real(np.fft.ifft2(np.fft.fft2(white) * g))
    return ((out - out.mean()) / (out.std() + 1e-9)).astype(np.float32)


def _mix(n, c0, c1):
    a = np.clip(0.5 + 0.3 * n, 0, 1)[..., None]
    return c0 * (1 - a) + c1 * a


def _background(rng, kind: str, h: int, w: int, unit: float, style: dict) -> np.ndarray:
    """A (h, w, 3) float32 texture in 0..255; ``unit`` = pixels per 'small-scale pixel'."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / unit
    sat, val = style["sat"], style["val"]
    c0 = _rand_color(rng, (0, 1), (sat[0] * 0.6, sat[1] * 0.8), val)
    c1 = _rand_color(rng, (0, 1), (sat[0] * 0.6, sat[1] * 0.8), val)
    grain = _octaves(rng, h, w, sigmas=(max(1.0 * unit, 1.0), 2.5 * unit), weights=(1.0, 0.7))
    if kind in ("noise", "noise_muted"):
        n = _octaves(rng, h, w, sigmas=(1.2 * unit, 3.5 * unit, 10 * unit))
        img = _mix(n, c0, c1)
        if kind == "noise_muted":
            img = 0.6 * img + 0.4 * img.mean()
    elif kind == "blobs":
        img = np.zeros((h, w, 3), np.float32) + c0
        for _ in range(int(h * w / (60 * unit * unit))):
            col = _rand_color(rng, (0, 1), sat, val)
            cv2.circle(img, (int(rng.uniform(0, w)), int(rng.uniform(0, h))), int(rng.uniform(1.5, 7) * unit),
                       col.tolist(), -1, lineType=cv2.LINE_AA)
        img = cv2.GaussianBlur(img, (0, 0), 0.6 * unit)
    elif kind == "stripes":
        ang = rng.uniform(0, _PI)
        period = rng.uniform(5, 14)
        s = np.sin(2 * _PI * (xx * np.cos(ang) + yy * np.sin(ang)) / period)
        img = _mix(2.5 * s + _octaves(rng, h, w, sigmas=(2 * unit, 6 * unit)), c0, c1)
    elif kind == "tiles":
        cell = rng.uniform(5, 12)
        s = ((np.floor(xx / cell) + np.floor(yy / cell)) % 2) * 2 - 1
        img = cv2.GaussianBlur(_mix(1.5 * s, c0, c1), (0, 0), 0.5 * unit)
    elif kind == "wallpaper":
        p = rng.uniform(6, 12)
        s = np.abs(np.sin(_PI * (xx + yy) / p)) + np.abs(np.sin(_PI * (xx - yy) / p))
        img = _mix(2.0 * (s - 1.0), c0, c1)
    elif kind == "bricks":
        bh, bw = rng.uniform(4, 7), rng.uniform(9, 16)
        row = np.floor(yy / bh)
        xo = xx + (row % 2) * bw / 2
        mortar = (np.minimum(yy % bh, bh - yy % bh) < 0.6) | (np.minimum(xo % bw, bw - xo % bw) < 0.6)
        tone = (np.floor(xo / bw) * 7.3 + row * 3.1) % 1.0
        img = _mix(np.where(mortar, 2.0, tone * 1.6 - 0.8), c0, c1)
    elif kind == "water":
        c0 = _rand_color(rng, (0.53, 0.6), (0.55, 0.9), (0.45, 0.75))
        c1 = _rand_color(rng, (0.48, 0.55), (0.2, 0.5), (0.8, 1.0))
        s = np.sin(2 * _PI * yy / rng.uniform(4, 7) + 1.5 * np.sin(2 * _PI * xx / rng.uniform(12, 25)))
        img = _mix(1.6 * s + _octaves(rng, h, w, sigmas=(1.5 * unit, 5 * unit)), c0, c1)
    elif kind == "court":
        c0 = _rand_color(rng, (0.06, 0.1), (0.5, 0.75), (0.6, 0.85))
        c1 = _rand_color(rng, (0.05, 0.09), (0.6, 0.85), (0.35, 0.6))
        pw = rng.uniform(4, 7)
        tone = (np.floor(xx / pw) * 5.7) % 1.0
        img = _mix(2.0 * tone - 1.0 + 0.8 * _octaves(rng, h, w, sigmas=(1.0 * unit, 4 * unit)), c0, c1)
    else:  # pragma: no cover - internal
        raise ValueError(kind)
    if kind in ("blobs", "tiles", "stripes", "wallpaper", "bricks"):   # tone busy patterns down
        img = 0.65 * img + 0.35 * img.reshape(-1, 3).mean(0)
    img = img + 14.0 * grain[..., None]
    # Band-limit (sigma ~0.8 px): texture detail stays trackable, but no energy near Nyquist,
    # so that sub-pixel motion does not alias (the GT-flow warp then matches closely).
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), max(0.8 * unit, 0.8))
    return np.clip(img, 0, 255).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Scene: parts in world pixels, camera, background
# --------------------------------------------------------------------------------------------
@dataclass
class _Part:
    x: np.ndarray   # (T,) world x of the part origin (proximal joint)
    y: np.ndarray
    a: np.ndarray   # (T,) direction angle
    L: float        # length (px)
    r: float        # radius (px)
    color: np.ndarray
    shape: str      # "capsule" | "ellipse"
    tex: tuple[float, float]
    contrast: float
    figure: bool


@dataclass
class _Scene:
    T: int
    H: int
    W: int
    parts: list[_Part]
    zoom: np.ndarray   # (T,)
    fx: np.ndarray     # (T,) camera focus, world
    fy: np.ndarray
    bg: np.ndarray     # (Hb, Wb, 3) float32
    bg_origin: tuple[float, float]
    atlas: np.ndarray  # (64, 64) float32 limb texture
    noise: float


def _smooth_noise(rng, T, sigma_frames):
    n = rng.standard_normal(T + 20)
    k = np.exp(-0.5 * (np.arange(-10, 11) / sigma_frames) ** 2)
    out = np.convolve(n, k / np.sqrt((k ** 2).sum()), mode="same")[10:10 + T]
    return out


def _build_scene(spec: ClipSpec) -> _Scene:
    rng = _rng(spec.seed, spec.dataset, spec.cls, spec.index[0], spec.index[1])
    style = _STYLE[spec.dataset]
    key, reverse = _CLASS_ACTION[spec.cls]
    T, H, W = spec.n_frames, spec.height, spec.width
    unit = W / 128.0
    t = np.arange(T) / FPS
    P = dict(speed=rng.uniform(0.75, 1.3), amp=rng.uniform(0.8, 1.15), phase=rng.uniform(0, 2 * _PI),
             dur=max((T - 1) / FPS, 1e-3), t=t)
    ch, post = _ACTIONS[key](rng, t, P)
    fparts, J = _skeleton(ch)
    props = post(J) if post is not None else []
    mirror = rng.random() < 0.5
    sg = -1.0 if mirror else 1.0

    # Figure size and placement: keep the whole trajectory inside the frame when possible.
    allx = [x + s * L * np.sin(a) for (x, y, a, L, r) in fparts.values() for s in (0, 1)]
    ally = [y + s * L * np.cos(a) for (x, y, a, L, r) in fparts.values() for s in (0, 1)]
    top = -float(np.min(ally)) + 0.1
    for p in props:
        if not p["front"] or p["L"] < 2:
            ally.append(p["y"])
    top = max(top, -float(np.min(ally)) + 0.1)
    ground = H * rng.uniform(0.84, 0.93)
    h = min(H * rng.uniform(*style["fig_scale"]), (ground - 0.04 * H) / top)
    xs = sg * np.concatenate(allx)
    span = (xs.max() - xs.min() + 0.25) * h
    follow = bool(ch.get("follow", False))
    if span < 0.9 * W and not follow:
        lo, hi = 0.05 * W + 0.12 * h - xs.min() * h, 0.95 * W - 0.12 * h - xs.max() * h
        bx = rng.uniform(lo, hi) if hi > lo else (lo + hi) / 2
    else:
        bx = W / 2 - sg * h * float(np.mean(ch["root_x"]))
        follow = True

    shirt = _rand_color(rng, (0, 1), style["sat"], style["val"])
    pants = _rand_color(rng, (0, 1), style["sat"], (style["val"][0] * 0.7, style["val"][1] * 0.8))
    skin = _rand_color(rng, (0.03, 0.11), (0.25, 0.6), (0.45, 0.95))
    colors = dict(torso=shirt, upper_l=shirt, upper_r=shirt, fore_l=skin, fore_r=skin, head=skin,
                  thigh_l=pants, thigh_r=pants, shin_l=pants, shin_r=pants)
    lc = rng.uniform(*style["limb_contrast"])

    def place(x, y, a, L, r, color, shape, contrast, figure):
        return _Part(x=(bx + sg * h * x).astype(np.float64), y=(ground + h * y).astype(np.float64),
                     a=(sg * np.asarray(a, dtype=np.float64)), L=float(L * h), r=float(max(r * h, 0.8)),
                     color=color, shape=shape, tex=(float(rng.uniform(0, 64)), float(rng.uniform(0, 64))),
                     contrast=contrast, figure=figure)

    parts = []
    for p in props:
        if not p["front"]:
            parts.append(place(p["x"], p["y"], p["a"], p["L"], p["r"], p["color"], "capsule", p["contrast"], False))
    for name in _FIG_ORDER:
        x, y, a, L, r = fparts[name]
        parts.append(place(x, y, a, L, r, colors[name], style["shape"] if L > 0 else "capsule", lc, True))
    for p in props:
        if p["front"]:
            parts.append(place(p["x"], p["y"], p["a"], p["L"], p["r"], p["color"], "capsule", p["contrast"], False))

    # Camera: C_t(w) = zoom_t * (w - focus_t) + centre.
    cx, cy = (W - 1) / 2, (H - 1) / 2
    fr = np.arange(T, dtype=np.float64)
    zoom, fx, fy = np.ones(T), np.full(T, cx), np.full(T, cy)
    if follow:
        rx = bx + sg * h * ch["root_x"]
        fx = cx + (rx - rx.mean()) * rng.uniform(0.85, 1.0)
    if rng.random() < style["cam_p"]:
        kind = rng.choice(["pan", "zoom", "shake", "pan+shake", "zoom+shake", "pan+zoom"])
        if "pan" in kind:
            v = rng.uniform(0.25, 0.9) * unit
            ang = rng.uniform(-0.35, 0.35) + (_PI if rng.random() < 0.5 else 0.0)
            fx = fx + v * np.cos(ang) * (fr - (T - 1) / 2)
            fy = fy + v * np.sin(ang) * (fr - (T - 1) / 2)
        if "zoom" in kind:
            z1 = rng.uniform(0.87, 1.15)
            zoom = 1 + (z1 - 1) * fr / max(T - 1, 1)
        if "shake" in kind:
            amp = rng.uniform(0.4, 1.3) * unit
            fx = fx + amp * _smooth_noise(rng, T, 1.5)
            fy = fy + amp * _smooth_noise(rng, T, 1.5)

    if reverse:  # the pair member: exact time reversal of the whole scene
        for p in parts:
            p.x, p.y, p.a = p.x[::-1].copy(), p.y[::-1].copy(), p.a[::-1].copy()
        zoom, fx, fy = zoom[::-1].copy(), fx[::-1].copy(), fy[::-1].copy()

    # Background covering every visible world point.
    hwx, hwy = (W / 2 + 3) / zoom, (H / 2 + 3) / zoom
    x0, x1 = float(np.min(fx - hwx)), float(np.max(fx + hwx))
    y0, y1 = float(np.min(fy - hwy)), float(np.max(fy + hwy))
    bw, bh = int(np.ceil(x1 - x0)) + 2, int(np.ceil(y1 - y0)) + 2
    if key == "swim":
        wall_kind = "water"
    else:
        wall_kind = str(rng.choice(style["backgrounds"]))
    bg = _background(rng, wall_kind, bh, bw, unit, style)
    floor_kind = "court" if key == "dribble" else ("water" if key == "swim" else "noise")
    floor = _background(rng, floor_kind, bh, bw, unit, style)
    horizon = int(round(ground - 0.05 * H * rng.uniform(0.5, 3.0) - y0))
    if 0 < horizon < bh:
        bg[horizon:] = floor[horizon:]
    atlas = _tileable_noise(rng, 64, sigma=max(rng.uniform(1.2, 2.2) * unit, 1.1))
    if style["stripes"] > 0:
        atlas = atlas * 0.6 + style["stripes"] * np.sin(np.arange(64) * 2 * _PI / 8)[:, None].astype(np.float32) * 1.2
    noise = rng.uniform(*style["noise"])
    return _Scene(T, H, W, parts, zoom, fx, fy, bg, (x0, y0), atlas.astype(np.float32), noise)


# --------------------------------------------------------------------------------------------
# Rendering + exact forward flow
# --------------------------------------------------------------------------------------------
def _render_scene(sc: _Scene, noise: bool, want_flow: bool, noise_rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    T, H, W = sc.T, sc.H, sc.W
    cx, cy = (W - 1) / 2, (H - 1) / 2
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    frames = np.empty((T, H, W, 3), np.uint8)
    flow = np.empty((T - 1, H, W, 2), np.float32) if want_flow else None
    masks = np.zeros((T, H, W), bool)
    nP = len(sc.parts)
    PX = np.array([p.x for p in sc.parts]).reshape(nP, T)
    PY = np.array([p.y for p in sc.parts]).reshape(nP, T)
    PA = np.array([p.a for p in sc.parts]).reshape(nP, T)
    for t in range(T):
        z, fx, fy = float(sc.zoom[t]), float(sc.fx[t]), float(sc.fy[t])
        wx = (xs - cx) / z + fx
        wy = (ys - cy) / z + fy
        canvas = cv2.remap(sc.bg, wx - sc.bg_origin[0], wy - sc.bg_origin[1], cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT101)
        owner = np.full((H, W), -1, np.int32)
        S = np.zeros((H, W), np.float32)
        D = np.zeros((H, W), np.float32)
        for k, p in enumerate(sc.parts):
            ox, oy, ang = PX[k, t], PY[k, t], PA[k, t]
            ux, uy = np.sin(ang), np.cos(ang)
            mx, my = ox + ux * p.L / 2, oy + uy * p.L / 2
            icx, icy = z * (mx - fx) + cx, z * (my - fy) + cy
            ext = (p.L / 2 + p.r) * z + 2
            x0, x1 = max(int(icx - ext), 0), min(int(icx + ext) + 2, W)
            y0, y1 = max(int(icy - ext), 0), min(int(icy + ext) + 2, H)
            if x0 >= x1 or y0 >= y1:
                continue
            dx = wx[y0:y1, x0:x1] - np.float32(ox)
            dy = wy[y0:y1, x0:x1] - np.float32(oy)
            s = dx * np.float32(ux) + dy * np.float32(uy)
            d = dy * np.float32(ux) - dx * np.float32(uy)
            if p.shape == "ellipse" and p.L > 0:
                ea = p.L / 2 + p.r
                q = np.sqrt(((s - p.L / 2) / ea) ** 2 + (d / p.r) ** 2)
                edge = (1 - q) * p.r * z
            else:
                ds = s - np.clip(s, 0, p.L)
                edge = (p.r - np.sqrt(ds * ds + d * d)) * z
            alpha = np.clip(edge + 0.5, 0, 1)
            if not alpha.any():
                continue
            tex = cv2.remap(sc.atlas, s + np.float32(p.tex[0]), d + np.float32(p.tex[1]), cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_WRAP)
            shade = 1 - 0.3 * np.minimum((d / p.r) ** 2, 1)
            lum = np.clip((1 + p.contrast * tex) * shade, 0.2, 1.8)
            col = p.color[None, None, :] * lum[..., None]
            cb = canvas[y0:y1, x0:x1]
            cb += alpha[..., None] * (np.minimum(col, 255) - cb)
            m = alpha >= 0.5
            owner[y0:y1, x0:x1][m] = k
            S[y0:y1, x0:x1][m] = s[m]
            D[y0:y1, x0:x1][m] = d[m]
            if p.figure:
                masks[t, y0:y1, x0:x1] |= m
        if noise:
            canvas += noise_rng.standard_normal(canvas.shape, dtype=np.float32) * np.float32(sc.noise)
        frames[t] = np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
        if want_flow and t < T - 1:
            z1, fx1, fy1 = float(sc.zoom[t + 1]), float(sc.fx[t + 1]), float(sc.fy[t + 1])
            nwx, nwy = wx.copy(), wy.copy()   # background: static world point
            sel = owner >= 0
            if sel.any():
                k = owner[sel]
                a1 = PA[k, t + 1]
                ux, uy = np.sin(a1), np.cos(a1)
                s, d = S[sel], D[sel]
                nwx[sel] = PX[k, t + 1] + s * ux - d * uy
                nwy[sel] = PY[k, t + 1] + s * uy + d * ux
            flow[t, ..., 0] = z1 * (nwx - fx1) + cx - xs
            flow[t, ..., 1] = z1 * (nwy - fy1) + cy - ys
    return frames, flow, masks


def render_clip(spec: ClipSpec, noise: bool = True, return_mask: bool = False):
    """Render one clip in memory.

    Args:
        spec: the clip (see :func:`lab_clip_specs` / :func:`clip_spec`).
        noise: add the clip's sensor noise (off gives the clean render).
        return_mask: also return the figure's silhouette.

    Returns:
        ``frames`` ``(T, H, W, 3)`` uint8 RGB and ``flow`` ``(T-1, H, W, 2)`` float32 forward
        ground-truth flow in pixels (x, y): ``frames[t](p) ≈ frames[t+1](p + flow[t](p))``;
        with ``return_mask`` also ``mask`` ``(T, H, W)`` bool (figure pixels, props excluded).
    """
    if spec.n_frames < 2:
        raise ValueError(f"{spec.name}: a clip needs at least 2 frames, got {spec.n_frames}")
    sc = _build_scene(spec)
    nrng = _rng(spec.seed, spec.dataset, spec.cls, spec.index[0], spec.index[1], "noise")
    frames, flow, masks = _render_scene(sc, noise, True, nrng)
    return (frames, flow, masks) if return_mask else (frames, flow)


# --------------------------------------------------------------------------------------------
# Writing the datasets
# --------------------------------------------------------------------------------------------
def flow_path(video: str | os.PathLike) -> Path:
    """``.../<stem>.avi`` -> ``.../<stem>.flow.npz`` (the same rule as :func:`twostream_lib.flow.gt_flow_path`)."""
    from .flow import gt_flow_path

    return gt_flow_path(video)


def _dataset_dir(root: Path, spec: ClipSpec) -> Path:
    if spec.dataset == "lab-ucf":
        return root / "lab-ucf" / "UCF-101"
    return root / "lab-hmdb"


def _is_finished(video: Path, gt_flow: bool) -> bool:
    return video.is_file() and (not gt_flow or flow_path(video).is_file())


def generate_clip(root: str | os.PathLike, spec: ClipSpec, gt_flow: bool = True) -> bool:
    """Render one clip and write ``.avi`` (+ ``.flow.npz``) atomically. Returns False if it was
    already finished (both files present), True if it was (re)written."""
    cv2.setNumThreads(1)
    video = _dataset_dir(Path(root), spec) / spec.rel
    if _is_finished(video, gt_flow):
        return False
    frames, flow = render_clip(spec)
    video.parent.mkdir(parents=True, exist_ok=True)
    if gt_flow:
        fp = flow_path(video)
        tmp = fp.with_name(f".{video.stem}.tmp{os.getpid()}.flow.npz")
        q = (np.round(flow * 64) / 64).astype(np.float16)   # 1/64 px steps: compresses, error < 0.008 px
        with open(tmp, "wb") as f:
            np.savez_compressed(f, flow=q)
        os.replace(tmp, fp)
    from .video import write_video
    write_video(video, frames, fps=FPS, fourcc="XVID")
    return True


def _remove_temps(d: Path) -> int:
    n = 0
    if d.is_dir():
        for p in d.rglob(".*.tmp*"):
            if p.is_file():
                p.unlink()
                n += 1
    return n


def _atomic_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _ucf_test_groups(n_groups: int, split: int) -> range:
    b = max(1, round(7 * n_groups / 25))
    if 3 * b > n_groups - 1:
        b = max(1, (n_groups - 1) // 3)
    return range((split - 1) * b + 1, split * b + 1)


def _write_splits(root: Path, dataset: str, specs: list[ClipSpec], scale: str, seed: int) -> None:
    if dataset == "lab-ucf":
        d = root / "lab-ucf" / "ucfTrainTestlist"
        classes = sorted(LAB_UCF_CLASSES)
        idx = {c: i + 1 for i, c in enumerate(classes)}
        _atomic_text(d / "classInd.txt", "".join(f"{i} {c}\n" for c, i in idx.items()))
        G = SCALES[scale]["ucf_groups"]
        for k in (1, 2, 3):
            test_g = set(_ucf_test_groups(G, k))
            train = [f"{s.rel} {idx[s.cls]}\n" for s in specs if s.index[0] not in test_g]
            test = [f"{s.rel}\n" for s in specs if s.index[0] in test_g]
            _atomic_text(d / f"trainlist0{k}.txt", "".join(train))
            _atomic_text(d / f"testlist0{k}.txt", "".join(test))
    else:
        d = root / "lab-hmdb" / "testTrainMulti_7030_splits"
        for cls in sorted(LAB_HMDB_CLASSES):
            cs = [s for s in specs if s.cls == cls]
            n_test = max(1, int(round(0.3 * len(cs))))
            for k in (1, 2, 3):
                perm = _rng(seed, dataset, cls, "split", k).permutation(len(cs))
                ids = np.ones(len(cs), int)
                ids[perm[:n_test]] = 2
                _atomic_text(d / f"{cls}_test_split{k}.txt",
                             "".join(f"{s.name}.avi {i}\n" for s, i in zip(cs, ids)))


def _job(args):
    root, spec, gt_flow = args
    return spec.dataset, generate_clip(root, spec, gt_flow), spec.n_frames


def make_lab_datasets(root: str | os.PathLike, scale: str = "small", seed: int = 0, workers: int = 1,
                      gt_flow: bool = True, progress: bool = True,
                      datasets: tuple[str, ...] | list[str] = DATASETS) -> dict:
    """Generate (or finish) the lab datasets under ``root``.

    Resumable: a clip whose ``.avi`` (and, with ``gt_flow``, ``.flow.npz``) exists is skipped;
    temp files left by a killed run are removed and their clips redone. Split files are
    rewritten (deterministically). ``<root>/lab_info.json`` records scale and seed; running
    over a root made with another scale or seed raises ``ValueError``.

    Returns:
        ``{dataset: number of videos}`` for the generated datasets.
    """
    cfg = _check_scale(scale)
    for ds in datasets:
        _classes(ds)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    info_path = root / "lab_info.json"
    if info_path.is_file():
        old = json.loads(info_path.read_text(encoding="utf-8"))
        if old.get("scale") != scale or old.get("seed") != seed:
            raise ValueError(f"{info_path}: this lab root was made with scale={old.get('scale')!r} "
                             f"seed={old.get('seed')!r}; refusing to mix in scale={scale!r} seed={seed!r} "
                             f"(use another --root)")
    all_specs = {ds: lab_clip_specs(ds, scale, seed) for ds in datasets}
    for ds in datasets:
        _remove_temps(root / ds)
    todo = [(str(root), s, gt_flow) for ds in datasets for s in all_specs[ds]
            if not _is_finished(_dataset_dir(root, s) / s.rel, gt_flow)]
    t0 = time.time()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(todo), desc=f"lab {scale}", unit="clip")
    if workers > 1 and len(todo) > 1:
        import multiprocessing as mp
        with mp.get_context("spawn" if os.name == "nt" else "fork").Pool(workers) as pool:
            for _ in pool.imap_unordered(_job, todo, chunksize=1):
                if bar is not None:
                    bar.update(1)
    else:
        for j in todo:
            _job(j)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    for ds in datasets:
        _write_splits(root, ds, all_specs[ds], scale, seed)
    old_ds = {}
    if info_path.is_file():
        old_ds = json.loads(info_path.read_text(encoding="utf-8")).get("datasets", {})
    for ds in datasets:
        old_ds[ds] = {"videos": len(all_specs[ds]), "frames": int(sum(s.n_frames for s in all_specs[ds])),
                      "class_info": {k: v for k, v in class_info(ds).items() if k != "description"}}
    info = {"scale": scale, "seed": seed, "height": cfg["height"], "width": cfg["width"], "fps": FPS,
            "gt_flow": gt_flow, "flow_format": "<stem>.flow.npz: flow (T-1,H,W,2) float16 px, x then y, forward",
            "datasets": old_ds, "last_run_seconds": round(time.time() - t0, 2), "generated_clips": len(todo)}
    _atomic_text(info_path, json.dumps(info, indent=1, default=list))
    return {ds: len(all_specs[ds]) for ds in datasets}
