"""Resume after a real SIGKILL: the resumed run reproduces the uninterrupted run's losses bit for bit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import torch

_SCRIPT = r"""
import os, random, sys, time
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from detcore.engine.checkpoint import Checkpointer
from detcore.engine.data.samplers import TrainingSampler
from detcore.engine.train import (HookBase, IterationTimer, JSONWriter, LRScheduler, PeriodicCheckpointer,
    PeriodicWriter, SimpleTrainer, build_lr_scheduler, build_optimizer)

out_dir, max_iter, metrics_name, slow_after = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
torch.set_num_threads(1)
random.seed(0)
np.random.seed(0)
torch.manual_seed(0)
g = torch.Generator().manual_seed(1)
X = torch.randn(20, 4, generator=g)
Y = X @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1 * torch.randn(20, 1, generator=g)


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 1)
        self.drop = nn.Dropout(0.2)  # torch RNG

    def forward(self, batch):
        x, y = batch
        # NumPy and Python RNGs too, so that every restored RNG state matters
        noise = torch.from_numpy(np.random.randn(*y.shape).astype("float32")) * 0.01 + random.random() * 1e-3
        p = self.fc(self.drop(x))
        return {"loss_mse": ((p - y - noise) ** 2).mean(), "loss_abs": 0.1 * (p - y).abs().mean()}


class Slow(HookBase):
    def after_step(self):
        if self.trainer.iter >= slow_after:
            time.sleep(0.25)


model = Toy()
sampler = TrainingSampler(20, shuffle=True, seed=3)
loader = DataLoader(TensorDataset(X, Y), batch_size=3, sampler=sampler)  # 20 % 3 != 0: batches cross epochs
opt = build_optimizer(model, "SGD", 0.05, momentum=0.9, weight_decay=1e-3)
sched = build_lr_scheduler(opt, "WarmupMultiStepLR", max_iter, steps=(12,), warmup_iters=4, warmup_factor=0.1)
trainer = SimpleTrainer(model, loader, opt)
trainer.scheduler = sched
ckpt = Checkpointer(model, out_dir, optimizer=opt, scheduler=sched, sampler=sampler)
trainer.register_hooks([
    IterationTimer(), LRScheduler(), PeriodicCheckpointer(ckpt, 3),
    PeriodicWriter([JSONWriter(os.path.join(out_dir, metrics_name))], period=1), Slow(),
])
start = ckpt.resume_or_load(None, resume=True).get("iteration", -1) + 1
print("START", start, flush=True)
trainer.train(start, max_iter)
"""

MAX_ITER = 20


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env["OMP_NUM_THREADS"] = "1"
    return env


def _metrics(path):
    with open(path) as f:
        return {r["iteration"]: r for r in map(json.loads, f)}


def test_resume_after_sigkill_reproduces_uninterrupted_run(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(_SCRIPT)
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    ref_dir.mkdir()
    run_dir.mkdir()

    # uninterrupted reference (runs concurrently with the killed one)
    ref = subprocess.Popen(
        [sys.executable, str(script), str(ref_dir), str(MAX_ITER), "metrics.jsonl", str(10**9)], env=_env()
    )
    # the run to kill: slowed down from iteration 7 on, killed once checkpoint 8 (or a later one) exists
    victim = subprocess.Popen(
        [sys.executable, str(script), str(run_dir), str(MAX_ITER), "metrics.jsonl", "7"], env=_env()
    )
    last = run_dir / "last_checkpoint"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and victim.poll() is None:
        if last.exists() and last.read_text() not in ("model_0000002.pth", "model_0000005.pth"):
            break
        time.sleep(0.01)
    assert victim.poll() is None, "the training process ended before it could be killed"
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=60) == -signal.SIGKILL
    name = last.read_text()
    assert name.startswith("model_") and name != "model_final.pth"
    k = int(name[len("model_") : -len(".pth")])
    assert k >= 8
    # whatever the kill interrupted, every file under a final name is a complete checkpoint
    for p in os.listdir(run_dir):
        if p.endswith(".pth"):
            assert "model" in torch.load(run_dir / p, weights_only=False)

    resumed = subprocess.run(
        [sys.executable, str(script), str(run_dir), str(MAX_ITER), "metrics_resumed.jsonl", str(10**9)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"START {k + 1}" in resumed.stdout
    assert ref.wait(timeout=120) == 0

    ref_rows = _metrics(ref_dir / "metrics.jsonl")
    res_rows = _metrics(run_dir / "metrics_resumed.jsonl")
    assert sorted(ref_rows) == list(range(MAX_ITER))
    assert sorted(res_rows) == list(range(k + 1, MAX_ITER))
    for it in range(k + 1, MAX_ITER):
        for key in ("total_loss", "loss_mse", "loss_abs", "lr"):
            assert res_rows[it][key] == ref_rows[it][key], (it, key)  # bitwise: exact float equality
    # the killed run's own lines before k agree as well (iteration k's line is written after its
    # checkpoint, so the kill may have come in between)
    killed_rows = _metrics(run_dir / "metrics.jsonl")
    for it in range(k):
        assert killed_rows[it]["total_loss"] == ref_rows[it]["total_loss"]
    ref_final = torch.load(ref_dir / "model_final.pth", weights_only=False)
    run_final = torch.load(run_dir / "model_final.pth", weights_only=False)
    for key, v in ref_final["model"].items():
        assert torch.equal(v, run_final["model"][key]), key
    assert ref_final["sampler_state"] == run_final["sampler_state"]
