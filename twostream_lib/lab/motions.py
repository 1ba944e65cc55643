"""The actions: joint-angle trajectories of an articulated figure over time, one function per motion.

Figure units: height ~ 1, y down, ground at y = 0. An angle ``a`` is the direction ``(sin a, cos a)``: 0 points
down, pi/2 right, pi up, -pi/2 left. Side-view actions face +x; every clip is mirrored with probability 1/2.
Each action returns its channels (joint angles, root position, lift) and optionally a function that places props
(a ball, a bar, water) from the joints.
"""
from __future__ import annotations

import colorsys
from typing import Callable

import numpy as np

from .classes import FPS

__all__ = ["BODY", "PI", "ACTIONS", "rand_color"]

BODY = dict(torso=0.30, head_r=0.075, upper=0.15, fore=0.15, thigh=0.23, shin=0.23, shoulder=0.085, hip=0.05,
          r_torso=0.07, r_upper=0.032, r_fore=0.027, r_thigh=0.043, r_shin=0.035)
PI = np.pi


def _smooth(u):
    u = np.clip(u, 0.0, 1.0)
    return u * u * (3 - 2 * u)


def _wob(rng, t, amp):
    """A smooth random wobble (two slow sinusoids), so no two clips hold exactly the same pose."""
    out = np.zeros_like(t)
    for _ in range(2):
        out += amp * rng.uniform(0.3, 0.7) * np.sin(2 * PI * rng.uniform(0.15, 0.8) * t + rng.uniform(0, 2 * PI))
    return out


def _base(rng, t, view: str) -> dict:
    T = len(t)
    z = np.zeros(T)
    w = lambda a: _wob(rng, t, a)  # noqa: E731
    ch = dict(torso=PI + w(0.05), head=w(0.12), width=np.full(T, 1.0 if view == "front" else 0.12),
              root_x=z.copy(), lift=z.copy())
    if view == "front":
        ch.update(arm_l=-0.14 + w(0.06), arm_r=0.14 + w(0.06), elb_l=0.12 + w(0.06), elb_r=-0.12 + w(0.06),
                  leg_l=-0.07 + w(0.03), leg_r=0.07 + w(0.03), kne_l=z + w(0.02), kne_r=z + w(0.02))
    else:
        ch.update(arm_l=0.05 + w(0.06), arm_r=-0.03 + w(0.06), elb_l=0.2 + w(0.06), elb_r=0.2 + w(0.06),
                  leg_l=0.03 + w(0.03), leg_r=-0.03 + w(0.03), kne_l=-0.03 + w(0.02), kne_r=-0.03 + w(0.02))
    return ch


def _transition(rng, P, lo, hi):
    """A smooth 0->1 ramp of random duration at a random time, completed inside the clip.

    The rest before and after are exchangeable, so the clip and its time reversal are
    equally likely (the motion-only pairs rely on this)."""
    dur = P["dur"]
    # the motion fills 60-90% of the clip, so most stacks of L = 10 fields see it (a short transition in a long
    # static clip would leave the temporal stream little to tell the pair members apart)
    d = min(max(rng.uniform(lo, hi) / P["speed"], 0.6 * dur), 0.9 * dur)
    t0 = rng.uniform(0, dur - d)
    return (P["t"] - t0) / d


