"""device_loader: batches built with batched decoding + tensor ops equal the CPU path's samples.

On CPU both paths decode with libjpeg-turbo (OpenCV's and torchvision's builds agree bit for bit on the cache's
JPEGs: checked here), so every temporal variant is compared exactly; the spatial stream's RGB jitter takes a
whole-crop mean whose float32 summation order differs (numpy pairwise vs torch), < 1e-5.
The CUDA tests run the same comparisons on the GPU: exact (float32 rounding for the jitter mean) with the
JPEGs decoded on the CPU, and within the measured nvJPEG-vs-libjpeg-turbo difference with nvJPEG.
"""
import json

import cv2
import numpy as np
import pytest
import torch
import torchvision

from twostream_lib.data import (MultiTaskDataset, SeededSamples, SpatialDataset, TemporalDataset, VideoCache,
                                sample_seeds)
from twostream_lib.device_loader import (DeviceLoader, _pack, _unpack, crop_flip, decode_jpegs,
                                         quantised_field_means, remap_bilinear)
from twostream_lib.flow import dequantize_flow
from twostream_lib.checkpoint import load_checkpoint
from twostream_lib.config import TrainConfig
from twostream_lib.prepare import prepare
from twostream_lib.train import train
from twostream_lib.video import write_video

CLASSES = ["PanLeft", "PanRight"]
STEP = 2 * 20.0 / 255  # one grey level of quantised flow at bound 20, in px


