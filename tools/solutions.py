"""The computed solutions of the exercises too long for the book's CI (they train runs, or score them for minutes).

    .venv/bin/python tools/solutions.py                      # make solutions (about 45 min on 2 CPU cores)
    .venv/bin/python tools/solutions.py --chapters 04_temporal

Each chapter's training exercises (chapter 3's exercises 1 and 4, chapter 4's 1 and 2, chapter 5's 2-4, chapter 6's
2, 3 and 5, chapter 7's 5) are solved here with the code their solutions show: the runs train into the run folders
the chapter's own ``ch.config`` names (``runs/<scale>/<config>_<variant>``), so a reader who types the solution
reuses them, and a finished run is reused here too. The numbers go to ``book/solutions/<chapter>.json`` with the
accuracies of the chapter's own runs they were compared with (``base``); the chapter reads the file
(:meth:`twostream_lib.book.Chapter.solutions`), glues the numbers into the solution's text, and says whether they
were computed against the runs of its own execution. Nothing here is typed: re-run it after the runs change.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from twostream_lib import lab, metrics
from twostream_lib.book import SOLUTIONS_DIR, Chapter
from twostream_lib.data import build_datasets, holdout, items_for
from twostream_lib.fusion import average_fusion, svm_fusion
from twostream_lib.models import build_model_for
from twostream_lib.prepare import prepare
from twostream_lib.scores import check_aligned
from twostream_lib.splits import load_split
from twostream_lib.train import train

REPO = Path(__file__).resolve().parent.parent
KINDS = ("context", "posture_motion", "motion_pair")
STREAMS = ("spatial", "temporal")
VIEW = dict(frames=10, crops=1)  # the CPU's paired protocol of chapters 4 and 5 (10 stacks x the centre crop)


def right(s: dict) -> np.ndarray:
    """(N,) bool: which test videos the scores ``s`` get right."""
    return metrics.predictions(s["scores"]) == np.asarray(s["labels"])


def paired(a: dict, b: dict, prefix: str) -> dict:
    """``a`` minus ``b`` on the same videos: the difference and its paired standard error, in points."""
    ok_a, ok_b = right(a), right(check_aligned(a, b))
    return {f"{prefix}_gap": 100 * float(ok_a.mean() - ok_b.mean()),
            f"{prefix}_se": 100 * metrics.paired_se(ok_a, ok_b)}


def kind_means(s: dict, dataset: str) -> dict:
    """Accuracy (%) over the test videos of each class kind of ``dataset``."""
    kind = lab.class_info(dataset)["kind"]
    ok, labels = right(s), np.asarray(s["labels"])
    out = {}
    for kd in KINDS:
        ids = [i for i, c in enumerate(s["classes"]) if kind.get(c) == kd]
        m = np.isin(labels, ids)
        if m.any():
            out[kd] = 100 * float(ok[m].mean())
    return out


def pair_mean(s: dict, dataset: str) -> float:
    """Mean within-pair accuracy (%) over the motion-only pairs of ``dataset``."""
    cls = list(s["classes"])
    return 100 * float(np.mean([metrics.pair_accuracy(s["scores"], s["labels"], cls.index(a), cls.index(b))[0]
                                for a, b in lab.class_info(dataset)["motion_pairs"]]))


# ----------------------------------------------------------------------------------------- chapter 3
def ch03_dropout09(ch: Chapter, res: dict) -> dict:
    """Exercise 1: dropout 0.9 for 3000 iterations; dropout 0.5 for 3000 separates the two settings."""
    long = ["max_iters=3000", "lr_steps=[2100,2700]"]
    r09 = train(ch.config("lab_spatial", None, ["dropout=0.9", *long], variant="d09_3k"), progress=False)
    r05 = train(ch.config("lab_spatial", None, long, variant="d05_3k"), progress=False)
    s09, s05 = ch.scores(r09["best_checkpoint"]), ch.scores(r05["best_checkpoint"])
    return dict(ex1_acc09=100 * s09["accuracy"], ex1_acc05_3k=100 * s05["accuracy"], ex1_acc0=100 * res["accuracy"],
                ex1_best_step09=r09["final"]["best_step"], ex1_best_step05=r05["final"]["best_step"],
                **paired(s09, res, "ex1_d09_vs_default"), **paired(s05, res, "ex1_long_vs_default"),
                **paired(s09, s05, "ex1_d09_vs_d05"))


def ch03_action_pretraining(ch: Chapter, pre: dict) -> dict:
    """Exercise 4: pre-training on lab-hmdb's frames, then fine-tuning on lab-ucf, against the stills' net."""
    r_h = train(ch.config("lab_spatial", None, ["datasets=[lab-hmdb]"], variant="hmdb"), progress=False)
    c_ft = ch.config("lab_spatial", None, [f"init_from={r_h['best_checkpoint']}", "finetune=all"], variant="from_hmdb")
    s_ft = ch.scores(train(c_ft, progress=False)["best_checkpoint"])
    v = dict(ex4_acc_hmdb=100 * s_ft["accuracy"], ex4_acc_stills=100 * pre["accuracy"],
             **paired(s_ft, pre, "ex4_hmdb_vs_stills"))
    for name, s in (("hmdb", s_ft), ("stills", pre)):
        v.update({f"ex4_{kd}_{name}": a for kd, a in kind_means(s, "lab-ucf").items()})
        shared = [list(s["classes"]).index(u) for u, _ in lab.SHARED_CLASSES]
        v[f"ex4_shared_{name}"] = 100 * float(right(s)[np.isin(s["labels"], shared)].mean())
    return v


def ch03(ch: Chapter) -> tuple[dict, dict]:
    res = ch.scores(train(ch.config("lab_spatial"), progress=False)["best_checkpoint"])
    pre = ch.scores(train(ch.pretrained_spatial_config("all"), progress=False)["best_checkpoint"])
    base = {"from scratch, 25 x 10": res["accuracy"], "pre-trained + fine-tuning, 25 x 10": pre["accuracy"]}
    return {**ch03_dropout09(ch, res), **ch03_action_pretraining(ch, pre)}, base


# ----------------------------------------------------------------------------------------- chapter 4
def curriculum_labels(labels: list[int], classes: list[str], boost: list[str], times: int = 3) -> list[int]:
    """Sampler labels under which each class in ``boost`` is drawn ``times`` times as often: its videos are dealt
    round-robin to ``times`` sampler labels (the sampler draws labels uniformly, then a video of the label)."""
    k, ids, seen = len(classes), {classes.index(c) for c in boost}, {}
    out = []
    for lab_ in labels:
        j = seen[lab_] = seen.get(lab_, -1) + 1
        out.append(lab_ + k * (j % times) if lab_ in ids else lab_)
    return out


def ch04_dropout09(ch: Chapter, s0: dict, s05: dict) -> dict:
    """Exercise 1: dropout 0.9 for 3000 iterations."""
    c09 = ch.config("lab_temporal", None, ["dropout=0.9", "max_iters=3000", "lr_steps=[2100,2700]"], variant="d09_3k")
    r09 = train(c09, progress=False)
    s09 = ch.scores(r09["best_checkpoint"], **VIEW)
    return dict(ex1_acc09=100 * s09["accuracy"], ex1_acc0=100 * s0["accuracy"], ex1_acc05=100 * s05["accuracy"],
                ex1_pairs09=pair_mean(s09, "lab-ucf"), ex1_pairs0=pair_mean(s0, "lab-ucf"),
                ex1_pairs05=pair_mean(s05, "lab-ucf"), ex1_loss09=r09["final"]["loss"],
                **paired(s09, s0, "ex1_d09_vs_default"), **paired(s09, s05, "ex1_d09_vs_d05"))


def ch04_curriculum(ch: Chapter, s05: dict) -> dict:
    """Exercise 2: the six pair classes three times as often for 300 iterations, then as usual, from dropout 0.5."""
    pair_classes = [c for p in lab.class_info("lab-ucf")["motion_pairs"] for c in p]
    c1 = ch.config("lab_temporal", None, ["dropout=0.5", "max_iters=300"], variant="curriculum")
    data = build_datasets(c1)
    data.labels = curriculum_labels(data.labels, data.classes[0], pair_classes)
    train(c1, progress=False, data=data)
    c2 = ch.config("lab_temporal", None, ["dropout=0.5"], variant="curriculum")  # the same folder, resumed
    s_cur = ch.scores(train(c2, progress=False)["best_checkpoint"], **VIEW)
    in_pairs = np.isin(s05["labels"], [list(s05["classes"]).index(c) for c in pair_classes])
    ok_c, ok_5 = right(s_cur), right(check_aligned(s_cur, s05))
    return dict(ex2_acc=100 * s_cur["accuracy"], ex2_pairs=pair_mean(s_cur, "lab-ucf"),
                ex2_pairs05=pair_mean(s05, "lab-ucf"),
                ex2_pairvid_gap=100 * float(ok_c[in_pairs].mean() - ok_5[in_pairs].mean()),
                ex2_pairvid_se=100 * metrics.paired_se(ok_c[in_pairs], ok_5[in_pairs]),
                ex2_other_gap=100 * float(ok_c[~in_pairs].mean() - ok_5[~in_pairs].mean()),
                ex2_other_se=100 * metrics.paired_se(ok_c[~in_pairs], ok_5[~in_pairs]),
                **paired(s_cur, s05, "ex2_vs_d05"))


def ch04(ch: Chapter) -> tuple[dict, dict]:
    run = train(ch.config("lab_temporal"), progress=False)
    r05 = train(ch.config("lab_temporal", None, ["dropout=0.5"], variant="dropout05"), progress=False)
    s0, s05 = ch.scores(run["best_checkpoint"], **VIEW), ch.scores(r05["best_checkpoint"], **VIEW)
    base = {"default (no dropout)": s0["accuracy"], "dropout 0.5": s05["accuracy"]}  # as the chapter keys them
    return {**ch04_dropout09(ch, s0, s05), **ch04_curriculum(ch, s05)}, base


# ----------------------------------------------------------------------------------------- chapter 5
def weight_head(net: torch.nn.Module, task: int, weight: float) -> None:
    """Scale the gradient reaching head ``task``'s logits by ``weight``: with the summed multitask loss (§4) this is
    exactly the gradient of ``weight * loss_task + the other losses`` (SGD is linear in the gradient), so the
    trainer's own loop trains the weighted loss; the logged loss stays the unweighted sum."""
    def hook(module, inputs, out):
        if out.requires_grad:
            out.register_hook(lambda g: weight * g)
    net.heads[task].register_forward_hook(hook)


