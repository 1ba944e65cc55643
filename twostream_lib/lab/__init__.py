"""The lab: procedural stand-ins for UCF-101 and HMDB-51 (``lab-ucf``, ``lab-hmdb``), with ground-truth optical flow.

And the lab's stand-in for ImageNet, ``lab stills`` (:mod:`twostream_lib.lab.stills`): still images of objects
and scenes that the lab spatial net is pre-trained on (Table 1a) by :mod:`twostream_lib.pretrain`.

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
group is ever in both the train and test list of a split. ``lab-hmdb`` splits use HMDB-51's
``testTrainMulti_7030_splits`` format (1 = train, 2 = test); each split trains on a few clips per
class (``SCALES[scale]["hmdb_train"]``: 6 at ``small``) and tests on the rest, modelling HMDB-51's
small size while keeping a test set that can measure a difference.

**Content.** Articulated figures (capsule limbs in ``lab-ucf``; elliptical limbs, muted palette,
patterned backgrounds and stronger noise in ``lab-hmdb``) with textured, shaded limbs act over
random textured backgrounds. Per clip: speed, amplitude, phase, position, scale, colours, facing
(a random mirror), length (2-4 s at 25 fps for ``small``/``full``; 12-20 frames for ``tiny``),
Gaussian sensor noise and camera motion (pan, zoom, shake) on about a third of the ``lab-ucf``
clips. ``lab-hmdb`` is harder, as HMDB-51's movie and web footage is: the camera moves in 80% of
its clips, and figure size, speed and amplitude vary over wider ranges.

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

**The lab is not part of the paper**: it is the substitute data this book can run on. Its modules:
:mod:`~twostream_lib.lab.classes` (what each dataset holds), :mod:`~twostream_lib.lab.specs` (what determines a
clip; the scales), :mod:`~twostream_lib.lab.motions` (the actions), :mod:`~twostream_lib.lab.render` (frames and
exact flow; its public drawing primitives), :mod:`~twostream_lib.lab.writer` (the datasets on disk, and
:func:`prepare_lab`), :mod:`~twostream_lib.lab.stills` (the still images; data only, below the trainer).
"""
from __future__ import annotations

from .classes import (CONTEXT_CLASSES, DATASETS, FPS, LAB_HMDB_CLASSES, LAB_UCF_CLASSES, MOTION_PAIRS,
                      SHARED_CLASSES, class_info)
from .render import render_clip
from .specs import SCALES, ClipSpec, clip_spec, lab_clip_specs
from .writer import LAB_VERSION, LabVersionError, flow_path, generate_clip, make_lab_datasets, prepare_lab

__all__ = ["FPS", "SCALES", "LAB_UCF_CLASSES", "LAB_HMDB_CLASSES", "MOTION_PAIRS", "CONTEXT_CLASSES",
           "SHARED_CLASSES", "DATASETS", "ClipSpec", "class_info", "clip_spec", "lab_clip_specs", "render_clip",
           "make_lab_datasets", "generate_clip", "flow_path", "prepare_lab", "LAB_VERSION", "LabVersionError"]
