"""The official UCF-101 and HMDB-51 layouts and their three train/test splits.

UCF-101 root (as unpacked from ``UCF101.rar`` and ``UCF101TrainTestSplits-RecognitionTask.zip``)::

    <root>/UCF-101/<Class>/v_<Class>_gXX_cYY.avi
    <root>/ucfTrainTestlist/classInd.txt        "1 ApplyEyeMakeup"         (1-based index)
    <root>/ucfTrainTestlist/trainlist0N.txt     "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1"
    <root>/ucfTrainTestlist/testlist0N.txt      "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"

HMDB-51 root (``hmdb51_org.rar`` unpacked, and ``test_train_splits.rar``)::

    <root>/<class>/<name>.avi
    <root>/testTrainMulti_7030_splits/<class>_test_splitN.txt   "<name>.avi 1"   (1=train, 2=test, 0=unused)

The lab datasets (:mod:`twostream_lib.lab`) are written in exactly these layouts, under
``<lab root>/lab-ucf`` and ``<lab root>/lab-hmdb``.

Every parse error names the file and the line.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError

__all__ = [
    "SplitError",
    "Split",
    "ucf101_split",
    "hmdb51_split",
    "load_split",
    "video_group",
    "DATASETS",
    "UCF101_VIDEOS",
    "UCF101_MEAN_FRAMES",
    "HMDB51_VIDEOS",
    "OFFICIAL_CLASSES",
    "HMDB_SPLIT_DIR",
    "UCF_LIST_DIR",
    "UCF_VIDEO_DIR",
]

UCF_VIDEO_DIR = "UCF-101"
UCF_LIST_DIR = "ucfTrainTestlist"
HMDB_SPLIT_DIR = "testTrainMulti_7030_splits"
DATASETS = ("ucf101", "hmdb51", "lab-ucf", "lab-hmdb")
#: UCF-101's size (Soomro et al. 2012): 13,320 clips of 101 classes, 7.21 s on average at 25 fps (~180 frames)
UCF101_VIDEOS, UCF101_MEAN_FRAMES = 13_320, 180
#: HMDB-51's size (Kuehne et al. 2011): 6,766 clips of 51 classes
HMDB51_VIDEOS = 6_766
#: the real datasets' class counts (their ``classInd.txt`` / split files list as many)
OFFICIAL_CLASSES = {"ucf101": 101, "hmdb51": 51}


class SplitError(UserError, ValueError):
    """A split or class file is missing or malformed. The message names the file and line."""


@dataclass
class Split:
    """One train/test split of a dataset.

    Attributes:
        dataset: ``"ucf101"``, ``"hmdb51"``, ``"lab-ucf"`` or ``"lab-hmdb"``.
        root: the dataset root.
        split: 1, 2 or 3.
        classes: class names; a label is an index into this list (0-based).
        train, test: lists of ``(video path, label)``, in the order of the split files.
    """

    dataset: str
    root: Path
    split: int
    classes: list[str]
    train: list[tuple[Path, int]] = field(default_factory=list)
    test: list[tuple[Path, int]] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def video_id(self, path: Path) -> str:
        """A stable id for a video: its path relative to the dataset root, with ``/``."""
        return Path(path).relative_to(self.root).as_posix()


_UCF_GROUP_RE = re.compile(r"_g(\d+)_c\d+\.avi$")


def video_group(video_id: str) -> str | None:
    """The UCF-101 group of a video id, ``"<Class>/gXX"`` (clips of one group are cut from one long video: same
    actor, same scene), or ``None`` where the name carries no group (HMDB-51)."""
    m = _UCF_GROUP_RE.search(video_id)
    if m is None:
        return None
    return f"{Path(video_id).parent.name}/g{m.group(1)}"


def _plain_relative(rel: str, folders: int) -> bool:
    """``rel`` names a file ``folders`` folders below its list's folder, with no ``.``/``..`` or empty parts: one
    video has one spelling, so a listed video can't hide in the other list as ``A/../A/v.avi``."""
    parts = rel.split("/")
    return len(parts) == folders + 1 and all(p not in ("", ".", "..") for p in parts) and "\\" not in rel