def _act_sit(rng, t, P):
    ch = _base(rng, t, "side")
    u = _smooth(_transition(rng, P, 1.2, 2.0))
    th = rng.uniform(1.35, 1.6)
    for s in "lr":
        ch[f"leg_{s}"] = ch[f"leg_{s}"] + th * u
        ch[f"kne_{s}"] = ch[f"kne_{s}"] - th * u
        ch[f"arm_{s}"] = ch[f"arm_{s}"] + 0.5 * np.sin(PI * u) + 0.2 * u
        ch[f"elb_{s}"] = ch[f"elb_{s}"] + 0.5 * u
    ch["torso"] = ch["torso"] - (0.5 * np.sin(PI * u) + 0.08 * u)
    leg = (ch["leg_l"] + ch["leg_r"]) / 2
    shin = leg + (ch["kne_l"] + ch["kne_r"]) / 2
    ch["root_x"] = -(BODY["thigh"] * np.sin(leg) + BODY["shin"] * np.sin(shin))  # feet stay planted
    i1 = int(np.argmax(u))
    wood = rand_color(rng, (0.05, 0.12), (0.4, 0.8), (0.35, 0.7))

    def post(J):
        hx, hy = J["hip"][0][i1], J["hip"][1][i1]
        seat_y = hy + BODY["r_thigh"] + 0.02
        x0 = hx - 0.13
        T = len(t)
        return [
            _prop(T, x0, seat_y, 0.0, -seat_y, 0.018, wood, front=False),            # back leg
            _prop(T, x0 + 0.22, seat_y, 0.0, -seat_y, 0.018, wood, front=False),     # front leg
            _prop(T, x0, seat_y, PI, 0.3, 0.02, wood, front=False),                 # backrest
            _prop(T, x0, seat_y, PI / 2, 0.22, 0.022, wood, front=False),           # seat
        ]
    return ch, post


def _act_raise(rng, t, P):
    ch = _base(rng, t, "front")
    u = _smooth(_transition(rng, P, 1.0, 1.8))
    top = min(rng.uniform(2.4, 2.9) * P["amp"], 2.95)
    ch["arm_r"] = ch["arm_r"] + (top - 0.14) * u
    ch["arm_l"] = ch["arm_l"] - (top - 0.14) * u
    return ch, None


def _act_circles(rng, t, P):
    ch = _base(rng, t, "front")
    th = 2 * PI * rng.uniform(0.6, 1.1) * P["speed"] * t + P["phase"]
    A, Bm = 0.5 * P["amp"], 0.6 * P["amp"]
    a = PI / 2 + A * np.sin(th) + _wob(rng, t, 0.05)
    e = Bm * (1 + np.cos(th))
    ch.update(arm_r=a, elb_r=-e, arm_l=-a, elb_l=e)
    return ch, None


def _act_dribble(rng, t, P):
    ch = _base(rng, t, "front")
    ph = 2 * PI * rng.uniform(1.3, 2.0) * P["speed"] * t / 2 + P["phase"]
    ch["arm_r"] = 0.55 + 0.2 * np.cos(2 * ph)
    ch["elb_r"] = -0.5 + 0.3 * np.cos(2 * ph)
    for s, sg in (("l", -1), ("r", 1)):
        ch[f"leg_{s}"] = ch[f"leg_{s}"] + sg * 0.1
        ch[f"kne_{s}"] = ch[f"kne_{s}"] - sg * 0.15
    bounce = np.abs(np.cos(ph))
    color = rand_color(rng, (0.04, 0.09), (0.75, 0.95), (0.8, 1.0))
    rb = 0.06

    def post(J):
        hx = J["hand_r"][0].mean() + 0.01
        hy = J["hand_r"][1].mean()
        y = -rb - (-hy - 2 * rb) * bounce
        return [dict(x=np.full(len(t), hx), y=y, a=3 * ph, L=0.0, r=rb, color=color, front=True, contrast=0.6)]
    return ch, post


def _act_swim(rng, t, P):
    ch = _base(rng, t, "front")
    th = 2 * PI * rng.uniform(0.5, 0.9) * P["speed"] * t + P["phase"]
    A = min(1.25 * P["amp"], 1.4)
    ch["arm_r"] = PI / 2 + A * np.sin(th)
    ch["arm_l"] = -(PI / 2 + A * np.sin(th + PI))
    ch["leg_l"] = ch["leg_l"] + 0.15 * np.sin(2 * th)
    ch["leg_r"] = ch["leg_r"] - 0.15 * np.sin(2 * th)
    water = rand_color(rng, (0.52, 0.6), (0.5, 0.8), (0.5, 0.8))

    def post(J):
        wy = J["hip"][1].mean() - 0.03 + 0.32
        return [dict(x=np.full(len(t), -4.0), y=np.full(len(t), wy), a=np.full(len(t), PI / 2), L=8.0, r=0.32,
                     color=water, front=True, contrast=0.5)]
    return ch, post


