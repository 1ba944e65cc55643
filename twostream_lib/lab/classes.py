"""The lab's classes: which actions each lab dataset holds, their kinds (motion-only pair, context, posture +
motion), the classes the two datasets share, and which motion renders each class (chapter 1 says what each
choice models)."""
from __future__ import annotations

__all__ = ["FPS", "DATASETS", "LAB_UCF_CLASSES", "LAB_HMDB_CLASSES", "MOTION_PAIRS", "CONTEXT_CLASSES",
           "SHARED_CLASSES", "CLASS_ACTION", "dataset_classes", "class_info"]

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
CLASS_ACTION: dict[str, tuple[str, bool]] = {
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


def dataset_classes(dataset: str) -> tuple[str, ...]:
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
    classes = dataset_classes(dataset)
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
        "description": {c: _DESCRIPTION[CLASS_ACTION[c][0]] for c in classes},
    }
