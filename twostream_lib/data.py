"""Datasets over a prepared cache: the spatial and temporal stream inputs, train and test sampling (paper §5–§6).

* :class:`VideoCache` reads frames and flow fields from a cache written by :mod:`twostream_lib.prepare`.
* :class:`SpatialDataset` — one RGB frame per sample (the spatial stream, §2).
* :class:`TemporalDataset` — one stack of ``L`` flow fields, ``2L`` channels x₁,y₁,x₂,y₂,… (the temporal stream,
  §3.1), by optical-flow stacking or trajectory stacking, optionally bi-directional, with mean displacement
  subtraction (§3.3). The stack is built on the full frame (so each field's mean is taken over the whole field),
  then cropped.
* Training sampling (§5): one random frame (or stack start) of the video, a random ``crop_size`` square from the
  whole frame, a random horizontal flip (which, for flow, also negates every x channel), and RGB jitter for the
  spatial stream.
* Test sampling (§6): 25 equally spaced frames (or stacks) per video, and from each the 10 crops of the four corners
  and the centre, and their horizontal flips. Test items are ``(video, frame)`` pairs, so that a paper-scale
  temporal video (250 views × 20 × 224 × 224 floats = 1 GB) never has to sit in memory at once:
  ``dataset[i] -> (views (10, C, crop, crop), label, video_index)``; a video's score is the mean softmax over its
  250 views.
* :class:`MultiTaskDataset` and :class:`BalancedSampler` for multitask training (§4) and the paper's
  "videos drawn uniformly across classes" batches (§5).
* :func:`build_datasets` — what a run (a :class:`~twostream_lib.config.TrainConfig`) trains and validates on:
  :class:`RunData`, with validation on held-out *training* videos (:func:`holdout`), never the test split.

Randomness: a training sample's random choices (:meth:`TemporalDataset.draw`) come from torch's RNG. The trainer
gives every sample of a chunk its own seed (:class:`SeededSamples`, :func:`sample_seeds`), so the samples are the
same whichever loader builds them, in however many worker processes (:class:`~twostream_lib.device_loader.
DeviceLoader` draws from the same seeds), and the global RNG that dropout uses is left alone.
"""
from __future__ import annotations

import json
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .flow import (STACK_MODES, clamp_start, dequantize_flow, flip_stack, stack_indices, temporal_stack,
                   valid_starts)
from .prepare import CacheError, read_cache_json, source_stamp
from .protocol import TEST_CROPS, TEST_FRAMES, check_views, crop_boxes, spaced_positions
from .splits import Split, load_split, video_group

if TYPE_CHECKING:
    from .config import TrainConfig

__all__ = [
    "VideoCache", "items_for", "holdout", "SpatialDataset", "TemporalDataset", "MultiTaskDataset",
    "BalancedSampler", "SeededSamples", "sample_seeds", "RunData", "make_dataset", "build_datasets", "IMAGENET_MEAN", "IMAGENET_STD", "SampleDraw",
]

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