def scratch(iters: int) -> list[str]:
    """Chapter 5's from-scratch rows: ``iters`` iterations of 32, lr x0.1 at 70% and 90%, no held-out videos."""
    return ["val_fraction=0", "tensorboard=false", "batch_size=32", f"max_iters={iters}",
            f"lr_steps=[{int(0.7 * iters)},{int(0.9 * iters)}]"]


def table2_rows(ch: Chapter, iters: int, suffix: str):
    """Chapter 5's rows 1 (target only) and 4 (multitask), in the folders the chapter names for ``ITERS``."""
    c1 = ch.config("lab_temporal", None, ["datasets=[lab-hmdb]", *scratch(iters)], variant="hmdb_only" + suffix)
    c4 = ch.config("lab_multitask", None, ["datasets=[lab-hmdb,lab-ucf]", *scratch(iters)],
                   variant="hmdb_first" + suffix)
    return c1, c4


def ch05_budget(ch: Chapter, r1: dict, r4: dict, s1: dict, s4: dict) -> dict:
    """Exercise 2: ``ITERS = 2000``, and the multitask net's helper head against chapter 4's net."""
    r1b, r4b = (train(c, progress=False) for c in table2_rows(ch, 2000, "_i2000_400_b32"))
    s1b, s4b = ch.scores(r1b["best_checkpoint"], **VIEW), ch.scores(r4b["best_checkpoint"], **VIEW)
    last = {k: [h for h in r["history"] if h.get("acc") is not None][-1]["acc"] for k, r in (("1k", r1), ("2k", r1b))}
    s_h = ch.scores(r4["best_checkpoint"], task=1)  # the lab-ucf test split, head 1, 25 x 10
    s_u = ch.scores(train(ch.config("lab_temporal"), progress=False)["best_checkpoint"])
    return dict(ex2_row1_1k=100 * s1["accuracy"], ex2_row1_2k=100 * s1b["accuracy"], ex2_row4_1k=100 * s4["accuracy"],
                ex2_row4_2k=100 * s4b["accuracy"], ex2_train_acc_1k=100 * last["1k"],
                ex2_train_acc_2k=100 * last["2k"], **paired(s1b, s1, "ex2_row1_2k_vs_1k"),
                **paired(s4b, s1b, "ex2_mt_vs_alone_2k"), **paired(s4, s1, "ex2_mt_vs_alone_1k"),
                ex2_helper_head=100 * s_h["accuracy"], ex2_helper_alone=100 * s_u["accuracy"],
                **paired(s_h, s_u, "ex2_helper"))


