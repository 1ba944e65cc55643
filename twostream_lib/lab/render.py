"""Rendering a lab clip and its exact forward optical flow.

Forward kinematics turns an action's channels into limb parts; a scene places them (with props) in world pixels
over a textured background, with a camera that may pan, zoom or shake; the renderer draws each frame and, for
every pixel, where its surface point is in the next frame: the ground-truth flow.

Clips are rendered with :func:`render_clip`. The drawing primitives below it are public, for other images drawn in
the lab's look (:mod:`twostream_lib.lab.stills` draws its still images with them): the two datasets' styles
(:data:`STYLE`), textured backgrounds (:func:`background`), the limb texture atlas (:func:`tileable_noise`), a
scene of textured parts under a camera (:class:`Part`, :class:`Scene`; a clip's: :func:`build_scene`), and its
frames with their exact forward flow (:func:`render_scene`).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .classes import CLASS_ACTION, FPS
from .motions import ACTIONS, BODY, PI, rand_color
from .specs import ClipSpec, clip_rng

__all__ = ["render_clip", "STYLE", "Part", "Scene", "background", "tileable_noise", "build_scene", "render_scene"]

# --------------------------------------------------------------------------------------------
# Forward kinematics: channels -> parts (x, y, angle arrays over T; length L; radius r)
# --------------------------------------------------------------------------------------------
_FIG_ORDER = ("thigh_l", "shin_l", "thigh_r", "shin_r", "torso", "head", "upper_l", "fore_l", "upper_r", "fore_r")


def _dir(a):
    return np.sin(a), np.cos(a)


def _skeleton(ch: dict) -> tuple[dict, dict]:
    """Forward kinematics. Returns (parts, joints) in figure units, grounded (y=0 is the floor)."""
    B = BODY
    w = ch["width"]
    hx, hy = ch["root_x"].astype(float), np.zeros_like(ch["root_x"], dtype=float)
    ta = ch["torso"]
    tdx, tdy = _dir(ta)
    px, py = _dir(ta + PI / 2)
    parts: dict[str, tuple] = {}
    J: dict[str, tuple] = {}
    parts["torso"] = (hx, hy, ta, B["torso"], B["r_torso"] * (0.8 + 0.2 * float(np.mean(w))))
    nx, ny = hx + B["torso"] * tdx, hy + B["torso"] * tdy
    ha = ta + ch["head"]
    hdx, hdy = _dir(ha)
    parts["head"] = (nx + (B["head_r"] + 0.02) * hdx, ny + (B["head_r"] + 0.02) * hdy, ha, 0.0, B["head_r"])
    sx, sy = hx + 0.9 * B["torso"] * tdx, hy + 0.9 * B["torso"] * tdy
    J["hip"], J["neck"] = (hx, hy), (nx, ny)
    for s, sg in (("l", 1), ("r", -1)):
        ox, oy = sx + sg * B["shoulder"] * w * px, sy + sg * B["shoulder"] * w * py
        a1 = ch[f"arm_{s}"]
        ex, ey = ox + B["upper"] * np.sin(a1), oy + B["upper"] * np.cos(a1)
        a2 = a1 + ch[f"elb_{s}"]
        parts[f"upper_{s}"] = (ox, oy, a1, B["upper"], B["r_upper"])
        parts[f"fore_{s}"] = (ex, ey, a2, B["fore"], B["r_fore"])
        J[f"hand_{s}"] = (ex + B["fore"] * np.sin(a2), ey + B["fore"] * np.cos(a2))
        qx, qy = hx + sg * B["hip"] * w * px, hy + sg * B["hip"] * w * py
        l1 = ch[f"leg_{s}"]
        kx, ky = qx + B["thigh"] * np.sin(l1), qy + B["thigh"] * np.cos(l1)
        l2 = l1 + ch[f"kne_{s}"]
        parts[f"thigh_{s}"] = (qx, qy, l1, B["thigh"], B["r_thigh"])
        parts[f"shin_{s}"] = (kx, ky, l2, B["shin"], B["r_shin"])
        J[f"foot_{s}"] = (kx + B["shin"] * np.sin(l2), ky + B["shin"] * np.cos(l2))
    # Grounding: the lowest point of the body touches the floor (minus a lift for jumps),
    # or (pull-ups) the hands hang from a fixed bar with the feet just off the floor.
    low = np.max([np.maximum(y, y + L * np.cos(a)) + r for (x, y, a, L, r) in parts.values()], axis=0)
    if ch.get("anchor") == "hands":
        hand_y = (J["hand_l"][1] + J["hand_r"][1]) / 2
        bar = -np.max(low - hand_y) - 0.03
        shift = bar - hand_y
    else:
        shift = -low - ch["lift"]
    parts = {k: (x, y + shift, a, L, r) for k, (x, y, a, L, r) in parts.items()}
    J = {k: (x, y + shift) for k, (x, y) in J.items()}
    return parts, J


# --------------------------------------------------------------------------------------------
# Textures and styles
# --------------------------------------------------------------------------------------------
# lab-hmdb is rendered in another style and is harder, as HMDB-51's movie and web footage is: stronger noise, lower
# contrast, a moving camera in most clips, and wider ranges of figure size, speed and amplitude.
#: each dataset's rendering style, ``{"lab-ucf" | "lab-hmdb": {setting: value}}``: limb ``shape``
#: (``"capsule"`` | ``"ellipse"``), ``(lo, hi)`` ranges of colour saturation ``sat`` and value ``val`` (0..1), sensor
#: ``noise`` std (grey levels), limb texture ``limb_contrast``, figure height ``fig_scale`` (fraction of the frame),
#: ``speed`` and ``amp`` (amplitude) factors; ``cam_p`` (probability of camera motion), ``backgrounds`` (wall kinds
#: of :func:`background`) and ``stripes`` (weight of striped limb texture).
STYLE = {
    "lab-ucf": dict(shape="capsule", sat=(0.45, 0.9), val=(0.55, 1.0), noise=(1.5, 4.0), cam_p=0.33,
                    backgrounds=("noise", "blobs", "stripes", "tiles"), limb_contrast=(0.35, 0.6), stripes=0.0,
                    fig_scale=(0.6, 0.78), speed=(0.75, 1.3), amp=(0.8, 1.15)),
    "lab-hmdb": dict(shape="ellipse", sat=(0.12, 0.45), val=(0.3, 0.75), noise=(3.0, 7.0), cam_p=0.8,
                     backgrounds=("wallpaper", "bricks", "noise_muted"), limb_contrast=(0.25, 0.5), stripes=0.6,
                     fig_scale=(0.4, 0.72), speed=(0.55, 1.6), amp=(0.65, 1.25)),
}


def _octaves(rng, h, w, sigmas=(1.0, 3.0, 8.0), weights=(0.5, 0.8, 1.0)) -> np.ndarray:
    out = np.zeros((h, w), np.float32)
    for s, wt in zip(sigmas, weights):
        n = rng.standard_normal((h, w)).astype(np.float32)
        n = cv2.GaussianBlur(n, (0, 0), s)
        out += wt * n / (n.std() + 1e-6)
    return out / (out.std() + 1e-6)


def tileable_noise(rng: np.random.Generator, n: int = 64, sigma: float = 2.0) -> np.ndarray:
    """Periodic band-limited noise: the limb texture atlas (:attr:`Scene.atlas`).

    Args:
        rng: the random source.
        n: side of the (square) tile, pixels.
        sigma: the Gaussian blur's standard deviation, pixels (larger: coarser texture).
    Returns:
        ``(n, n)`` float32, zero mean, unit std, periodic in both axes (it tiles without seams).
    """
    white = rng.standard_normal((n, n))
    f = np.fft.fftfreq(n)
    g = np.exp(-(f[:, None] ** 2 + f[None, :] ** 2) * (2 * PI * sigma) ** 2 / 2)
    out = np.real(np.fft.ifft2(np.fft.fft2(white) * g))
    return ((out - out.mean()) / (out.std() + 1e-9)).astype(np.float32)


def _mix(n, c0, c1):
    a = np.clip(0.5 + 0.3 * n, 0, 1)[..., None]
    return c0 * (1 - a) + c1 * a


def background(rng: np.random.Generator, kind: str, h: int, w: int, unit: float, style: dict) -> np.ndarray:
    """A random textured background (a wall or a floor) with random colours.

    Args:
        rng: the random source.
        kind: ``"noise"``, ``"noise_muted"``, ``"blobs"``, ``"stripes"``, ``"tiles"``, ``"wallpaper"``,
            ``"bricks"`` (walls), ``"water"`` or ``"court"`` (a pool's water, a court's wooden floor).
        h, w: its size, pixels.
        unit: pixels per pixel of the ``small`` lab scale (``W / 128``), so that textures keep their look at
            every scale.
        style: one of :data:`STYLE` (its colour ranges ``sat`` and ``val``).
    Returns:
        ``(h, w, 3)`` float32 RGB in 0..255, band-limited (no energy near Nyquist: sub-pixel motion does not alias).
    """
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / unit
    sat, val = style["sat"], style["val"]
    c0 = rand_color(rng, (0, 1), (sat[0] * 0.6, sat[1] * 0.8), val)
    c1 = rand_color(rng, (0, 1), (sat[0] * 0.6, sat[1] * 0.8), val)
    grain = _octaves(rng, h, w, sigmas=(max(1.0 * unit, 1.0), 2.5 * unit), weights=(1.0, 0.7))
    if kind in ("noise", "noise_muted"):
        n = _octaves(rng, h, w, sigmas=(1.2 * unit, 3.5 * unit, 10 * unit))
        img = _mix(n, c0, c1)
        if kind == "noise_muted":
            img = 0.6 * img + 0.4 * img.mean()
    elif kind == "blobs":
        img = np.zeros((h, w, 3), np.float32) + c0
        for _ in range(int(h * w / (60 * unit * unit))):
            col = rand_color(rng, (0, 1), sat, val)
            cv2.circle(img, (int(rng.uniform(0, w)), int(rng.uniform(0, h))), int(rng.uniform(1.5, 7) * unit),
                       col.tolist(), -1, lineType=cv2.LINE_AA)
        img = cv2.GaussianBlur(img, (0, 0), 0.6 * unit)
    elif kind == "stripes":
        ang = rng.uniform(0, PI)
        period = rng.uniform(5, 14)
        s = np.sin(2 * PI * (xx * np.cos(ang) + yy * np.sin(ang)) / period)
        img = _mix(2.5 * s + _octaves(rng, h, w, sigmas=(2 * unit, 6 * unit)), c0, c1)
    elif kind == "tiles":
        cell = rng.uniform(5, 12)
        s = ((np.floor(xx / cell) + np.floor(yy / cell)) % 2) * 2 - 1
        img = cv2.GaussianBlur(_mix(1.5 * s, c0, c1), (0, 0), 0.5 * unit)
    elif kind == "wallpaper":
        p = rng.uniform(6, 12)
        s = np.abs(np.sin(PI * (xx + yy) / p)) + np.abs(np.sin(PI * (xx - yy) / p))
        img = _mix(2.0 * (s - 1.0), c0, c1)
    elif kind == "bricks":
        bh, bw = rng.uniform(4, 7), rng.uniform(9, 16)
        row = np.floor(yy / bh)
        xo = xx + (row % 2) * bw / 2
        mortar = (np.minimum(yy % bh, bh - yy % bh) < 0.6) | (np.minimum(xo % bw, bw - xo % bw) < 0.6)
        tone = (np.floor(xo / bw) * 7.3 + row * 3.1) % 1.0
        img = _mix(np.where(mortar, 2.0, tone * 1.6 - 0.8), c0, c1)
    elif kind == "water":
        c0 = rand_color(rng, (0.53, 0.6), (0.55, 0.9), (0.45, 0.75))
        c1 = rand_color(rng, (0.48, 0.55), (0.2, 0.5), (0.8, 1.0))
        s = np.sin(2 * PI * yy / rng.uniform(4, 7) + 1.5 * np.sin(2 * PI * xx / rng.uniform(12, 25)))
        img = _mix(1.6 * s + _octaves(rng, h, w, sigmas=(1.5 * unit, 5 * unit)), c0, c1)
    elif kind == "court":
        c0 = rand_color(rng, (0.06, 0.1), (0.5, 0.75), (0.6, 0.85))
        c1 = rand_color(rng, (0.05, 0.09), (0.6, 0.85), (0.35, 0.6))
        pw = rng.uniform(4, 7)
        tone = (np.floor(xx / pw) * 5.7) % 1.0
        img = _mix(2.0 * tone - 1.0 + 0.8 * _octaves(rng, h, w, sigmas=(1.0 * unit, 4 * unit)), c0, c1)
    else:  # pragma: no cover - internal
        raise ValueError(kind)
    if kind in ("blobs", "tiles", "stripes", "wallpaper", "bricks"):   # tone busy patterns down
        img = 0.65 * img + 0.35 * img.reshape(-1, 3).mean(0)
    img = img + 14.0 * grain[..., None]
    # Band-limit (sigma ~0.8 px): texture detail stays trackable, but no energy near Nyquist,
    # so that sub-pixel motion does not alias (the GT-flow warp then matches closely).
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), max(0.8 * unit, 0.8))
    return np.clip(img, 0, 255).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Scene: parts in world pixels, camera, background
# --------------------------------------------------------------------------------------------
@dataclass
class Part:
    """One rigid textured part of a scene (a limb, the head, a prop), over ``T`` frames.

    A capsule (a segment of length ``L`` thickened by radius ``r``; ``L = 0``: a disc) or an ellipse, from its
    origin ``(x, y)`` along the direction ``a`` (radians; ``a = 0`` points down, +y, ``pi / 2`` to +x).
    """
    x: np.ndarray    #: ``(T,)`` float64: world x of the part's origin (its proximal joint) in each frame, pixels
    y: np.ndarray    #: ``(T,)`` float64: world y of the origin, pixels (y points down)
    a: np.ndarray    #: ``(T,)`` float64: direction angle, radians
    L: float         #: length, pixels (0 for a disc)
    r: float         #: radius, pixels
    color: np.ndarray  #: ``(3,)`` float32 RGB in 0..255
    shape: str       #: ``"capsule"`` | ``"ellipse"``
    tex: tuple[float, float]  #: offset of the part's texture in the atlas, pixels
    contrast: float  #: texture contrast (luminance ``1 + contrast * atlas``)
    figure: bool     #: part of the human figure (its pixels go into the mask), not a prop


@dataclass
class Scene:
    """What :func:`render_scene` draws: ``T`` frames of ``H x W`` pixels of ``parts`` (drawn in order, later ones
    in front) over a background, seen by a camera. A world point ``w`` is at image point
    ``zoom[t] * (w - (fx[t], fy[t])) + ((W - 1) / 2, (H - 1) / 2)`` in frame ``t``."""
    T: int               #: frames
    H: int               #: frame height, pixels
    W: int               #: frame width, pixels
    parts: list[Part]    #: the parts, back to front; each with ``(T,)`` trajectories
    zoom: np.ndarray     #: ``(T,)`` camera zoom (1: world pixels are image pixels)
    fx: np.ndarray       #: ``(T,)`` camera focus, world x (the world point at the image centre)
    fy: np.ndarray       #: ``(T,)`` camera focus, world y
    bg: np.ndarray       #: ``(Hb, Wb, 3)`` float32 background in 0..255 (:func:`background`), all visible points
    bg_origin: tuple[float, float]  #: world ``(x, y)`` of ``bg[0, 0]``
    atlas: np.ndarray    #: ``(n, n)`` float32 limb texture (:func:`tileable_noise`), wrapped around
    noise: float         #: sensor noise std, grey levels


def _smooth_noise(rng, T, sigma_frames):
    n = rng.standard_normal(T + 20)
    k = np.exp(-0.5 * (np.arange(-10, 11) / sigma_frames) ** 2)
    out = np.convolve(n, k / np.sqrt((k ** 2).sum()), mode="same")[10:10 + T]
    return out


def build_scene(spec: ClipSpec) -> Scene:
    """The scene of clip ``spec`` (its figure, props, camera and background), ``spec.n_frames`` frames of
    ``spec.height x spec.width``; deterministic for the spec (its RNG is the clip's own)."""
    rng = clip_rng(spec.seed, spec.dataset, spec.cls, spec.index[0], spec.index[1])
    style = STYLE[spec.dataset]
    key, reverse = CLASS_ACTION[spec.cls]
    T, H, W = spec.n_frames, spec.height, spec.width
    unit = W / 128.0
    t = np.arange(T) / FPS
    P = dict(speed=rng.uniform(*style["speed"]), amp=rng.uniform(*style["amp"]), phase=rng.uniform(0, 2 * PI),
             dur=max((T - 1) / FPS, 1e-3), t=t)
    ch, post = ACTIONS[key](rng, t, P)
    fparts, J = _skeleton(ch)
    props = post(J) if post is not None else []
    mirror = rng.random() < 0.5
    sg = -1.0 if mirror else 1.0

    # Figure size and placement: keep the whole trajectory inside the frame when possible.
    allx = [x + s * L * np.sin(a) for (x, y, a, L, r) in fparts.values() for s in (0, 1)]
    ally = [y + s * L * np.cos(a) for (x, y, a, L, r) in fparts.values() for s in (0, 1)]
    top = -float(np.min(ally)) + 0.1
    for p in props:
        if not p["front"] or p["L"] < 2:
            ally.append(p["y"])
    top = max(top, -float(np.min(ally)) + 0.1)
    ground = H * rng.uniform(0.84, 0.93)
    h = min(H * rng.uniform(*style["fig_scale"]), (ground - 0.04 * H) / top)
    xs = sg * np.concatenate(allx)
    span = (xs.max() - xs.min() + 0.25) * h
    follow = bool(ch.get("follow", False))
    if span < 0.9 * W and not follow:
        lo, hi = 0.05 * W + 0.12 * h - xs.min() * h, 0.95 * W - 0.12 * h - xs.max() * h
        bx = rng.uniform(lo, hi) if hi > lo else (lo + hi) / 2
    else:
        bx = W / 2 - sg * h * float(np.mean(ch["root_x"]))
        follow = True

    shirt = rand_color(rng, (0, 1), style["sat"], style["val"])
    pants = rand_color(rng, (0, 1), style["sat"], (style["val"][0] * 0.7, style["val"][1] * 0.8))
    skin = rand_color(rng, (0.03, 0.11), (0.25, 0.6), (0.45, 0.95))
    colors = dict(torso=shirt, upper_l=shirt, upper_r=shirt, fore_l=skin, fore_r=skin, head=skin,
                  thigh_l=pants, thigh_r=pants, shin_l=pants, shin_r=pants)
    lc = rng.uniform(*style["limb_contrast"])

    def place(x, y, a, L, r, color, shape, contrast, figure):
        return Part(x=(bx + sg * h * x).astype(np.float64), y=(ground + h * y).astype(np.float64),
                     a=(sg * np.asarray(a, dtype=np.float64)), L=float(L * h), r=float(max(r * h, 0.8)),
                     color=color, shape=shape, tex=(float(rng.uniform(0, 64)), float(rng.uniform(0, 64))),
                     contrast=contrast, figure=figure)

    parts = []
    for p in props:
        if not p["front"]:
            parts.append(place(p["x"], p["y"], p["a"], p["L"], p["r"], p["color"], "capsule", p["contrast"], False))
    for name in _FIG_ORDER:
        x, y, a, L, r = fparts[name]
        parts.append(place(x, y, a, L, r, colors[name], style["shape"] if L > 0 else "capsule", lc, True))
    for p in props:
        if p["front"]:
            parts.append(place(p["x"], p["y"], p["a"], p["L"], p["r"], p["color"], "capsule", p["contrast"], False))

    # Camera: C_t(w) = zoom_t * (w - focus_t) + centre.
    cx, cy = (W - 1) / 2, (H - 1) / 2
    fr = np.arange(T, dtype=np.float64)
    zoom, fx, fy = np.ones(T), np.full(T, cx), np.full(T, cy)
    if follow:
        rx = bx + sg * h * ch["root_x"]
        fx = cx + (rx - rx.mean()) * rng.uniform(0.85, 1.0)
    if rng.random() < style["cam_p"]:
        kind = rng.choice(["pan", "zoom", "shake", "pan+shake", "zoom+shake", "pan+zoom"])
        if "pan" in kind:
            v = rng.uniform(0.25, 0.9) * unit
            ang = rng.uniform(-0.35, 0.35) + (PI if rng.random() < 0.5 else 0.0)
            fx = fx + v * np.cos(ang) * (fr - (T - 1) / 2)
            fy = fy + v * np.sin(ang) * (fr - (T - 1) / 2)
        if "zoom" in kind:
            z1 = rng.uniform(0.87, 1.15)
            zoom = 1 + (z1 - 1) * fr / max(T - 1, 1)
        if "shake" in kind:
            amp = rng.uniform(0.4, 1.3) * unit
            fx = fx + amp * _smooth_noise(rng, T, 1.5)
            fy = fy + amp * _smooth_noise(rng, T, 1.5)

    if reverse:  # the pair member: exact time reversal of the whole scene
        for p in parts:
            p.x, p.y, p.a = p.x[::-1].copy(), p.y[::-1].copy(), p.a[::-1].copy()
        zoom, fx, fy = zoom[::-1].copy(), fx[::-1].copy(), fy[::-1].copy()

    # Background covering every visible world point.
    hwx, hwy = (W / 2 + 3) / zoom, (H / 2 + 3) / zoom
    x0, x1 = float(np.min(fx - hwx)), float(np.max(fx + hwx))
    y0, y1 = float(np.min(fy - hwy)), float(np.max(fy + hwy))
    bw, bh = int(np.ceil(x1 - x0)) + 2, int(np.ceil(y1 - y0)) + 2
    if key == "swim":
        wall_kind = "water"
    else:
        wall_kind = str(rng.choice(style["backgrounds"]))
    bg = background(rng, wall_kind, bh, bw, unit, style)
    floor_kind = "court" if key == "dribble" else ("water" if key == "swim" else "noise")
    floor = background(rng, floor_kind, bh, bw, unit, style)
    horizon = int(round(ground - 0.05 * H * rng.uniform(0.5, 3.0) - y0))
    if 0 < horizon < bh:
        bg[horizon:] = floor[horizon:]
    atlas = tileable_noise(rng, 64, sigma=max(rng.uniform(1.2, 2.2) * unit, 1.1))
    if style["stripes"] > 0:
        atlas = atlas * 0.6 + style["stripes"] * np.sin(np.arange(64) * 2 * PI / 8)[:, None].astype(np.float32) * 1.2
    noise = rng.uniform(*style["noise"])
    return Scene(T, H, W, parts, zoom, fx, fy, bg, (x0, y0), atlas.astype(np.float32), noise)


# --------------------------------------------------------------------------------------------
# Rendering + exact forward flow
# --------------------------------------------------------------------------------------------
def render_scene(sc: Scene, noise: bool, want_flow: bool, noise_rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Draw a scene's frames (anti-aliased, textured, shaded parts over the background) and its exact forward flow.

    Args:
        sc: the scene (``T`` frames of ``H x W``).
        noise: add Gaussian sensor noise of std ``sc.noise``, drawn from ``noise_rng``.
        want_flow: also compute the flow (``T >= 2``).
        noise_rng: the noise's random source (unused without ``noise``).
    Returns:
        ``frames`` ``(T, H, W, 3)`` uint8 RGB; ``flow`` ``(T-1, H, W, 2)`` float32 forward flow in pixels (x, y),
        ``frames[t](p) ≈ frames[t+1](p + flow[t](p))``, or None without ``want_flow``; ``masks`` ``(T, H, W)`` bool,
        the pixels of figure parts (:attr:`Part.figure`).
    """
    T, H, W = sc.T, sc.H, sc.W
    cx, cy = (W - 1) / 2, (H - 1) / 2
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    frames = np.empty((T, H, W, 3), np.uint8)
    flow = np.empty((T - 1, H, W, 2), np.float32) if want_flow else None
    masks = np.zeros((T, H, W), bool)
    nP = len(sc.parts)
    PX = np.array([p.x for p in sc.parts]).reshape(nP, T)
    PY = np.array([p.y for p in sc.parts]).reshape(nP, T)
    PA = np.array([p.a for p in sc.parts]).reshape(nP, T)
    for t in range(T):
        z, fx, fy = float(sc.zoom[t]), float(sc.fx[t]), float(sc.fy[t])
        wx = (xs - cx) / z + fx
        wy = (ys - cy) / z + fy
        canvas = cv2.remap(sc.bg, wx - sc.bg_origin[0], wy - sc.bg_origin[1], cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT101)
        owner = np.full((H, W), -1, np.int32)
        S = np.zeros((H, W), np.float32)
        D = np.zeros((H, W), np.float32)
        for k, p in enumerate(sc.parts):
            ox, oy, ang = PX[k, t], PY[k, t], PA[k, t]
            ux, uy = np.sin(ang), np.cos(ang)
            mx, my = ox + ux * p.L / 2, oy + uy * p.L / 2
            icx, icy = z * (mx - fx) + cx, z * (my - fy) + cy
            ext = (p.L / 2 + p.r) * z + 2
            x0, x1 = max(int(icx - ext), 0), min(int(icx + ext) + 2, W)
            y0, y1 = max(int(icy - ext), 0), min(int(icy + ext) + 2, H)
            if x0 >= x1 or y0 >= y1:
                continue
            dx = wx[y0:y1, x0:x1] - np.float32(ox)
            dy = wy[y0:y1, x0:x1] - np.float32(oy)
            s = dx * np.float32(ux) + dy * np.float32(uy)
            d = dy * np.float32(ux) - dx * np.float32(uy)
            if p.shape == "ellipse" and p.L > 0:
                ea = p.L / 2 + p.r
                q = np.sqrt(((s - p.L / 2) / ea) ** 2 + (d / p.r) ** 2)
                edge = (1 - q) * p.r * z
            else:
                ds = s - np.clip(s, 0, p.L)
                edge = (p.r - np.sqrt(ds * ds + d * d)) * z
            alpha = np.clip(edge + 0.5, 0, 1)
            if not alpha.any():
                continue
            tex = cv2.remap(sc.atlas, s + np.float32(p.tex[0]), d + np.float32(p.tex[1]), cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_WRAP)
            shade = 1 - 0.3 * np.minimum((d / p.r) ** 2, 1)
            lum = np.clip((1 + p.contrast * tex) * shade, 0.2, 1.8)
            col = p.color[None, None, :] * lum[..., None]
            cb = canvas[y0:y1, x0:x1]
            cb += alpha[..., None] * (np.minimum(col, 255) - cb)
            m = alpha >= 0.5
            owner[y0:y1, x0:x1][m] = k
            S[y0:y1, x0:x1][m] = s[m]
            D[y0:y1, x0:x1][m] = d[m]
            if p.figure:
                masks[t, y0:y1, x0:x1] |= m
        if noise:
            canvas += noise_rng.standard_normal(canvas.shape, dtype=np.float32) * np.float32(sc.noise)
        frames[t] = np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
        if want_flow and t < T - 1:
            z1, fx1, fy1 = float(sc.zoom[t + 1]), float(sc.fx[t + 1]), float(sc.fy[t + 1])
            nwx, nwy = wx.copy(), wy.copy()   # background: static world point
            sel = owner >= 0
            if sel.any():
                k = owner[sel]
                a1 = PA[k, t + 1]
                ux, uy = np.sin(a1), np.cos(a1)
                s, d = S[sel], D[sel]
                nwx[sel] = PX[k, t + 1] + s * ux - d * uy
                nwy[sel] = PY[k, t + 1] + s * uy + d * ux
            flow[t, ..., 0] = z1 * (nwx - fx1) + cx - xs
            flow[t, ..., 1] = z1 * (nwy - fy1) + cy - ys
    return frames, flow, masks


def render_clip(spec: ClipSpec, noise: bool = True, return_mask: bool = False):
    """Render one clip in memory.

    Args:
        spec: the clip (see :func:`lab_clip_specs` / :func:`clip_spec`).
        noise: add the clip's sensor noise (off gives the clean render).
        return_mask: also return the figure's silhouette.

    Returns:
        ``frames`` ``(T, H, W, 3)`` uint8 RGB and ``flow`` ``(T-1, H, W, 2)`` float32 forward
        ground-truth flow in pixels (x, y): ``frames[t](p) ≈ frames[t+1](p + flow[t](p))``;
        with ``return_mask`` also ``mask`` ``(T, H, W)`` bool (figure pixels, props excluded).
    """
    if spec.n_frames < 2:
        raise ValueError(f"{spec.name}: a clip needs at least 2 frames, got {spec.n_frames}")
    sc = build_scene(spec)
    nrng = clip_rng(spec.seed, spec.dataset, spec.cls, spec.index[0], spec.index[1], "noise")
    frames, flow, masks = render_scene(sc, noise, True, nrng)
    return (frames, flow, masks) if return_mask else (frames, flow)