class VideoCache:
    """Read access to a prepared cache (see :mod:`twostream_lib.prepare` for the layout).

    Args:
        cache_dir: the cache folder.
        memory_mb: keep up to this many MB of decoded streams in memory (0: none). A stream (one video's RGB
            frames, or its x or y flow) is then decoded whole on its first read and served from memory after,
            the least recently used streams dropped first. Training draws each lab video ~100 times and reads
            10 flow fields of ~75 per stack, so this decodes each JPEG once instead of ~15 times; the arrays
            returned are the same. A stream larger than the whole budget is never kept (only the entries asked
            for are decoded); give a budget that holds the training videos, or 0. Each DataLoader worker holds
            its own copy.
    """

    def __init__(self, cache_dir: str | os.PathLike, memory_mb: float = 0):
        self.root = Path(cache_dir)
        sfile, mfile = self.root / "settings.json", self.root / "manifest.json"
        if not sfile.is_file() or not mfile.is_file():
            raise CacheError(f"{self.root}: not a prepared cache (no settings.json/manifest.json); "
                             f"run `python -m twostream_lib prepare ...` first")
        remedy = "prepare the cache again (`python -m twostream_lib prepare ...`, or delete the folder first)"
        self.settings = read_cache_json(sfile, remedy)
        self.manifest = read_cache_json(mfile, remedy)
        if not isinstance(self.manifest.get("videos"), dict) or "bound" not in self.settings:
            raise CacheError(f"{self.root}: settings.json/manifest.json lack their entries; {remedy}")
        self.videos: dict = self.manifest["videos"]
        self.bound = float(self.settings["bound"])
        if not memory_mb >= 0:
            raise ValueError(f"memory_mb must be >= 0, got {memory_mb}")
        self.memory_bytes = int(memory_mb * 2**20)
        self._decoded: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._decoded_bytes = 0

    def __repr__(self) -> str:
        s = self.settings
        return f"VideoCache({str(self.root)!r}, dataset={s['dataset']}, flow={s['flow']}, videos={len(self.videos)})"

    @property
    def video_ids(self) -> list[str]:
        return list(self.videos)

    def require(self, video_ids) -> None:
        """Raise :class:`CacheError` naming the first video that is not in the cache."""
        missing = [v for v in video_ids if v not in self.videos]
        failed = self.manifest.get("failed", {})
        broken = [v for v in missing if v in failed]
        if broken:  # prepare tried and failed: running it again can't mend the file
            raise CacheError(f"{self.root}: {len(broken)} listed video(s) could not be prepared, e.g. {broken[0]!r}: "
                             f"{failed[broken[0]]}. The file is broken; re-running prepare won't fix it. Replace "
                             f"it and run prepare again, or leave it out: delete its line from the split's list "
                             f"file (UCF-101: ucfTrainTestlist/*list0N.txt; HMDB-51: mark it 0 in its "
                             f"<class>_test_splitN.txt)")
        if missing:
            raise CacheError(f"{self.root}: {len(missing)} video(s) not in the cache, e.g. {missing[0]!r}; "
                             f"re-run prepare for this dataset, or the cache is stale")

    def num_frames(self, vid: str) -> int:
        return int(self.videos[vid]["frames"])

    def num_flows(self, vid: str) -> int:
        return int(self.videos[vid]["flows"])

    def frame_size(self, vid: str) -> tuple[int, int]:
        e = self.videos[vid]
        return int(e["height"]), int(e["width"])

    def stored_bytes(self, streams=("flow_x", "flow_y"), videos=None) -> int:
        """Bytes on disk of the packed JPEG ``streams`` (``"rgb"``, ``"flow_x"``, ``"flow_y"``, ``"flow_bx"``,
        ``"flow_by"``) of ``videos`` (default: all)."""
        return sum((self.root / "videos" / v / f"{s}.bin").stat().st_size
                   for v in (self.video_ids if videos is None else videos) for s in streams)

    @lru_cache(maxsize=4096)
    def _index(self, vid: str) -> dict:
        f = self.root / "videos" / vid / "index.json"
        if not f.is_file():
            raise CacheError(f"{f}: missing; the cache is stale or was deleted, re-run prepare")
        return json.loads(f.read_text())

    def _read(self, vid: str, stream: str, indices, flags: int) -> list[np.ndarray]:
        offs = self._index(vid)["offsets"].get(stream)
        if offs is None:
            raise CacheError(f"{self.root}: stream {stream!r} was not prepared (backward flow needs prepare --backward)")
        indices = list(indices)
        n = len(offs) - 1
        if any(i < 0 or i >= n for i in indices):
            raise IndexError(f"{vid}: {stream} index out of range 0..{n - 1}: {indices}")
        h, w = self.frame_size(vid)
        if n * h * w * (3 if flags == cv2.IMREAD_COLOR else 1) > self.memory_bytes:  # (also when memory_mb = 0)
            return self._decode(vid, stream, offs, indices, flags)  # too large to keep: decode what is asked
        whole = self._remembered(vid, stream, offs, flags)
        return [whole[i] for i in indices]

    def _remembered(self, vid: str, stream: str, offs: list[int], flags: int) -> np.ndarray:
        """All entries of one stream, decoded (from memory when kept; least recently used dropped first)."""
        key = (vid, stream)
        whole = self._decoded.get(key)
        if whole is not None:
            self._decoded.move_to_end(key)
            return whole
        whole = np.stack(self._decode(vid, stream, offs, range(len(offs) - 1), flags))
        whole.setflags(write=False)  # callers get views of it: a write would change the kept stream
        while self._decoded_bytes + whole.nbytes > self.memory_bytes:
            self._decoded_bytes -= self._decoded.popitem(last=False)[1].nbytes
        self._decoded[key] = whole
        self._decoded_bytes += whole.nbytes
        return whole

    def _decode(self, vid: str, stream: str, offs: list[int], indices, flags: int) -> list[np.ndarray]:
        indices = list(indices)
        lo, hi = min(indices), max(indices)
        path = self.root / "videos" / vid / f"{stream}.bin"
        with open(path, "rb") as f:  # one contiguous read for the whole range
            f.seek(offs[lo])
            blob = f.read(offs[hi + 1] - offs[lo])
        out = []
        for i in indices:
            a, b = offs[i] - offs[lo], offs[i + 1] - offs[lo]
            im = cv2.imdecode(np.frombuffer(blob[a:b], np.uint8), flags)
            if im is None:
                raise CacheError(f"{path}: entry {i} is not a decodable JPEG (corrupt cache; re-run prepare)")
            out.append(im)
        return out

    def rgb(self, vid: str, i: int) -> np.ndarray:
        """Frame ``i`` of video ``vid``: (H, W, 3) uint8 RGB."""
        return cv2.cvtColor(self._read(vid, "rgb", [i], cv2.IMREAD_COLOR)[0], cv2.COLOR_BGR2RGB)

    def flows(self, vid: str, indices, direction: str = "forward") -> np.ndarray:
        """Flow fields ``indices`` (field i: frame i → i+1; backward: frame i+1 → i): (n, H, W, 2) float32 px."""
        tag = {"forward": "", "backward": "b"}[direction]
        xs = self._read(vid, f"flow_{tag}x", indices, cv2.IMREAD_GRAYSCALE)
        ys = self._read(vid, f"flow_{tag}y", indices, cv2.IMREAD_GRAYSCALE)
        return dequantize_flow(np.stack([np.stack(xs), np.stack(ys)], axis=-1), self.bound)


