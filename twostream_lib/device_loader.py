"""Training batches built on the device: JPEGs decoded in batches (nvJPEG on CUDA), augmented with tensor ops.

The CPU path (:class:`twostream_lib.data.TemporalDataset` in a ``DataLoader``) decodes the 2L flow JPEGs of each
temporal sample with OpenCV on a CPU core, ~140 samples/s per core at 224x224, L = 10: a GPU that trains at
thousands of samples/s would need dozens of loader cores. :class:`DeviceLoader` builds the same batches with:

1. **reads** — the JPEG bytes of a batch are read from the cache's packed ``.bin`` files (one ``os.preadv`` per
   sample and stream: a stack's fields are consecutive in the file) into one buffer (pinned when decoding on
   CUDA), on a background thread one batch ahead;
2. **decode** — one ``decode`` call for the whole batch (``torchvision.io.decode_jpeg``'s op: nvJPEG batched
   decoding, on the GPU's hardware JPEG engine where it has one, on CUDA; libjpeg-turbo on CPU);
3. **tensor ops** on the device, batched over samples: dequantisation, trajectory stacking (bilinear sampling
   exactly as ``cv2.remap`` does it), mean displacement subtraction, crop, flip (mirror + negated x channels);
   for RGB: crop, flip, jitter, ImageNet normalisation.

Samples are the CPU path's: the random choices are made by the datasets' own ``draw`` method
(:meth:`twostream_lib.data.TemporalDataset.draw`, which their ``__getitem__`` uses) from a ``torch.Generator``,
so ``DeviceLoader(ds, idx, B, generator=torch.Generator().manual_seed(s))`` yields the batches of
``torch.manual_seed(s); [ds[i] for i in idx]``, and ``DeviceLoader(ds, idx, B, seeds=seeds)`` (what the trainer
uses) those of a ``DataLoader`` over :class:`~twostream_lib.data.SeededSamples` ``(ds)`` given the pairs
``zip(idx, seeds)``, whatever its number of workers. On CPU the decoders agree bit for bit (libjpeg-turbo in both
OpenCV and torchvision) and so do the batches, every temporal variant included (trajectory stacking too), except
the RGB jitter's whole-crop mean (float32 summation order, < 1e-5). On CUDA, nvJPEG's IDCT may differ from
libjpeg-turbo by a few grey levels (1 level = 2*bound/255 = 0.157 px of flow at bound 20); everything after
decoding is the same float32 arithmetic (``decode_device="cpu"`` or ``cpu_decode_share=1`` give the CPU path's
values on the GPU too).

Usage (what the trainer's ``make_train_loader`` returns for ``loader: device``)::

    loader = DeviceLoader(dataset, indices, batch_size, seeds=sample_seeds(chunk_seed, positions), device="cuda")
    for x, y in loader:          # x (B, C, crop, crop) float32 on the device, y (B,) long; + task_id (B,) multitask
        ...

Only training-mode datasets (random sampling) are supported; test-mode views go through the CPU path.
"""
from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import cv2
import numpy as np
import torch
from torchvision.io import ImageReadMode  # (importing torchvision.io loads its image ops: torch.ops.image.*)

from .data import IMAGENET_MEAN, IMAGENET_STD, MultiTaskDataset, SampleDraw, SpatialDataset, TemporalDataset
from .flow import clamp_start, stack_indices
from .prepare import CacheError

__all__ = ["DeviceLoader", "decode_jpegs", "crop_flip", "temporal_batch", "spatial_batch", "trajectory_fields",
           "remap_bilinear", "quantised_field_means"]

_GRAY, _RGB = ImageReadMode.GRAY.value, ImageReadMode.RGB.value


