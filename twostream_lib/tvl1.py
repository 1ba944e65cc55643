"""Batched TV-L1 optical flow in PyTorch, computed the way OpenCV's ``cv2.optflow.DualTVL1OpticalFlow`` does.

TV-L1 (Zach, Pock & Bischof 2007, "A Duality Based Approach for Realtime TV-L1 Optical Flow"; Wedel, Pock, Zach,
Bischof & Cremers 2009, "An Improved Algorithm for TV-L1 Optical Flow"; described step by step in Sánchez,
Meinhardt-Llopis & Facciolo, "TV-L1 Optical Flow Estimation", IPOL 2013) finds the flow ``u = (u1, u2)`` from
frame ``I0`` to frame ``I1`` that minimises the energy ::

    E(u) = ∫ |∇u1| + |∇u2| + λ |I1(x + u(x)) − I0(x)| dx

(total variation of each flow component + an L1 brightness-constancy data term). The solver

1. linearises the data term around the current flow ``u0`` ("warping"): the residual becomes
   ``ρ(u) = I1(x+u0) + ∇I1(x+u0)·(u − u0) − I0(x)``, affine in ``u``;
2. decouples the two terms with an auxiliary field ``v`` and a quadratic coupling
   ``∫ |∇u| + (1/2θ)|u − v|² + λ|ρ(v)|``, and alternates

   * the *thresholding step* (Zach et al., Prop. 2): ``v`` minimises ``(1/2θ)|u − v|² + λ|ρ(v)|`` pixel by
     pixel, in closed form;
   * the *total-variation step* (Zach et al., Prop. 1; Chambolle 2004): ``u = v + θ div p`` with the dual
     variable ``p`` (one 2-vector per flow component and pixel) updated by the projected fixed point
     ``p ← (p + τ/θ ∇u) / (1 + τ/θ |∇u|)``;

3. does this coarse to fine on an image pyramid, warping several times per level, with a median filter on the
   flow between outer iterations (Wedel et al.'s improvement) and stopping each warp when the update is small.

Everything runs on whole batches ``(N, H, W)`` on the input's device, in float32.

How this matches OpenCV (contrib ``modules/optflow/src/tvl1flow.cpp``, the CPU path), checked against the
installed OpenCV 5.0:

* **Input scaling, no pre-smoothing.** OpenCV converts uint8 frames to float *unchanged* (0..255) and float
  frames by ×255 (it takes float input to be in [0, 1]). We take uint8 or float **in [0, 255]**: to feed us what
  OpenCV gets from float [0, 1] frames, multiply them by 255. Neither smooths or normalises the images (the IPOL
  code smooths with a Gaussian before building the pyramid; OpenCV does not).
* **Pyramid.** Level ``s`` is ``cv2.resize(level[s-1], fx=scale_step, fy=scale_step, INTER_LINEAR)``: size
  ``round(scale_step·w) × round(scale_step·h)`` of the level above (not of the original), sampled at
  ``(d + 0.5)/scale_step − 0.5`` with the edge replicated, no anti-aliasing. The pyramid stops early (fewer than
  ``nscales`` levels) as soon as a level would be narrower or lower than 16 px. We write the separable linear
  resize as two small interpolation matrices (:func:`_resize_matrix`).
* **Flow up-sampling.** ``cv2.resize`` (INTER_LINEAR) of the coarse flow to the finer level's size (scale = size
  ratio), then u1, u2 multiplied by ``1/scale_step`` (as OpenCV does; not by the true size ratio, which differs
  slightly because sizes are rounded).
* **Image gradient** of ``I1``: centred differences ``(I(x+1) − I(x−1))/2``; on the borders OpenCV uses the
  halved one-sided difference ``(I(1) − I(0))/2``, which is exactly the centred difference on an image with a
  replicated border (so that is how we compute it).
* **Warping**: ``cv2.remap(…, INTER_CUBIC)`` of ``I1`` and of its two gradient images at ``x + u0``, default border
  ``BORDER_CONSTANT`` 0, i.e. Keys' cubic kernel (a = −0.75) on a 4×4 neighbourhood whose taps outside the image
  count as 0. OpenCV up to 4.10 quantised remap positions to 1/32 px (fixed-point tables); the installed 5.0
  samples bicubic remap at the exact float position (measured: max difference 4e-5 grey levels to an exact
  float64 Keys interpolation; 1/32-px quantisation would be off by up to ~4.6 on random images). We sample at
  the exact position.
* **Flow gradient / divergence**: forward differences with 0 in the last column / row; backward-difference
  divergence with ``p`` taken as 0 left of the first column / above the first row (the discrete adjoint).
* **Thresholding step**: OpenCV's three cases are computed as one clamp (see :func:`_tvl1_step`). They differ only
  where ``0 < |∇I1|² ≤ FLT_EPSILON`` (OpenCV then takes a zero step in the middle case), by less than
  ``λθ·|∇I1| < 2e-5`` px.
* **Median filter**: ``cv2.medianBlur(u, median_filtering)`` on each flow component (replicated border), at the
  start of every outer iteration of every warp; the illumination field ``u3`` (``gamma > 0``) is not filtered.
  Computed exactly, with a selection network of element-wise min/max (:func:`_median_network`). OpenCV only
  accepts sizes 3 and 5 for float images; we accept any odd size.
* **Loop order and stopping** (per warp): warp ``I1`` with the current flow and fix ``ρ``'s constant part; then up
  to ``outer_iterations`` × [median filter, then up to ``inner_iterations`` × (thresholding, u update, dual
  update)]; the warp ends as soon as ``Σ_pixels |u_new − u_old|² ≤ epsilon² · (pixels at this level)`` after a
  u update (the dual update of that iteration still happens). The dual ``p`` is reset to 0 once per level, not
  per warp. OpenCV sums the squared update serially in float32, we with torch's reduction.
* **Rounding**: float32 throughout, but not bit for bit: the order of floating-point operations (SIMD, FMA,
  ``hypot``, the summation above) differs. On one level with one warp and no early stopping the flows agree to
  < 1e-6 px. Each further warp re-linearises around a slightly different flow and amplifies the difference
  (~1e-5 → 1e-3 px over a 5-level, 3-warp pyramid), and where a warp's stopping test falls on the other side of
  ``epsilon`` the warp runs one iteration more or less. Measured on lab clips with ``TVL1_DEFAULTS``: mean
  endpoint difference to OpenCV ~0.01 px (per pair 0.0001-0.05 px), > 99.5 % of the uint8-quantised values
  (``flow.quantize_flow``) equal to OpenCV's within ±1, endpoint error against ground truth within ±4 % of
  OpenCV's.

Batches and convergence: every sample keeps its own stopping state as a boolean mask on the device; a sample that
has converged in the current warp stops changing (its updates are masked out) while the others continue, so a
batch gives the same flow as one pair at a time. The host asks the device how many samples are still active only
every ``check_every`` iterations (one synchronisation each time; default 1 on CPU, where it costs nothing, and 5
on CUDA): the warp ends when none is, and when at most 3/4 of the samples being iterated on are still active
the converged ones are dropped from the arrays (a batch's cost follows its mean, not its slowest, sample).
``check_every=0`` never synchronises: every warp then runs ``outer_iterations × inner_iterations`` iterations
on the whole batch (same flow, more work).

Speed: the iteration is ~30 element-wise tensor operations; ``torch.compile`` (``compile=True``; default on CUDA)
fuses them. On CPU (2 cores, shared) the compiled solver ran 1.3x (96x128) to 1.5x (240x320) faster than eager
for batches of 16, after 1.5-2 minutes of compiling per process, so it is off by default there. On a
CPU shared with other jobs, torch's OpenMP threads busy-wait for each other at every operation: with 2 threads on
an oversubscribed 2-core machine a batch took 10x the time (and 12x the CPU time) of 1 thread; set
``OMP_WAIT_POLICY=PASSIVE`` in the environment (before starting Python) or use ``torch.set_num_threads(1)``.
"""
from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["TVL1_DEFAULTS", "tvl1_flow", "tvl1_solve", "TVL1Result", "pyramid_sizes", "check_tvl1_params"]

