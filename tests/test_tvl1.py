"""Tests for twostream_lib.tvl1: the batched PyTorch TV-L1 against OpenCV's DualTVL1OpticalFlow and ground truth."""
from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from twostream_lib import flow as F
from twostream_lib import tvl1 as T
from twostream_lib.lab import LAB_HMDB_CLASSES, LAB_UCF_CLASSES, clip_spec, render_clip

cv2.setNumThreads(1)

QSTEP = 2 * F.DEFAULT_BOUND / 255  # one uint8 quantisation step of quantize_flow: 0.157 px


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """These tensors are small (48x64): torch's intra-op threads cost more than they give, and a lot more on a
    loaded machine (measured 3.5-5 s vs 1 s for 8 pairs). Restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ------------------------------------------------------------------------------------------------ helpers


def grey_clip(dataset: str, cls: str, index: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A tiny (48x64) lab clip as (T, H, W) uint8 grey frames and its (T-1, H, W, 2) ground-truth flow."""
    frames, gt = render_clip(clip_spec(dataset, cls, index, scale="tiny"))
    return np.stack([F.to_gray(f) for f in frames]), gt


def opencv_flows(prev: np.ndarray, nxt: np.ndarray, **params) -> np.ndarray:
    est = F.FlowEstimator("tvl1", **params)
    return np.stack([est(a, b) for a, b in zip(prev, nxt)])


def ours(prev: np.ndarray, nxt: np.ndarray, **kw) -> np.ndarray:
    return T.tvl1_flow(torch.from_numpy(prev), torch.from_numpy(nxt), **kw).numpy()


