"""Optical flow: estimators, quantisation, colour coding and the temporal-stream input (paper §3.1, §3.3).

Conventions used throughout the library
---------------------------------------
* A flow field is a ``(H, W, 2)`` float32 array in pixels, channel 0 = x (rightwards), channel 1 = y
  (downwards, image rows). A video's flow is ``(T-1, H, W, 2)``.
* Forward flow field ``i`` goes from frame ``i`` to frame ``i+1``:
  ``frame_i(p) ≈ frame_{i+1}(p + flow_i(p))`` (the lab's ground truth, ``<stem>.flow.npz``, uses the same).
* Backward flow field ``i`` goes from frame ``i+1`` back to frame ``i``:
  ``frame_{i+1}(q) ≈ frame_i(q + backward_i(q))``. Both lists have ``T-1`` fields.
* A temporal-stream input is a ``(2L, H, W)`` float32 stack ordered ``x_1, y_1, x_2, y_2, …``:
  channel ``2k`` is the x component and ``2k+1`` the y component of the ``k``-th stacked field (0-based ``k``).

Contents
--------
* Estimators (§3, "optical flow computed with off-the-shelf methods"): OpenCV TV-L1, Farneback and DIS behind
  :func:`estimate_flow` / :class:`FlowEstimator`; lab ground truth via :func:`load_gt_flow`.
* Storage (§3.1 "Implementation details"; chapter 2 of the book): :func:`quantize_flow` / :func:`dequantize_flow`
  map ``[-bound, bound]`` px linearly to ``[0, 255]``.
* Visualisation: Middlebury colour coding (:func:`flow_to_color`, :func:`color_wheel`).
* Scoring: :func:`endpoint_error`; resizing with value rescaling: :func:`resize_flow`.
* The ConvNet input (§3.1, §3.3): :func:`temporal_stack` (optical-flow stacking, trajectory stacking,
  bi-directional flow, mean displacement subtraction), :func:`valid_starts`, :func:`clamp_start`,
  :func:`stack_indices`, and the flow-aware horizontal flip :func:`flip_stack`.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch

from .errors import UserError
from .tvl1 import TVL1_DEFAULTS, tvl1_flow

__all__ = [
    "FLOW_METHODS",
    "ESTIMATOR_METHODS",
    "TVL1_DEFAULTS",
    "FARNEBACK_DEFAULTS",
    "DIS_PRESETS",
    "FlowEstimator",
    "estimate_flow",
    "to_gray",
    "gt_flow_path",
    "load_gt_flow",
    "FlowFileError",
    "DEFAULT_BOUND",
    "quantize_flow",
    "dequantize_flow",
    "clip_fraction",
    "flow_to_color",
    "color_wheel",
    "make_colorwheel",
    "endpoint_error",
    "resize_flow",
    "backward_from_forward",
    "warp",
    "STACK_MODES",
    "temporal_stack",
    "valid_starts",
    "clamp_start",
    "stack_indices",
    "flip_stack",
    "flip_flow",
]

#: All flow sources the library knows. ``"gt"`` is not an estimator: it is read from ``<stem>.flow.npz``.
FLOW_METHODS: tuple[str, ...] = ("tvl1", "tvl1-torch", "farneback", "dis", "gt")
#: The methods :class:`FlowEstimator` can compute. ``tvl1-torch`` is TV-L1 as OpenCV computes it, in PyTorch, on
#: whole batches of frame pairs, on any device (:mod:`twostream_lib.tvl1`).
ESTIMATOR_METHODS: tuple[str, ...] = ("tvl1", "tvl1-torch", "farneback", "dis")

#: Default clipping bound in pixels for uint8 storage (Feichtenhofer / TSN / I3D use ±20; the paper doesn't say).
DEFAULT_BOUND: float = 20.0

# ----------------------------------------------------------------------------------------------------------------
# Estimators
# ----------------------------------------------------------------------------------------------------------------

#: Farneback (2003) defaults: OpenCV's tutorial values (classical pyramid, 15 px window).
FARNEBACK_DEFAULTS: dict[str, Any] = {
    "pyr_scale": 0.5,
    "levels": 3,
    "winsize": 15,
    "iterations": 3,
    "poly_n": 5,
    "poly_sigma": 1.2,
    "flags": 0,
}

#: DIS (Kroeger et al. 2016) presets by name; default ``"medium"``.
DIS_PRESETS: dict[str, int] = {
    "ultrafast": cv2.DISOpticalFlow_PRESET_ULTRAFAST,
    "fast": cv2.DISOpticalFlow_PRESET_FAST,
    "medium": cv2.DISOpticalFlow_PRESET_MEDIUM,
}
# Optional DIS fine-tuning parameters (applied with the matching setter after the preset).
_DIS_SETTERS = {
    "finest_scale": "setFinestScale",
    "patch_size": "setPatchSize",
    "patch_stride": "setPatchStride",
    "gradient_descent_iterations": "setGradientDescentIterations",
    "variational_refinement_iterations": "setVariationalRefinementIterations",
    "variational_refinement_alpha": "setVariationalRefinementAlpha",
    "variational_refinement_delta": "setVariationalRefinementDelta",
    "variational_refinement_gamma": "setVariationalRefinementGamma",
    "use_mean_normalization": "setUseMeanNormalization",
    "use_spatial_propagation": "setUseSpatialPropagation",
}


def _check_method(method: str) -> str:
    if method not in FLOW_METHODS:
        raise ValueError(f"unknown flow method {method!r}; valid methods are {', '.join(FLOW_METHODS)}")
    if method == "gt":
        raise ValueError(
            "flow method 'gt' is not an estimator: ground-truth flow is read from '<video stem>.flow.npz' "
            "with load_gt_flow(video_path); estimators are " + ", ".join(ESTIMATOR_METHODS)
        )
    return method


def _check_params(method: str, params: dict[str, Any], allowed: Sequence[str]) -> None:
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)} for flow method {method!r}; "
            f"valid parameters are {', '.join(allowed)}"
        )


def to_gray(frame: np.ndarray) -> np.ndarray:
    """An RGB ``(H, W, 3)`` uint8 frame (or an already grey ``(H, W)`` / ``(H, W, 1)`` one) as ``(H, W)`` uint8."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        raise ValueError(f"flow estimators take uint8 frames, got dtype {frame.dtype}")
    if frame.ndim == 3 and frame.shape[2] == 3:
        return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
    if frame.ndim == 3 and frame.shape[2] == 1:
        return np.ascontiguousarray(frame[..., 0])
    if frame.ndim == 2:
        return np.ascontiguousarray(frame)
    raise ValueError(f"expected an (H, W, 3) RGB or (H, W) grey frame, got shape {frame.shape}")