#: TV-L1 (Zach et al. 2007, Wedel et al. 2009; ``cv2.optflow.DualTVL1OpticalFlow``) defaults used here: OpenCV's
#: model parameters with a cheaper solver (3 warps, 20 inner iterations, epsilon 0.02; see BENCHMARKS.md).
#: Shared by OpenCV's TV-L1 (``FlowEstimator("tvl1")``) and this one (``"tvl1-torch"``): the same names, the same flow.
TVL1_DEFAULTS: dict[str, Any] = {
    "tau": 0.25,  # time step of the numerical scheme
    "lambda_": 0.15,  # weight of the data term (smaller = smoother flow)
    "theta": 0.3,  # coupling between the two TV-L1 sub-problems
    "nscales": 5,  # pyramid levels
    "warps": 3,  # warpings per level (OpenCV: 5)
    "epsilon": 0.02,  # stopping tolerance of the inner loop (OpenCV: 0.01)
    "inner_iterations": 20,  # inner iterations per warp (OpenCV's "innnerIterations", default 30)
    "outer_iterations": 10,  # outer iterations per warp
    "scale_step": 0.8,  # pyramid downscale factor between levels
    "gamma": 0.0,  # illumination-variation term weight (0 = plain TV-L1)
    "median_filtering": 5,  # median filter size applied to the flow between warps
}



# OpenCV stops building the pyramid when a level would have fewer than this many rows or columns.
_MIN_LEVEL_SIZE = 16
# Keys' cubic convolution parameter used by OpenCV's INTER_CUBIC.
_CUBIC_A = -0.75
# |∇I1|² below this is "no gradient" in the thresholding step (OpenCV: std::numeric_limits<float>::epsilon()).
_FLT_EPSILON = float(np.finfo(np.float32).eps)


@dataclass
class TVL1Result:
    """What :func:`tvl1_solve` returns.

    Attributes:
        flow: ``(N, H, W, 2)`` float32 forward flow in pixels (x then y), on the input's device.
        iterations: ``(N, levels, warps)`` int32, on the device: the iterations each sample actually ran in each
            warp of each pyramid level (coarsest level first) — what OpenCV would run for that pair.
        steps: ``levels × warps`` nested list of ints: the iterations the batch loop ran per warp (≥ the largest
            ``iterations`` of the batch; more by up to ``check_every − 1`` because the loop checks for
            convergence only every ``check_every`` iterations).
        sizes: the pyramid's ``(h, w)`` per level, finest first.
    """

    flow: torch.Tensor
    iterations: torch.Tensor
    steps: list[list[int]]
    sizes: list[tuple[int, int]]