def items_for(split: Split, subset: str = "train", cache: VideoCache | None = None) -> list[tuple[str, int]]:
    """``(video_id, label)`` for a split's ``train`` or ``test`` videos; checks they are all in ``cache``, each
    prepared from the file that is there now (what ``prepare`` checks: size and modification time)."""
    if subset not in ("train", "test"):
        raise ValueError(f"subset must be 'train' or 'test', got {subset!r}")
    videos = getattr(split, subset)
    items = [(split.video_id(p), lab) for p, lab in videos]
    if cache is not None:
        if cache.settings["dataset"] != split.dataset:
            raise CacheError(f"{cache.root}: cache holds {cache.settings['dataset']!r}, split is {split.dataset!r}")
        cache.require([v for v, _ in items])
        stale = [p for (v, _), (p, _) in zip(items, videos)
                 if cache.videos[v].get("source") not in (None, source_stamp(p, cache.settings))]
        if stale:
            raise CacheError(f"{cache.root}: {len(stale)} {subset} video(s) changed after they were prepared, e.g. "
                             f"{stale[0]} (its size or modification time is not the manifest's): the cache holds "
                             f"the old ones. Re-run prepare on this cache; it prepares them again")
    return items


def holdout(items: list[tuple[str, int]], fraction: float = 0.1, seed: int = 0):
    """Split training items into (train, validation) for model selection, which never looks at the test split
    (§6): about ``fraction`` of each class's videos are held out (at least one video of each class with ≥ 2).

    Where video ids carry a UCF-101 group (``_gXX_``, :func:`twostream_lib.splits.video_group`), whole groups are
    held out: clips of one group share actor and scene, and a group on both sides would inflate the validation
    accuracy. Groups are drawn at random until the class's held-out share reaches ``fraction``, and at least one
    group of each class stays for training."""
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for i, (_, lab) in enumerate(items):
        by_class.setdefault(lab, []).append(i)
    val: set[int] = set()
    for lab, idx in sorted(by_class.items()):
        if fraction <= 0 or len(idx) < 2:
            continue
        want = max(1, int(round(fraction * len(idx))))
        units: dict[str, list[int]] = {}  # a group, or a single video where there are no groups
        for i in idx:
            units.setdefault(video_group(items[i][0]) or items[i][0], []).append(i)
        held = 0
        for key in rng.permutation(sorted(units)).tolist()[:-1]:  # the last unit always stays for training
            if held >= want:
                break
            val.update(units[key])
            held += len(units[key])
    return ([it for i, it in enumerate(items) if i not in val], [it for i, it in enumerate(items) if i in val])


