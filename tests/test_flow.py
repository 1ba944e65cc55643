"""Tests for twostream_lib.flow: quantisation, flips, the §3.1 temporal stack, colour coding, estimators."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from twostream_lib import flow as F

cv2.setNumThreads(1)


# ------------------------------------------------------------------------------------------------ helpers


def const_fields(n: int, h: int = 6, w: int = 8) -> np.ndarray:
    """Field i has x = 10*i + 1 and y = -(10*i + 2) everywhere: every (field, axis) value is distinct."""
    f = np.zeros((n, h, w, 2), np.float32)
    for i in range(n):
        f[i, ..., 0] = 10 * i + 1
        f[i, ..., 1] = -(10 * i + 2)
    return f


def texture(h: int, w: int, seed: int = 0, sigma: float = 2.0) -> np.ndarray:
    """Smooth random RGB texture, uint8 (H, W, 3)."""
    r = np.random.default_rng(seed).standard_normal((h, w)).astype(np.float32)
    r = cv2.GaussianBlur(r, (0, 0), sigma)
    r = (r - r.min()) / (r.max() - r.min()) * 255
    return np.repeat(r.astype(np.uint8)[..., None], 3, axis=2)


def shifted(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """img translated by (dx, dy): shifted(p + d) = img(p), so the forward flow img -> shifted is (dx, dy)."""
    h, w = img.shape[:2]
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def interior(h: int, w: int, margin: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[margin:-margin, margin:-margin] = True
    return m


# ------------------------------------------------------------------------------------------------ quantisation


def test_quantize_round_trip_within_half_step():
    b = 20.0
    v = np.random.default_rng(0).uniform(-b, b, size=(7, 9, 2)).astype(np.float32)
    v[0, 0] = (-b, b)  # the ends
    q = F.quantize_flow(v, b)
    assert q.dtype == np.uint8 and q.shape == v.shape
    err = np.abs(F.dequantize_flow(q, b) - v)
    assert err.max() <= b / 255 + 1e-5  # half of the 2b/255 step
    assert err.max() > b / 255 * 0.5  # it is a real quantisation, not lossless
    assert q[0, 0, 0] == 0 and q[0, 0, 1] == 255


def test_quantize_zero_and_symmetry():
    q0 = int(F.quantize_flow(np.zeros(1, np.float32))[0])
    assert q0 in (127, 128)
    assert abs(F.dequantize_flow(np.uint8(q0)) - 0.0) <= 20 / 255 + 1e-6
    v = np.array([0.3, 1.7, 5.2, 13.9], np.float32)
    np.testing.assert_array_equal(F.quantize_flow(-v).astype(int), 255 - F.quantize_flow(v).astype(int))
    assert F.dequantize_flow(np.uint8(0)).dtype == np.float32


def test_quantize_clips_and_clip_fraction_counts():
    v = np.array([[-50.0, 0.0], [19.0, 25.0], [20.0, -20.5]], np.float32)
    q = F.quantize_flow(v, 20)
    assert q[0, 0] == 0 and q[1, 1] == 255 and q[2, 1] == 0 and q[2, 0] == 255
    assert F.clip_fraction(v, 20) == pytest.approx(3 / 6)  # -50, 25, -20.5 (20 itself is inside)
    assert F.clip_fraction(v, 100) == 0.0
    # a different bound changes the mapping
    assert F.quantize_flow(np.float32(10), 10) == 255


# ------------------------------------------------------------------------------------------------ flips


def test_flip_mirrors_and_negates_x_only():
    rng = np.random.default_rng(1)
    s = rng.normal(size=(6, 4, 5)).astype(np.float32)  # L = 3
    f = F.flip_stack(s)
    np.testing.assert_array_equal(f[0::2], -s[0::2, :, ::-1])
    np.testing.assert_array_equal(f[1::2], s[1::2, :, ::-1])
    np.testing.assert_array_equal(F.flip_stack(f), s)


def test_flip_rightward_translation_becomes_leftward():
    flows = np.zeros((5, 8, 10, 2), np.float32)
    flows[..., 0] = 3.0  # rightward
    flows[..., 1] = 1.0
    st = F.temporal_stack(flows, 0, L=5, mean_subtraction=False)
    fl = F.flip_stack(st)
    assert np.all(fl[0::2] == -3.0) and np.all(fl[1::2] == 1.0)
    # flipping the fields then stacking == stacking then flipping
    np.testing.assert_array_equal(F.temporal_stack(F.flip_flow(flows), 0, L=5, mean_subtraction=False), fl)


def test_flip_torch_and_uint8():
    torch = pytest.importorskip("torch")
    s = np.random.default_rng(2).normal(size=(2, 4, 3, 5)).astype(np.float32)  # batched (B, 2L, H, W)
    ft = F.flip_stack(torch.from_numpy(s))
    assert isinstance(ft, torch.Tensor)
    np.testing.assert_array_equal(ft.numpy(), F.flip_stack(s))
    q = F.quantize_flow(s * 5)
    np.testing.assert_allclose(F.dequantize_flow(F.flip_stack(q)), F.flip_stack(F.dequantize_flow(q)), atol=1e-4)


# ------------------------------------------------------------------------------------------------ temporal stack


def test_stack_channel_order_x1_y1_x2_y2():
    flows = const_fields(12)
    st = F.temporal_stack(flows, t=2, L=4, mean_subtraction=False)
    assert st.shape == (8, 6, 8) and st.dtype == np.float32
    for k in range(4):
        assert np.all(st[2 * k] == 10 * (2 + k) + 1), k  # x of field t+k
        assert np.all(st[2 * k + 1] == -(10 * (2 + k) + 2)), k  # y of field t+k


def test_stack_uses_same_pixel_eq1():
    flows = np.random.default_rng(3).normal(size=(10, 5, 7, 2)).astype(np.float32)
    st = F.temporal_stack(flows, t=1, L=3, mean_subtraction=False)
    for k in range(3):
        np.testing.assert_array_equal(st[2 * k], flows[1 + k, ..., 0])
        np.testing.assert_array_equal(st[2 * k + 1], flows[1 + k, ..., 1])


def test_mean_subtraction_is_spatial_per_channel_and_removes_pan():
    rng = np.random.default_rng(4)
    local = rng.normal(size=(6, 9, 11, 2)).astype(np.float32)
    local -= local.mean(axis=(1, 2), keepdims=True)  # zero-mean object motion
    pan = np.array([[2.0, -1.0], [2.5, -0.5], [-1.0, 3.0], [0.5, 0.5], [4.0, 0.0], [1.0, 1.0]], np.float32)
    flows = local + pan[:, None, None, :]  # camera pan differs per field
    st = F.temporal_stack(flows, 0, L=6, mean_subtraction=True)
    np.testing.assert_allclose(st.mean(axis=(1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(st, F.temporal_stack(local, 0, L=6, mean_subtraction=False), atol=1e-5)
    # without subtraction the pan is still there
    raw = F.temporal_stack(flows, 0, L=6, mean_subtraction=False)
    np.testing.assert_allclose(raw.mean(axis=(1, 2)), pan.reshape(-1), atol=1e-5)


def test_mean_subtraction_is_not_per_pixel_over_time():
    flows = np.random.default_rng(5).normal(size=(4, 5, 6, 2)).astype(np.float32) * 3
    raw = F.temporal_stack(flows, 0, L=4, mean_subtraction=False)
    st = F.temporal_stack(flows, 0, L=4, mean_subtraction=True)
    spatial = raw - raw.mean(axis=(1, 2), keepdims=True)
    per_pixel_time = raw.copy()
    per_pixel_time[0::2] -= raw[0::2].mean(axis=0, keepdims=True)
    per_pixel_time[1::2] -= raw[1::2].mean(axis=0, keepdims=True)
    np.testing.assert_allclose(st, spatial, atol=1e-5)
    assert np.abs(st - per_pixel_time).max() > 0.5


def test_trajectory_equals_stacking_for_constant_translation():
    flows = np.zeros((8, 20, 24, 2), np.float32)
    flows[..., 0] = 1.5
    flows[..., 1] = -0.75
    a = F.temporal_stack(flows, 1, L=5, mode="stacking", mean_subtraction=False)
    b = F.temporal_stack(flows, 1, L=5, mode="trajectory", mean_subtraction=False)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_trajectory_follows_the_point_on_x_dependent_flow():
    h, w, a, L = 12, 64, 0.1, 4
    xs = np.arange(w, dtype=np.float32)
    flows = np.zeros((L, h, w, 2), np.float32)
    flows[..., 0] = a * xs  # expansion: d^x(u, v) = a * u, same field every frame
    traj = F.temporal_stack(flows, 0, L=L, mode="trajectory", mean_subtraction=False)
    stack = F.temporal_stack(flows, 0, L=L, mode="stacking", mean_subtraction=False)
    u = np.arange(1, 20)  # points whose trajectories stay in the frame: u * 1.1**3 < 63
    for k in range(L):
        # trajectory: p_k = u (1+a)^k (0-based k), and field k read there is a u (1+a)^k
        np.testing.assert_allclose(traj[2 * k][:, u], np.broadcast_to(a * u * (1 + a) ** k, (h, len(u))), atol=4e-3)  # remap: 1/32 px
        np.testing.assert_allclose(stack[2 * k][:, u], np.broadcast_to(a * u, (h, len(u))), rtol=1e-5)
        assert np.all(traj[2 * k + 1] == 0)
    assert np.abs(traj[6][:, u] - stack[6][:, u]).max() > 0.5  # they differ where the flow is not uniform


def test_trajectory_reads_later_field_at_displaced_point():
    h, w = 10, 30
    flows = np.zeros((2, h, w, 2), np.float32)
    flows[0, ..., 0] = 2.0  # first move right by 2
    flows[1, ..., 1] = 0.5 * np.arange(w, dtype=np.float32)  # second field: d^y depends on x
    traj = F.temporal_stack(flows, 0, L=2, mode="trajectory", mean_subtraction=False)
    u = np.arange(0, w - 2)
    np.testing.assert_allclose(traj[3][:, u], np.broadcast_to(0.5 * (u + 2), (h, len(u))), atol=1e-4)
    np.testing.assert_allclose(traj[0], 2.0)


def test_bidirectional_shape_and_fields_used():
    n, L, t = 12, 6, 5
    fwd = const_fields(n)
    bwd = -const_fields(n) - 1000  # backward field i: x = -(10 i + 1) - 1000, y = (10 i + 2) - 1000
    st = F.temporal_stack(fwd, t, L=L, bidirectional=True, backward_flows=bwd, mean_subtraction=False)
    assert st.shape == (2 * L, 6, 8)
    for k in range(L // 2):  # forward half: fields t, t+1, t+2
        assert np.all(st[2 * k] == fwd[t + k, 0, 0, 0]) and np.all(st[2 * k + 1] == fwd[t + k, 0, 0, 1])
    for k in range(L // 2):  # backward half: backward fields t-1, t-2, t-3 (frames t -> t-1 -> ...)
        c = L + 2 * k
        assert np.all(st[c] == bwd[t - 1 - k, 0, 0, 0]) and np.all(st[c + 1] == bwd[t - 1 - k, 0, 0, 1])
    assert F.stack_indices(t, n, L, bidirectional=True) == ([5, 6, 7], [4, 3, 2])
    with pytest.raises(ValueError, match="even"):
        F.temporal_stack(fwd, t, L=5, bidirectional=True, backward_flows=bwd)
    with pytest.raises(ValueError, match="backward_flows"):
        F.temporal_stack(fwd, t, L=L, bidirectional=True)
    with pytest.raises(ValueError, match="out of range"):
        F.temporal_stack(fwd, 2, L=L, bidirectional=True, backward_flows=bwd)  # needs t >= L/2 = 3


def test_bidirectional_trajectory_and_backward_from_forward():
    flows = np.zeros((6, 10, 12, 2), np.float32)
    flows[..., 0] = 1.25
    bwd = F.backward_from_forward(flows)
    np.testing.assert_allclose(bwd, -flows, atol=1e-5)
    st = F.temporal_stack(flows, 3, L=4, mode="trajectory", bidirectional=True, backward_flows=bwd,
                          mean_subtraction=False)
    np.testing.assert_allclose(st[[0, 2]], 1.25)
    np.testing.assert_allclose(st[[4, 6]], -1.25, atol=1e-5)


def test_out_of_range_start_raises_and_valid_starts():
    flows = const_fields(9)
    assert F.valid_starts(9, 4) == range(0, 6)
    assert F.valid_starts(9, 4, bidirectional=True) == range(2, 8)
    assert len(F.valid_starts(3, 4)) == 0
    F.temporal_stack(flows, 5, L=4)  # last valid start
    for bad in (-1, 6, 100):
        with pytest.raises(ValueError, match="valid starts are 0..5"):
            F.temporal_stack(flows, bad, L=4)
    with pytest.raises(ValueError, match="fewer than"):
        F.temporal_stack(flows, 0, L=10)  # video shorter than L
    assert F.clamp_start(-3, 9, 4) == 0 and F.clamp_start(99, 9, 4) == 5 and F.clamp_start(3, 9, 4) == 3
    assert F.clamp_start(0, 9, 4, bidirectional=True) == 2
    with pytest.raises(ValueError, match="fewer than"):
        F.clamp_start(0, 3, 4)
    with pytest.raises(ValueError, match="mode"):
        F.temporal_stack(flows, 0, L=4, mode="bogus")
    with pytest.raises(ValueError, match="dequantize"):
        F.temporal_stack(F.quantize_flow(flows), 0, L=4)


# ------------------------------------------------------------------------------------------------ colour coding


def _color_of(dx: float, dy: float) -> np.ndarray:
    f = np.zeros((3, 3, 2), np.float32)
    f[1, 1] = (dx, dy)
    return F.flow_to_color(f, max_magnitude=1.0)[1, 1].astype(int)


def test_middlebury_colours():
    r, g, b = _color_of(1, 0)  # rightward: red
    assert r == 255 and g < 60 and b < 80
    r, g, b = _color_of(-1, 0)  # leftward: cyan-blue
    assert r < 40 and g > 150 and b > 200
    r, g, b = _color_of(0, 1)  # downward (+y): orange-yellow
    assert r == 255 and 120 < g < 255 and b < 40
    r, g, b = _color_of(0, -1)  # upward: blue-violet
    assert b == 255 and r > 60 and g < 40
    assert np.all(_color_of(0, 0) == 255)  # zero flow: white
    # half magnitude is paler than full magnitude in the same direction
    assert _color_of(0.5, 0)[1] > _color_of(1, 0)[1]


def test_flow_to_color_normalises_and_wheel_legend():
    f = np.zeros((4, 5, 2), np.float32)
    f[0, 0] = (8, 0)
    f[1, 1] = (4, 0)
    img = F.flow_to_color(f)
    assert img.shape == (4, 5, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img[0, 0], _color_of(1, 0))  # max magnitude -> fully saturated
    wheel = F.color_wheel(65)
    assert wheel.shape == (65, 65, 3) and wheel.dtype == np.uint8
    assert np.all(wheel[32, 32] == 255)  # centre: zero flow
    assert wheel[32, 63, 0] > 200 and wheel[32, 63, 2] < 100  # right edge red
    assert wheel[32, 1, 0] < 60  # left edge cyan-blue
    assert len(F.make_colorwheel()) == 15 + 6 + 4 + 11 + 13 + 6


# ------------------------------------------------------------------------------------------------ EPE, resize


def test_endpoint_error_and_resize_flow():
    gt = np.zeros((4, 6, 2), np.float32)
    est = gt.copy()
    est[..., 0] = 3.0
    est[..., 1] = 4.0
    assert F.endpoint_error(est, gt) == pytest.approx(5.0)
    mask = np.zeros((4, 6), bool)
    mask[0, 0] = True
    est[1:] = 0
    assert F.endpoint_error(est, gt, mask) == pytest.approx(5.0)
    assert F.endpoint_error(est, gt) == pytest.approx(5.0 / 4)
    with pytest.raises(ValueError):
        F.endpoint_error(est, gt[:2])
    f = np.zeros((2, 10, 20, 2), np.float32)
    f[..., 0] = 2.0
    f[..., 1] = 3.0
    r = F.resize_flow(f, (5, 40))  # half height, double width
    assert r.shape == (2, 5, 40, 2)
    np.testing.assert_allclose(r[..., 0], 4.0)
    np.testing.assert_allclose(r[..., 1], 1.5)
    assert F.resize_flow(f[0], (20, 10)).shape == (20, 10, 2)


# ------------------------------------------------------------------------------------------------ estimators


@pytest.mark.parametrize("method,tol", [("tvl1", 0.5), ("dis", 0.5), ("farneback", 1.0)])
def test_estimators_recover_subpixel_shift(method, tol):
    prev = texture(64, 80, seed=7)
    nxt = shifted(prev, 2.3, -1.4)
    flow = F.estimate_flow(prev, nxt, method)
    assert flow.shape == (64, 80, 2) and flow.dtype == np.float32
    gt = np.broadcast_to(np.float32([2.3, -1.4]), flow.shape)
    m = interior(64, 80, 8)
    epe, zero = F.endpoint_error(flow, gt, m), F.endpoint_error(np.zeros_like(flow), gt, m)
    assert epe < tol and epe < zero / 5, (method, epe, zero)


def test_flow_estimator_video_forward_and_backward():
    base = texture(48, 64, seed=3)
    frames = np.stack([shifted(base, 1.5 * i, 0.5 * i) for i in range(3)])
    est = F.FlowEstimator("dis")
    fwd, bwd = est.video(frames), est.video(frames, backward=True)
    assert fwd.shape == bwd.shape == (2, 48, 64, 2)
    m = interior(48, 64, 8)
    for i in range(2):
        assert F.endpoint_error(fwd[i], np.broadcast_to(np.float32([1.5, 0.5]), fwd[i].shape), m) < 0.5
        assert F.endpoint_error(bwd[i], np.broadcast_to(np.float32([-1.5, -0.5]), bwd[i].shape), m) < 0.5
    with pytest.raises(ValueError, match="at least 2"):
        est.video(frames[:1])


def test_estimator_bad_names():
    with pytest.raises(ValueError, match="tvl1, tvl1-torch, farneback, dis, gt"):
        F.FlowEstimator("brox")
    with pytest.raises(ValueError, match="load_gt_flow"):
        F.estimate_flow(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8), "gt")
    with pytest.raises(ValueError, match="warps"):
        F.FlowEstimator("tvl1", warp=3)
    with pytest.raises(ValueError, match="preset"):
        F.FlowEstimator("dis", preset="slow")
    assert F.FlowEstimator("tvl1", warps=5).params["warps"] == 5
    assert F.FLOW_METHODS == ("tvl1", "tvl1-torch", "farneback", "dis", "gt")
    with pytest.raises(ValueError, match="warps"):
        F.FlowEstimator("tvl1-torch", warp=3)
    assert F.FlowEstimator("tvl1-torch", warps=5, device="cpu").params["warps"] == 5


# ------------------------------------------------------------------------------------------------ ground truth


def test_load_gt_flow_good_and_bad(tmp_path: Path):
    video = tmp_path / "v_X_g01_c01.avi"
    with pytest.raises(F.FlowFileError, match="v_X_g01_c01.flow.npz"):
        F.load_gt_flow(video)
    good = np.random.default_rng(0).normal(size=(4, 6, 8, 2)).astype(np.float16)
    np.savez_compressed(tmp_path / "v_X_g01_c01.flow.npz", flow=good)
    out = F.load_gt_flow(video, num_frames=5, size=(6, 8))
    assert out.dtype == np.float32 and out.shape == (4, 6, 8, 2)
    with pytest.raises(F.FlowFileError, match="expected 9"):
        F.load_gt_flow(video, num_frames=10)
    np.savez(tmp_path / "v_X_g01_c01.flow.npz", flow=good[..., :1])
    with pytest.raises(ValueError, match=r"v_X_g01_c01\.flow\.npz.*shape"):
        F.load_gt_flow(video)
    np.savez(tmp_path / "v_X_g01_c01.flow.npz", other=good)
    with pytest.raises(F.FlowFileError, match="no array 'flow'"):
        F.load_gt_flow(video)
    (tmp_path / "v_X_g01_c01.flow.npz").write_bytes(b"not a zip file")
    with pytest.raises(F.FlowFileError, match="v_X_g01_c01.flow.npz"):
        F.load_gt_flow(video)


# ------------------------------------------------------------------------------------------------ lab clips


def test_estimators_on_lab_clip_beat_zero_flow(request):
    """TV-L1 and DIS against the lab renderer's ground truth (needs the ``lab_root_tiny`` fixture of conftest)."""
    try:
        root = Path(request.getfixturevalue("lab_root_tiny"))
    except pytest.FixtureLookupError:
        pytest.skip("fixture lab_root_tiny (tests/conftest.py) not available")
    from twostream_lib.video import read_video

    gts = sorted(root.rglob("*.flow.npz"))[:60]
    assert gts, f"no *.flow.npz ground truth under {root}"
    # the clip with the most motion (a small figure barely moving leaves mostly sensor noise to score)
    motion = [np.linalg.norm(F.load_gt_flow(g), axis=-1).mean() for g in gts]
    gt_file = gts[int(np.argmax(motion))]
    video = gt_file.with_name(gt_file.name[: -len(".flow.npz")] + ".avi")
    frames = read_video(video)
    gt = F.load_gt_flow(video, num_frames=len(frames), size=frames.shape[1:3])
    # the 3 pairs with the most motion
    pairs = np.argsort(-np.linalg.norm(gt, axis=-1).mean(axis=(1, 2)))[:3]
    h, w = frames.shape[1:3]
    m = interior(h, w, max(2, min(h, w) // 12))
    zero = np.mean([F.endpoint_error(np.zeros_like(gt[i]), gt[i], m) for i in pairs])
    assert zero > 0.05, f"{video}: ground truth has almost no motion ({zero:.3f} px)"
    for method in ("tvl1", "dis"):
        est = F.FlowEstimator(method)
        epe = np.mean([F.endpoint_error(est(frames[i], frames[i + 1]), gt[i], m) for i in pairs])
        assert epe < 0.5 * zero, (method, str(video), epe, zero)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_trajectory_mean_subtraction_subtracts_each_fields_own_mean(bidirectional):
    """§3.1: 'from each displacement field we subtract its mean vector'. Trajectory stacking samples field k along
    the trajectory, and the resampled channel's mean is not the field's (here by up to a pixel)."""
    rng = np.random.default_rng(0)
    n, h, w, L = 8, 24, 32, 4
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    flows = np.stack([np.stack([3 * np.sin(xx / 5 + k) + 1.5, 2 * np.cos(yy / 4 - k) - 0.5], -1)
                      for k in range(n)]).astype(np.float32) + rng.normal(0, 0.1, (n, h, w, 2)).astype(np.float32)
    back = F.backward_from_forward(flows) if bidirectional else None
    kw = dict(t=4, L=L, mode="trajectory", bidirectional=bidirectional, backward_flows=back)
    raw = F.temporal_stack(flows, mean_subtraction=False, **kw)
    got = F.temporal_stack(flows, mean_subtraction=True, **kw)
    fwd, bwd = F.stack_indices(4, n, L, bidirectional)
    fields = [flows[i] for i in fwd] + ([back[i] for i in bwd] if bidirectional else [])
    means = np.array([f.reshape(-1, 2).mean(0) for f in fields], np.float32).reshape(2 * L, 1, 1)
    np.testing.assert_allclose(got, raw - means, atol=1e-5)
    resampled = raw.mean(axis=(1, 2), keepdims=True)
    assert np.abs(resampled - means).max() > 0.05  # the old rule (the channel's own mean) would differ
    # optical flow stacking reads each field where it is: there the two means are one
    st = F.temporal_stack(flows, t=4, L=L, mean_subtraction=True)
    np.testing.assert_allclose(st.mean(axis=(1, 2)), 0, atol=1e-5)