def ch05_one_softmax(ch: Chapter, s1: dict) -> dict:
    """Exercise 3: row 3 with the shared classes left out (``ROW3 = True``'s run) and kept twice."""
    overlap = ",".join(u for u, _ in lab.SHARED_CLASSES)
    shared_h = [h for _, h in lab.SHARED_CLASSES]
    row3 = ["datasets=[lab-hmdb,lab-ucf]", "heads=shared", *scratch(1000)]
    s3, v = {}, {}
    for key, ov, variant in (("excl", [f"exclude_classes=[{overlap}]"], "shared"), ("keep", [], "shared_keep")):
        r3 = train(ch.config("lab_multitask", None, row3 + ov, variant=variant), progress=False)
        s3[key] = ch.scores(r3["best_checkpoint"], **VIEW)
    is_sh = np.isin(s1["labels"], [list(s1["classes"]).index(h) for h in shared_h])
    for key, s in s3.items():
        ok = right(s)
        v.update({f"ex3_{key}_acc": 100 * s["accuracy"], f"ex3_{key}_shared": 100 * float(ok[is_sh].mean()),
                  f"ex3_{key}_own": 100 * float(ok[~is_sh].mean())})
        for h in shared_h:
            v[f"ex3_{key}_{h}"] = 100 * float(ok[np.asarray(s["labels"]) == list(s["classes"]).index(h)].mean())
    return {**v, **paired(s3["keep"], s3["excl"], "ex3_keep_vs_excl")}