# ----------------------------------------------------------------------------------------------------------------
# Parameters and inputs
# ----------------------------------------------------------------------------------------------------------------


def check_tvl1_params(params: dict[str, Any]) -> dict[str, Any]:
    """Merge ``params`` into :data:`TVL1_DEFAULTS` and check them.

    Raises ``ValueError`` naming unknown parameters (and listing the valid ones) or an invalid value.
    """
    unknown = sorted(set(params) - set(TVL1_DEFAULTS))
    if unknown:
        raise ValueError(
            f"unknown TV-L1 parameter(s) {', '.join(unknown)}; valid parameters are {', '.join(TVL1_DEFAULTS)}"
        )
    p = {**TVL1_DEFAULTS, **params}
    out: dict[str, Any] = {}
    for name in ("tau", "lambda_", "theta", "epsilon", "scale_step", "gamma"):
        v = p[name]
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v):
            raise ValueError(f"TV-L1 parameter {name} must be a finite number, got {v!r}")
        out[name] = float(v)
    for name in ("nscales", "warps", "inner_iterations", "outer_iterations", "median_filtering"):
        v = p[name]
        integral = isinstance(v, (int, np.integer)) or (isinstance(v, float) and v.is_integer())
        if isinstance(v, bool) or not integral:
            raise ValueError(f"TV-L1 parameter {name} must be an integer, got {v!r}")
        out[name] = int(v)
    for name in ("tau", "lambda_", "theta"):
        if out[name] <= 0:
            raise ValueError(f"TV-L1 parameter {name} must be > 0, got {out[name]}")
    if out["epsilon"] < 0:
        raise ValueError(f"TV-L1 parameter epsilon must be >= 0, got {out['epsilon']}")
    if out["gamma"] < 0:
        raise ValueError(f"TV-L1 parameter gamma must be >= 0, got {out['gamma']}")
    if not 0 < out["scale_step"] < 1:
        raise ValueError(f"TV-L1 parameter scale_step must be in (0, 1), got {out['scale_step']}")
    for name in ("nscales", "warps", "inner_iterations", "outer_iterations"):
        if out[name] < 1:
            raise ValueError(f"TV-L1 parameter {name} must be >= 1, got {out[name]}")
    m = out["median_filtering"]
    if m > 1 and m % 2 == 0:
        raise ValueError(f"TV-L1 parameter median_filtering must be odd (or <= 1: off), got {m}")
    return out