def _clip(seed: int, t: int, h: int, w: int, speed: float) -> np.ndarray:
    """A textured scene panning at ``speed`` px/frame with a bright square moving the other way (varied flow,
    so that trajectories and means are not trivial)."""
    rng = np.random.default_rng(seed)
    pad = int(abs(speed) * t) + 8
    tex = cv2.resize(rng.integers(0, 255, ((h + 2 * pad) // 4, (w + 2 * pad) // 4), dtype=np.uint8),
                     (w + 2 * pad, h + 2 * pad), interpolation=cv2.INTER_CUBIC)
    frames = []
    for i in range(t):
        dx = int(round(pad + speed * i))
        g = tex[pad:pad + h, dx:dx + w].copy()
        x = int(w / 2 - speed * 1.5 * i) % (w - 12)
        g[h // 3:h // 3 + 12, x:x + 12] = 230
        frames.append(np.stack([g, (g * 0.7 + 40).astype(np.uint8), (255 - g // 2).astype(np.uint8)], -1))
    return np.stack(frames)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A UCF-101-layout root of 6 clips in two frame sizes, prepared with DIS flow, forward and backward."""
    root = tmp_path_factory.mktemp("dl_ucf")
    lists = root / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(CLASSES, 1)))
    rels = []
    for ci, c in enumerate(CLASSES):
        for g in (1, 2, 3):
            h, w, t = (48, 64, 14) if g < 3 else (56, 72, 13)  # two frame sizes: batches mix them
            rel = f"{c}/v_{c}_g{g:02d}_c01.avi"
            write_video(root / "UCF-101" / rel, _clip(10 * ci + g, t, h, w, (-1.3 if ci == 0 else 0.8) * g))
            rels.append((rel, ci + 1))
    for s in (1, 2, 3):
        (lists / f"trainlist0{s}.txt").write_text("".join(f"{r} {i}\n" for r, i in rels[1:]))
        (lists / f"testlist0{s}.txt").write_text(rels[0][0] + "\n")
    c = tmp_path_factory.mktemp("dl_cache") / "c"
    m = prepare("ucf101", root, c, flow="dis", short_side=None, backward=True, progress=False)
    assert m["num_videos"] == 6 and not m["failed"]
    return root, c


@pytest.fixture(scope="module")
def cache(prepared):
    return prepared[1]


def _items(cache):
    vc = VideoCache(cache)
    return [(v, int("PanRight" in v)) for v in vc.video_ids]


def _cpu_path(ds, idx, seed):
    """What a DataLoader with num_workers=0 over ``idx`` yields after ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    out = [ds[i] for i in idx]
    return torch.stack([o[0] for o in out]), torch.tensor([o[1] for o in out])


def _device_path(ds, idx, seed, batch=5, **kw):
    dl = DeviceLoader(ds, idx, batch, generator=torch.Generator().manual_seed(seed), **kw)
    batches = list(dl)
    assert len(batches) == len(dl) == len(idx) // batch - kw.get("start", 0)
    return [torch.cat([b[k] for b in batches]).cpu() for k in range(len(batches[0]))]


def _order(ds, n=20, seed=0):
    return np.random.default_rng(seed).integers(0, len(ds), n).tolist()


def _all_jpegs(cache, streams):
    vc = VideoCache(cache)
    for vid in vc.video_ids:
        idx = json.loads((vc.root / "videos" / vid / "index.json").read_text())["offsets"]
        for stream in streams:
            blob = (vc.root / "videos" / vid / f"{stream}.bin").read_bytes()
            o = idx[stream]
            for i in range(len(o) - 1):
                yield stream, blob[o[i]:o[i + 1]]


# ------------------------------------------------------------------------------------------------ building blocks
def test_decoders_agree_bit_for_bit(cache):
    """torchvision's libjpeg-turbo (the device path on CPU) and OpenCV's (the CPU path) decode every flow JPEG
    and every RGB frame of the cache to the same pixels."""
    n = 0
    for stream, b in _all_jpegs(cache, ["flow_x", "flow_y", "flow_bx", "flow_by", "rgb"]):
        gray = stream != "rgb"
        ours = decode_jpegs([torch.frombuffer(bytearray(b), dtype=torch.uint8)], gray=gray)[0].numpy()
        ref = cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR)
        ref = ref[None] if gray else cv2.cvtColor(ref, cv2.COLOR_BGR2RGB).transpose(2, 0, 1)
        assert np.array_equal(ours, ref), f"{stream}: max diff {np.abs(ours.astype(int) - ref).max()}"
        n += 1
    assert n > 300


def test_decode_threads_same_result(cache):
    data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for _, b in _all_jpegs(cache, ["flow_x"])][:40]
    one, two = decode_jpegs(data, True, threads=1), decode_jpegs(data, True, threads=3)
    assert len(one) == len(two) == 40 and all(torch.equal(a, b) for a, b in zip(one, two))
    with pytest.warns(DeprecationWarning):  # the public function: same pixels (with a warning per call)
        public = torchvision.io.decode_jpeg(data, mode=torchvision.io.ImageReadMode.GRAY)
    assert all(torch.equal(a, b) for a, b in zip(one, public))


@pytest.mark.parametrize("stream", ["flow_x", "rgb"])
def test_decode_cpu_share_same_images(cache, stream):
    """Part of the batch decoded in CPU threads (cpu_share), packed into one buffer and unpacked: same images."""
    data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for _, b in _all_jpegs(cache, [stream])][:30]
    gray = stream != "rgb"
    ref = decode_jpegs(data, gray)
    for share in (0.3, 1.0):
        got = decode_jpegs(data, gray, threads=2, cpu_share=share)
        assert len(got) == 30 and all(torch.equal(a, b) for a, b in zip(ref, got))
    flat, shapes = _pack(ref)
    assert flat.is_contiguous() and all(torch.equal(a, b) for a, b in zip(ref, _unpack(flat, shapes)))


def test_remap_bilinear_is_cv2_remap():
    rng = np.random.default_rng(0)
    h, w = 29, 41
    f = (rng.standard_normal((h, w, 2)) * 6).astype(np.float32)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    px = np.clip(xs + rng.uniform(-4, 4, (h, w)), 0, w - 1).astype(np.float32)
    py = np.clip(ys + rng.uniform(-4, 4, (h, w)), 0, h - 1).astype(np.float32)
    px[0, :8] = np.arange(8) / 64 + 3  # positions on the 1/32 grid and half-way between (rounding ties)
    ref = cv2.remap(f, px, py, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    got = remap_bilinear(torch.from_numpy(f).permute(2, 0, 1)[None], torch.from_numpy(px)[None],
                         torch.from_numpy(py)[None])
    assert torch.equal(got[0].permute(1, 2, 0), torch.from_numpy(ref))


def test_quantised_field_means_exact_both_ways():
    """Histogram (CPU default) and float64 sum (CUDA default) give numpy's float64 mean, bit for bit."""
    q = torch.randint(0, 256, (3, 4, 33, 47), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    q[0, 0] = 128  # a constant field
    ref = dequantize_flow(q.numpy(), 20.0).mean(axis=(2, 3), dtype=np.float64).astype(np.float32)
    for histogram in (True, False):
        assert np.array_equal(quantised_field_means(q, 20.0, histogram).numpy(), ref)


def test_crop_flip():
    x = torch.arange(2 * 3 * 6 * 7).view(2, 3, 6, 7)
    got = crop_flip(x, torch.tensor([1, 2]), torch.tensor([3, 0]), torch.tensor([False, True]), 4)
    assert torch.equal(got[0], x[0, :, 1:5, 3:7])
    assert torch.equal(got[1], x[1, :, 2:6, 0:4].flip(-1))


# ------------------------------------------------------------------------------------------------ equivalence
@pytest.mark.parametrize("stacking", ["stacking", "trajectory"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("mean_subtraction", [True, False])
def test_temporal_same_as_cpu_path(cache, stacking, bidirectional, mean_subtraction):
    ds = TemporalDataset(cache, _items(cache), crop_size=40, L=6, stacking=stacking, bidirectional=bidirectional,
                         mean_subtraction=mean_subtraction)
    idx = _order(ds)
    x, y = _cpu_path(ds, idx, seed=3)
    dx, dy = _device_path(ds, idx, seed=3, device="cpu")
    assert torch.equal(dy, y)
    assert dx.shape == x.shape == (20, 12, 40, 40) and dx.dtype == torch.float32
    assert torch.equal(dx, x), f"max diff {(dx - x).abs().max():.3g} px"
    gen = torch.Generator().manual_seed(3)
    flips = [ds.draw(i, gen).flip for i in idx]
    assert 0 < sum(flips) < len(flips)  # both flipped and unflipped samples were compared


def test_temporal_l10_and_synchronous_mode(cache):
    """L = 10 (the paper's), no flip, and prefetch=0 (no threads) give the same batches."""
    ds = TemporalDataset(cache, _items(cache), crop_size=40, L=10, flip=False)
    idx = _order(ds, 12, seed=1)
    x, _ = _cpu_path(ds, idx, seed=7)
    for prefetch in (0, 1, 3):
        assert torch.equal(_device_path(ds, idx, seed=7, batch=4, device="cpu", prefetch=prefetch)[0], x)
    assert torch.equal(_device_path(ds, idx, seed=7, batch=4, device="cpu", cpu_decode_share=0.5,
                                    decode_threads=2)[0], x)


@pytest.mark.parametrize("jitter", [0.0, 0.2])
def test_spatial_same_as_cpu_path(cache, jitter):
    ds = SpatialDataset(cache, _items(cache), crop_size=40, jitter=jitter)
    idx = _order(ds)
    x, y = _cpu_path(ds, idx, seed=11)
    dx, dy = _device_path(ds, idx, seed=11, device="cpu")
    assert torch.equal(dy, y) and dx.shape == (20, 3, 40, 40)
    if jitter == 0:
        assert torch.equal(dx, x)
    else:  # the contrast step's whole-crop mean: float32 sums in another order
        assert (dx - x).abs().max() < 1e-5


def test_multitask_mixed_sizes_and_task_ids(cache):
    items = _items(cache)
    small = [it for it in items if VideoCache(cache).frame_size(it[0]) == (48, 64)]
    large = [it for it in items if it not in small]
    mt = MultiTaskDataset([TemporalDataset(cache, small, crop_size=40, L=6, stacking="trajectory"),
                           TemporalDataset(cache, large, crop_size=40, L=6, stacking="trajectory")])
    idx = _order(mt, 15, seed=2)
    torch.manual_seed(5)
    ref = [mt[i] for i in idx]
    x, y, task = _device_path(mt, idx, seed=5, device="cpu")
    assert torch.equal(x, torch.stack([r[0] for r in ref]))
    assert y.tolist() == [r[1] for r in ref] and task.tolist() == [r[2] for r in ref]
    assert 0 < task.sum() < len(idx)  # both sizes in the batches


def test_start_skips_batches_but_not_draws(cache):
    ds = TemporalDataset(cache, _items(cache), crop_size=40, L=6)
    idx = _order(ds, 20)
    full = _device_path(ds, idx, seed=9, device="cpu")[0]
    tail = _device_path(ds, idx, seed=9, device="cpu", start=2)[0]
    assert torch.equal(tail, full[10:])


def test_rejects_test_mode_and_mixed_streams(cache):
    items = _items(cache)
    with pytest.raises(ValueError, match="training batches"):
        DeviceLoader(TemporalDataset(cache, items, mode="test", crop_size=40, L=6), [0], 1, device="cpu")
    mixed = torch.utils.data.ConcatDataset([TemporalDataset(cache, items, crop_size=40, L=1),
                                            SpatialDataset(cache, items, crop_size=40)])
    with pytest.raises(ValueError):
        DeviceLoader(mixed, [0], 1, device="cpu")
    with pytest.raises(TypeError, match="unsupported dataset"):
        DeviceLoader(torch.utils.data.TensorDataset(torch.zeros(3)), [0], 1, device="cpu")


def test_error_in_background_thread_is_raised(cache):
    ds = TemporalDataset(cache, _items(cache), crop_size=40, L=6)
    with pytest.raises(IndexError):
        list(DeviceLoader(ds, [0, 1, 999, 2], 2, device="cpu"))


# ------------------------------------------------------------------------------------------------ CUDA
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("stacking", ["stacking", "trajectory"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("mean_subtraction", [True, False])
def test_cuda_tensor_ops_same_as_cpu_path(cache, stacking, bidirectional, mean_subtraction):
    """The GPU's tensor ops on the same decoded pixels (decode_device='cpu'): the CPU path's values. Trajectory
    means are float64 sums of arbitrary floats, in another order on the GPU: 1e-5 px."""
    ds = TemporalDataset(cache, _items(cache), crop_size=40, L=6, stacking=stacking, bidirectional=bidirectional,
                         mean_subtraction=mean_subtraction)
    idx = _order(ds)
    x, y = _cpu_path(ds, idx, seed=3)
    for kw in ({"decode_device": "cpu"}, {"cpu_decode_share": 1.0, "decode_threads": 2}):
        dx, dy = _device_path(ds, idx, seed=3, device="cuda", **kw)  # (decoded on CPU: nvJPEG isn't involved)
        assert torch.equal(dy, y)
        if stacking == "stacking":
            assert torch.equal(dx, x), f"{kw}: max diff {(dx - x).abs().max():.3g} px"
        else:
            assert (dx - x).abs().max() <= 1e-5, kw


def _nvjpeg_vs_libjpeg(cache, streams):
    """|difference| in levels between nvJPEG and OpenCV over the cache's JPEGs of ``streams``: max, mean, 99.9th
    percentile."""
    blobs = [(s, b) for s, b in _all_jpegs(cache, streams)]
    gray = streams[0] != "rgb"
    ours = decode_jpegs([torch.frombuffer(bytearray(b), dtype=torch.uint8) for _, b in blobs], gray, "cuda")
    hist = np.zeros(256, np.int64)
    for (_, b), o in zip(blobs, ours):
        ref = cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR)
        ref = ref[None] if gray else cv2.cvtColor(ref, cv2.COLOR_BGR2RGB).transpose(2, 0, 1)
        hist += np.bincount(np.abs(o.cpu().numpy().astype(int) - ref).ravel(), minlength=256)
    cum = np.cumsum(hist) / hist.sum()
    return int(np.flatnonzero(hist)[-1]), float((hist * np.arange(256)).sum() / hist.sum()), \
        int(np.searchsorted(cum, 0.999))


@pytest.mark.cuda
@cuda
def test_cuda_nvjpeg_difference_is_small(cache):
    """nvJPEG's IDCT isn't libjpeg-turbo's: a few levels here and there on the flow JPEGs (measured, printed).
    The RGB bound only catches gross errors (channel order, colour space): chroma upsampling may differ."""
    worst, mean, p999 = _nvjpeg_vs_libjpeg(cache, ["flow_x", "flow_y", "flow_bx", "flow_by"])
    print(f"nvJPEG vs libjpeg-turbo, flow JPEGs: max {worst} levels ({worst * STEP:.3f} px), 99.9% <= {p999}, "
          f"mean {mean:.4f}")
    assert worst <= 8 and p999 <= 2 and mean <= 0.5
    worst, mean, p999 = _nvjpeg_vs_libjpeg(cache, ["rgb"])
    print(f"nvJPEG vs libjpeg-turbo, RGB JPEGs: max {worst} levels, 99.9% <= {p999}, mean {mean:.4f}")
    assert mean <= 4.0


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("bidirectional", [False, True])
def test_cuda_nvjpeg_same_as_cpu_path_within_decoder_rounding(cache, bidirectional):
    """End to end on the GPU (nvJPEG): optical-flow stacking is within the decoders' level difference (twice:
    the pixel and the field's mean); trajectory stacking amplifies it where the flow has edges, so only its
    mean difference is bounded."""
    worst = _nvjpeg_vs_libjpeg(cache, ["flow_x", "flow_y", "flow_bx", "flow_by"])[0]
    for stacking in ("stacking", "trajectory"):
        ds = TemporalDataset(cache, _items(cache), crop_size=40, L=6, stacking=stacking,
                             bidirectional=bidirectional)
        idx = _order(ds)
        x, y = _cpu_path(ds, idx, seed=3)
        dx, dy = _device_path(ds, idx, seed=3, device="cuda")
        assert torch.equal(dy, y)
        d = (dx - x).abs()
        print(f"{stacking}, bidirectional={bidirectional}: max {d.max():.4f} px, mean {d.mean():.5f} px")
        if stacking == "stacking":
            assert d.max() <= 2 * worst * STEP + 1e-4
            # half the JPEGs decoded by libjpeg-turbo (each field by one decoder): each channel is x's or dx's
            half = _device_path(ds, idx, seed=3, device="cuda", cpu_decode_share=0.5, decode_threads=2)[0]
            per_channel = torch.minimum((half - x).abs().amax(dim=(2, 3)), (half - dx).abs().amax(dim=(2, 3)))
            assert per_channel.max() <= 1e-4
        else:
            assert d.mean() <= max(worst, 1) * STEP


@pytest.mark.cuda
@cuda
def test_cuda_spatial_and_multitask(cache):
    ds = SpatialDataset(cache, _items(cache), crop_size=40, jitter=0.2)
    idx = _order(ds)
    x, y = _cpu_path(ds, idx, seed=11)
    dx, dy = _device_path(ds, idx, seed=11, device="cuda", decode_device="cpu")
    assert torch.equal(dy, y) and (dx - x).abs().max() < 1e-5
    dx, _ = _device_path(ds, idx, seed=11, device="cuda")  # nvJPEG: chroma upsampling may differ at edges
    print(f"spatial, nvJPEG: mean |diff| {(dx - x).abs().mean():.4f} (normalised units; 1 level ~ 0.017)")
    assert (dx - x).abs().mean() < 0.1
    items = _items(cache)
    mt = MultiTaskDataset([TemporalDataset(cache, items[:3], crop_size=40, L=6),
                           TemporalDataset(cache, items[3:], crop_size=40, L=6)])
    idx = _order(mt, 15, seed=2)
    torch.manual_seed(5)
    ref = [mt[i] for i in idx]
    x, y, task = _device_path(mt, idx, seed=5, device="cuda", decode_device="cpu")
    assert torch.equal(x, torch.stack([r[0] for r in ref])) and task.tolist() == [r[2] for r in ref]


# ------------------------------------------------------------------ the same samples whichever loader builds them
def _seeded_cpu_path(ds, idx, seeds, workers):
    dl = torch.utils.data.DataLoader(SeededSamples(ds), batch_size=5, sampler=list(zip(idx, seeds)),
                                     num_workers=workers, drop_last=True, generator=torch.Generator())
    return [torch.cat(parts) for parts in zip(*dl)]


@pytest.mark.parametrize("multitask", [False, True])
def test_per_sample_seeds_same_batches_any_loader_and_workers(cache, multitask):
    """DataLoader over SeededSamples with 0 or 2 workers and DeviceLoader(seeds=) build the same batches, and
    leave torch's global RNG (dropout's) where it was."""
    ds = TemporalDataset(cache, _items(cache), crop_size=40, L=6, stacking="trajectory", mean_subtraction=True)
    if multitask:
        ds = MultiTaskDataset([ds, TemporalDataset(cache, _items(cache)[:3], crop_size=40, L=6,
                                                   stacking="trajectory", mean_subtraction=True)])
    idx = _order(ds, 20)
    seeds = sample_seeds(12345, range(100, 120))
    torch.manual_seed(3)
    before = torch.random.get_rng_state()
    w0 = _seeded_cpu_path(ds, idx, seeds, workers=0)
    assert torch.equal(torch.random.get_rng_state(), before)
    w2 = _seeded_cpu_path(ds, idx, seeds, workers=2)
    dev = [torch.cat(parts) for parts in zip(*DeviceLoader(ds, idx, 5, seeds=seeds, device="cpu"))]
    assert torch.equal(torch.random.get_rng_state(), before)
    for a, b, c in zip(w0, w2, dev):
        assert torch.equal(a, b) and torch.equal(a, c)
    # a sample's draw depends on its seed only: the last 10 samples alone, in another batch, are the same
    tail = _seeded_cpu_path(ds, idx[10:], seeds[10:], workers=0)
    assert torch.equal(tail[0], w0[0][10:])
    with pytest.raises(ValueError, match="one seed per index"):
        DeviceLoader(ds, idx, 5, seeds=seeds[:3], device="cpu")


def test_train_same_weights_with_either_loader_any_workers_and_across_a_resume(prepared, tmp_path):
    """Through train(): loader cpu with 0 and 2 workers and loader device end with the same weights (dropout and
    the random draws included), and so does a run whose first chunk used one loader and whose resume another."""
    root, c = prepared
    base = dict(name="t", stream="temporal", datasets=["ucf101"], roots=[str(root)], caches=[str(c)], crop_size=44,
                L=6, stacking="trajectory", width=0.125, dropout=0.5, batch_size=4, lr=0.01, lr_steps=[20],
                max_iters=12, ckpt_every=6, val_every=0, val_fraction=0.0, log_every=6, tensorboard=False,
                device="cpu", val_frames=2)

    def run(name, **kw):
        cfg = TrainConfig(**{**base, "out_dir": str(tmp_path / name), **kw}).validate()
        train(cfg, progress=False)
        return load_checkpoint(tmp_path / name / "last.pt")["model"]

    ref = run("cpu0", loader="cpu", workers=0)
    for name, kw in {"cpu2": dict(loader="cpu", workers=2), "device": dict(loader="device")}.items():
        other = run(name, **kw)
        assert all(torch.equal(ref[k], other[k]) for k in ref), name
    run("mixed", loader="device", max_iters=6)  # first chunk on the device loader, then resumed on the CPU one
    resumed = run("mixed", loader="cpu", workers=2, resume=True)
    assert all(torch.equal(ref[k], resumed[k]) for k in ref)