def _act_juggle(rng, t, P):
    ch = _base(rng, t, "front")
    th = 2 * PI * rng.uniform(0.7, 1.1) * P["speed"] * t + P["phase"]
    ch["arm_r"] = 0.2 + 0.05 * np.sin(3 * th)
    ch["arm_l"] = -0.2 + 0.05 * np.sin(3 * th + PI)
    ch["elb_r"] = -1.6 + 0.25 * np.sin(3 * th)
    ch["elb_l"] = 1.6 - 0.25 * np.sin(3 * th + PI)
    colors = [rand_color(rng, (h, h + 0.08), (0.7, 1.0), (0.8, 1.0)) for h in rng.permutation([0.0, 0.3, 0.6])]
    height = rng.uniform(0.3, 0.42) * P["amp"]

    def post(J):
        hy = (J["hand_r"][1] + J["hand_l"][1]) / 2 - 0.03
        cx = (J["hand_r"][0] + J["hand_l"][0]) / 2
        out = []
        for i in range(3):
            b = th + 2 * PI * i / 3
            x = cx + 0.14 * np.cos(b)
            y = hy - height * np.maximum(np.sin(b), 0) + 0.02 * np.minimum(np.sin(b), 0)
            out.append(dict(x=x, y=y, a=2 * b, L=0.0, r=0.05, color=colors[i], front=True, contrast=0.5))
        return out
    return ch, post


def _act_jack(rng, t, P):
    ch = _base(rng, t, "front")
    th = 2 * PI * rng.uniform(0.8, 1.3) * P["speed"] * t + P["phase"]
    c = (1 - np.cos(th)) / 2
    top = min(2.7 * P["amp"], 2.9)
    ch["arm_r"] = ch["arm_r"] + (top - 0.14) * c
    ch["arm_l"] = ch["arm_l"] - (top - 0.14) * c
    ch["leg_r"] = ch["leg_r"] + 0.33 * c
    ch["leg_l"] = ch["leg_l"] - 0.33 * c
    ch["lift"] = 0.05 * np.abs(np.sin(th))
    return ch, None


def _act_wave(rng, t, P):
    ch = _base(rng, t, "front")
    th = 2 * PI * rng.uniform(1.5, 2.5) * P["speed"] * t + P["phase"]
    up = rng.uniform(2.2, 2.6)
    ch["arm_r"] = up + _wob(rng, t, 0.08)
    ch["elb_r"] = (PI - up) + 0.45 * P["amp"] * np.sin(th)
    return ch, None


def _act_punch(rng, t, P):
    ch = _base(rng, t, "side")
    th = 2 * PI * rng.uniform(0.8, 1.3) * P["speed"] * t + P["phase"]
    reach = min(1.45 * P["amp"], 1.6)
    for s, off in (("r", 0.0), ("l", PI)):
        p = np.maximum(0, np.sin(th + off)) ** 2
        ch[f"arm_{s}"] = 0.35 + (reach - 0.35) * p
        ch[f"elb_{s}"] = 2.0 * (1 - p)
    ch["torso"] = ch["torso"] - 0.12
    ch["leg_l"], ch["kne_l"] = ch["leg_l"] + 0.25, ch["kne_l"] - 0.25
    ch["leg_r"], ch["kne_r"] = ch["leg_r"] - 0.2, ch["kne_r"] - 0.2
    return ch, None


def _act_kick(rng, t, P):
    ch = _base(rng, t, "side")
    th = 2 * PI * rng.uniform(0.5, 0.9) * P["speed"] * t + P["phase"]
    k = np.maximum(0, np.sin(th)) ** 1.5
    ch["leg_r"] = ch["leg_r"] + min(1.35 * P["amp"], 1.5) * k
    ch["kne_r"] = ch["kne_r"] - 0.8 * np.sin(PI * k)
    for s in "lr":
        ch[f"arm_{s}"] = 0.5 + _wob(rng, t, 0.1)
        ch[f"elb_{s}"] = 1.8 + _wob(rng, t, 0.1)
    ch["torso"] = ch["torso"] + 0.3 * k
    return ch, None