def _as_frames(x: Any, name: str) -> torch.Tensor:
    """A batch of grey frames as a tensor (numpy arrays are taken to the CPU); shape and dtype are checked."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor or numpy array of shape (N, H, W), got {type(x).__name__}")
    if x.ndim != 3:
        hint = " (one pair: add a batch axis, e.g. prev[None])" if x.ndim == 2 else ""
        hint = " (colour frames: convert to grey first)" if x.ndim == 4 else hint
        raise ValueError(f"{name} must have shape (N, H, W) (a batch of grey frames), got {tuple(x.shape)}{hint}")
    if x.dtype != torch.uint8 and not x.dtype.is_floating_point:
        raise ValueError(f"{name} must be uint8 or a float dtype with values in [0, 255], got {x.dtype}")
    n, h, w = x.shape
    if n < 1 or h < 3 or w < 3:
        raise ValueError(f"{name} has shape {tuple(x.shape)}: need N >= 1 and H, W >= 3")
    return x


def _check_pair(prev: Any, nxt: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Validated ``(N, H, W)`` float32 frames on ``prev``'s device, values in [0, 255]."""
    a, b = _as_frames(prev, "prev"), _as_frames(nxt, "nxt")
    if a.shape != b.shape:
        raise ValueError(f"prev and nxt differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.device != b.device:
        raise ValueError(f"prev and nxt are on different devices: {a.device} vs {b.device}")
    if a.dtype != b.dtype:
        raise ValueError(f"prev and nxt differ in dtype: {a.dtype} vs {b.dtype}")
    if a.dtype.is_floating_point:
        # One host synchronisation, before any iteration: reject frames OpenCV would read differently.
        both = torch.stack([a, b]).float()
        lo, hi, finite = both.amin(), both.amax(), torch.isfinite(both).all()
        if not bool(finite):
            raise ValueError("prev/nxt contain non-finite values")
        lo, hi = float(lo), float(hi)
        if lo < 0 or hi > 255:
            raise ValueError(f"float frames must have values in [0, 255], got [{lo:g}, {hi:g}]")
        if 0 < hi <= 1:
            raise ValueError(
                f"float frames have values in [{lo:g}, {hi:g}]: tvl1_flow takes grey levels in [0, 255]; "
                "multiply [0, 1] frames by 255 (OpenCV does this itself for float input)"
            )
    return a.float(), b.float()


# ----------------------------------------------------------------------------------------------------------------
# Image operations (OpenCV's resize, remap, median filter, gradients) as batched tensor operations
# ----------------------------------------------------------------------------------------------------------------


def pyramid_sizes(h: int, w: int, nscales: int, scale_step: float) -> list[tuple[int, int]]:
    """``(h, w)`` of each pyramid level, finest first, as OpenCV builds them.

    Each level is ``round(scale_step × previous level)`` (OpenCV's ``resize`` with ``fx = fy = scale_step``);
    the pyramid ends before the first level with fewer than 16 rows or columns. E.g. 96×128 with
    ``scale_step = 0.8``: 96×128, 77×102, 62×82, 50×66, 40×53.
    """
    sizes = [(int(h), int(w))]
    for _ in range(1, nscales):
        ph, pw = sizes[-1]
        nh, nw = round(ph * scale_step), round(pw * scale_step)
        if nh < _MIN_LEVEL_SIZE or nw < _MIN_LEVEL_SIZE:
            break
        sizes.append((nh, nw))
    return sizes


def _resize_matrix(n_in: int, n_out: int, scale: float, device: torch.device) -> torch.Tensor:
    """``(n_out, n_in)`` matrix of OpenCV's INTER_LINEAR resize along one axis.

    Output sample ``d`` reads the input at ``f = (d + 0.5)·scale − 0.5`` (``scale`` = input/output spacing),
    linearly between ``floor(f)`` and ``floor(f) + 1``; positions left of 0 or right of ``n_in − 1`` take the
    edge value (replicated border).
    """
    d = np.arange(n_out, dtype=np.float64)
    f = ((d + 0.5) * scale - 0.5).astype(np.float32)  # OpenCV rounds the position to float
    s = np.floor(f).astype(np.int64)
    frac = (f - s).astype(np.float32)
    left, right = s < 0, s >= n_in - 1  # outside the input: take the edge sample
    frac[left | right] = 0.0
    s[left], s[right] = 0, n_in - 1
    m = np.zeros((n_out, n_in), np.float32)
    m[np.arange(n_out), s] += 1.0 - frac
    m[np.arange(n_out), np.minimum(s + 1, n_in - 1)] += frac
    return torch.from_numpy(m).to(device)


def _resize_linear(img: torch.Tensor, size: tuple[int, int], scale_yx: tuple[float, float]) -> torch.Tensor:
    """Bilinear resize of ``(..., H, W)`` to ``(..., h, w)`` = ``size``, as ``cv2.resize(INTER_LINEAR)``.

    ``scale_yx`` is the input/output sample spacing per axis (``1/fy, 1/fx`` in OpenCV's terms). Horizontal pass
    first, then vertical, in OpenCV's order: ``out = Ry · (img · Rxᵀ)``.
    """
    (h, w), (H, W) = size, img.shape[-2:]
    ry = _resize_matrix(H, h, scale_yx[0], img.device)
    rx = _resize_matrix(W, w, scale_yx[1], img.device)
    return ry @ (img @ rx.T)


def _cubic_weights(t: torch.Tensor) -> torch.Tensor:
    """Keys' cubic kernel (a = −0.75, OpenCV's INTER_CUBIC) for taps at offsets −1, 0, 1, 2 from ``floor(x)``,
    where ``t = x − floor(x)`` in [0, 1): ``(..., 4)``."""
    a = _CUBIC_A

    def near(s: torch.Tensor) -> torch.Tensor:  # |s| <= 1
        return ((a + 2) * s - (a + 3)) * s * s + 1

    def far(s: torch.Tensor) -> torch.Tensor:  # 1 < |s| < 2
        return ((a * s - 5 * a) * s + 8 * a) * s - 4 * a

    return torch.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], dim=-1)


def _remap_bicubic(img: torch.Tensor, map_x: torch.Tensor, map_y: torch.Tensor) -> torch.Tensor:
    """``cv2.remap(img, map_x, map_y, INTER_CUBIC)`` with OpenCV's default border (constant 0), batched.

    Args:
        img: ``(N, C, H, W)`` images.
        map_x, map_y: ``(N, H, W)`` sampling positions in pixels (column, row).

    Returns:
        ``(N, C, H, W)``: ``out[n, c, y, x] = Σ_ij wy_i wx_j img[n, c, y0−1+i, x0−1+j]`` with ``x0 = floor(map_x)``
        and Keys' weights; taps outside the image contribute 0.
    """
    n, c, h, w = img.shape
    x0, y0 = torch.floor(map_x), torch.floor(map_y)
    wx, wy = _cubic_weights(map_x - x0), _cubic_weights(map_y - y0)  # (N, H, W, 4)
    # Taps outside the image read 0: pad with 4 zeros per side and clamp the 4x4 window to the padding (a window
    # that lies entirely outside the image stays entirely in the zeros).
    pad = 4
    padded = F.pad(img, (pad, pad, pad, pad)).reshape(n, c, -1)
    wp = w + 2 * pad
    x0 = x0.long().clamp(-pad + 1, w + 1) + (pad - 1)  # padded column of the window's first tap, x0 − 1
    y0 = y0.long().clamp(-pad + 1, h + 1) + (pad - 1)
    out = torch.zeros_like(img)
    for i in range(4):
        for j in range(4):
            idx = ((y0 + i) * wp + (x0 + j)).reshape(n, 1, h * w).expand(n, c, h * w)
            out += (wy[..., i] * wx[..., j])[:, None] * padded.gather(2, idx).reshape(n, c, h, w)
    return out