class SampleDraw(NamedTuple):
    """The random choices behind one training sample (:meth:`SpatialDataset.draw`, :meth:`TemporalDataset.draw`)."""

    video: int  # index into the dataset's items
    t: int  # frame (spatial) or stack start (temporal)
    y0: int  # crop corner in the full frame
    x0: int
    flip: bool
    jitter: tuple[float, float, float] | None = None  # spatial RGB jitter: brightness, contrast, saturation


class _StreamDataset(Dataset):
    """Common parts of the two streams: items, train/test mode, crops."""

    in_channels: int

    def __init__(self, cache: VideoCache, items, mode: str = "train", crop_size: int = 224, flip: bool = True,
                 frames: int = TEST_FRAMES, crops: int = TEST_CROPS):
        if mode not in ("train", "test"):
            raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
        check_views(frames, crops)
        self.cache = cache if isinstance(cache, VideoCache) else VideoCache(cache)
        self.items = list(items)
        if not self.items:
            raise ValueError("no videos given")
        self.cache.require([v for v, _ in self.items])
        self.video_ids = [v for v, _ in self.items]
        self.labels = [int(lab) for _, lab in self.items]
        self.num_videos = len(self.items)
        self.mode, self.crop_size, self.flip = mode, int(crop_size), flip
        self.frames, self.crops = int(frames), int(crops)
        for vid in self.video_ids:
            h, w = self.cache.frame_size(vid)
            if min(h, w) < crop_size:
                raise ValueError(f"{vid}: frames are {h}x{w}, smaller than crop_size={crop_size}")
        # test items: (video, position) pairs
        self.video_index = (np.repeat(np.arange(self.num_videos), self.frames)
                            if mode == "test" else np.arange(self.num_videos))

    def __len__(self) -> int:
        return len(self.video_index)

    def _positions(self, vid: str) -> tuple[int, int]:  # first, last valid start
        raise NotImplementedError

    def _load(self, vid: str, t: int) -> np.ndarray:  # (C, H, W) float32, full frame
        raise NotImplementedError

    def _flip(self, x: np.ndarray) -> np.ndarray:
        return x[:, :, ::-1]

    def _augment(self, x: np.ndarray, jitter) -> np.ndarray:
        return x

    def _draw_jitter(self, generator):
        return None

    def draw(self, i: int, generator: torch.Generator | None = None) -> SampleDraw:
        """The random choices of training sample ``i``: start ``t``, crop corner ``(y0, x0)``, flip, jitter.

        Drawn from ``generator`` (torch's global RNG when None) in the order: t, y0, x0, flip (only when ``flip``
        is on), jitter (only when on). ``__getitem__`` calls this, so a loader that draws with the same generator
        state builds the same samples (:mod:`twostream_lib.device_loader`)."""
        if self.mode != "train":
            raise ValueError("draw(): test-mode samples are not random (frames x crops)")
        v = int(self.video_index[i])
        vid = self.items[v][0]
        first, last = self._positions(vid)
        h, w = self.cache.frame_size(vid)  # = the loaded input's (full-frame) size
        s = self.crop_size
        t = int(torch.randint(first, last + 1, (), generator=generator).item())
        y0 = int(torch.randint(0, h - s + 1, (), generator=generator).item())
        x0 = int(torch.randint(0, w - s + 1, (), generator=generator).item())
        flip = bool(self.flip and torch.rand((), generator=generator).item() < 0.5)
        return SampleDraw(v, t, y0, x0, flip, self._draw_jitter(generator))

    def __getitem__(self, i: int):
        v = int(self.video_index[i])
        vid, label = self.items[v]
        first, last = self._positions(vid)
        s = self.crop_size
        if self.mode == "train":
            d = self.draw(i)
            x = self._load(vid, d.t)[:, d.y0:d.y0 + s, d.x0:d.x0 + s]
            if d.flip:
                x = self._flip(x)
            x = self._augment(x, d.jitter)
            return torch.from_numpy(np.ascontiguousarray(x)), label
        k = i - v * self.frames
        t = spaced_positions(first, last, self.frames)[k]
        x = self._load(vid, t)
        _, h, w = x.shape
        views = [x[:, y0:y0 + s, x0:x0 + s] for y0, x0 in crop_boxes(h, w, s, self.crops)]
        if self.crops == 10:
            views += [self._flip(c) for c in views]
        return torch.from_numpy(np.ascontiguousarray(np.stack(views))), label, v