def ch05_weighted(ch: Chapter, c4, s1: dict, s4: dict) -> dict:
    """Exercise 4: the target's loss weighted by 2 (row 4's settings and initial weights, in a folder of its own)."""
    c4w = replace(c4, out_dir=str(Path(c4.out_dir).with_name(Path(c4.out_dir).name + "_target_x2")),
                  name=c4.name + "_target_x2")
    data = build_datasets(c4w)
    torch.manual_seed(c4w.seed)  # the same initial weights as row 4
    net = build_model_for(c4w, data.num_classes)
    weight_head(net, 0, 2.0)
    s4w = ch.scores(train(c4w, progress=False, data=data, model=net)["best_checkpoint"], **VIEW)
    return dict(ex4_acc=100 * s4w["accuracy"], ex4_row4=100 * s4["accuracy"], ex4_row1=100 * s1["accuracy"],
                **paired(s4w, s4, "ex4_vs_row4"), **paired(s4w, s1, "ex4_vs_row1"))


def ch05(ch: Chapter) -> tuple[dict, dict]:
    c1, c4 = table2_rows(ch, 1000, "")
    r1, r4 = train(c1, progress=False), train(c4, progress=False)
    s1, s4 = ch.scores(r1["best_checkpoint"], **VIEW), ch.scores(r4["best_checkpoint"], **VIEW)
    base = {"hmdb only": s1["accuracy"], "multitask": s4["accuracy"]}  # as the chapter keys them
    return {**ch05_budget(ch, r1, r4, s1, s4), **ch05_one_softmax(ch, s1), **ch05_weighted(ch, c4, s1, s4)}, base


