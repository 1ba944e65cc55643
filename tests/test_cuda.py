"""The GPU code paths of the trainer: bf16 autocast, channels_last, torch.compile, DDP with NCCL.

Each runs on CUDA under ``make gpu-check`` (tests marked ``cuda``, skipped without a GPU) and, for its logic, on the
CPU in every test run (the unmarked twins), so CI without a GPU still covers it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from twostream_lib.models import build_model
from twostream_lib.train import train_step

REPO = Path(__file__).resolve().parents[1]
CUDA = torch.cuda.is_available()
needs_cuda = [pytest.mark.cuda, pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (make gpu-check)")]


def _step_losses(device: str, amp=False, channels_last=False, compile=False, steps=4):
    torch.manual_seed(0)
    model = build_model("cnn_m_2048", in_channels=20, num_classes=5, dropout=0.0, width=0.125, input_size=64)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[100])
    net = torch.compile(model) if compile else model
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 20, 64, 64, generator=g), torch.randint(0, 5, (8,), generator=g)
    return [train_step(net, (x, y), opt, sched, torch.device(device), amp=amp, channels_last=channels_last)["loss"]
            for _ in range(steps)]


@pytest.mark.parametrize("option", ["amp", "channels_last"])
def test_speed_options_train_like_fp32_on_cpu(option):
    """bf16 autocast and channels_last change how a step computes, not what it learns: on the CPU the losses of a
    few steps on one batch fall as with fp32, within bf16 rounding."""
    ref = _step_losses("cpu")
    got = _step_losses("cpu", **{option: True})
    assert got[-1] < got[0] and ref[-1] < ref[0]
    assert max(abs(a - b) for a, b in zip(ref, got)) < (0.05 if option == "amp" else 1e-4)


def test_compile_option_wraps_the_net(tmp_path):
    """``compile: true`` hands the loop a ``torch.compile``d net (compiling and running it is checked on CUDA,
    where it is meant to pay; on this CPU it would spend minutes in code generation)."""
    from test_train import synth_cfg
    from twostream_lib.train import parallel_net

    model = build_model("cnn_m_2048", in_channels=3, num_classes=3, dropout=0.0, width=0.125, input_size=64)
    net = parallel_net(model, synth_cfg(tmp_path, compile=True), torch.device("cpu"), world=1)
    assert isinstance(net, torch._dynamo.eval_frame.OptimizedModule) and net._orig_mod is model
    assert parallel_net(model, synth_cfg(tmp_path), torch.device("cpu"), world=1) is model


@pytest.mark.parametrize("option", [{}, {"amp": True}, {"channels_last": True}, {"compile": True},
                                    {"amp": True, "channels_last": True}], ids=str)
@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (make gpu-check)")
def test_speed_options_on_cuda(option):
    ref, got = _step_losses("cpu"), _step_losses("cuda", **option)
    assert got[-1] < got[0]
    assert max(abs(a - b) for a, b in zip(ref, got)) < (0.05 if option.get("amp") else 2e-3)


DDP_ONE_GPU = textwrap.dedent("""
    import sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from test_train import synth_cfg, synth_data
    from twostream_lib.train import train
    r = train(synth_cfg(Path(sys.argv[2]), device="cuda", max_iters=6, ckpt_every=3, val_every=3),
              progress=False, data=synth_data())
    print("steps", r["final"]["step"])
""")


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (make gpu-check)")
def test_ddp_nccl_one_gpu(tmp_path):
    """torchrun with one process per GPU: NCCL process group, DDP wrapper, rank-0 checkpoints."""
    script = tmp_path / "ddp1.py"
    script.write_text(DDP_ONE_GPU)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", str(script),
           str(Path(__file__).parent), str(tmp_path)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("torchrun timed out")
    assert proc.returncode == 0 and "steps 6" in out, out[-2000:] + err[-2000:]
    assert (tmp_path / "run" / "last.pt").is_file()