def _check_disjoint(out: "Split", where: Path) -> None:
    """A video listed twice, or in both the training and the test list, would be tested on what it trained on
    (paths compared normalised, so no spelling of one file passes for two)."""
    seen: dict[Path, str] = {}
    for subset in ("train", "test"):
        for p, _ in getattr(out, subset):
            p = Path(os.path.normpath(p))
            if p in seen:
                both = "twice in the " + subset + " list" if seen[p] == subset else "in both the train and test lists"
                raise SplitError(f"{where}: split {out.split} lists video {out.video_id(p)} {both}")
            seen[p] = subset


def _check_split_number(split: int) -> None:
    if split not in (1, 2, 3):
        raise SplitError(f"split must be 1, 2 or 3, got {split!r}")


def _read_lines(path: Path) -> list[tuple[int, str]]:
    if not path.is_file():
        raise SplitError(f"{path}: split file not found")
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            line = line.strip()
            if line:
                out.append((i, line))
    return out


def _ucf_classes(list_dir: Path) -> list[str]:
    path = list_dir / "classInd.txt"
    classes: dict[int, str] = {}
    for lineno, line in _read_lines(path):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise SplitError(f"{path}:{lineno}: expected '<index> <ClassName>', got {line!r}")
        idx, name = int(parts[0]), parts[1]
        if idx in classes or name in classes.values():
            raise SplitError(f"{path}:{lineno}: duplicate class entry {line!r}")
        classes[idx] = name
    if not classes:
        raise SplitError(f"{path}: no classes listed")
    if sorted(classes) != list(range(1, len(classes) + 1)):
        raise SplitError(f"{path}: class indices must run 1..{len(classes)} without gaps")
    return [classes[i] for i in range(1, len(classes) + 1)]


def ucf101_split(root: str | os.PathLike, split: int = 1, dataset: str = "ucf101",
                 check_files: bool = True) -> Split:
    """Parse a UCF-101-layout root into a :class:`Split`.

    Args:
        root: folder holding ``UCF-101/`` and ``ucfTrainTestlist/``.
        split: 1, 2 or 3.
        dataset: name recorded in the result (``"lab-ucf"`` for the lab twin).
        check_files: raise if a listed video is missing on disk.

    Raises:
        SplitError: missing ``classInd.txt``/``trainlist0N.txt``/``testlist0N.txt``, a malformed
            line, an unknown class, a label that disagrees with the class folder, a missing video.
    """
    _check_split_number(split)
    root = Path(root)
    list_dir = root / UCF_LIST_DIR
    video_dir = root / UCF_VIDEO_DIR
    if not list_dir.is_dir():
        raise SplitError(f"{list_dir}: split folder not found (is {root} a UCF-101 root?)")
    classes = _ucf_classes(list_dir)
    index = {c: i for i, c in enumerate(classes)}
    out = Split(dataset, root, split, classes)
    for subset, fname in (("train", f"trainlist0{split}.txt"), ("test", f"testlist0{split}.txt")):
        path = list_dir / fname
        items = []
        for lineno, line in _read_lines(path):
            parts = line.split()
            if len(parts) not in (1, 2) or not _plain_relative(parts[0], folders=1):
                raise SplitError(f"{path}:{lineno}: expected '<Class>/<video>.avi [label]' (one class folder, no "
                                 f"'.' or '..'), got {line!r}")
            rel = parts[0]
            cls = rel.split("/", 1)[0]
            if cls not in index:
                raise SplitError(f"{path}:{lineno}: unknown class {cls!r} (not in classInd.txt)")
            label = index[cls]
            if len(parts) == 2:
                if not parts[1].isdigit():
                    raise SplitError(f"{path}:{lineno}: label {parts[1]!r} is not an integer")
                if int(parts[1]) - 1 != label:
                    raise SplitError(
                        f"{path}:{lineno}: label {parts[1]} disagrees with class folder {cls!r} "
                        f"(classInd.txt gives {label + 1})")
            vpath = video_dir / rel
            if check_files and not vpath.is_file():
                raise SplitError(f"{path}:{lineno}: listed video {vpath} does not exist")
            items.append((vpath, label))
        if not items:
            raise SplitError(f"{path}: no videos listed")
        setattr(out, subset, items)
    _check_disjoint(out, list_dir)
    return out


