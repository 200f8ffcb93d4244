"""2-process CPU (gloo) training through ``launch``: DDP keeps the ranks identical and matches a 1-process
run with the same total batch."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

_SCRIPT = r"""
import sys
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.nn.parallel import DistributedDataParallel
from detcore.engine.data.samplers import TrainingSampler
from detcore.engine.launch import all_gather, get_rank, get_world_size, launch, synchronize
from detcore.engine.train import SimpleTrainer, build_optimizer

TOTAL_BATCH = 8


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.fc2 = nn.Linear(8, 1)
        self.unused = nn.Linear(2, 2)  # no gradient: DDP needs find_unused_parameters=True

    def forward(self, batch):
        x, y = batch
        p = self.fc2(torch.tanh(self.fc1(x)))
        return {"loss_mse": ((p - y) ** 2).mean(), "loss_l1": 0.1 * (p - y).abs().mean()}


def main(out_dir, num_iter):
    torch.set_num_threads(1)
    world, rank = get_world_size(), get_rank()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(24, 4, generator=g, dtype=torch.float64)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]], dtype=torch.float64)
    y = y + 0.1 * torch.randn(24, 1, generator=g, dtype=torch.float64)
    torch.manual_seed(100 + rank)  # different init per rank: DDP must broadcast rank 0's parameters
    model = Toy().double()  # float64: the only difference left is the order of summation
    sampler = TrainingSampler(len(x), seed=5)  # rank / world size from torch.distributed
    loader = DataLoader(TensorDataset(x, y), batch_size=TOTAL_BATCH // world, sampler=sampler)
    opt = build_optimizer(model, "SGD", 0.1, momentum=0.9, weight_decay=1e-4)
    trainer = SimpleTrainer(model, loader, opt, find_unused_parameters=True)
    assert isinstance(trainer.model, DistributedDataParallel) == (world > 1)
    if world > 1:
        assert trainer.model.find_unused_parameters
    trainer.train(0, num_iter)
    assert all_gather(rank) == list(range(world))
    torch.save(model.state_dict(), f"{out_dir}/ws{world}_rank{rank}.pt")
    synchronize()


if __name__ == "__main__":
    launch(main, int(sys.argv[2]), args=(sys.argv[1], 15))
"""


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env["OMP_NUM_THREADS"] = "1"
    env.pop("WORLD_SIZE", None)
    return env


def test_two_process_gloo_training_matches_single_process(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path), "2"],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # the 1-process reference runs here meanwhile, through launch() as well
    namespace = {"__name__": "ddp_script"}
    exec(compile(_SCRIPT, str(script), "exec"), namespace)
    threads = torch.get_num_threads()
    try:
        namespace["launch"](namespace["main"], 1, args=(str(tmp_path), 15))
    finally:
        torch.set_num_threads(threads)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, out
    r0 = torch.load(tmp_path / "ws2_rank0.pt")
    r1 = torch.load(tmp_path / "ws2_rank1.pt")
    single = torch.load(tmp_path / "ws1_rank0.pt")
    assert r0.keys() == single.keys()
    # the single run was initialized like rank 0 (seed 100); make sure training moved the parameters
    torch.manual_seed(100)
    init = torch.nn.Linear(4, 8).double().state_dict()
    assert not torch.allclose(single["fc1.weight"], init["weight"], atol=1e-3)
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
        torch.testing.assert_close(r0[k], single[k], rtol=0, atol=1e-6)