def _act_bend(rng, t, P):
    ch = _base(rng, t, "side")
    th = 2 * PI * rng.uniform(0.35, 0.7) * P["speed"] * t + P["phase"]
    b = (1 - np.cos(th)) / 2
    ch["torso"] = ch["torso"] - min(1.3 * P["amp"], 1.45) * b
    for s in "lr":
        ch[f"arm_{s}"] = ch[f"arm_{s}"] + 0.25 * b
    ch["root_x"] = -0.1 * b
    return ch, None


def _act_clap(rng, t, P):
    ch = _base(rng, t, "front")
    o = np.abs(np.sin(PI * rng.uniform(1.2, 2.2) * P["speed"] * t + P["phase"])) * P["amp"]
    ch["arm_r"] = 0.45 + 0.45 * o
    ch["elb_r"] = -1.9 + 1.4 * o
    ch["arm_l"], ch["elb_l"] = -ch["arm_r"], -ch["elb_r"]
    return ch, None


def _act_jump(rng, t, P):
    ch = _base(rng, t, "front")
    th = 2 * PI * rng.uniform(0.8, 1.2) * P["speed"] * t + P["phase"]
    air = np.maximum(0, np.sin(th))
    crouch = np.maximum(0, -np.sin(th))
    ch["lift"] = 0.16 * P["amp"] * air
    ch["leg_l"], ch["kne_l"] = ch["leg_l"] - 0.3 * crouch, ch["kne_l"] + 0.6 * crouch
    ch["leg_r"], ch["kne_r"] = ch["leg_r"] + 0.3 * crouch, ch["kne_r"] - 0.6 * crouch
    ch["arm_r"] = ch["arm_r"] + 1.6 * air
    ch["arm_l"] = ch["arm_l"] - 1.6 * air
    return ch, None


def _act_fall(rng, t, P):
    ch = _base(rng, t, "side")
    u = np.clip(_transition(rng, P, 0.6, 1.0), 0, 1) ** 2
    rho = u * rng.uniform(1.42, 1.52)
    ch["torso"] = ch["torso"] - rho
    fl = np.sin(PI * u)
    for s in "lr":
        ch[f"leg_{s}"] = ch[f"leg_{s}"] - rho
        ch[f"arm_{s}"] = ch[f"arm_{s}"] - rho + 1.4 * fl + 0.3 * u
    ch["root_x"] = (BODY["thigh"] + BODY["shin"]) * np.sin(rho)
    return ch, None


def _act_pullup(rng, t, P):
    ch = _base(rng, t, "front")
    c = (1 - np.cos(2 * PI * rng.uniform(0.4, 0.7) * P["speed"] * t + P["phase"])) / 2 * min(P["amp"], 1.0)
    au = PI - 0.35 - 1.0 * c
    e = 1.2 * c
    ch.update(arm_r=au, elb_r=e, arm_l=-au, elb_l=-e)
    ch["kne_l"] = ch["kne_l"] + 0.1
    ch["kne_r"] = ch["kne_r"] - 0.1
    ch["anchor"] = "hands"
    metal = rand_color(rng, (0.0, 1.0), (0.0, 0.15), (0.55, 0.85))

    def post(J):
        T = len(t)
        by = J["hand_r"][1].mean()
        return [_prop(T, -0.45, by, PI / 2, 0.9, 0.022, metal, front=False),
                _prop(T, -0.45, by, 0.0, -by, 0.025, metal, front=False),
                _prop(T, 0.45, by, 0.0, -by, 0.025, metal, front=False)]
    return ch, post


def _act_pushup(rng, t, P):
    ch = _base(rng, t, "side")
    c = (1 - np.cos(2 * PI * rng.uniform(0.5, 0.9) * P["speed"] * t + P["phase"])) / 2 * min(P["amp"], 1.0)
    beta = 0.40 - 0.20 * c
    leg_len, tor = BODY["thigh"] + BODY["shin"], 0.9 * BODY["torso"]
    l_eff = np.clip((leg_len + tor) * np.sin(beta) + BODY["r_shin"] - BODY["r_fore"], 0.02, 0.3)
    e = 2 * np.arccos(np.clip(l_eff / (BODY["upper"] + BODY["fore"]), 0, 1))
    ch["torso"] = PI / 2 + beta + _wob(rng, t, 0.02)
    for s in "lr":
        ch[f"leg_{s}"] = beta - PI / 2
        ch[f"kne_{s}"] = np.zeros_like(t)
        ch[f"arm_{s}"] = -e / 2
        ch[f"elb_{s}"] = e
    ch["head"] = 0.2 + _wob(rng, t, 0.05)
    return ch, None