# ----------------------------------------------------------------------------------------- chapter 6
def ch06_svm(ch: Chapter, runs: dict, cfg, S, T, labels) -> dict:
    """Exercise 2: the SVM fitted on 25 x 10 training scores (and the chapter's 5 x 1), for C in 0.1, 1, 10, on
    all training videos and on the held-out ones only."""
    split = load_split("lab-ucf", cfg.roots[0], cfg.split)
    _, held = holdout(items_for(split, "train", None), fraction=cfg.val_fraction, seed=cfg.seed)
    held_ids, K, v = {vid for vid, _ in held}, S.shape[1], {}
    for tag, (f, c) in (("25x10", (25, 10)), ("5x1", (5, 1))):
        tr = {s: ch.scores(runs[s]["best_checkpoint"], subset="train", frames=f, crops=c) for s in STREAMS}
        tr["temporal"] = check_aligned(tr["spatial"], tr["temporal"])
        y, X = np.asarray(tr["spatial"]["labels"]), [tr[s]["scores"] for s in STREAMS]
        m = np.array([vid in held_ids for vid in tr["spatial"]["video_ids"]])
        v["ex2_n_held"] = int(m.sum())
        for C in (0.1, 1.0, 10.0):
            key = f"{C:g}".replace(".", "")
            v[f"ex2_svm_{tag}_C{key}"] = 100 * metrics.accuracy(svm_fusion(X, y, [S, T], C=C, num_classes=K), labels)
            P_h = svm_fusion([x[m] for x in X], y[m], [S, T], C=C, num_classes=K)
            v[f"ex2_held_{tag}_C{key}"] = 100 * metrics.accuracy(P_h, labels)
    return v


def ch06_multitask(ch: Chapter, test: dict, ok_avg) -> dict:
    """Exercise 3: chapter 5's multitask temporal net (its lab-ucf head) fused instead of the single-task net."""
    mt = ch.config("lab_multitask", None, ["datasets=[lab-hmdb,lab-ucf]", *scratch(1000)], variant="hmdb_first")
    s_mt = check_aligned(test["spatial"], ch.scores(train(mt, progress=False)["best_checkpoint"], task=1))
    ok_mt = metrics.predictions(average_fusion([test["spatial"]["scores"], s_mt["scores"]])) == s_mt["labels"]
    return dict(ex3_temporal_mt=100 * s_mt["accuracy"], ex3_avg_mt=100 * float(ok_mt.mean()),
                ex3_gap=100 * float(ok_mt.mean() - ok_avg.mean()), ex3_se=100 * metrics.paired_se(ok_mt, ok_avg),
                **{f"ex3_t_{k}": x for k, x in paired(s_mt, test["temporal"], "mt_vs_single").items()})


def ch06_last_layer(ch: Chapter, test: dict) -> dict:
    """Exercise 5: chapter 3's last-layer spatial net fused instead of the fine-tuned one."""
    r_last = train(ch.pretrained_spatial_config("last"), progress=False)
    s_last = check_aligned(test["spatial"], ch.scores(r_last["best_checkpoint"]))
    T, labels = test["temporal"]["scores"], np.asarray(s_last["labels"])
    ok_s, ok_t = right(s_last), metrics.predictions(T) == labels
    ok_f = metrics.predictions(average_fusion([s_last["scores"], T])) == labels
    v = dict(ex5_spatial=100 * s_last["accuracy"], ex5_avg=100 * float(ok_f.mean()),
             ex5_only_spatial=int((ok_s & ~ok_t).sum()), ex5_only_temporal=int((~ok_s & ok_t).sum()),
             ex5_gap=100 * float(ok_f.mean() - max(ok_s.mean(), ok_t.mean())),
             ex5_se=100 * metrics.paired_se(ok_f, ok_t if ok_t.mean() >= ok_s.mean() else ok_s))
    kind, cls = lab.class_info("lab-ucf")["kind"], list(s_last["classes"])
    for kd in KINDS:
        mk = np.isin(labels, [i for i, c in enumerate(cls) if kind[c] == kd])
        v[f"ex5_gain_{kd}"] = 100 * float(ok_f[mk].mean() - ok_t[mk].mean())  # over the temporal stream
        v[f"ex5_spatial_{kd}"] = 100 * float(ok_s[mk].mean())
    return v