# ------------------------------------------------------------------------------------------------ decoding
def decode_jpegs(data: Sequence[torch.Tensor], gray: bool, device: torch.device | str = "cpu",
                 threads: int = 1, cpu_share: float = 0.0) -> list[torch.Tensor]:
    """Decode JPEGs (1-D uint8 CPU tensors) to ``(1 or 3, H, W)`` uint8 tensors on ``device``, in order.

    The ops behind ``torchvision.io.decode_jpeg`` (deprecated in torchvision 0.29 in favour of TorchCodec,
    which is not a dependency here; calling them directly skips a DeprecationWarning per call): on CUDA one
    batched nvJPEG call (hardware decoder for baseline JPEGs on A100/H100-class GPUs), on CPU libjpeg-turbo,
    one image at a time, in ``threads`` threads (the op releases the GIL).

    ``cpu_share`` > 0: the last ``cpu_share`` of the images are decoded by libjpeg-turbo in ``threads`` CPU
    threads while the device decodes the others, then copied to ``device`` in one transfer (pinned): for a GPU
    whose decoder alone doesn't keep up."""
    device = torch.device(device)
    mode = _GRAY if gray else _RGB
    data = list(data)
    k = min(len(data), int(round(len(data) * cpu_share))) if cpu_share > 0 else 0
    if k == 0:
        return _decode_on(device, data, mode, threads)
    head, tail = data[:len(data) - k], data[len(data) - k:]
    n = -(-k // max(1, threads))
    with ThreadPoolExecutor(max(1, threads)) as ex:
        futures = [ex.submit(_decode_on, torch.device("cpu"), tail[a:a + n], mode, 1) for a in range(0, k, n)]
        first = _decode_on(device, head, mode, 1)  # meanwhile (both release the GIL)
        rest = [im for f in futures for im in f.result()]
    if device.type != "cpu":
        flat, shapes = _pack(rest, pin=device.type == "cuda")
        rest = _unpack(flat.to(device, non_blocking=True), shapes)
    return first + rest


def _decode_on(device: torch.device, data: list[torch.Tensor], mode: int, threads: int) -> list[torch.Tensor]:
    if not data:
        return []
    if device.type == "cuda":
        return list(torch.ops.image.decode_jpegs_cuda(data, mode, device))
    op = torch.ops.image.decode_jpeg
    if threads <= 1 or len(data) < 2 * threads:
        return [op(d, mode, False) for d in data]
    n = -(-len(data) // threads)
    with ThreadPoolExecutor(threads) as ex:
        parts = list(ex.map(lambda a: [op(d, mode, False) for d in data[a:a + n]], range(0, len(data), n)))
    return [im for p in parts for im in p]


def _pack(images: list[torch.Tensor], pin: bool = False) -> tuple[torch.Tensor, list[torch.Size]]:
    """CPU images -> one flat uint8 tensor (each image in (C, H, W) order; pinned if ``pin``) and their shapes."""
    shapes = [im.shape for im in images]
    flat = torch.empty(sum(im.numel() for im in images), dtype=torch.uint8, pin_memory=pin)
    torch.cat([im.reshape(-1) for im in images], out=flat)
    return flat, shapes


def _unpack(flat: torch.Tensor, shapes: list[torch.Size]) -> list[torch.Tensor]:
    """Inverse of :func:`_pack` (views of ``flat``, on its device)."""
    sizes = [int(np.prod(s)) for s in shapes]
    return [v.view(s) for v, s in zip(torch.split(flat, sizes), shapes)]


# ------------------------------------------------------------------------------------------------ tensor ops
def crop_flip(x: torch.Tensor, y0: torch.Tensor, x0: torch.Tensor, flip: torch.Tensor, size: int) -> torch.Tensor:
    """Per-sample ``size`` x ``size`` crops of ``x`` (B, C, H, W) at ``(y0, x0)`` (B,), mirrored left-right
    where ``flip`` (B,) bool: one gather, any dtype. Only the pixels are mirrored (see :func:`temporal_batch`
    for the flow's x negation)."""
    B, C, H, W = x.shape
    ar = torch.arange(size, device=x.device)
    rows = y0.to(x.device)[:, None] + ar
    x0 = x0.to(x.device)[:, None]
    cols = torch.where(flip.to(x.device)[:, None], x0 + (size - 1) - ar, x0 + ar)
    lin = (rows[:, :, None] * W + cols[:, None, :]).reshape(B, 1, size * size)
    return x.reshape(B, C, H * W).gather(2, lin.expand(B, C, size * size)).view(B, C, size, size)


def _dequantize(q: torch.Tensor, bound: float) -> torch.Tensor:
    """uint8 -> px, the same float32 operations as :func:`twostream_lib.flow.dequantize_flow`."""
    return q.float().mul_(float(np.float32(2.0 * bound / 255.0))).sub_(float(np.float32(bound)))


def _field_means(f: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) float32 -> (N, C) float32 means as ``temporal_stack`` takes them (float64 sum, then cast)."""
    n = f.shape[-1] * f.shape[-2]
    return (f.sum(dim=(2, 3), dtype=torch.float64) / n).float()


def quantised_field_means(q: torch.Tensor, bound: float, histogram: bool | None = None) -> torch.Tensor:
    """The means of dequantised fields ``q`` (N, C, H, W) uint8 -> (N, C) float32, bit for bit as
    ``temporal_stack`` takes them. The float64 sum of a field is exact whatever the order: the 256 dequantised
    levels are float32 multiples of one power of two g >= bound / 255 * 2^-24 (2^-27 at bound 20), with
    ``|v| <= bound``, so every partial sum is a multiple of g below bound * H * W < 2^53 g for fields of up to
    2M pixels.

    Two ways to the same sum: ``histogram`` (default on CPU) — 256-bin histograms (``cv2.calcHist``) times the
    256 dequantised levels, ~20x faster than torch's float64 reduction on CPU; otherwise (default on CUDA) the
    float64 sum of the dequantised fields."""
    N, C, H, W = q.shape
    if histogram is None:
        histogram = q.device.type == "cpu"
    if not histogram:
        return _field_means(_dequantize(q, bound))
    levels = _dequantize(torch.arange(256, dtype=torch.uint8), bound).double()
    fields = q.detach().cpu().reshape(N * C, H, W).numpy()
    counts = np.stack([cv2.calcHist([f], [0], None, [256], [0, 256]).reshape(256) for f in fields]).astype(np.float64)
    return ((torch.from_numpy(counts) @ levels) / (H * W)).float().view(N, C).to(q.device)


def remap_bilinear(f: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """``cv2.remap(field, px, py, INTER_LINEAR, BORDER_REPLICATE)`` for a batch: ``f`` (N, K, H, W) float32 at
    positions ``px, py`` (N, H, W) float32 -> (N, K, H, W).

    As OpenCV does it: positions rounded to 1/32 px (``round(32 p)``, half to even), the four taps clamped to
    the frame, weights ``(1-fy)(1-fx), (1-fy)fx, fy(1-fx), fy fx`` (exact in float32), and the sum taken in
    that order in float32 — bit for bit equal to ``cv2.remap`` (checked in tests/test_device_loader.py)."""
    N, K, H, W = f.shape
    X = torch.round(px * 32).to(torch.int64)
    Y = torch.round(py * 32).to(torch.int64)
    ix, iy = X >> 5, Y >> 5
    fx = (X & 31).to(torch.float32) * (1.0 / 32)
    fy = (Y & 31).to(torch.float32) * (1.0 / 32)
    x0, x1 = ix.clamp(0, W - 1), (ix + 1).clamp(0, W - 1)
    y0, y1 = iy.clamp(0, H - 1), (iy + 1).clamp(0, H - 1)
    flat = f.reshape(N, K, H * W)

    def tap(yy, xx):
        return flat.gather(2, (yy * W + xx).reshape(N, 1, H * W).expand(N, K, H * W)).view(N, K, H, W)

    gx, gy = 1 - fx, 1 - fy
    w00, w01, w10, w11 = (gy * gx)[:, None], (gy * fx)[:, None], (fy * gx)[:, None], (fy * fx)[:, None]
    return tap(y0, x0) * w00 + tap(y0, x1) * w01 + tap(y1, x0) * w10 + tap(y1, x1) * w11


def trajectory_fields(f: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """Trajectory stacking (eq. 2) of full-frame stacks ``f`` (N, 2L, H, W) float32 px, channels x1,y1,x2,y2,…:
    field k read at p_k, p_1 = (u, v), p_k = clip(p_{k-1} + d_{k-1}(p_{k-1})) — as
    :func:`twostream_lib.flow.temporal_stack` does it. ``groups=2`` (bi-directional): each half of the channels
    follows its own trajectory from (u, v)."""
    N, C, H, W = f.shape
    Lg = C // (2 * groups)
    g = f.reshape(N * groups, Lg, 2, H, W)
    gx = torch.arange(W, dtype=torch.float32, device=f.device).expand(N * groups, H, W)
    gy = torch.arange(H, dtype=torch.float32, device=f.device)[:, None].expand(N * groups, H, W)
    out = [g[:, 0]]
    px = (gx + g[:, 0, 0]).clamp_(0, W - 1)
    py = (gy + g[:, 0, 1]).clamp_(0, H - 1)
    for k in range(1, Lg):
        s = remap_bilinear(g[:, k], px, py)
        out.append(s)
        if k + 1 < Lg:
            px = (px + s[:, 0]).clamp_(0, W - 1)
            py = (py + s[:, 1]).clamp_(0, H - 1)
    return torch.stack(out, 1).reshape(N, C, H, W)


def temporal_batch(q: torch.Tensor, y0: torch.Tensor, x0: torch.Tensor, flip: torch.Tensor, crop: int,
                   bound: float = 20.0, stacking: str = "stacking", bidirectional: bool = False,
                   mean_subtraction: bool = True) -> torch.Tensor:
    """Temporal-stream inputs from quantised fields: ``q`` (B, 2L, H, W) uint8 in stack channel order (x1, y1,
    x2, y2, …; bi-directional: the L/2 forward fields, then the L/2 backward ones) -> (B, 2L, crop, crop)
    float32 px, the same values as :class:`~twostream_lib.data.TemporalDataset` computes: the stack built on the
    full frame, each field minus its own full-frame mean (``mean_subtraction``), cropped at ``(y0, x0)``,
    mirrored with x channels negated where ``flip``."""
    if stacking == "trajectory":
        f = trajectory_fields(_dequantize(q, bound), 2 if bidirectional else 1)
        out = crop_flip(f, y0, x0, flip, crop)
        del f
        means = quantised_field_means(q, bound) if mean_subtraction else None  # each field's own mean (§3.1)
    elif stacking == "stacking":
        # the same pixels whatever the order: crop the uint8 fields first (4x less data), means on the full ones
        out = _dequantize(crop_flip(q, y0, x0, flip, crop), bound)
        means = quantised_field_means(q, bound) if mean_subtraction else None
    else:
        raise ValueError(f"stacking must be 'stacking' or 'trajectory', got {stacking!r}")
    if means is not None:
        out.sub_(means[:, :, None, None])
    if flip.device.type != "cpu" or bool(flip.any()):  # (a device tensor is not synchronised to find out)
        sign = torch.ones(out.shape[:2], dtype=out.dtype, device=out.device)
        sign[:, 0::2] = torch.where(flip.to(out.device)[:, None], -1.0, 1.0)
        out.mul_(sign[:, :, None, None])  # a mirrored rightward motion is a leftward one (flow.flip_stack)
    return out


def spatial_batch(q: torch.Tensor, y0: torch.Tensor, x0: torch.Tensor, flip: torch.Tensor, crop: int,
                  jitter: torch.Tensor | None = None) -> torch.Tensor:
    """Spatial-stream inputs from RGB frames ``q`` (B, 3, H, W) uint8 -> (B, 3, crop, crop) float32: crop,
    flip, ImageNet normalisation and RGB jitter ((B, 3) brightness, contrast, saturation factors, or None), as
    :class:`~twostream_lib.data.SpatialDataset` computes them."""
    dev = q.device
    mean = torch.from_numpy(IMAGENET_MEAN).to(dev)[None, :, None, None]
    std = torch.from_numpy(IMAGENET_STD).to(dev)[None, :, None, None]
    # in-place, but the same float32 operations in the same order as the CPU path (a*b = b*a, a+b = b+a exactly)
    x = crop_flip(q, y0, x0, flip, crop).float().div_(255.0).sub_(mean).div_(std)
    if jitter is None:
        return x
    j = jitter.to(dev, torch.float32)[:, :, None, None]
    b, c, s = j[:, 0:1], j[:, 1:2], j[:, 2:3]
    im = x.mul_(std).add_(mean)
    gray = (im[:, 0:1] + im[:, 1:2] + im[:, 2:3]) / 3  # numpy's mean over 3 channels: ((r + g) + b) / 3
    im.sub_(gray).mul_(s).add_(gray)  # saturation: gray + s * (im - gray)
    m = im.mean(dim=(1, 2, 3), keepdim=True)  # numpy sums pairwise in float32: equal within ~1e-7
    im.sub_(m).mul_(c).add_(m)  # contrast: m + c * (im - m)
    im.mul_(b).clamp_(0, 1)  # brightness
    return im.sub_(mean).div_(std)


# ------------------------------------------------------------------------------------------------ reading
class _PackedReader:
    """Byte ranges of a cache's packed ``.bin`` files: offsets from each video's ``index.json`` (kept), file
    descriptors kept open (LRU), ``os.preadv`` straight into one buffer per batch."""

    def __init__(self, max_open: int = 256):
        self.max_open = max_open
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._files: dict[tuple[str, str, str], tuple[str, list[int], list[int]]] = {}
        self._lock = threading.Lock()

    def file(self, cache, vid: str, stream: str) -> tuple[str, list[int], list[int]]:
        """``(path, offsets, sizes)`` of a video's packed file ``stream`` (JPEG i: bytes offsets[i], sizes[i])."""
        key = (str(cache.root), vid, stream)
        f = self._files.get(key)
        if f is None:
            offs = cache._index(vid)["offsets"]
            if stream not in offs:
                raise CacheError(f"{cache.root}: stream {stream!r} was not prepared "
                                 f"(backward flow needs prepare --backward)")
            base = os.path.join(str(cache.root), "videos", vid)
            for k, o in offs.items():  # all of the video's streams at once
                self._files[(key[0], vid, k)] = (os.path.join(base, f"{k}.bin"), list(o),
                                                 np.diff(np.asarray(o, dtype=np.int64)).tolist())
            f = self._files[key]
        return f

    def _fd(self, path: str) -> int:
        fd = self._fds.get(path)
        if fd is not None:
            self._fds.move_to_end(path)
            return fd
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise CacheError(f"{path}: missing; the cache is stale or was deleted, re-run prepare") from None
        self._fds[path] = fd
        if len(self._fds) > self.max_open:
            os.close(self._fds.popitem(last=False)[1])
        return fd

    def read(self, reads: list[tuple[str, int, int]], pin: bool) -> torch.Tensor:
        """``reads`` = (path, byte offset, length) -> one uint8 tensor holding them back to back."""
        total = sum(r[2] for r in reads)
        buf = torch.empty(total, dtype=torch.uint8, pin_memory=pin)
        mv = memoryview(buf.numpy())
        pos = 0
        with self._lock:
            for path, start, n in reads:
                fd = self._fd(path)
                got = 0
                while got < n:
                    k = os.preadv(fd, [mv[pos + got:pos + n]], start + got)
                    if k <= 0:
                        raise CacheError(f"{path}: file shorter than its index says (offset {start + got}); "
                                         f"the cache is corrupt, re-run prepare")
                    got += k
                pos += n
        return buf

    def close(self) -> None:
        with self._lock:
            while self._fds:
                os.close(self._fds.popitem()[1])


# ------------------------------------------------------------------------------------------------ batches
@dataclass
class _Group:
    """Samples of a batch that are processed together: one dataset, one frame size."""

    ds: Any
    size: tuple[int, int]  # (H, W) of the frames, from the manifest
    pos: list[int] = field(default_factory=list)  # positions in the batch
    draws: list[SampleDraw] = field(default_factory=list)
    first_image: int = 0  # this group's images are decoded[first_image : first_image + len(pos) * per_sample]


@dataclass
class _Plan:
    """A batch read from disk, ready to decode: its JPEGs (views of one buffer) in decode order, the groups,
    the labels."""

    parts: list[torch.Tensor] | None
    groups: list[_Group]
    labels: list[int]
    tasks: list[int] | None
    read_s: float = 0.0


class _End:
    pass


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


def _stream_datasets(dataset) -> tuple[list[tuple[int, Any, int | None]], bool]:
    """``[(first global index, stream dataset, task id)]`` and whether batches carry task ids."""
    stream = (TemporalDataset, SpatialDataset)
    if isinstance(dataset, stream):
        return [(0, dataset, None)], False
    if isinstance(dataset, MultiTaskDataset):
        out = [(int(o), d, k) for k, (o, d) in enumerate(zip(dataset.offsets[:-1], dataset.datasets))], True
    elif isinstance(dataset, torch.utils.data.ConcatDataset):  # one shared head (train.py's _shared_head_data)
        starts = [0] + list(dataset.cumulative_sizes[:-1])
        out = [(int(s), d, None) for s, d in zip(starts, dataset.datasets)], False
    else:
        out = [(0, dataset, None)], False
    bad = [type(d).__name__ for _, d, _ in out[0] if not isinstance(d, stream)]
    if bad:
        raise TypeError(f"DeviceLoader: unsupported dataset {bad[0]}; expected a TemporalDataset or "
                        f"SpatialDataset, or a MultiTaskDataset or ConcatDataset of them")
    return out


class DeviceLoader:
    """Iterate training batches built on ``device`` (see the module docstring).

    Args:
        dataset: a train-mode :class:`~twostream_lib.data.TemporalDataset` or
            :class:`~twostream_lib.data.SpatialDataset`, or a :class:`~twostream_lib.data.MultiTaskDataset`
            (batches ``(x, y, task_id)``) or ``ConcatDataset`` of them (all the same stream).
        indices: the sample order (e.g. ``list(ChunkSampler(...))``), cut into batches of ``batch_size``.
        batch_size: samples per batch (the local batch of this process).
        generator: the (CPU) ``torch.Generator`` the samples' random choices are drawn from, in order, batch after
            batch (``None``: a private generator seeded with one draw from torch's global RNG per iteration).
        seeds: instead of ``generator``, one seed per index: sample ``j`` draws from a generator seeded with
            ``seeds[j]``, as :class:`~twostream_lib.data.SeededSamples` does on the CPU path (what the trainer uses:
            the same samples whichever loader builds them).
        device: where batches are built and returned (default: CUDA when available).
        decode_device: where JPEGs are decoded (default: ``device``); ``"cpu"`` with a CUDA ``device`` decodes
            with libjpeg-turbo and processes on the GPU (bit-exact with the CPU path).
        prefetch: batches prepared ahead on background threads (a reader: draws + file reads; a builder: decode
            + tensor ops, on its own CUDA stream); 0 = everything on the calling thread, in turn.
        start: skip the first ``start`` batches (with ``generator``, their random choices are still drawn, so batch
            k is the same whatever ``start`` is: resuming in the middle of a chunk).
        drop_last: drop a last incomplete batch.
        chunk: samples processed at once: bounds the memory of full-frame temporaries (default 32 on CUDA; 4 on
            CPU, where small chunks stay in the caches: ~1.5x faster than 32 on the 2-core test machine).
        decode_threads: CPU decoding threads (for a CPU ``decode_device``, or ``cpu_decode_share``).
        cpu_decode_share: with a CUDA ``decode_device``, the share of each batch's JPEGs decoded on the CPU (in
            ``decode_threads`` threads, at the same time as nvJPEG decodes the rest); 0 = nvJPEG only.
        pin_memory: read into pinned memory (default: when decoding on CUDA).

    ``stats`` accumulates seconds per stage (``read``, ``decode``, ``process``; on CUDA ``process`` is kernel
    launch time unless synchronised) and the number of batches and images.
    """

    def __init__(self, dataset, indices: Sequence[int], batch_size: int, *,
                 generator: torch.Generator | None = None, seeds: Sequence[int] | None = None,
                 device: torch.device | str | None = None,
                 decode_device: torch.device | str | None = None, prefetch: int = 2, start: int = 0,
                 drop_last: bool = True, chunk: int | None = None, decode_threads: int = 1,
                 cpu_decode_share: float = 0.0, pin_memory: bool | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.dataset = dataset
        self._sources, self.multitask = _stream_datasets(dataset)
        kinds = {type(d) for _, d, _ in self._sources}
        if len(kinds) != 1:
            raise ValueError(f"DeviceLoader: datasets of one stream only, got {sorted(k.__name__ for k in kinds)}")
        self.temporal = kinds.pop() is TemporalDataset
        for _, d, _ in self._sources:
            if d.mode != "train":
                raise ValueError("DeviceLoader builds training batches; test-mode datasets go through the CPU path")
        crops = {d.crop_size for _, d, _ in self._sources}
        chans = {d.in_channels for _, d, _ in self._sources}
        if len(crops) != 1 or len(chans) != 1:
            raise ValueError(f"DeviceLoader: datasets disagree on crop size {crops} or channels {chans}")
        self.crop, self.channels = crops.pop(), chans.pop()
        self._starts = np.array([s for s, _, _ in self._sources])
        self.indices = [int(i) for i in indices]
        self.batch_size, self.drop_last, self.start = int(batch_size), bool(drop_last), int(start)
        if seeds is not None and (generator is not None or len(seeds) != len(self.indices)):
            raise ValueError(f"DeviceLoader: seeds= needs one seed per index ({len(seeds)} for {len(self.indices)})"
                             " and no generator")
        self.generator = generator
        self.seeds = None if seeds is None else [int(s) for s in seeds]
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = self._index_device(torch.device(device))
        self.decode_device = self.device if decode_device is None else self._index_device(torch.device(decode_device))
        if chunk is None:
            chunk = 32 if self.device.type == "cuda" else 4
        self.prefetch, self.chunk, self.decode_threads = int(prefetch), max(1, int(chunk)), max(1, int(decode_threads))
        if not 0.0 <= cpu_decode_share <= 1.0:
            raise ValueError(f"cpu_decode_share must be in [0, 1], got {cpu_decode_share}")
        self.cpu_decode_share = float(cpu_decode_share)
        self.pin_memory = self.decode_device.type == "cuda" if pin_memory is None else bool(pin_memory)
        self._reader = _PackedReader()
        self.stats = {"batches": 0, "images": 0, "read": 0.0, "decode": 0.0, "process": 0.0}

    @staticmethod
    def _index_device(d: torch.device) -> torch.device:
        if d.type == "cuda" and d.index is None:
            return torch.device("cuda", torch.cuda.current_device())
        return d

    # -- batches
    def _batches(self) -> list[range]:  # positions into self.indices
        n, b = len(self.indices), self.batch_size
        stop = n - n % b if self.drop_last else n
        return [range(a, min(a + b, stop)) for a in range(0, stop, b)]

    def __len__(self) -> int:
        return max(0, len(self._batches()) - self.start)

    def _resolve(self, i: int):
        k = int(np.searchsorted(self._starts, i, side="right") - 1)
        if k < 0 or i < 0:
            raise IndexError(f"index {i} out of range")
        s, ds, task = self._sources[k]
        local = i - s
        if local >= len(ds):
            raise IndexError(f"index {i} out of range for a dataset of {s + len(ds)} samples")
        return k, ds, local, task

    def _streams(self, ds) -> list[str]:
        if not self.temporal:
            return ["rgb"]
        return ["flow_x", "flow_y"] + (["flow_bx", "flow_by"] if ds.bidirectional else [])

    def _plan(self, batch: range, generator: torch.Generator | None, read: bool = True) -> _Plan | None:
        """Draw the samples at positions ``batch`` (always) and read their JPEG bytes (``read``)."""
        if not read and self.seeds is not None:
            return None  # nothing to draw: every sample has its own seed
        t0 = time.perf_counter()
        drawn = []
        for j in batch:
            k, ds, local, task = self._resolve(self.indices[j])
            gen = generator if self.seeds is None else torch.Generator().manual_seed(self.seeds[j])
            drawn.append((k, ds, ds.draw(local, gen), ds.labels[local], task))
        if not read:
            return None
        groups: dict[tuple, _Group] = {}
        for pos, (k, ds, d, _, _) in enumerate(drawn):
            size = ds.cache.frame_size(ds.video_ids[d.video])
            g = groups.setdefault((k, size), _Group(ds, size))
            g.pos.append(pos)
            g.draws.append(d)
        reads: list[tuple[str, int, int]] = []
        sizes: list[int] = []
        order: list[int] = []  # decode order (stack channel order) -> index into sizes (file order)
        n_img = 0
        for g in groups.values():
            g.first_image = n_img
            ds = g.ds
            streams = self._streams(ds)
            chan = self._channel_order(ds)
            for d in g.draws:
                vid = ds.video_ids[d.video]
                if self.temporal:
                    n = ds.cache.num_flows(vid)
                    t = clamp_start(d.t, n, ds.L, ds.bidirectional)
                    fwd, bwd = stack_indices(t, n, ds.L, ds.bidirectional)
                    ranges = [(fwd[0], len(fwd))] * 2 + ([(bwd[-1], len(bwd))] * 2 if bwd else [])
                else:
                    ranges = [(d.t, 1)]
                base = len(sizes)
                for stream, (lo, cnt) in zip(streams, ranges):
                    path, o, sz = self._reader.file(ds.cache, vid, stream)
                    if lo < 0 or lo + cnt >= len(o):
                        raise IndexError(f"{vid}: {stream} entries {lo}..{lo + cnt - 1} out of range")
                    reads.append((path, o[lo], o[lo + cnt] - o[lo]))
                    sizes.extend(sz[lo:lo + cnt])
                order.extend([base + p for p in chan])
            n_img += len(g.pos) * (ds.in_channels if self.temporal else 1)
        buf = self._reader.read(reads, self.pin_memory)
        parts = torch.split(buf, sizes)
        parts = [parts[j] for j in order]
        labels = [lab for _, _, _, lab, _ in drawn]
        tasks = [task for _, _, _, _, task in drawn] if self.multitask else None
        dt = time.perf_counter() - t0
        return _Plan(parts, list(groups.values()), labels, tasks, dt)

    def _channel_order(self, ds) -> list[int]:
        """Per sample, the file-order images (x fields, y fields[, backward x, backward y], each range ascending)
        in stack channel order: x1, y1, x2, y2, …; the backward half walks back in time from t (t-1, t-2, …)."""
        if not self.temporal:
            return [0]
        if not ds.bidirectional:
            L = ds.L
            return [j for k in range(L) for j in (k, L + k)]
        h = ds.L // 2
        fwd = [j for k in range(h) for j in (k, h + k)]
        bwd = [j for k in range(h) for j in (2 * h + (h - 1 - k), 3 * h + (h - 1 - k))]
        return fwd + bwd

    def _build(self, plan: _Plan):
        """Decode and process a read batch -> ``(x, y[, task_id])`` on ``self.device``."""
        t0 = time.perf_counter()
        n_images = len(plan.parts)
        images = decode_jpegs(plan.parts, gray=self.temporal, device=self.decode_device, threads=self.decode_threads,
                              cpu_share=self.cpu_decode_share)
        plan.parts = None  # frees the (pinned) read buffer
        t1 = time.perf_counter()
        dev = self.device
        B = len(plan.labels)
        out = torch.empty((B, self.channels, self.crop, self.crop), dtype=torch.float32, device=dev)
        per = self.channels if self.temporal else 1
        for g in plan.groups:
            ds, n = g.ds, len(g.pos)
            imgs = images[g.first_image:g.first_image + n * per]
            shapes = {tuple(im.shape[-2:]) for im in imgs}
            if shapes != {g.size}:
                raise CacheError(f"{ds.cache.root}: decoded images are {sorted(shapes)}, the manifest says "
                                 f"{g.size} (a stale or corrupt cache; re-run prepare)")
            # per-sample choices stay on the CPU until used (the flip test needs no device synchronisation)
            y0 = torch.tensor([d.y0 for d in g.draws], dtype=torch.int64)
            x0 = torch.tensor([d.x0 for d in g.draws], dtype=torch.int64)
            fl = torch.tensor([d.flip for d in g.draws], dtype=torch.bool)
            jit = None
            if not self.temporal and g.draws[0].jitter is not None:
                jit = torch.tensor([d.jitter for d in g.draws], dtype=torch.float32)
            pos = torch.tensor(g.pos, dtype=torch.int64, device=dev)
            for a in range(0, n, self.chunk):
                sl = slice(a, min(n, a + self.chunk))
                # (torch.stack of many uint8 tensors is very slow on CPU; cat isn't)
                q = torch.cat(imgs[sl.start * per:sl.stop * per]).view(-1, self.channels, *g.size).to(dev)
                if self.temporal:
                    x = temporal_batch(q, y0[sl], x0[sl], fl[sl], self.crop, bound=ds.cache.bound,
                                       stacking=ds.stacking, bidirectional=ds.bidirectional,
                                       mean_subtraction=ds.mean_subtraction)
                else:
                    x = spatial_batch(q, y0[sl], x0[sl], fl[sl], self.crop, None if jit is None else jit[sl])
                if len(plan.groups) == 1:
                    out[sl] = x
                else:
                    out.index_copy_(0, pos[sl], x)
                del q, x
            del imgs
        del images
        y = torch.tensor(plan.labels, dtype=torch.int64).to(dev)
        batch = (out, y) if plan.tasks is None else (out, y, torch.tensor(plan.tasks, dtype=torch.int64).to(dev))
        t2 = time.perf_counter()
        st = self.stats
        st["batches"] += 1
        st["images"] += n_images
        st["read"] += plan.read_s
        st["decode"] += t1 - t0
        st["process"] += t2 - t1
        return batch

    # -- iteration
    def _generator(self) -> torch.Generator | None:
        if self.generator is not None or self.seeds is not None:
            return self.generator
        return torch.Generator().manual_seed(int(torch.randint(0, 2 ** 62, ()).item()))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        batches, gen = self._batches(), self._generator()
        if self.prefetch <= 0:
            for k, idx in enumerate(batches):
                plan = self._plan(idx, gen, read=k >= self.start)
                if plan is not None:
                    yield self._build(plan)
            return
        yield from self._pipelined(batches, gen)

    def _pipelined(self, batches, gen):
        stop = threading.Event()
        plans: queue.Queue = queue.Queue(maxsize=self.prefetch)
        built: queue.Queue = queue.Queue(maxsize=self.prefetch)
        cuda = self.device.type == "cuda"

        def put(q, item) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    pass
            return False

        def reader():
            try:
                for k, idx in enumerate(batches):
                    if stop.is_set():
                        return
                    plan = self._plan(idx, gen, read=k >= self.start)
                    if plan is not None and not put(plans, plan):
                        return
                put(plans, _End())
            except BaseException as e:  # handed to the consumer, raised there
                put(plans, _Failure(e))

        def builder():
            try:
                ctx = contextlib.nullcontext()
                if cuda:
                    torch.cuda.set_device(self.device)  # the current device is per thread
                    side = torch.cuda.Stream(self.device)
                    ctx = torch.cuda.stream(side)
                with ctx:
                    while not stop.is_set():
                        try:
                            plan = plans.get(timeout=0.05)
                        except queue.Empty:
                            continue
                        if isinstance(plan, (_End, _Failure)):
                            put(built, plan)
                            return
                        batch = self._build(plan)
                        event = None
                        if cuda:
                            event = torch.cuda.Event()
                            event.record(side)
                        if not put(built, (batch, event)):
                            return
            except BaseException as e:
                put(built, _Failure(e))

        threads = [threading.Thread(target=reader, name="DeviceLoader-read", daemon=True),
                   threading.Thread(target=builder, name="DeviceLoader-build", daemon=True)]
        for t in threads:
            t.start()
        try:
            while True:
                item = built.get()
                if isinstance(item, _End):
                    return
                if isinstance(item, _Failure):
                    raise item.exc
                batch, event = item
                if event is not None:  # the consumer's stream waits for the builder's kernels; the allocator
                    cur = torch.cuda.current_stream(self.device)  # must not reuse the memory before it's done
                    cur.wait_event(event)
                    for t in batch:
                        t.record_stream(cur)
                yield batch
        finally:
            stop.set()
            for t in threads:
                t.join()

    def close(self) -> None:
        """Close the cached file descriptors (also done when the loader is garbage-collected)."""
        self._reader.close()

    def __del__(self):
        with contextlib.suppress(Exception):
            self._reader.close()