_HMDB_SPLIT_RE = re.compile(r"^(?P<cls>.+)_test_split(?P<n>[123])\.txt$")


def hmdb51_split(root: str | os.PathLike, split: int = 1, dataset: str = "hmdb51",
                 check_files: bool = True) -> Split:
    """Parse an HMDB-51-layout root into a :class:`Split`.

    Classes are the split files' class names, sorted (HMDB-51 ships no class index); videos
    marked 0 ("unused") are in neither list.

    Raises:
        SplitError: missing split folder or files, a malformed line, an id other than 0/1/2,
            a missing video.
    """
    _check_split_number(split)
    root = Path(root)
    split_dir = root / HMDB_SPLIT_DIR
    if not split_dir.is_dir():
        raise SplitError(f"{split_dir}: split folder not found (is {root} an HMDB-51 root?)")
    files = {}
    for p in split_dir.iterdir():
        m = _HMDB_SPLIT_RE.match(p.name)
        if m and int(m["n"]) == split:
            files[m["cls"]] = p
    if not files:
        raise SplitError(f"{split_dir}: no '<class>_test_split{split}.txt' files")
    # A class folder with videos but no split file for this split is a missing split file.
    for d in sorted(root.iterdir()):
        if d.is_dir() and d.name != HMDB_SPLIT_DIR and not d.name.startswith(".") and d.name not in files:
            if any(d.glob("*.avi")):
                raise SplitError(f"{split_dir / (d.name + f'_test_split{split}.txt')}: split file not found "
                                 f"for class folder {d}")
    classes = sorted(files)
    out = Split(dataset, root, split, classes)
    for label, cls in enumerate(classes):
        path = files[cls]
        for lineno, line in _read_lines(path):
            parts = line.split()
            if len(parts) != 2 or not parts[0].endswith(".avi") or not _plain_relative(parts[0], folders=0):
                raise SplitError(f"{path}:{lineno}: expected '<video>.avi <0|1|2>' (a file name, no folder), "
                                 f"got {line!r}")
            if parts[1] not in ("0", "1", "2"):
                raise SplitError(f"{path}:{lineno}: split id must be 0, 1 or 2, got {parts[1]!r}")
            if parts[1] == "0":
                continue
            vpath = root / cls / parts[0]
            if check_files and not vpath.is_file():
                raise SplitError(f"{path}:{lineno}: listed video {vpath} does not exist")
            (out.train if parts[1] == "1" else out.test).append((vpath, label))
    if not out.train or not out.test:
        raise SplitError(f"{split_dir}: split {split} has an empty train or test set")
    _check_disjoint(out, split_dir)
    return out


def load_split(dataset: str, root: str | os.PathLike, split: int = 1, check_files: bool = True) -> Split:
    """Parse ``root`` as ``dataset`` (``ucf101``, ``hmdb51``, ``lab-ucf``, ``lab-hmdb``)."""
    if dataset in ("ucf101", "lab-ucf"):
        return ucf101_split(root, split, dataset=dataset, check_files=check_files)
    if dataset in ("hmdb51", "lab-hmdb"):
        return hmdb51_split(root, split, dataset=dataset, check_files=check_files)
    raise SplitError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