def epe_per_pair(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sqrt(((a - b) ** 2).sum(-1)).mean(axis=(1, 2))


def uint8_within_one(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of quantised (quantize_flow, ±20 px) values of a within ±1 of b's."""
    return float((np.abs(F.quantize_flow(a).astype(int) - F.quantize_flow(b).astype(int)) <= 1).mean())


@functools.lru_cache(maxsize=None)
def load_bench():
    """benchmarks/tvl1_bench.py as a module (benchmarks/ is not a package)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "tvl1_bench.py"
    spec = importlib.util.spec_from_file_location("tvl1_bench", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def photo_pair(h: int, w: int, camera: tuple[float, float], patch: tuple[int, int]):
    """Real image content with known motion: ``benchmarks/tvl1_bench.photo_pair`` (matplotlib's sample photo seen
    by a camera translating by ``camera`` px with a textured patch moving by ``patch`` px): prev, nxt, gt."""
    return load_bench().photo_pair(h, w, camera, patch)


@pytest.fixture(scope="module")
def lab_pairs():
    """8 pairs from 4 tiny (48x64) lab clips, two of each dataset: prev, nxt (uint8) and the exact flow."""
    prev, nxt, gts = [], [], []
    for dataset, cls in (("lab-ucf", LAB_UCF_CLASSES[1]), ("lab-ucf", LAB_UCF_CLASSES[5]),
                         ("lab-hmdb", LAB_HMDB_CLASSES[2]), ("lab-hmdb", LAB_HMDB_CLASSES[3])):
        g, gt = grey_clip(dataset, cls)
        for i in (2, 8):
            prev.append(g[i])
            nxt.append(g[i + 1])
            gts.append(gt[i])
    return np.stack(prev), np.stack(nxt), np.stack(gts)


# ------------------------------------------------------------------------------------------------ building blocks


def test_pyramid_sizes_follow_opencv_resize():
    for h, w, n, s in ((48, 64, 5, 0.8), (96, 128, 5, 0.8), (240, 320, 5, 0.8), (97, 131, 6, 0.7), (20, 300, 5, 0.8)):
        sizes, img = [(h, w)], np.zeros((h, w), np.float32)
        for _ in range(1, n):
            img = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_LINEAR)
            if img.shape[0] < 16 or img.shape[1] < 16:
                break
            sizes.append(img.shape)
        assert T.pyramid_sizes(h, w, n, s) == sizes
    assert T.pyramid_sizes(96, 128, 5, 0.8) == [(96, 128), (77, 102), (62, 82), (50, 66), (40, 53)]  # round, not floor


def test_resize_matches_cv2_linear():
    img = np.random.default_rng(0).uniform(0, 255, (2, 37, 53)).astype(np.float32)
    t = torch.from_numpy(img)
    down = cv2.resize(img[0], None, fx=0.8, fy=0.8, interpolation=cv2.INTER_LINEAR)
    ours_down = T._resize_linear(t, down.shape, (1 / 0.8, 1 / 0.8))[0].numpy()
    np.testing.assert_allclose(ours_down, down, atol=1e-3)
    up = cv2.resize(down, (53, 37), interpolation=cv2.INTER_LINEAR)
    ours_up = T._resize_linear(torch.from_numpy(down)[None], (37, 53), (down.shape[0] / 37, down.shape[1] / 53))
    np.testing.assert_allclose(ours_up[0].numpy(), up, atol=1e-3)


def test_remap_bicubic_matches_cv2_including_borders():
    rng = np.random.default_rng(1)
    h, w = 21, 26
    img = rng.uniform(0, 255, (h, w)).astype(np.float32)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    mx = xs + rng.uniform(-4, 4, (h, w)).astype(np.float32)  # many samples near / beyond the border
    my = ys + rng.uniform(-4, 4, (h, w)).astype(np.float32)
    ref = cv2.remap(img, mx, my, cv2.INTER_CUBIC)  # default border: constant 0
    got = T._remap_bicubic(torch.from_numpy(img)[None, None], torch.from_numpy(mx)[None], torch.from_numpy(my)[None])
    np.testing.assert_allclose(got[0, 0].numpy(), ref, atol=2e-3)


@pytest.mark.parametrize("k", [3, 5])
def test_median_filter_matches_cv2_median_blur(k):
    rng = np.random.default_rng(k)
    for x in (rng.normal(size=(2, 2, 17, 23)), rng.integers(0, 4, (2, 2, 17, 23))):  # the second with many ties
        x = x.astype(np.float32)
        ref = np.stack([[cv2.medianBlur(c, k) for c in s] for s in x])
        np.testing.assert_array_equal(T._median_filter(torch.from_numpy(x), k).numpy(), ref)


def test_centered_gradient_uses_halved_one_sided_differences_on_borders():
    img = np.random.default_rng(2).uniform(0, 255, (7, 9)).astype(np.float32)
    g = T._centered_gradient(torch.from_numpy(img)[None])[0].numpy()
    dx = np.empty_like(img)
    dx[:, 1:-1] = (img[:, 2:] - img[:, :-2]) / 2
    dx[:, 0], dx[:, -1] = (img[:, 1] - img[:, 0]) / 2, (img[:, -1] - img[:, -2]) / 2
    dy = np.empty_like(img)
    dy[1:-1] = (img[2:] - img[:-2]) / 2
    dy[0], dy[-1] = (img[1] - img[0]) / 2, (img[-1] - img[-2]) / 2
    np.testing.assert_allclose(g[0], dx, atol=1e-5)
    np.testing.assert_allclose(g[1], dy, atol=1e-5)


def test_divergence_is_minus_adjoint_of_forward_gradient():
    rng = np.random.default_rng(3)
    u = torch.from_numpy(rng.normal(size=(2, 2, 6, 7)).astype(np.float64))
    p = torch.from_numpy(rng.normal(size=(2, 2, 2, 6, 7)).astype(np.float64))
    p[..., 0, :, -1] = 0  # OpenCV's p stays 0 where the forward gradient is fixed at 0
    p[..., 1, -1, :] = 0
    lhs = (T._forward_gradient(u) * p).sum()
    rhs = -(u * T._divergence(p)).sum()
    assert float(lhs) == pytest.approx(float(rhs), rel=1e-9)


@pytest.mark.parametrize("gamma", [0.0, 0.2])
def test_one_level_one_warp_matches_opencv_to_float_precision(lab_pairs, gamma):
    """No pyramid, one warp, no stopping: the iteration itself (thresholding, divergence, dual update, median)."""
    prev, nxt, _ = lab_pairs
    prm = dict(nscales=1, warps=1, epsilon=0.0, outer_iterations=2, inner_iterations=7, gamma=gamma)
    diff = np.abs(ours(prev[:3], nxt[:3], **prm) - opencv_flows(prev[:3], nxt[:3], **prm))
    assert diff.max() < 1e-4


# ------------------------------------------------------------------------------------------------ against OpenCV and GT


def test_matches_opencv_and_ground_truth_on_lab_clips(lab_pairs):
    prev, nxt, gt = lab_pairs
    ref = opencv_flows(prev, nxt)  # the project's TVL1_DEFAULTS for both
    got = ours(prev, nxt)
    epe = epe_per_pair(got, ref)
    assert epe.mean() < QSTEP / 5, epe  # measured: ~0.01 px
    assert epe.max() < QSTEP / 2, epe
    assert uint8_within_one(got, ref) >= 0.99
    # Accuracy against the lab's exact flow: within 10 % of OpenCV's endpoint error.
    ours_gt, cv_gt = F.endpoint_error(got, gt), F.endpoint_error(ref, gt)
    assert abs(ours_gt - cv_gt) <= 0.1 * cv_gt, (ours_gt, cv_gt)


def test_matches_opencv_with_opencv_default_parameters(lab_pairs):
    prev, nxt, gt = lab_pairs
    prm = dict(warps=5, epsilon=0.01, inner_iterations=30)  # OpenCV's own defaults
    ref, got = opencv_flows(prev[::3], nxt[::3], **prm), ours(prev[::3], nxt[::3], **prm)
    assert epe_per_pair(got, ref).mean() < QSTEP / 5
    assert uint8_within_one(got, ref) >= 0.99


def test_matches_opencv_and_ground_truth_on_real_footage():
    pairs = [photo_pair(64, 80, (0.75, -0.5), (2, 1)), photo_pair(64, 80, (-1.25, 0.25), (-1, 2))]
    prev, nxt, gt = (np.stack(x) for x in zip(*pairs))
    ref, got = opencv_flows(prev, nxt), ours(prev, nxt)
    epe = epe_per_pair(got, ref)
    assert epe.mean() < QSTEP / 5, epe
    assert uint8_within_one(got, ref) >= 0.99
    ours_gt, cv_gt = F.endpoint_error(got, gt), F.endpoint_error(ref, gt)
    assert abs(ours_gt - cv_gt) <= 0.1 * cv_gt, (ours_gt, cv_gt)
    assert ours_gt < 0.5  # and the motion is actually found (camera ~1 px, patch 2 px)


def test_flow_direction_convention():
    """prev(p) ≈ nxt(p + flow(p)): content moving right/down gives positive x/y flow."""
    prev, nxt, gt = photo_pair(48, 64, (-1.0, -0.5), (0, 0))  # camera left/up: content right/down by (1, 0.5)
    got = ours(prev[None], nxt[None])[0]
    inner = got[8:-8, 8:-8].reshape(-1, 2)
    np.testing.assert_allclose(np.median(inner, axis=0), [1.0, 0.5], atol=0.1)


# ------------------------------------------------------------------------------------------------ batching, devices


def test_batch_gives_the_same_flow_as_one_pair_at_a_time(lab_pairs):
    prev, nxt, _ = lab_pairs
    res = T.tvl1_solve(torch.from_numpy(prev), torch.from_numpy(nxt))
    its = res.iterations
    assert its.shape == (len(prev), len(res.sizes), 3) and its.dtype == torch.int32
    assert (its.amin(0) != its.amax(0)).any()  # samples converge at different iterations: the mask is exercised
    assert res.steps == its.amax(0).tolist()  # on CPU the loop checks every iteration: no wasted steps
    for i in range(len(prev)):
        single = T.tvl1_flow(torch.from_numpy(prev[i:i + 1]), torch.from_numpy(nxt[i:i + 1]))
        assert (single[0] - res.flow[i]).abs().max() <= 1e-4


def test_check_interval_does_not_change_the_flow(lab_pairs):
    prev, nxt, _ = (torch.from_numpy(x) for x in lab_pairs)
    prm = dict(nscales=3, warps=2, inner_iterations=8, outer_iterations=3)
    a = T.tvl1_solve(prev, nxt, check_every=1, **prm)
    b = T.tvl1_solve(prev, nxt, check_every=3, **prm)
    c = T.tvl1_solve(prev, nxt, check_every=0, **prm)  # never synchronise: every warp runs 3 x 8 iterations
    assert torch.equal(a.iterations, b.iterations) and torch.equal(a.iterations, c.iterations)
    assert all(s == 24 for level in c.steps for s in level)
    assert (a.flow - b.flow).abs().max() <= 1e-5 and (a.flow - c.flow).abs().max() <= 1e-5


def test_uint8_float_and_numpy_inputs_agree(lab_pairs):
    prev, nxt, _ = lab_pairs
    prev, nxt = prev[:2], nxt[:2]
    a = T.tvl1_flow(torch.from_numpy(prev), torch.from_numpy(nxt), nscales=2, warps=1)
    b = T.tvl1_flow(torch.from_numpy(prev).float(), torch.from_numpy(nxt).float(), nscales=2, warps=1)
    c = T.tvl1_flow(prev, nxt, nscales=2, warps=1)
    assert a.dtype == torch.float32 and a.shape == (2, 48, 64, 2) and a.device.type == "cpu"
    assert torch.equal(a, b) and torch.equal(a, c)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(lab_pairs):
    prev, nxt, _ = (torch.from_numpy(x) for x in lab_pairs)
    cpu = T.tvl1_solve(prev, nxt, compile=False)
    gpu = T.tvl1_solve(prev.cuda(), nxt.cuda(), compile=False)
    assert gpu.flow.device.type == "cuda" and gpu.flow.dtype == torch.float32
    assert epe_per_pair(gpu.flow.cpu().numpy(), cpu.flow.numpy()).mean() < QSTEP / 5


@pytest.mark.slow
@pytest.mark.skipif(not (torch.cuda.is_available() or os.environ.get("TVL1_TEST_COMPILE")),
                    reason="torch.compile takes about a minute on 2 CPU cores; set TVL1_TEST_COMPILE=1 to run")
def test_compiled_matches_eager(lab_pairs):
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    prev, nxt, _ = (torch.from_numpy(x).to(dev) for x in lab_pairs)
    eager = T.tvl1_solve(prev, nxt, compile=False)
    compiled = T.tvl1_solve(prev, nxt, compile=True)
    assert (compiled.flow - eager.flow).abs().max() <= 1e-3
    assert (compiled.iterations - eager.iterations).abs().max() <= 1


# ------------------------------------------------------------------------------------------------ validation


def test_unknown_parameters_are_named():
    x = torch.zeros(1, 20, 20, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"unknown TV-L1 parameter\(s\) innnerIterations, lambda;.*inner_iterations"):
        T.tvl1_flow(x, x, lambda_=0.1, innnerIterations=5, **{"lambda": 0.2})


def test_parameters_default_to_flow_tvl1_defaults():
    assert T.check_tvl1_params({}) == {k: (float(v) if isinstance(v, float) else v) for k, v in F.TVL1_DEFAULTS.items()}


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(tau=0), "tau must be > 0"),
        (dict(scale_step=1.0), r"scale_step must be in \(0, 1\)"),
        (dict(warps=0), "warps must be >= 1"),
        (dict(nscales=2.5), "nscales must be an integer"),
        (dict(median_filtering=4), "median_filtering must be odd"),
        (dict(epsilon=-1), "epsilon must be >= 0"),
        (dict(theta="0.3"), "theta must be a finite number"),
        (dict(lambda_=float("nan")), "lambda_ must be a finite number"),
    ],
)
def test_invalid_parameter_values(params, match):
    x = torch.zeros(1, 20, 20, dtype=torch.uint8)
    with pytest.raises(ValueError, match=match):
        T.tvl1_flow(x, x, **params)


@pytest.mark.parametrize(
    "prev, nxt, match",
    [
        (torch.zeros(20, 20, dtype=torch.uint8), None, r"shape \(N, H, W\).*add a batch axis"),
        (torch.zeros(1, 20, 20, 3, dtype=torch.uint8), None, "convert to grey"),
        (torch.zeros(2, 20, 20, dtype=torch.uint8), torch.zeros(2, 20, 21, dtype=torch.uint8), "differ in shape"),
        (torch.zeros(1, 20, 20, dtype=torch.int32), None, "uint8 or a float dtype"),
        (torch.zeros(1, 20, 20, dtype=torch.bool), None, "uint8 or a float dtype"),
        (torch.zeros(1, 20, 20, dtype=torch.uint8), torch.zeros(1, 20, 20), "differ in dtype"),
        (torch.zeros(0, 20, 20, dtype=torch.uint8), None, "need N >= 1"),
        (torch.zeros(1, 2, 20, dtype=torch.uint8), None, "H, W >= 3"),
        (torch.full((1, 20, 20), 0.5), None, r"multiply \[0, 1\] frames by 255"),
        (torch.full((1, 20, 20), 300.0), None, r"values in \[0, 255\]"),
        (torch.full((1, 20, 20), float("nan")), None, "non-finite"),
        ([[[0, 1]]], None, "torch.Tensor or numpy array"),
    ],
)
def test_invalid_inputs(prev, nxt, match):
    with pytest.raises(ValueError, match=match):
        T.tvl1_flow(prev, prev if nxt is None else nxt)


def test_invalid_check_interval():
    x = torch.zeros(1, 20, 20, dtype=torch.uint8)
    with pytest.raises(ValueError, match="check_every must be an integer >= 0"):
        T.tvl1_flow(x, x, check_every=-1)


# ------------------------------------------------------------------------------------------------ the benchmark


def test_benchmark_runs_on_cpu():
    bench = load_bench()
    threads = torch.get_num_threads()
    rows = bench.bench_tvl1(sizes=((48, 64),), batches=(1, 3, 32), threads=1, repeats=1, max_cpu_batch=3)
    assert torch.get_num_threads() == threads  # restored
    assert [(r["size"], r["batch"], r["device"]) for r in rows] == [("48x64", 1, "cpu"), ("48x64", 3, "cpu")]
    for r in rows:
        assert r["pairs_per_s"] > 0 and r["opencv_pairs_per_s"] > 0 and r["peak_mem_mib"] is None
        assert 1 <= r["iters_per_warp"] <= r["steps_per_warp"] <= 10 * 20
        assert r["compile"] is False and r["check_every"] == 1
    table = bench.markdown(rows)
    assert table.count("\n") == 3 and "| 48x64 | 3 | cpu |" in table


def test_benchmark_cuda_timing_synchronises(monkeypatch):
    """The CUDA path, exercised without a GPU: the device is drained before and after the timed call and the peak
    memory is read from torch.cuda."""
    bench = load_bench()
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(("sync", str(device))))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: calls.append(("reset", None)))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 3 * 2**20)
    dev = torch.device("cuda:0")
    dt, out = bench._timed(lambda: calls.append(("work", None)) or 7, dev)
    assert out == 7 and dt >= 0
    assert calls == [("sync", "cuda:0"), ("work", None), ("sync", "cuda:0")]
    bench._reset_peak_memory(dev)
    assert calls[-1] == ("reset", None) and bench._peak_memory_mib(dev) == 3.0
    calls.clear()
    bench._timed(lambda: None, torch.device("cpu"))
    assert calls == [] and bench._peak_memory_mib(torch.device("cpu")) is None