class SpatialDataset(_StreamDataset):
    """The spatial stream's input: single RGB frames (paper §2), ImageNet-normalised, (3, crop, crop).

    Args:
        cache: a :class:`VideoCache` or its folder.
        items: ``(video_id, label)`` pairs (see :func:`items_for`).
        mode: ``"train"`` (one random frame, random crop, flip, RGB jitter) or ``"test"`` (25 frames × 10 crops).
        crop_size: side of the square crop (224 in the paper).
        jitter: RGB jitter strength (random brightness, contrast, saturation, each ±jitter); 0 disables.
    """

    in_channels = 3

    def __init__(self, cache, items, mode="train", crop_size=224, flip=True, jitter: float = 0.2,
                 frames=TEST_FRAMES, crops=TEST_CROPS):
        super().__init__(cache, items, mode, crop_size, flip, frames, crops)
        self.jitter = float(jitter) if mode == "train" else 0.0

    def _positions(self, vid):
        return 0, self.cache.num_frames(vid) - 1

    def _load(self, vid, t):
        im = self.cache.rgb(vid, t).astype(np.float32) / 255.0
        return ((im - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)

    def _draw_jitter(self, generator):
        if self.jitter <= 0:
            return None
        j = self.jitter
        return tuple((1 + j * (2 * torch.rand(3, generator=generator) - 1)).tolist())  # brightness, contrast, sat.

    def _augment(self, x, jitter):
        if jitter is None:
            return x
        b, c, s = jitter
        im = x * IMAGENET_STD[:, None, None] + IMAGENET_MEAN[:, None, None]
        gray = im.mean(axis=0, keepdims=True)
        im = gray + s * (im - gray)                   # saturation
        im = im.mean() + c * (im - im.mean())          # contrast
        im = np.clip(im * b, 0, 1)                     # brightness
        return ((im - IMAGENET_MEAN[:, None, None]) / IMAGENET_STD[:, None, None]).astype(np.float32)


class TemporalDataset(_StreamDataset):
    """The temporal stream's input: a stack of ``L`` flow fields, ``(2L, crop, crop)``, channels x₁,y₁,x₂,y₂,…
    in pixels (paper §3.1).

    Args:
        cache: a :class:`VideoCache` or its folder.
        items: ``(video_id, label)`` pairs.
        mode: ``"train"`` or ``"test"`` (25 stacks × 10 crops).
        L: number of stacked flow fields (1, 5, 10, …).
        stacking: ``"stacking"`` (optical flow stacking, eq. 1) or ``"trajectory"`` (trajectory stacking, eq. 2).
        bidirectional: L/2 forward + L/2 backward fields (needs a cache prepared with ``--backward``).
        mean_subtraction: subtract each field's own spatial mean (camera-motion compensation, §3.3).

    A video with fewer flow fields than a stack needs raises ``ValueError`` naming it at construction; the
    stack starts are otherwise drawn from :func:`twostream_lib.flow.valid_starts`.
    """

    def __init__(self, cache, items, mode="train", crop_size=224, L: int = 10, stacking: str = "stacking",
                 bidirectional: bool = False, mean_subtraction: bool = True, flip=True, frames=TEST_FRAMES,
                 crops=TEST_CROPS):
        super().__init__(cache, items, mode, crop_size, flip, frames, crops)
        if stacking not in STACK_MODES:
            raise ValueError(f"stacking must be one of {STACK_MODES}, got {stacking!r}")
        if bidirectional and not self.cache.settings.get("backward"):
            raise CacheError(f"{self.cache.root}: bidirectional input needs backward flow; "
                             f"prepare the cache with --backward")
        self.L, self.stacking, self.bidirectional = int(L), stacking, bool(bidirectional)
        self.mean_subtraction = bool(mean_subtraction)
        self.in_channels = 2 * self.L
        for vid in self.video_ids:
            n = self.cache.num_flows(vid)
            if len(valid_starts(n, self.L, self.bidirectional)) == 0:
                raise ValueError(f"{vid}: only {n} flow field(s), too short for a stack of L={self.L}"
                                 f"{' (bi-directional)' if self.bidirectional else ''}")

    def _positions(self, vid):
        r = valid_starts(self.cache.num_flows(vid), self.L, self.bidirectional)
        return r[0], r[-1]

    def _load(self, vid, t):
        n = self.cache.num_flows(vid)
        t = clamp_start(t, n, self.L, self.bidirectional)
        fwd_idx, bwd_idx = stack_indices(t, n, self.L, self.bidirectional)  # decode only the fields used
        fw = _Fields(n, fwd_idx, self.cache.flows(vid, fwd_idx))
        bw = _Fields(n, bwd_idx, self.cache.flows(vid, bwd_idx, "backward")) if self.bidirectional else None
        return temporal_stack(fw, t, L=self.L, mode=self.stacking, bidirectional=self.bidirectional,
                              backward_flows=bw, mean_subtraction=self.mean_subtraction)

    def _flip(self, x):
        return flip_stack(x)


class _Fields:
    """The few decoded flow fields a stack reads, indexable by their index in the whole video."""

    def __init__(self, n: int, indices, fields: np.ndarray):
        self.n, self.fields = n, dict(zip(indices, fields))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> np.ndarray:
        return self.fields[i]


class MultiTaskDataset(Dataset):
    """Several datasets as one, for multitask training (paper §4): ``dataset[i] -> (x, label, task_id)``.

    ``task_id`` is the index of the sample's dataset; each head's loss is taken on its own task's samples only.
    """

    def __init__(self, datasets: list[Dataset]):
        if not datasets:
            raise ValueError("no datasets given")
        chans = {getattr(d, "in_channels", None) for d in datasets}
        if len(chans) != 1:
            raise ValueError(f"datasets disagree on input channels: {chans}")
        self.datasets = list(datasets)
        self.in_channels = chans.pop()
        self.offsets = np.cumsum([0] + [len(d) for d in datasets])
        self.task_ids = np.concatenate([np.full(len(d), k) for k, d in enumerate(datasets)]).tolist()
        self.labels = [lab for d in datasets for lab in d.labels]
        self.num_classes = [int(max(d.labels)) + 1 for d in datasets]

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int):
        k = int(np.searchsorted(self.offsets, i, side="right") - 1)
        x, label = self.datasets[k][i - int(self.offsets[k])][:2]
        return x, label, k