@functools.lru_cache(maxsize=None)
def _median_network(m: int) -> tuple[tuple[int, int, bool, bool], ...]:
    """A selection network for the median of ``m`` values: compare-exchange steps ``(a, b, keep_min, keep_max)``
    (``a < b``; afterwards slot ``a`` holds the smaller value, slot ``b`` the larger) that leave the median in slot
    ``m // 2``.

    Built from Batcher's odd–even merge sort on the next power of two: the missing inputs behave as +∞, which
    never leave the top slots, so comparators touching them are no-ops and dropped; then, walking backwards from
    slot ``m // 2``, only the comparators (and of each only the min or max output) that the median depends on are
    kept. For m = 25 (a 5×5 window): 113 comparators, 202 min/max operations. As plain element-wise
    ``minimum``/``maximum`` on whole images it runs on any device and ``torch.compile`` fuses it into one loop.
    """
    n = 1 << max(0, (m - 1).bit_length())
    pairs = []
    p = 1
    while p < n:  # Batcher's odd-even merge sort, iterative form
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    needed = {m // 2}
    network = []
    for a, b in reversed([(a, b) for a, b in pairs if b < m]):
        keep_min, keep_max = a in needed, b in needed
        if keep_min or keep_max:
            network.append((a, b, keep_min, keep_max))
            needed |= {a, b}
    return tuple(reversed(network))


def _median_filter(
    u: torch.Tensor, k: int, network: tuple[tuple[int, int, bool, bool], ...] | None = None
) -> torch.Tensor:
    """``k × k`` median of each ``(H, W)`` plane of ``(..., H, W)``, border replicated (``cv2.medianBlur``).

    The ``k²`` shifted copies of the (padded) image go through the selection network ``network`` (default
    :func:`_median_network` ``(k²)``): exact, element-wise, no sorting.
    """
    if network is None:
        network = _median_network(k * k)
    r = k // 2
    h, w = u.shape[-2:]
    planes = u.reshape(-1, 1, h, w)  # F.pad's replicate mode wants (N, C, H, W)
    padded = F.pad(planes, (r, r, r, r), mode="replicate").reshape(*u.shape[:-2], h + 2 * r, w + 2 * r)
    v: list[torch.Tensor | None] = [padded[..., i:i + h, j:j + w] for i in range(k) for j in range(k)]
    for a, b, keep_min, keep_max in network:
        lo = torch.minimum(v[a], v[b]) if keep_min else None  # type: ignore[arg-type]
        hi = torch.maximum(v[a], v[b]) if keep_max else None  # type: ignore[arg-type]
        v[a], v[b] = lo, hi
    return v[k * k // 2]  # type: ignore[return-value]


def _centered_gradient(img: torch.Tensor) -> torch.Tensor:
    """``(N, H, W)`` → ``(N, 2, H, W)`` (∂x, ∂y): ``(I(x+1) − I(x−1))/2`` with a replicated border, i.e.
    OpenCV's halved one-sided difference on the first/last row and column."""
    p = F.pad(img[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
    dx = 0.5 * (p[:, 1:-1, 2:] - p[:, 1:-1, :-2])
    dy = 0.5 * (p[:, 2:, 1:-1] - p[:, :-2, 1:-1])
    return torch.stack([dx, dy], dim=1)


def _forward_gradient(u: torch.Tensor) -> torch.Tensor:
    """``∇u`` of ``(N, C, H, W)`` fields by forward differences, 0 in the last column (∂x) / row (∂y):
    ``(N, C, 2, H, W)``."""
    dx = F.pad(u[..., :, 1:] - u[..., :, :-1], (0, 1))
    dy = F.pad(u[..., 1:, :] - u[..., :-1, :], (0, 0, 0, 1))
    return torch.stack([dx, dy], dim=2)


def _divergence(p: torch.Tensor) -> torch.Tensor:
    """``div p`` of ``(N, C, 2, H, W)`` vector fields by backward differences, ``p`` = 0 outside the image on the
    left/top: ``(N, C, H, W)``. It is minus the adjoint of :func:`_forward_gradient`."""
    p1, p2 = p[:, :, 0], p[:, :, 1]
    return (p1 - F.pad(p1[..., :, :-1], (1, 0))) + (p2 - F.pad(p2[..., :-1, :], (0, 0, 1, 0)))


# ----------------------------------------------------------------------------------------------------------------
# The TV-L1 iteration
# ----------------------------------------------------------------------------------------------------------------


def _tvl1_step(
    u: torch.Tensor,
    p: torch.Tensor,
    active: torch.Tensor,
    grad_i1: torch.Tensor,
    grad_sq: torch.Tensor,
    rho_c: torch.Tensor,
    scaled_epsilon: torch.Tensor,
    lambda_theta: torch.Tensor,
    theta: torch.Tensor,
    tau_theta: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One iteration of the primal-dual scheme, for the samples still ``active``.

    Args:
        u: ``(N, C, H, W)`` flow (C = 2: u1, u2; C = 3 with the illumination field u3 when gamma > 0).
        p: ``(N, C, 2, H, W)`` dual variable of the total variation: one 2-vector per component and pixel.
        active: ``(N,)`` bool, samples not yet converged in this warp.
        grad_i1: ``(N, C, H, W)`` ∂ρ/∂u: the warped gradient ``∇I1(x+u0)`` (and ``gamma`` for u3).
        grad_sq: ``(N, 1, H, W)`` ``|∇I1(x+u0)|²``, at least ``FLT_EPSILON``.
        rho_c: ``(N, 1, H, W)`` the constant part of the residual, ``I1(x+u0) − ∇I1(x+u0)·u0 − I0(x)``.
        scaled_epsilon: 0-d; a sample stops when ``Σ |Δu|² ≤ scaled_epsilon`` (``epsilon² × pixels``).
        lambda_theta, theta, tau_theta: 0-d tensors ``λθ``, ``θ``, ``τ/θ``.

    Returns:
        ``(u, p, active)`` after the iteration; converged samples keep their old ``u`` and ``p``.
    """
    # (a) Thresholding step (Zach et al. Prop. 2): v = argmin_v |v − u|²/(2θ) + λ|ρ(v)|, pixel by pixel, with
    #     ρ(v) = ρ_c + ∇I1·v the residual linearised around u0. The minimiser moves u along ∇I1:
    #         v = u + λθ ∇I1              if ρ(u) < −λθ |∇I1|²
    #         v = u − λθ ∇I1              if ρ(u) > +λθ |∇I1|²
    #         v = u − ρ(u) ∇I1 / |∇I1|²   otherwise: v lands on the brightness-constancy line ρ(v) = 0,
    #     i.e. v = u − clamp(ρ(u)/|∇I1|², −λθ, λθ) ∇I1: the step onto the line, capped at λθ|∇I1|.
    rho = rho_c + (grad_i1 * u).sum(dim=1, keepdim=True)
    v = u - (rho / grad_sq).clamp(-lambda_theta, lambda_theta) * grad_i1

    # (b) Total-variation step (Zach et al. Prop. 1): u = v + θ div p, where the dual variable p (|p| ≤ 1)
    #     is updated by Chambolle's (2004) projected fixed-point iteration p ← (p + τ/θ ∇u) / (1 + τ/θ |∇u|).
    u_new = v + theta * _divergence(p)
    grad_u = _forward_gradient(u_new)  # (N, C, 2, H, W)
    norm = torch.hypot(grad_u[:, :, 0], grad_u[:, :, 1])[:, :, None]
    p_new = (p + tau_theta * grad_u) / (1.0 + tau_theta * norm)

    # Stopping rule: the squared size of this iteration's update of u, summed over the image.
    change = ((u_new - u) ** 2).sum(dim=(1, 2, 3))

    keep = active[:, None, None, None]
    u = torch.where(keep, u_new, u)
    p = torch.where(keep[..., None], p_new, p)
    return u, p, active & (change > scaled_epsilon)


def _median_step(
    u: torch.Tensor, active: torch.Tensor, k: int, network: tuple[tuple[int, int, bool, bool], ...]
) -> torch.Tensor:
    """Median-filter (``k × k``, selection ``network``) the flow components u1, u2 (not u3) of the ``active``
    samples of ``(N, C, H, W)`` flow ``u`` (Wedel et al. 2009)."""
    filtered = torch.cat([_median_filter(u[:, :2], k, network), u[:, 2:]], dim=1)
    return torch.where(active[:, None, None, None], filtered, u)


class _Compiled:
    """``torch.compile(fn)``, falling back to ``fn`` (with one warning) if compiling or running it fails."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn, self.failed = fn, False
        self.compiled = torch.compile(fn, dynamic=True)

    def __call__(self, *args: Any) -> Any:
        if not self.failed:
            try:
                return self.compiled(*args)
            except Exception as e:  # no C++ compiler / triton, an unsupported op, …: correctness never needs it
                self.failed = True
                warnings.warn(f"torch.compile of {self.fn.__name__} failed ({type(e).__name__}: {e}); "
                              "running eagerly", RuntimeWarning, stacklevel=2)
        return self.fn(*args)


_COMPILED: dict[str, _Compiled] = {}


def _kernels(compile: bool) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The iteration and the median step, eager or through ``torch.compile`` (compiled once per process)."""
    if not compile:
        return _tvl1_step, _median_step
    for fn in (_tvl1_step, _median_step):
        if fn.__name__ not in _COMPILED:
            _COMPILED[fn.__name__] = _Compiled(fn)
    return _COMPILED["_tvl1_step"], _COMPILED["_median_step"]


# A warp's working set is compacted (converged samples dropped from the arrays it iterates on) when, at a
# convergence check, at most this fraction of its samples is still active.
_COMPACT_BELOW = 0.75


def _iterate_warp(
    u: torch.Tensor,
    p: torch.Tensor,
    grad_i1: torch.Tensor,
    grad_sq: torch.Tensor,
    rho_c: torch.Tensor,
    constants: tuple[torch.Tensor, ...],
    prm: dict[str, Any],
    check_every: int,
    compile: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """The iterations of one warp for a batch: OpenCV's outer loop (median filter, then the inner loop) and inner
    loop (:func:`_tvl1_step`), each sample until its update is below ``epsilon`` or the iterations run out.

    Args:
        u, p, grad_i1, grad_sq, rho_c: as in :func:`_tvl1_step`, for the whole batch (``u``/``p`` may be
            overwritten).
        constants: ``(scaled_epsilon, lambda_theta, theta, tau_theta)``, 0-d tensors.
        prm: checked parameters; check_every, compile: see :func:`tvl1_solve`.

    Returns:
        ``(u, p, iterations, steps)``: ``iterations`` ``(N,)`` int32 is what each sample ran, ``steps`` what the
        loop ran.
    """
    step_fn, median_fn = _kernels(compile)
    inner, outer, median = prm["inner_iterations"], prm["outer_iterations"], prm["median_filtering"]
    network = _median_network(median * median) if median > 1 else ()
    n = u.shape[0]
    iterations = torch.zeros(n, dtype=torch.int32, device=u.device)

    # The working set: the samples still iterating (`rows` into the batch; None = the whole batch).
    rows: torch.Tensor | None = None
    uw, pw, gw, gsw, rw = u, p, grad_i1, grad_sq, rho_c
    active = torch.ones(n, dtype=torch.bool, device=u.device)
    count = torch.zeros(n, dtype=torch.int32, device=u.device)
    steps = 0
    for it in range(outer * inner):
        if median > 1 and it % inner == 0:  # each outer iteration starts with a median filter
            uw = median_fn(uw, active, median, network)
        count += active
        uw, pw, active = step_fn(uw, pw, active, gw, gsw, rw, *constants)
        steps = it + 1
        if check_every and steps % check_every == 0:
            n_active = int(active.sum())  # the host synchronisation
            if n_active == 0:
                break
            if n_active <= _COMPACT_BELOW * active.shape[0]:
                # Store the converged samples' results and iterate on the others only.
                u, p, iterations = _put(u, rows, uw), _put(p, rows, pw), _put(iterations, rows, count)
                keep = active.nonzero()[:, 0]
                rows = keep if rows is None else rows[keep]
                uw, pw, gw, gsw, rw, active, count = (t[keep] for t in (uw, pw, gw, gsw, rw, active, count))
    return _put(u, rows, uw), _put(p, rows, pw), _put(iterations, rows, count), steps


def _solve_level(
    i0: torch.Tensor,
    i1: torch.Tensor,
    u: torch.Tensor,
    prm: dict[str, Any],
    check_every: int,
    compile: bool,
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """TV-L1 at one pyramid level (OpenCV's ``procOneScale``): ``warps`` times, linearise the data term around
    the current flow, then iterate (:func:`_iterate_warp`).

    Args:
        i0, i1: ``(N, H, W)`` float32 frames at this level.
        u: ``(N, C, H, W)`` initial flow (up-sampled from the coarser level, or 0); may be overwritten.
        prm: checked parameters (:func:`check_tvl1_params`); check_every, compile: see :func:`tvl1_solve`.

    Returns:
        ``(u, iterations, steps)``: the flow, ``(N, warps)`` int32 iterations each sample ran per warp, and the
        loop's iteration count per warp.
    """
    n, h, w = i0.shape
    c = u.shape[1]
    dev = u.device
    # Scalars as 0-d tensors, so that one compiled iteration serves every level and parameter set.
    constants = tuple(torch.tensor(x, device=dev) for x in (
        prm["epsilon"] ** 2 * h * w,  # OpenCV's stopping threshold on Σ|Δu|²: ε² × pixels
        prm["lambda_"] * prm["theta"],
        prm["theta"],
        prm["tau"] / prm["theta"],
    ))

    grad_i1_unwarped = _centered_gradient(i1)  # (N, 2, H, W)
    images = torch.cat([i1[:, None], grad_i1_unwarped], dim=1)  # warp I1, ∂xI1, ∂yI1 together
    ys, xs = torch.meshgrid(torch.arange(h, device=dev, dtype=torch.float32),
                            torch.arange(w, device=dev, dtype=torch.float32), indexing="ij")
    p = torch.zeros(n, c, 2, h, w, device=dev)  # the dual variable starts at 0 on every level (not every warp)
    iterations, steps = [], []
    for _ in range(prm["warps"]):
        # Linearise the data term around the current flow u0: I1(x+u) ≈ I1(x+u0) + ∇I1(x+u0)·(u − u0).
        warped = _remap_bicubic(images, xs + u[:, 0], ys + u[:, 1])
        i1_warped, grad_i1 = warped[:, :1], warped[:, 1:].contiguous()  # (N, 1, H, W), (N, 2, H, W)
        grad_sq = (grad_i1**2).sum(dim=1, keepdim=True).clamp_min(_FLT_EPSILON)  # we divide by it
        rho_c = i1_warped - (grad_i1 * u[:, :2]).sum(dim=1, keepdim=True) - i0[:, None]
        if c == 3:  # illumination term: ρ gains + γ·u3 (OpenCV leaves γ² out of |∇I1|²)
            grad_i1 = torch.cat([grad_i1, torch.full_like(grad_sq, prm["gamma"])], dim=1)

        u, p, its, st = _iterate_warp(u, p, grad_i1, grad_sq, rho_c, constants, prm, check_every, compile)
        iterations.append(its)
        steps.append(st)
    return u, torch.stack(iterations, dim=1), steps


def _put(full: torch.Tensor, rows: torch.Tensor | None, part: torch.Tensor) -> torch.Tensor:
    """``full`` with ``full[rows] = part`` (``part`` itself when ``rows`` is None: the whole batch)."""
    if rows is None:
        return part
    full[rows] = part
    return full


# ----------------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------------

#: Default convergence-check interval per device type (see :func:`tvl1_solve`).
CHECK_EVERY: dict[str, int] = {"cpu": 1, "cuda": 5}


@torch.no_grad()
def tvl1_solve(
    prev: torch.Tensor | np.ndarray,
    nxt: torch.Tensor | np.ndarray,
    *,
    check_every: int | None = None,
    compile: bool | None = None,
    **params: Any,
) -> TVL1Result:
    """TV-L1 flow of a batch of grey frame pairs, with per-warp iteration counts (see :func:`tvl1_flow`).

    Args:
        prev, nxt: ``(N, H, W)`` grey frames, uint8 or float in [0, 255], on any device (numpy: CPU).
        check_every: look for converged samples every this many iterations: one host synchronisation each time;
            the batch loop stops when all have converged, and converged samples are dropped from the arrays it
            iterates on once at most 3/4 of them are still active. 0 = never (every warp runs
            ``outer_iterations × inner_iterations`` iterations, no synchronisation at all). Default
            :data:`CHECK_EVERY`: 1 on CPU (where a check costs nothing: CPU kernels run synchronously anyway),
            5 on CUDA (a check there stalls the launch queue). The flow does not depend on it: converged samples
            are masked on the device in between checks.
        compile: run the iteration and the median filter through ``torch.compile`` (dynamic shapes: a few
            compilations serve all levels and batch sizes). ``None`` (default): on CUDA only — on CPU it was
            1.3-1.5x faster after 1.5-2 minutes of compiling per process (2 cores), so pass ``compile=True``
            only for long CPU jobs. Falls back to eager (with a warning) if compiling fails.
        **params: the TV-L1 parameters of :data:`TVL1_DEFAULTS`.

    Returns:
        :class:`TVL1Result` (``flow``: ``(N, H, W, 2)`` float32 on the input's device).
    """
    prm = check_tvl1_params(params)
    i0, i1 = _check_pair(prev, nxt)
    if check_every is None:
        check_every = CHECK_EVERY.get(i0.device.type, 5)
    if isinstance(check_every, bool) or not isinstance(check_every, (int, np.integer)) or check_every < 0:
        raise ValueError(f"check_every must be an integer >= 0, got {check_every!r}")
    if compile is None:
        compile = i0.device.type == "cuda"
    n, h, w = i0.shape
    s = prm["scale_step"]
    c = 3 if prm["gamma"] != 0 else 2  # u3: the illumination-change field of the gamma term

    # Image pyramid, finest first: each level a linear resize of the one above by scale_step.
    sizes = pyramid_sizes(h, w, prm["nscales"], s)
    pyr0, pyr1 = [i0], [i1]
    for size in sizes[1:]:
        pyr0.append(_resize_linear(pyr0[-1], size, (1 / s, 1 / s)))
        pyr1.append(_resize_linear(pyr1[-1], size, (1 / s, 1 / s)))

    # Coarse to fine: solve, then up-sample the flow to the next finer level as its initial value.
    u = torch.zeros(n, c, *sizes[-1], device=i0.device)
    iterations, steps = [], []
    for level in range(len(sizes) - 1, -1, -1):
        u, its, st = _solve_level(pyr0[level], pyr1[level], u, prm, int(check_every), bool(compile))
        iterations.append(its)
        steps.append(st)
        if level > 0:
            (fh, fw), (ch, cw) = sizes[level - 1], sizes[level]
            u = _resize_linear(u, (fh, fw), (1 / (fh / ch), 1 / (fw / cw)))
            u[:, :2] *= 1 / s  # displacements grow with the image; u3 (brightness) does not
    flow = u[:, :2].permute(0, 2, 3, 1).contiguous()
    return TVL1Result(flow=flow, iterations=torch.stack(iterations, dim=1), steps=steps, sizes=sizes)


def tvl1_flow(
    prev: torch.Tensor | np.ndarray,
    nxt: torch.Tensor | np.ndarray,
    *,
    check_every: int | None = None,
    compile: bool | None = None,
    **params: Any,
) -> torch.Tensor:
    """Forward TV-L1 flow from ``prev[i]`` to ``nxt[i]`` for a batch of grey frame pairs.

    ``prev[i](p) ≈ nxt[i](p + flow[i](p))``, computed as ``cv2.optflow.DualTVL1OpticalFlow`` does (module
    docstring: what matches and what cannot).

    Args:
        prev, nxt: ``(N, H, W)`` grey frames, uint8 or float with values in [0, 255] (not [0, 1]), on any
            device; numpy arrays are taken as CPU tensors.
        check_every: convergence-check interval in iterations (host synchronisations), see :func:`tvl1_solve`.
        compile: ``torch.compile`` the iteration (default: on CUDA only), see :func:`tvl1_solve`.
        **params: ``tau, lambda_, theta, nscales, warps, epsilon, inner_iterations, outer_iterations,
            scale_step, gamma, median_filtering``; defaults :data:`TVL1_DEFAULTS`.

    Returns:
        ``(N, H, W, 2)`` float32 flow in pixels (x then y) on the input's device.

    Raises:
        ValueError: unknown or invalid parameters; frames that are not ``(N, H, W)``, differ in shape, dtype or
            device, are not uint8/float, or are float outside [0, 255] (or look like [0, 1]).
    """
    return tvl1_solve(prev, nxt, check_every=check_every, compile=compile, **params).flow
