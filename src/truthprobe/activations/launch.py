"""Fill a cache's shards in worker processes or SLURM array tasks, through submitit, then merge.

submitit is the engine: its local executor runs workers as processes on this machine, its
SLURM executor submits one job array (partition, GPUs, time, parallelism, account), and a
task that SLURM preempts or times out is requeued (`ShardWorker.checkpoint`). Requeueing is
safe because shards are idempotent (`truthprobe.activations.shards`): a requeued task skips
its finished shards and resumes an interrupted one from its written rows. Each worker loads
the model once and fills every shard given to it; where the model sits is `--device`'s
business (`auto`: across the task's GPUs with `device_map`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from truthprobe.activations.cache import CacheError
from truthprobe.configs import Launcher, SlurmConfig
from truthprobe.errors import TruthprobeError

__all__ = ["Launch", "LaunchError", "Launcher", "ShardWorker", "SlurmConfig", "run_shards"]
#: A local worker's time limit (submitit kills local jobs after 5 minutes by default).
LOCAL_TIMEOUT_MIN = 7 * 24 * 60


class LaunchError(TruthprobeError, RuntimeError):
    """A shard worker failed; the message names it and its log."""


@dataclass
class ShardWorker:
    """One worker: `fill(*args, indices, count)` fills the shards `indices` of `count` (loading
    the model once, skipping finished shards) and returns the whole cache's path. `fill` is a
    module-level function, so submitit can pickle the worker and run it anywhere."""

    fill: Callable[..., str]
    args: tuple
    indices: tuple[int, ...]
    count: int
    threads: int = 0
    """CPU threads of this worker (0: torch's default), so local workers share the cores."""

    def __call__(self) -> str:
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        return self.fill(*self.args, self.indices, self.count)

    def checkpoint(self) -> Any:
        """submitit calls this when SLURM preempts or times the task out: run it again (its
        finished shards are skipped, an interrupted one resumes)."""
        import submitit

        return submitit.helpers.DelayedSubmission(dataclasses.replace(self))


def assignments(count: int, workers: int) -> list[tuple[int, ...]]:
    """Shards 0..count-1 dealt to `workers` workers in turn (so each gets long and short
    rows alike: shards follow the length-sorted order)."""
    workers = max(1, min(workers, count))
    return [tuple(range(w, count, workers)) for w in range(workers)]


def local_workers(count: int) -> int:
    """Local workers by default: one per shard, at most one per CPU core."""
    return max(1, min(count, os.cpu_count() or 1))


def executor(launcher: Launcher, folder: str | Path, slurm: SlurmConfig | None = None):
    """The submitit executor of `launcher`, its logs under `folder`."""
    import submitit

    slurm = slurm or SlurmConfig()

    if launcher == "local":
        local = submitit.LocalExecutor(folder=str(folder))
        local.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN)  # submitit's default: 5 min
        return local
    try:
        run = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    except RuntimeError as err:  # submitit: no `srun` on PATH
        raise LaunchError(
            f"no SLURM here ({err}): run this on the cluster's login node, or use --launcher local"
        ) from None
    parameters: dict[str, Any] = {
        "timeout_min": slurm.time,
        "gpus_per_node": slurm.gpus_per_task,
        "cpus_per_task": slurm.cpus_per_task,
        "tasks_per_node": 1,
        "slurm_array_parallelism": slurm.parallelism,
        "name": "truthprobe-shards",
    }
    if slurm.partition:
        parameters["slurm_partition"] = slurm.partition
    if slurm.account:
        parameters["slurm_account"] = slurm.account
    if slurm.mem_gb:
        parameters["mem_gb"] = slurm.mem_gb
    run.update_parameters(**parameters)
    return run


@dataclass(frozen=True)
class Launch:
    """How shards are run: `count` shards through `launcher`, logs under `folder`."""

    count: int
    launcher: Launcher = "local"
    workers: int = 0
    """Local worker processes (0: `local_workers`); on SLURM every shard is an array task."""
    folder: str = "jobs"
    slurm: SlurmConfig = SlurmConfig()


def submit(fill: Callable[..., str], args: tuple, launch: Launch) -> list:
    """Submit the shard workers (locally `launch.workers` processes, each with its share of
    the cores; on SLURM one array task per shard); returns submitit's jobs."""
    count, local = launch.count, launch.launcher == "local"
    workers = (launch.workers or local_workers(count)) if local else count
    threads = max(1, (os.cpu_count() or 1) // min(workers, count)) if local else 0
    tasks = [ShardWorker(fill, args, part, count, threads) for part in assignments(count, workers)]
    run = executor(launch.launcher, launch.folder, launch.slurm)
    with run.batch():
        return [run.submit(task) for task in tasks]


def wait(jobs: Sequence, folder: str | Path) -> str:
    """Wait for every job; the whole cache's path. A failed worker raises `LaunchError`
    naming its log (the others are left to finish: their shards stay)."""
    paths = set()
    for i, job in enumerate(jobs):
        try:
            paths.add(job.result())
        except Exception as err:  # submitit wraps the worker's exception in text
            last = [line for line in str(err).splitlines() if line.strip()][-1:] or [str(err)]
            raise LaunchError(
                f"shard worker {i} failed: {last[0].strip()}; its log: {job.paths.stderr} "
                f"(under {folder}); run the same command again to finish the shards left"
            ) from None
    if len(paths) != 1:
        raise CacheError(f"shard workers wrote to different caches: {sorted(paths)}")
    return paths.pop()


def run_shards(fill: Callable[..., str], args: tuple, launch: Launch) -> tuple[Path, float, float]:
    """Fill every shard through `launch` and merge them: (merged cache path, seconds filling,
    seconds merging)."""
    from truthprobe.activations.shards import merge_shards

    started = time.perf_counter()
    path = wait(submit(fill, args, launch), launch.folder)
    filled = time.perf_counter()
    merge_shards(path, launch.count)
    return Path(path), filled - started, time.perf_counter() - filled