class FlowEstimator:
    """A reusable dense flow estimator (the OpenCV object is created once and reused across pairs).

    ``FlowEstimator("tvl1", warps=5)(prev, nxt)`` returns the ``(H, W, 2)`` float32 forward flow from ``prev`` to
    ``nxt`` (``prev(p) ≈ nxt(p + flow(p))``). Frames are ``(H, W, 3)`` uint8 RGB (converted to grey inside) or
    ``(H, W)`` uint8 grey.

    Methods and parameters (defaults in :data:`TVL1_DEFAULTS`, :data:`FARNEBACK_DEFAULTS`):

    * ``"tvl1"``: ``tau, lambda_, theta, nscales, warps, epsilon, inner_iterations, outer_iterations, scale_step,
      gamma, median_filtering`` (``cv2.optflow.DualTVL1OpticalFlow_create``).
    * ``"tvl1-torch"``: the same parameters, and ``device`` (``"cpu"``, ``"cuda"``, ...), ``batch`` (frame pairs
      per solver call in :meth:`video`, default 64) and ``compile`` (default: on CUDA) — TV-L1 as OpenCV computes
      it, in PyTorch, on whole batches (:func:`twostream_lib.tvl1.tvl1_flow`).
    * ``"farneback"``: ``pyr_scale, levels, winsize, iterations, poly_n, poly_sigma, flags``
      (``cv2.calcOpticalFlowFarneback``).
    * ``"dis"``: ``preset`` (``"ultrafast" | "fast" | "medium"``, default ``"medium"``, or the OpenCV constant) and
      optionally ``finest_scale, patch_size, patch_stride, gradient_descent_iterations,
      variational_refinement_iterations, variational_refinement_alpha/delta/gamma, use_mean_normalization,
      use_spatial_propagation`` (``cv2.DISOpticalFlow_create``).

    One instance is not thread-safe; use one per worker process/thread.
    """

    def __init__(self, method: str = "tvl1", **params: Any) -> None:
        self.method = _check_method(method)
        if method == "tvl1-torch":
            self._run = {k: params.pop(k) for k in ("device", "batch", "compile") if k in params}
            _check_params(method, params, list(TVL1_DEFAULTS))
            p = {**TVL1_DEFAULTS, **params}
            self._impl = None
        elif method == "tvl1":
            _check_params(method, params, list(TVL1_DEFAULTS))
            p = {**TVL1_DEFAULTS, **params}
            self._impl = cv2.optflow.DualTVL1OpticalFlow_create(
                tau=float(p["tau"]),
                lambda_=float(p["lambda_"]),
                theta=float(p["theta"]),
                nscales=int(p["nscales"]),
                warps=int(p["warps"]),
                epsilon=float(p["epsilon"]),
                innnerIterations=int(p["inner_iterations"]),  # sic: OpenCV's spelling
                outerIterations=int(p["outer_iterations"]),
                scaleStep=float(p["scale_step"]),
                gamma=float(p["gamma"]),
                medianFiltering=int(p["median_filtering"]),
            )
        elif method == "farneback":
            _check_params(method, params, list(FARNEBACK_DEFAULTS))
            p = {**FARNEBACK_DEFAULTS, **params}
            self._impl = None
        else:  # dis
            _check_params(method, params, ["preset", *_DIS_SETTERS])
            preset = params.get("preset", "medium")
            if isinstance(preset, str):
                if preset.lower() not in DIS_PRESETS:
                    raise ValueError(f"unknown DIS preset {preset!r}; valid presets are {', '.join(DIS_PRESETS)}")
                preset_id = DIS_PRESETS[preset.lower()]
            else:
                preset_id = int(preset)
            self._impl = cv2.DISOpticalFlow_create(preset_id)
            for name, setter in _DIS_SETTERS.items():
                if name in params:
                    getattr(self._impl, setter)(params[name])
            p = {"preset": preset, **{k: v for k, v in params.items() if k != "preset"}}
        #: The effective parameters (defaults merged with the overrides).
        self.params: dict[str, Any] = p

    def __repr__(self) -> str:
        return f"FlowEstimator({self.method!r}, {', '.join(f'{k}={v!r}' for k, v in self.params.items())})"

    def _torch_pairs(self, prev_g: np.ndarray, nxt_g: np.ndarray) -> np.ndarray:
        """``tvl1-torch`` on grey pairs ``(N, H, W)`` uint8, ``batch`` pairs per solver call -> ``(N, H, W, 2)``."""
        device, batch = self._run.get("device", "cpu"), int(self._run.get("batch", 64))
        out = [tvl1_flow(torch.from_numpy(prev_g[a:a + batch]).to(device), torch.from_numpy(nxt_g[a:a + batch]).to(device),
                         compile=self._run.get("compile"), **self.params).cpu().numpy()
               for a in range(0, len(prev_g), batch)]
        return np.concatenate(out)

    def _gray_pair(self, prev_g: np.ndarray, nxt_g: np.ndarray) -> np.ndarray:
        if prev_g.shape != nxt_g.shape:
            raise ValueError(f"frames differ in size: {prev_g.shape} vs {nxt_g.shape}")
        if self.method == "tvl1-torch":
            return self._torch_pairs(prev_g[None], nxt_g[None])[0]
        if self.method == "farneback":
            p = self.params
            flow = cv2.calcOpticalFlowFarneback(
                prev_g, nxt_g, None, float(p["pyr_scale"]), int(p["levels"]), int(p["winsize"]),
                int(p["iterations"]), int(p["poly_n"]), float(p["poly_sigma"]), int(p["flags"]),
            )
        else:
            flow = self._impl.calc(prev_g, nxt_g, None)
        return np.asarray(flow, dtype=np.float32)

    def __call__(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """Forward flow ``(H, W, 2)`` float32 from frame ``prev`` to frame ``nxt``."""
        return self._gray_pair(to_gray(prev), to_gray(nxt))

    def pairs(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """Flow of many frame pairs of one size: ``prev``, ``nxt`` ``(N, H, W)`` grey uint8 -> ``(N, H, W, 2)``
        float32 (``tvl1-torch``: ``batch`` pairs per solver call; the others: one pair at a time)."""
        if self.method == "tvl1-torch":
            return self._torch_pairs(np.asarray(prev), np.asarray(nxt))
        return np.stack([self._gray_pair(a, b) for a, b in zip(prev, nxt)])

    def video(self, frames: np.ndarray | Sequence[np.ndarray], backward: bool = False) -> np.ndarray:
        """Flow for all consecutive pairs of a ``(T, H, W, 3)`` uint8 video: ``(T-1, H, W, 2)`` float32.

        ``backward=False``: field ``i`` goes from frame ``i`` to ``i+1`` (forward flow).
        ``backward=True``: field ``i`` goes from frame ``i+1`` to ``i`` (the "opposite direction" flow of §3.1's
        bi-directional input; see :func:`temporal_stack`). Each frame is converted to grey once.
        """
        grays = [to_gray(f) for f in frames]
        if len(grays) < 2:
            raise ValueError(f"need at least 2 frames to compute flow, got {len(grays)}")
        if self.method == "tvl1-torch":  # every pair of the video in a few batched solver calls
            g = np.stack(grays)
            return self.pairs(g[1:], g[:-1]) if backward else self.pairs(g[:-1], g[1:])
        h, w = grays[0].shape
        out = np.empty((len(grays) - 1, h, w, 2), np.float32)
        for i in range(len(grays) - 1):
            a, b = (grays[i + 1], grays[i]) if backward else (grays[i], grays[i + 1])
            out[i] = self._gray_pair(a, b)
        return out


def estimate_flow(prev: np.ndarray, nxt: np.ndarray, method: str = "tvl1", **params: Any) -> np.ndarray:
    """Forward flow ``(H, W, 2)`` float32 from RGB uint8 frame ``prev`` to ``nxt`` with ``method``.

    Convenience wrapper that builds a :class:`FlowEstimator` each call; for many pairs build one estimator and
    reuse it (``FlowEstimator(method, **params).video(frames)``).
    """
    return FlowEstimator(method, **params)(prev, nxt)


# ----------------------------------------------------------------------------------------------------------------
# Ground truth (lab datasets)
# ----------------------------------------------------------------------------------------------------------------


class FlowFileError(UserError, ValueError):
    """A ground-truth flow file is missing, unreadable or has the wrong shape. The message names the file."""


def gt_flow_path(video_path: str | os.PathLike) -> Path:
    """``<dir>/<stem>.flow.npz`` for ``<dir>/<stem>.avi`` (a path already ending in ``.flow.npz`` is kept)."""
    p = Path(video_path)
    if p.name.endswith(".flow.npz"):
        return p
    return p.with_name(p.stem + ".flow.npz")


def load_gt_flow(
    video_path: str | os.PathLike,
    num_frames: int | None = None,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Ground-truth forward flow of a lab video, ``(T-1, H, W, 2)`` float32 in pixels (x then y).

    Reads array ``flow`` from ``<stem>.flow.npz`` beside the video. ``num_frames`` (T) and ``size`` ((H, W)), when
    given, are checked too. Raises :class:`FlowFileError` (a ``ValueError``) naming the file when it is missing,
    corrupt, lacks the ``flow`` array, or has the wrong shape / non-finite values.
    """
    path = gt_flow_path(video_path)
    if not path.exists():
        raise FlowFileError(f"{path}: no ground-truth flow file (expected beside video {Path(video_path).name})")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "flow" not in z.files:
                raise FlowFileError(f"{path}: no array 'flow' in file (has {', '.join(z.files) or 'nothing'})")
            flow = z["flow"]
    except FlowFileError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise FlowFileError(f"{path}: cannot read ground-truth flow ({type(e).__name__}: {e})") from e
    if flow.ndim != 4 or flow.shape[-1] != 2 or flow.shape[0] < 1:
        raise FlowFileError(f"{path}: flow has shape {flow.shape}, expected (T-1, H, W, 2) with T >= 2")
    if not np.issubdtype(flow.dtype, np.floating):
        raise FlowFileError(f"{path}: flow has dtype {flow.dtype}, expected a float type")
    if num_frames is not None and flow.shape[0] != num_frames - 1:
        raise FlowFileError(f"{path}: flow has {flow.shape[0]} fields, expected {num_frames - 1} for {num_frames} frames")
    if size is not None and tuple(flow.shape[1:3]) != tuple(size):
        raise FlowFileError(f"{path}: flow fields are {flow.shape[1:3]}, expected {tuple(size)} (H, W)")
    flow = flow.astype(np.float32)
    if not np.isfinite(flow).all():
        raise FlowFileError(f"{path}: flow contains non-finite values")
    return flow


# ----------------------------------------------------------------------------------------------------------------
# Quantisation (uint8 storage)
# ----------------------------------------------------------------------------------------------------------------


def quantize_flow(flow: np.ndarray, bound: float = DEFAULT_BOUND) -> np.ndarray:
    """Linear uint8 quantisation of flow values (any shape): ``q = round((v + b) * 255 / (2b))``, clipped to 0..255.

    ``-b → 0``, ``+b → 255``, ``0 → 127.5`` rounded half-to-even to 128. Values outside ``[-b, b]`` clip to the
    ends (count them with :func:`clip_fraction`). Inverse: :func:`dequantize_flow`; the round trip error inside
    the bound is at most half a step, ``b / 255`` px (0.078 px for ``b = 20``). NaN maps to 128 (zero flow).
    """
    if bound <= 0:
        raise ValueError(f"bound must be > 0, got {bound}")
    v = np.asarray(flow, dtype=np.float32)
    q = np.rint((v + np.float32(bound)) * np.float32(255.0 / (2.0 * bound)))
    q = np.nan_to_num(q, nan=128.0)
    return np.clip(q, 0, 255).astype(np.uint8)


def dequantize_flow(q: np.ndarray, bound: float = DEFAULT_BOUND) -> np.ndarray:
    """Inverse of :func:`quantize_flow`: ``v = q * 2b / 255 - b`` as float32 (same shape as ``q``)."""
    if bound <= 0:
        raise ValueError(f"bound must be > 0, got {bound}")
    v = np.asarray(q).astype(np.float32)  # a new array: scaled in place (half the passes of an expression)
    v *= np.float32(2.0 * bound / 255.0)
    v -= np.float32(bound)
    return v


def clip_fraction(flow: np.ndarray, bound: float = DEFAULT_BOUND) -> float:
    """Fraction of flow components (x and y counted separately) with ``|v| > bound`` (those clipped on storage)."""
    v = np.asarray(flow)
    if v.size == 0:
        return 0.0
    return float(np.count_nonzero(np.abs(v) > bound) / v.size)


# ----------------------------------------------------------------------------------------------------------------
# Middlebury colour coding (Baker et al., "A Database and Evaluation Methodology for Optical Flow", 2007/2011)
# ----------------------------------------------------------------------------------------------------------------

# Segment lengths of the colour wheel: red→yellow, yellow→green, green→cyan, cyan→blue, blue→magenta, magenta→red.
_WHEEL_SEGMENTS = (("RY", 15), ("YG", 6), ("GC", 4), ("CB", 11), ("BM", 13), ("MR", 6))


def make_colorwheel() -> np.ndarray:
    """The Middlebury colour wheel, ``(55, 3)`` float32 RGB in 0..255 (hues from red round to red again).

    Each segment ramps one channel linearly while the other two stay fixed: RY ramps G up (R=255),
    YG ramps R down (G=255), GC ramps B up (G=255), CB ramps G down (B=255), BM ramps R up (B=255),
    MR ramps B down (R=255).
    """
    # (channel that ramps, direction, channel held at 255) for each segment, in order.
    ramps = ((1, +1, 0), (0, -1, 1), (2, +1, 1), (1, -1, 2), (0, +1, 2), (2, -1, 0))
    rows = []
    for (_, n), (ch, direction, full) in zip(_WHEEL_SEGMENTS, ramps):
        seg = np.zeros((n, 3), np.float32)
        t = np.arange(n, dtype=np.float32) / n
        seg[:, full] = 255.0
        seg[:, ch] = 255.0 * t if direction > 0 else 255.0 * (1.0 - t)
        rows.append(seg)
    return np.concatenate(rows, axis=0)


_COLORWHEEL = make_colorwheel()


def flow_to_color(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """Middlebury colour coding of a ``(H, W, 2)`` flow field: ``(H, W, 3)`` uint8 RGB.

    Hue encodes direction, saturation the magnitude relative to ``max_magnitude`` (default: the field's largest
    finite magnitude): zero flow is white; rightward (+x) flow is red, downward (+y, image rows) orange-yellow,
    leftward cyan-blue, upward blue-violet. Magnitudes beyond ``max_magnitude`` are shown darkened (×0.75).
    Non-finite or huge (>1e9, Middlebury's "unknown") vectors are black.
    """
    flow = np.asarray(flow, dtype=np.float32)
    if flow.ndim != 3 or flow.shape[-1] != 2:
        raise ValueError(f"expected an (H, W, 2) flow field, got shape {flow.shape}")
    u, v = flow[..., 0].copy(), flow[..., 1].copy()
    unknown = ~np.isfinite(u) | ~np.isfinite(v) | (np.abs(u) > 1e9) | (np.abs(v) > 1e9)
    u[unknown] = 0.0
    v[unknown] = 0.0
    mag = np.sqrt(u * u + v * v)
    if max_magnitude is None:
        max_magnitude = float(mag.max()) if mag.size else 0.0
    scale = 1.0 / max(float(max_magnitude), 1e-8)
    u, v, rad = u * scale, v * scale, mag * scale

    wheel = _COLORWHEEL
    ncols = wheel.shape[0]
    angle = np.arctan2(-v, -u) / np.pi  # in [-1, 1]; +x gives 1 (end of the wheel, red)
    fk = (angle + 1.0) / 2.0 * (ncols - 1)
    k0 = np.floor(fk).astype(np.int64)
    k1 = k0 + 1
    k1[k1 == ncols] = 0
    f = (fk - k0)[..., None]
    col = ((1.0 - f) * wheel[k0] + f * wheel[k1]) / 255.0  # (H, W, 3) in [0, 1]
    inside = (rad <= 1.0)[..., None]
    col = np.where(inside, 1.0 - rad[..., None] * (1.0 - col), col * 0.75)
    col[unknown] = 0.0
    return np.clip(np.floor(255.0 * col), 0, 255).astype(np.uint8)


def color_wheel(size: int = 128) -> np.ndarray:
    """A ``(size, size, 3)`` uint8 legend for :func:`flow_to_color`: pixel ``(row, col)`` shows the colour of the
    flow vector pointing from the centre to it (right = +x, down = +y), magnitude 1 at the rim; white outside."""
    if size < 2:
        raise ValueError(f"size must be >= 2, got {size}")
    c = (size - 1) / 2.0
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    flow = np.stack([(xs - c) / c, (ys - c) / c], axis=-1)
    img = flow_to_color(flow, max_magnitude=1.0)
    outside = np.hypot(flow[..., 0], flow[..., 1]) > 1.0
    img[outside] = 255
    return img


# ----------------------------------------------------------------------------------------------------------------
# Scoring and resizing
# ----------------------------------------------------------------------------------------------------------------


def endpoint_error(flow: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean endpoint error ``mean ||flow - gt||_2`` in pixels over ``(..., 2)`` fields (optionally where ``mask``,
    a boolean array of shape ``flow.shape[:-1]``, is True)."""
    flow = np.asarray(flow, dtype=np.float32)
    gt = np.asarray(gt, dtype=np.float32)
    if flow.shape != gt.shape or flow.shape[-1:] != (2,):
        raise ValueError(f"flow {flow.shape} and ground truth {gt.shape} must have the same (..., 2) shape")
    err = np.sqrt(((flow - gt) ** 2).sum(axis=-1))
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != err.shape:
            raise ValueError(f"mask has shape {mask.shape}, expected {err.shape}")
        if not mask.any():
            raise ValueError("mask selects no pixels")
        err = err[mask]
    return float(err.mean())


def resize_flow(flow: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``(H, W, 2)`` or ``(N, H, W, 2)`` flow to ``size = (h, w)`` (bilinear) and rescale the values with
    the size: x by ``w / W`` and y by ``h / H`` (a displacement of 1 px at 320 wide is 0.4 px at 128 wide)."""
    flow = np.asarray(flow, dtype=np.float32)
    if flow.ndim not in (3, 4) or flow.shape[-1] != 2:
        raise ValueError(f"expected (H, W, 2) or (N, H, W, 2) flow, got shape {flow.shape}")
    h, w = int(size[0]), int(size[1])
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive (h, w), got {size}")
    H, W = flow.shape[-3:-1]
    fields = flow[None] if flow.ndim == 3 else flow
    out = np.empty((fields.shape[0], h, w, 2), np.float32)
    sx, sy = w / W, h / H
    for i, f in enumerate(fields):
        r = cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR) if (h, w) != (H, W) else f.copy()
        r[..., 0] *= sx
        r[..., 1] *= sy
        out[i] = r
    return out[0] if flow.ndim == 3 else out


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return xs, ys


def _sample(field: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Bilinear sample of a ``(H, W, 2)`` field at float positions (border replicate).

    ``cv2.remap`` quantises positions to 1/32 px (fixed-point interpolation tables), so a sample of a field with
    gradient ``g`` is within ``~g/64`` of exact bilinear interpolation: negligible next to flow estimation errors.
    """
    return cv2.remap(field, xs, ys, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Brightness constancy made visible: ``image`` (frame ``t+1``) sampled at ``p + flow(p)`` -> an estimate of
    frame ``t`` (``frame_t(p) ≈ frame_{t+1}(p + flow_t(p))``). Bilinear, border replicated; ``image`` is
    ``(H, W)`` or ``(H, W, C)`` of any dtype, returned as float32; ``flow`` is ``(H, W, 2)`` px."""
    h, w = flow.shape[:2]
    xs, ys = _grid(h, w)
    return cv2.remap(np.asarray(image, np.float32), xs + flow[..., 0], ys + flow[..., 1],
                     interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def backward_from_forward(flows: np.ndarray, iterations: int = 5) -> np.ndarray:
    """Approximate backward flow (field ``i`` from frame ``i+1`` to ``i``) from forward flow ``(N, H, W, 2)``.

    Solves ``b(q) = -d(q + b(q))`` by fixed-point iteration (exact for translations, good for smooth flow;
    occlusions are not handled). Useful for the lab ground truth, which stores forward flow only; estimated
    backward flow is better computed directly with ``FlowEstimator.video(frames, backward=True)``.
    """
    flows = np.asarray(flows, dtype=np.float32)
    if flows.ndim != 4 or flows.shape[-1] != 2:
        raise ValueError(f"expected (N, H, W, 2) flow, got shape {flows.shape}")
    xs, ys = _grid(*flows.shape[1:3])
    out = np.empty_like(flows)
    for i, d in enumerate(flows):
        b = -d
        for _ in range(iterations):
            b = -_sample(d, xs + b[..., 0], ys + b[..., 1])
        out[i] = b
    return out


# ----------------------------------------------------------------------------------------------------------------
# Temporal-stream input (§3.1) and mean displacement subtraction (§3.3)
# ----------------------------------------------------------------------------------------------------------------

STACK_MODES: tuple[str, ...] = ("stacking", "trajectory")


def _check_L(L: int, bidirectional: bool) -> None:
    if int(L) != L or L < 1:
        raise ValueError(f"L must be a positive integer, got {L}")
    if bidirectional and L % 2:
        raise ValueError(f"bi-directional stacking needs an even L (L/2 forward + L/2 backward fields), got L={L}")


def valid_starts(num_fields: int, L: int, bidirectional: bool = False) -> range:
    """Start frames ``τ`` for which a stack of ``L`` fields exists in a video with ``num_fields`` (= T-1) fields.

    Uni-directional: fields ``τ .. τ+L-1`` → ``range(0, num_fields - L + 1)``.
    Bi-directional: forward fields ``τ .. τ+L/2-1`` and backward fields ``τ-1 .. τ-L/2`` →
    ``range(L/2, num_fields - L/2 + 1)``. Empty when the video is too short (``num_fields < L``).
    """
    _check_L(L, bidirectional)
    if bidirectional:
        half = L // 2
        return range(half, max(half, num_fields - half + 1))
    return range(0, max(0, num_fields - L + 1))


def clamp_start(t: int, num_fields: int, L: int, bidirectional: bool = False) -> int:
    """Clamp a start frame ``t`` into :func:`valid_starts` (nearest valid start).

    Used by samplers that pick ``t`` uniformly or at 25 equally spaced positions over the whole video (§6) and
    must keep the stack inside the video. Raises ``ValueError`` when the video has too few fields for any stack
    (``num_fields < L``); callers decide whether to skip such a video or use a smaller ``L``.
    """
    r = valid_starts(num_fields, L, bidirectional)
    if len(r) == 0:
        raise ValueError(
            f"video has {num_fields} flow fields (T={num_fields + 1} frames), fewer than the L={L} a "
            f"{'bi-directional ' if bidirectional else ''}stack needs"
        )
    return int(min(max(int(t), r.start), r.stop - 1))


def stack_indices(t: int, num_fields: int, L: int, bidirectional: bool = False) -> tuple[list[int], list[int]]:
    """Which fields the stack at start ``t`` reads: ``(forward_indices, backward_indices)`` in channel order.

    Uni-directional: ``([t, …, t+L-1], [])``. Bi-directional: ``([t, …, t+L/2-1], [t-1, t-2, …, t-L/2])`` — the
    backward list indexes the backward flows (field ``i``: frame ``i+1`` → ``i``), so it walks back in time from
    frame ``t``. Raises ``ValueError`` (with the valid range) when ``t`` is out of range.
    """
    r = valid_starts(num_fields, L, bidirectional)
    if t not in r:
        what = "bi-directional " if bidirectional else ""
        if len(r) == 0:
            raise ValueError(
                f"start t={t} invalid: video has {num_fields} flow fields, fewer than the L={L} a {what}stack needs"
            )
        raise ValueError(
            f"start t={t} out of range for a {what}stack of L={L} over {num_fields} flow fields; "
            f"valid starts are {r.start}..{r.stop - 1}"
        )
    if bidirectional:
        half = L // 2
        return list(range(t, t + half)), list(range(t - 1, t - half - 1, -1))
    return list(range(t, t + L)), []


def _as_field(x: Any, name: str, i: int, shape: tuple[int, ...] | None) -> np.ndarray:
    f = np.asarray(x)
    if f.dtype.kind in "iub":
        raise ValueError(
            f"{name}[{i}] has integer dtype {f.dtype}: temporal_stack takes flow in pixels; "
            "dequantize uint8 flow first with dequantize_flow(q, bound)"
        )
    if f.ndim != 3 or f.shape[-1] != 2:
        raise ValueError(f"{name}[{i}] has shape {f.shape}, expected (H, W, 2)")
    if shape is not None and f.shape != shape:
        raise ValueError(f"{name}[{i}] has shape {f.shape}, but other fields are {shape}")
    return np.ascontiguousarray(f, dtype=np.float32)


def _stack_fields(fields: list[np.ndarray], mode: str) -> list[np.ndarray]:
    """Per stacked field, the ``(H, W, 2)`` displacement read for each pixel (eq. 1 or eq. 2)."""
    if mode == "stacking":
        return fields  # eq. (1): the same pixel (u, v) in every field
    # eq. (2): follow the trajectory p_1 = (u, v), p_k = p_{k-1} + d_{k-1}(p_{k-1}) and read field k at p_k.
    h, w = fields[0].shape[:2]
    xs, ys = _grid(h, w)
    px, py = xs.copy(), ys.copy()
    out = []
    for k, f in enumerate(fields):
        s = f if k == 0 else _sample(f, px, py)  # p_1 = (u, v) exactly: no interpolation
        out.append(s)
        # Points that leave the frame stay on its border (bilinear sampling replicates the border anyway).
        px = np.clip(px + s[..., 0], 0, w - 1)
        py = np.clip(py + s[..., 1], 0, h - 1)
    return out


def temporal_stack(
    flows: np.ndarray | Sequence[np.ndarray],
    t: int,
    L: int = 10,
    mode: str = "stacking",
    bidirectional: bool = False,
    backward_flows: np.ndarray | Sequence[np.ndarray] | None = None,
    mean_subtraction: bool = True,
) -> np.ndarray:
    """The temporal ConvNet's input volume ``I_τ`` for start frame ``τ = t``: ``(2L, H, W)`` float32 (§3.1).

    Args:
        flows: forward flow of one video, ``(N, H, W, 2)`` float (pixels), field ``i`` from frame ``i`` to ``i+1``
            (``N = T-1``); only the fields the stack needs are read, so a list or memory map works.
        t: the first frame ``τ`` (0-based).
        L: number of stacked displacement fields (paper: 10); the stack has ``2L`` channels.
        mode: ``"stacking"`` — optical flow stacking, eq. (1): ``I(u,v,2k-1) = d^x_{τ+k-1}(u,v)``,
            ``I(u,v,2k) = d^y_{τ+k-1}(u,v)``, the same pixel in all fields;
            ``"trajectory"`` — trajectory stacking, eq. (2): field ``τ+k-1`` is read at ``p_k``, with
            ``p_1 = (u,v)`` and ``p_k = p_{k-1} + d_{τ+k-2}(p_{k-1})`` (bilinear sampling with ``cv2.remap``,
            1/32 px position precision, border replicate;
            trajectory points leaving the frame stay on its border). Do this on full-resolution fields, before
            cropping, so trajectories can leave the crop.
        bidirectional: §3.1 bi-directional flow. Channels ``0 .. L-1`` hold the ``L/2`` forward fields
            ``d_τ … d_{τ+L/2-1}`` (x,y interleaved), channels ``L .. 2L-1`` the ``L/2`` backward fields
            ``backward_flows[τ-1], backward_flows[τ-2], …, backward_flows[τ-L/2]`` (frame ``τ→τ-1``, ``τ-1→τ-2``,
            …), i.e. flow computed in the opposite direction over the ``L/2`` frames before ``τ``. Both halves
            start at frame ``τ``; in trajectory mode each half follows its own trajectory from ``p_1 = (u,v)``.
            ``L`` must be even and ``L/2 <= τ <= N - L/2``.
        backward_flows: ``(N, H, W, 2)`` backward flow (field ``i`` from frame ``i+1`` to ``i``), required when
            ``bidirectional`` (estimate it with ``FlowEstimator.video(frames, backward=True)`` or approximate it
            with :func:`backward_from_forward`).
        mean_subtraction: §3.3 mean displacement subtraction: from each of the ``L`` stacked fields subtract its
            own spatial mean vector (the x channel minus its mean over ``H, W``, the y channel likewise) —
            a global camera-motion compensation. Not a per-pixel mean over time.

    Returns:
        ``(2L, H, W)`` float32, channel ``2k`` = x and ``2k+1`` = y of the ``k``-th stacked field.

    Raises:
        ValueError: unknown ``mode``, odd ``L`` with ``bidirectional``, missing ``backward_flows``, integer
            (quantised) input, or ``t`` out of range (the message gives the valid starts).
    """
    if mode not in STACK_MODES:
        raise ValueError(f"unknown stacking mode {mode!r}; valid modes are {', '.join(STACK_MODES)}")
    _check_L(L, bidirectional)
    n = len(flows)
    if bidirectional:
        if backward_flows is None:
            raise ValueError(
                "bidirectional=True needs backward_flows (field i from frame i+1 to i): compute them with "
                "FlowEstimator.video(frames, backward=True) or backward_from_forward(flows)"
            )
        if len(backward_flows) != n:
            raise ValueError(f"backward_flows has {len(backward_flows)} fields, flows has {n}: they must match")
    fwd_idx, bwd_idx = stack_indices(int(t), n, L, bidirectional)

    shape = None
    fwd = []
    for i in fwd_idx:
        fwd.append(_as_field(flows[i], "flows", i, shape))
        shape = fwd[-1].shape
    groups = [fwd]
    if bidirectional:
        bwd = [_as_field(backward_flows[i], "backward_flows", i, shape) for i in bwd_idx]  # type: ignore[index]
        groups.append(bwd)

    fields: list[np.ndarray] = []
    for g in groups:
        fields.extend(_stack_fields(g, mode))
    out = _interleave(fields)
    if mean_subtraction:
        # §3.1: from each displacement field, its own mean vector. Trajectory stacking reads field k away from
        # (u, v), but what it subtracts is still field k's mean, not the mean of the resampled channel.
        ref = out if mode == "stacking" else _interleave([f for g in groups for f in g])
        out -= ref.mean(axis=(1, 2), keepdims=True, dtype=np.float64).astype(np.float32)
    return out


def _interleave(fields: Sequence[np.ndarray]) -> np.ndarray:
    """``L`` fields ``(H, W, 2)`` -> ``(2L, H, W)`` float32, channels x1, y1, x2, y2, ..."""
    h, w = fields[0].shape[:2]
    out = np.empty((2 * len(fields), h, w), np.float32)
    for k, f in enumerate(fields):
        out[2 * k] = f[..., 0]
        out[2 * k + 1] = f[..., 1]
    return out


def flip_stack(stack: Any) -> Any:
    """Horizontal flip of a flow stack ``(..., 2L, H, W)``: mirror the width axis AND negate every x channel
    (channels 0, 2, 4, …), because a mirrored rightward motion is a leftward one.

    Works on numpy arrays and on torch tensors (returns the same type; batched ``(B, 2L, H, W)`` too). A uint8
    numpy stack is taken as quantised flow (:func:`quantize_flow`), whose x channels flip as ``255 - q``.
    """
    if hasattr(stack, "detach") and hasattr(stack, "flip"):  # torch.Tensor, without importing torch here
        if stack.ndim < 3 or stack.shape[-3] % 2:
            raise ValueError(f"expected a (..., 2L, H, W) stack, got shape {tuple(stack.shape)}")
        out = stack.flip(-1).clone()
        out[..., 0::2, :, :] = -out[..., 0::2, :, :]
        return out
    a = np.asarray(stack)
    if a.ndim < 3 or a.shape[-3] % 2:
        raise ValueError(f"expected a (..., 2L, H, W) stack, got shape {a.shape}")
    out = a[..., ::-1].copy()
    if a.dtype == np.uint8:  # quantised (quantize_flow): -v is stored as 255 - q (the mapping is symmetric)
        out[..., 0::2, :, :] = 255 - out[..., 0::2, :, :]
    elif a.dtype.kind in "iuf":
        if a.dtype.kind == "u":
            raise ValueError(f"cannot negate x channels of an unsigned {a.dtype} stack (only uint8 = quantised)")
        out[..., 0::2, :, :] *= -1
    else:
        raise ValueError(f"unsupported stack dtype {a.dtype}")
    return out


def flip_flow(flow: np.ndarray) -> np.ndarray:
    """Horizontal flip of ``(..., H, W, 2)`` flow fields: mirror the width axis and negate x."""
    f = np.asarray(flow)
    if f.ndim < 3 or f.shape[-1] != 2:
        raise ValueError(f"expected (..., H, W, 2) flow, got shape {f.shape}")
    out = f[..., ::-1, :].copy()
    out[..., 0] *= -1
    return out