def ch06(ch: Chapter) -> tuple[dict, dict]:
    cfgs = {"spatial": ch.pretrained_spatial_config("all"), "temporal": ch.config("lab_temporal")}
    runs = {s: train(cfgs[s], progress=False) for s in STREAMS}
    test = {s: ch.scores(runs[s]["best_checkpoint"]) for s in STREAMS}
    test["temporal"] = check_aligned(test["spatial"], test["temporal"])
    S, T, labels = test["spatial"]["scores"], test["temporal"]["scores"], np.asarray(test["spatial"]["labels"])
    ok_avg = metrics.predictions(average_fusion([S, T])) == labels
    base = {f"{s}, 25 x 10": test[s]["accuracy"] for s in STREAMS}  # as the chapter keys them
    v = {"ex2_avg": 100 * float(ok_avg.mean()), **ch06_svm(ch, runs, cfgs["temporal"], S, T, labels),
         **ch06_multitask(ch, test, ok_avg), **ch06_last_layer(ch, test)}
    return v, base


# ----------------------------------------------------------------------------------------- chapter 7
def ch07(ch: Chapter) -> tuple[dict, dict]:
    root, cache = ch.paths("lab-ucf")
    q75 = cache.with_name(cache.name + "-q75")
    prepare("lab-ucf", root, q75, flow="dis", workers=2, jpeg_quality=75, backward=True, progress=False)
    s0 = ch.scores(train(ch.config("lab_temporal"), progress=False)["best_checkpoint"])
    c = ch.config("lab_temporal", None, [f"caches=[{q75}]"], variant="q75")
    s = ch.scores(train(c, progress=False)["best_checkpoint"])
    flow_bytes = {k: sum(f.stat().st_size for f in Path(p).rglob("*") if f.is_file() and "flow" in f.name)
                  for k, p in (("q", cache), ("q75", q75))}
    v = dict(ex5_acc75=100 * s["accuracy"], ex5_acc=100 * s0["accuracy"], **paired(s, s0, "ex5_q75"),
             ex5_flow_mb=flow_bytes["q"] / 1e6, ex5_flow_mb75=flow_bytes["q75"] / 1e6)
    return v, {}  # the page trains no run: nothing of its own to compare with


CHAPTERS = {"03_spatial": ch03, "04_temporal": ch04, "05_multitask": ch05, "06_fusion": ch06, "07_scaling": ch07}


def machine() -> str:
    """This machine's CPU model and core count, e.g. ``"AMD EPYC 9B14, 2 cores"``."""
    cpuinfo = Path("/proc/cpuinfo")
    names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines()
             if ln.startswith("model name")] if cpuinfo.is_file() else []
    return f"{names[0] if names else platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def solve(name: str) -> Path:
    """Solve chapter ``name``'s training exercises; returns the JSON file written."""
    ch = Chapter(name, data_dir=REPO / "data", runs_dir=REPO / "runs", scorecard_dir=REPO / "book" / "scorecard")
    values, base = CHAPTERS[name](ch)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
    out = Path(SOLUTIONS_DIR) / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"chapter": name, "computed_by": "tools/solutions.py (make solutions)", "commit": commit.strip(),
           "machine": machine(),
           "base": {k: float(x) for k, x in base.items()},
           "values": {k: (float(x) if isinstance(x, (float, np.floating)) else x) for k, x in values.items()}}
    out.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chapters", nargs="+", default=list(CHAPTERS), choices=list(CHAPTERS))
    a = ap.parse_args(argv)
    for name in a.chapters:
        t0 = time.time()
        print(f"{name}: solutions in {solve(name)} ({time.time() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
