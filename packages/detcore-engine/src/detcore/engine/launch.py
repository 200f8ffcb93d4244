"""Multi-process launching and minimal communication helpers (detectron2's ``launch`` / ``comm``).

Two ways to run data-parallel training:

- ``launch(main_func, num_processes, args)`` spawns ``num_processes`` local processes with
  ``torch.multiprocessing`` ("spawn"), initializes the process group (gloo without CUDA, nccl with it; one GPU
  per process) and calls ``main_func(*args)`` in each. ``main_func`` must be picklable (a module-level
  function; in a script, guard the call with ``if __name__ == "__main__":``).
- torchrun: ``torchrun --nproc_per_node=2 train.py`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/
  ``MASTER_ADDR``/``MASTER_PORT``; in ``train.py`` call ``launch(main, 1, args)`` (or
  ``launch(main, 1, args, dist_url="env://")``): when ``WORLD_SIZE`` > 1 is set, ``launch`` initializes the
  process group from the environment (``init_method="env://"``) instead of spawning.
"""

from __future__ import annotations

import datetime
import os
import socket
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

__all__ = [
    "all_gather",
    "get_local_rank",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "launch",
    "synchronize",
]

_LOCAL_RANK = 0
DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)


def get_world_size() -> int:
    """Number of processes (1 without an initialized process group)."""
    if not dist.is_available() or not dist.is_initialized():
        return 1
    return dist.get_world_size()


def get_rank() -> int:
    """Global rank of this process (0 without an initialized process group)."""
    if not dist.is_available() or not dist.is_initialized():
        return 0
    return dist.get_rank()


def get_local_rank() -> int:
    """Rank within this machine."""
    return _LOCAL_RANK


def is_main_process() -> bool:
    return get_rank() == 0


def synchronize() -> None:
    """Barrier across all processes (no-op with one)."""
    if get_world_size() > 1:
        if dist.get_backend() == dist.Backend.NCCL and torch.cuda.is_available():
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def all_gather(data) -> list:
    """Gather a picklable object from every rank: ``[obj_rank0, obj_rank1, ...]``."""
    if get_world_size() == 1:
        return [data]
    out: list = [None] * get_world_size()
    dist.all_gather_object(out, data)
    return out


def _find_free_port() -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def _default_backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def launch(
    main_func: Callable,
    num_processes: int,
    args: tuple = (),
    dist_url: str = "auto",
    backend: str | None = None,
    timeout: datetime.timedelta = DEFAULT_TIMEOUT,
) -> None:
    """Run ``main_func(*args)`` in ``num_processes`` local processes (see the module docstring).

    Args:
        main_func: a picklable function.
        num_processes: processes to spawn on this machine (1: run in this process).
        args: positional arguments of ``main_func`` (picklable).
        dist_url: "auto" (a free localhost TCP port), "tcp://host:port", "file://..." or "env://".
        backend: "gloo" or "nccl" (default: nccl when CUDA is available, else gloo).
        timeout: collective-operation timeout.
    """
    if not isinstance(num_processes, int) or num_processes < 1:
        raise ValueError(f"launch: num_processes must be a positive int, got {num_processes!r}")
    backend = backend or _default_backend()
    env_world = int(os.environ.get("WORLD_SIZE", "1"))
    if num_processes == 1 and (dist_url == "env://" or env_world > 1):
        _init_from_env(backend, timeout)
        try:
            main_func(*args)
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()
        return
    if num_processes == 1:
        main_func(*args)
        return
    if dist_url == "auto":
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    mp.start_processes(
        _distributed_worker,
        nprocs=num_processes,
        args=(main_func, num_processes, backend, dist_url, tuple(args), timeout),
        daemon=False,
        start_method="spawn",
    )


def _init_from_env(backend: str, timeout: datetime.timedelta) -> None:
    global _LOCAL_RANK
    _LOCAL_RANK = int(os.environ.get("LOCAL_RANK", "0"))
    if backend == "nccl":
        torch.cuda.set_device(_LOCAL_RANK)
    dist.init_process_group(backend=backend, init_method="env://", timeout=timeout)


def _distributed_worker(
    local_rank: int,
    main_func: Callable,
    world_size: int,
    backend: str,
    dist_url: str,
    args: tuple,
    timeout: datetime.timedelta,
) -> None:
    global _LOCAL_RANK
    _LOCAL_RANK = local_rank
    if backend == "nccl":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"launch: {world_size} processes with nccl need as many GPUs, found {torch.cuda.device_count()}"
            )
        torch.cuda.set_device(local_rank)
    dist.init_process_group(
        backend=backend, init_method=dist_url, world_size=world_size, rank=local_rank, timeout=timeout
    )
    try:
        synchronize()
        main_func(*args)
    finally:
        dist.destroy_process_group()
