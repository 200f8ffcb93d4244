"""NaiveSyncBatchNorm in a real 2-process gloo group (CPU), against BatchNorm over the concatenated batch.

One pair of worker processes runs every case (starting processes that import torch dominates the time).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.distributed as dist
from torch.nn import functional as F

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo"
    ),
]

# (stats_mode, per-worker batch sizes)
CASES = [("", (2, 2)), ("N", (3, 1)), ("N", (0, 2))]
WEIGHT = [0.5, 1.0, 2.0]
BIAS = [-1.0, 0.0, 1.0]

_WORKER = textwrap.dedent(
    """
    import sys
    import warnings

    warnings.simplefilter("error")  # e.g. deprecated collectives must not be used
    import torch
    import torch.distributed as dist
    from detcore.ops import NaiveSyncBatchNorm

    rank, init, out_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    cases, weight, bias = eval(sys.argv[4]), eval(sys.argv[5]), eval(sys.argv[6])
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    results = []
    for i, (stats_mode, batches) in enumerate(cases):
        torch.manual_seed(i)
        xs = [torch.randn(n, 3, 4, 5, dtype=torch.float64) for n in batches]
        grads = [torch.randn(n, 3, 4, 5, dtype=torch.float64) for n in batches]
        m = NaiveSyncBatchNorm(3, stats_mode=stats_mode, eps=1e-3).double()
        with torch.no_grad():
            m.weight.copy_(torch.tensor(weight))
            m.bias.copy_(torch.tensor(bias))
        x = xs[rank].clone().requires_grad_()
        out = m(x)
        (out * grads[rank]).sum().backward()
        results.append(dict(out=out.detach(), grad=x.grad, wgrad=m.weight.grad, mean=m.running_mean, var=m.running_var))
    torch.save(results, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()
    """
)


def test_naive_sync_bn_two_processes_gloo(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    init = f"file://{tmp_path / 'store'}"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p), OMP_NUM_THREADS="1")
    args = [init, str(tmp_path), repr(CASES), repr(WEIGHT), repr(BIAS)]
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(r), *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for r in range(2)
    ]
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out.decode(errors="replace")[-3000:]
    per_rank = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]

    for i, (_, batches) in enumerate(CASES):
        results = [per_rank[0][i], per_rank[1][i]]
        torch.manual_seed(i)
        xs = [torch.randn(n, 3, 4, 5, dtype=torch.float64) for n in batches]
        grads = [torch.randn(n, 3, 4, 5, dtype=torch.float64) for n in batches]
        x = torch.cat(xs).requires_grad_()
        weight = torch.tensor(WEIGHT, dtype=torch.float64, requires_grad=True)
        bias = torch.tensor(BIAS, dtype=torch.float64)
        out = F.batch_norm(x, None, None, weight, bias, training=True, eps=1e-3)
        (out * torch.cat(grads)).sum().backward()

        torch.testing.assert_close(torch.cat([r["out"] for r in results]), out.detach())
        torch.testing.assert_close(torch.cat([r["grad"] for r in results]), x.grad)
        # per-worker weight gradients sum to the single-worker one (DDP then averages them)
        torch.testing.assert_close(results[0]["wgrad"] + results[1]["wgrad"], weight.grad)
        cat = x.detach()
        for r in results:
            torch.testing.assert_close(r["mean"], 0.1 * cat.mean(dim=[0, 2, 3]))
            torch.testing.assert_close(r["var"], 0.9 + 0.1 * cat.var(dim=[0, 2, 3], unbiased=False))