def _act_cartwheel(rng, t, P):
    ch = _base(rng, t, "front")
    rho = 2 * PI * rng.uniform(0.35, 0.55) * P["speed"] * t + P["phase"]
    sp = rng.uniform(0.45, 0.65)
    ch["torso"] = PI + rho
    ch["arm_r"], ch["arm_l"] = PI - sp + rho, PI + sp + rho
    ch["elb_r"], ch["elb_l"] = np.zeros_like(t), np.zeros_like(t)
    ch["leg_l"], ch["leg_r"] = -0.45 + rho, 0.45 + rho
    ch["root_x"] = -0.42 * (rho - rho[0])
    ch["anchor"] = "ground_all"
    ch["follow"] = True
    return ch, None


def _act_throw(rng, t, P):
    ch = _base(rng, t, "side")
    dur = P["dur"]
    tr = rng.uniform(0.35, 0.65) * dur
    tau = (t - tr) * P["speed"]
    kx = [-0.7, -0.25, 0.0, 0.3, 0.9]
    ch["arm_r"] = np.interp(tau, kx, [0.05, -2.3, -4.3, -5.7, -2 * PI + 0.05])
    ch["elb_r"] = np.interp(tau, kx, [0.2, 1.2, 0.1, 0.3, 0.2])
    ch["arm_l"] = ch["arm_l"] + np.interp(tau, kx, [0.0, 1.2, 0.6, -0.3, 0.0])
    ch["torso"] = ch["torso"] + np.interp(tau, kx, [0.0, 0.2, -0.1, -0.35, 0.0])
    ch["leg_l"] = ch["leg_l"] + np.interp(tau, kx, [0.0, 0.2, 0.35, 0.35, 0.1])
    ch["leg_r"] = ch["leg_r"] + np.interp(tau, kx, [0.0, -0.1, -0.25, -0.25, -0.1])
    i_r = int(np.searchsorted(tau, 0.0))
    color = rand_color(rng, (0.0, 1.0), (0.6, 0.9), (0.8, 1.0))

    def post(J):
        hx, hy = J["hand_r"]
        x, y = hx.copy(), hy.copy()
        if 0 < i_r < len(t):
            vx = (hx[i_r] - hx[i_r - 1]) * FPS * 1.1
            vy = (hy[i_r] - hy[i_r - 1]) * FPS * 1.1 - 0.5
            dt = t[i_r:] - t[i_r]
            x[i_r:] = hx[i_r] + vx * dt
            y[i_r:] = hy[i_r] + vy * dt + 0.5 * 5.0 * dt ** 2
        return [dict(x=x, y=y, a=6 * t, L=0.0, r=0.035, color=color, front=True, contrast=0.5)]
    return ch, post


ACTIONS: dict[str, Callable] = {
    "sit": _act_sit, "raise": _act_raise, "circles": _act_circles, "dribble": _act_dribble,
    "swim": _act_swim, "juggle": _act_juggle, "jack": _act_jack, "wave": _act_wave, "punch": _act_punch,
    "kick": _act_kick, "bend": _act_bend, "clap": _act_clap, "jump": _act_jump, "fall": _act_fall,
    "pullup": _act_pullup, "pushup": _act_pushup, "cartwheel": _act_cartwheel, "throw": _act_throw,
}


def _prop(T, x, y, a, L, r, color, front):
    return dict(x=np.full(T, float(x)), y=np.full(T, float(y)), a=np.full(T, float(a)), L=float(L), r=float(r),
                color=color, front=front, contrast=0.35)


def rand_color(rng, h, s, v) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(rng.uniform(*h) % 1.0, rng.uniform(*s), rng.uniform(*v)),
                    dtype=np.float32) * 255