def sample_seeds(base: int, positions) -> list[int]:
    """One seed per sample: ``base`` (e.g. a chunk's seed) plus the sample's position in the chunk's global order,
    so a sample's seed does not depend on the process, worker or batch that builds it."""
    return [(int(base) + int(p)) % 2 ** 63 for p in positions]


class SeededSamples(Dataset):
    """A training dataset whose samples draw their random choices from their own seeds.

    ``SeededSamples(ds)[(i, seed)]`` is ``ds[i]`` built with torch's RNG seeded with ``seed``; the caller's RNG
    state is restored afterwards. A ``DataLoader`` whose sampler yields ``(index, seed)`` pairs thus builds the
    same batches with any ``num_workers``, and :class:`~twostream_lib.device_loader.DeviceLoader` given the same
    ``seeds`` draws the same choices (a ``torch.Generator`` seeded with ``seed`` yields what the seeded global
    RNG yields). Works for any dataset whose items draw from torch's RNG: stream datasets,
    :class:`MultiTaskDataset`, ``ConcatDataset``.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        i, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            return self.dataset[int(i)]


class BalancedSampler(Sampler[int]):
    """Indices with classes drawn uniformly, then a video uniformly within the class (paper §5: "256 training
    videos drawn uniformly across the classes"). Deterministic in (seed, epoch). Data-parallel processes share
    one order: the trainer's ``ChunkSampler`` gives each its slice of every global batch.

    Args:
        labels: a class label per dataset index.
        num_samples: indices per epoch.
        seed: base seed; call :meth:`set_epoch` each epoch.
    """

    def __init__(self, labels, num_samples: int, seed: int = 0):
        self.labels = np.asarray(labels)
        self.classes = np.unique(self.labels)
        self.by_class = [np.flatnonzero(self.labels == c) for c in self.classes]
        self.num_samples = int(num_samples)
        self.seed, self.epoch = int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def indices(self) -> np.ndarray:
        """All ``num_samples`` indices of this epoch."""
        rng = np.random.default_rng([self.seed, self.epoch])
        cls = rng.integers(0, len(self.classes), self.num_samples)
        pick = rng.random(self.num_samples)
        return np.array([self.by_class[c][int(p * len(self.by_class[c]))] for c, p in zip(cls, pick)])

    def __iter__(self):
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return self.num_samples


# ---------------------------------------------------------------------------------------------- a run's data
@dataclass
class RunData:
    """What a run trains and validates on.

    Attributes:
        train: training dataset in train mode; items ``(x, label)`` or, multitask, ``(x, label, task_id)``.
        labels: one sampler label per training item: classes are drawn uniformly over these (§5); for multitask
            they are unique per (task, class) pair.
        val: one test-mode dataset per task (held-out training videos), items ``(views (V, C, H, W), label,
            video_index)``; empty = no validation.
        classes: class names per task.
    """

    train: Any
    labels: list[int]
    val: list[Any] = field(default_factory=list)
    classes: list[list[str]] = field(default_factory=list)

    @property
    def num_classes(self) -> list[int]:
        return [len(c) for c in self.classes]


def make_dataset(cfg: "TrainConfig", cache, items, mode: str, frames: int = TEST_FRAMES, crops: int = TEST_CROPS):
    """The stream's dataset for ``items`` with ``cfg``'s input settings (a :class:`SpatialDataset` or a
    :class:`TemporalDataset`); in test mode ``frames`` equally spaced frames (stacks) x ``crops`` views (§6)."""
    if cfg.stream == "spatial":
        return SpatialDataset(cache, items, mode=mode, crop_size=cfg.crop_size, flip=cfg.flip, jitter=cfg.jitter,
                              frames=frames, crops=crops)
    return TemporalDataset(cache, items, mode=mode, crop_size=cfg.crop_size, L=cfg.L, stacking=cfg.stacking,
                           bidirectional=cfg.bidirectional, mean_subtraction=cfg.mean_subtraction, flip=cfg.flip,
                           frames=frames, crops=crops)


def build_datasets(cfg: "TrainConfig") -> RunData:
    """Training set (train videos minus a held-out part per class, :func:`holdout`) and validation sets (the
    held-out part, test mode with ``val_frames`` x ``val_crops`` views) for each dataset of ``cfg``; several
    datasets = multitask (§4), or one softmax over their classes (``heads="shared"``)."""
    train_sets, val_sets, classes = [], [], []
    excluded = set(cfg.exclude_classes)
    seen: set[str] = set()
    for k, (name, root, cache_dir) in enumerate(zip(cfg.datasets, cfg.roots, cfg.caches)):
        split = load_split(name, root, cfg.split)
        cache = VideoCache(cache_dir, memory_mb=cfg.cache_memory_mb)
        items = items_for(split, "train", cache)
        if k > 0:
            seen.update(split.classes)
            items = [(v, lab) for v, lab in items if split.classes[lab] not in excluded]
        tr_items, val_items = holdout(items, fraction=cfg.val_fraction, seed=cfg.seed)
        train_sets.append((cache, tr_items))
        if val_items and (k == 0 or cfg.heads == "per_dataset"):
            val_sets.append(make_dataset(cfg, cache, val_items, "test", frames=cfg.val_frames, crops=cfg.val_crops))
        classes.append(list(split.classes))
    if excluded - seen:
        raise ValueError(f"exclude_classes: {sorted(excluded - seen)} are not classes of {cfg.datasets[1:]}")
    if len(train_sets) > 1 and cfg.heads == "shared":
        return _shared_head_data(cfg, train_sets, val_sets, classes, excluded)
    train_sets = [make_dataset(cfg, cache, items, "train") for cache, items in train_sets]
    if len(val_sets) not in (0, len(train_sets)):
        val_sets = []  # one dataset has no held-out video: validate none rather than a partial mean
    if len(train_sets) == 1:
        return RunData(train_sets[0], list(train_sets[0].labels), val_sets, classes)
    mt = MultiTaskDataset(train_sets)
    offsets = np.cumsum([0] + [len(c) for c in classes])  # (task, class) -> one sampler label
    labels = [int(offsets[t] + lab) for lab, t in zip(mt.labels, mt.task_ids)]
    return RunData(mt, labels, val_sets, classes)


def _shared_head_data(cfg: "TrainConfig", train_sets, val_sets, classes, excluded) -> RunData:
    """One softmax over the target's classes followed by the other datasets' kept classes (Table 2, row 3).

    The target (first dataset) keeps its labels 0..n-1, so its validation set is unchanged."""
    union = list(classes[0])
    sets = [make_dataset(cfg, train_sets[0][0], train_sets[0][1], "train")]
    for (cache, items), names in zip(train_sets[1:], classes[1:]):
        mapping = {}
        for lab, c in enumerate(names):
            if c not in excluded:
                mapping[lab] = len(union)
                union.append(c if c not in union else f"{c} ({cache.settings['dataset']})")
        sets.append(make_dataset(cfg, cache, [(v, mapping[lab]) for v, lab in items], "train"))
    train = torch.utils.data.ConcatDataset(sets)
    labels = [lab for d in sets for lab in d.labels]
    return RunData(train, labels, val_sets, [union])
