"""Where a study's runs train: in this process (``local``, the default) or as Ray core tasks (``ray``).

With ``--engine ray`` a sweep (:func:`cxvae.runner.sweep`, ``cxvae sweep`` and ``cxvae strength``)
submits one Ray task per block, a preset and the seeds trained at once with it
(:func:`~cxvae.train.train_seeds`), to the cluster at ``--address`` (``auto`` or ``HOST:PORT``;
without one, a Ray started on this machine for the sweep alone). Each task holds ``task_cpus``
CPUs (torch's thread count in it) and ``task_gpus`` GPUs, a fraction letting several blocks share
one GPU. It trains and scores its block exactly as the in-process sweep does, and returns its
runs, models included, to this process, the driver, which writes each run's row, curve and model
into the study folder as the task's result comes: workers never write to the folder, so a cluster
needs no shared disk, and the folder's layout is the in-process sweep's.

Loss-free as the in-process sweep is: the driver writes a run only whole and atomically, and
never one that ``runs.csv`` already holds (:func:`~cxvae.store.save_run`); a task whose
worker dies is retried (``MAX_RETRIES`` times) by Ray; a task that fails (an error in it, or a
worker lost more often than that) is reported with its preset, seeds and error once the other
tasks have been collected (:class:`TaskFailed`); and a driver killed mid-study keeps every row it
wrote, so the same command run again trains only the missing runs.
"""
from __future__ import annotations

import contextlib
import re
import socket
from typing import List, Optional, Sequence

import torch
from tqdm import tqdm

from .config import ConfigError

__all__ = ["ENGINES", "MAX_RETRIES", "TaskFailed", "check_engine", "ray_session", "run_on_ray", "run_block"]

ENGINES = ("local", "ray")
MAX_RETRIES = 3  # times Ray reruns a task whose worker process died (node lost, killed, out of memory)


class TaskFailed(RuntimeError):
    """Some blocks of a study failed on the engine; ``failures`` names each (preset, seeds and error)."""

    def __init__(self, failures: Sequence[str]):
        self.failures = list(failures)
        super().__init__(f"{len(self.failures)} task(s) failed, their runs not written (the rest were): "
                         + "; ".join(self.failures))


def check_engine(engine: str, address: Optional[str] = None, task_cpus: int = 1,
                 task_gpus: Optional[float] = None) -> None:
    """Refuse (:class:`~cxvae.config.ConfigError`) an unknown engine, a malformed address, Ray
    options given to the local engine, bad resources, or the Ray engine where Ray is not installed."""
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}; use one of: {', '.join(ENGINES)}")
    if engine == "local":
        given = [name for name, value, default in (("--address", address, None), ("--task-cpus", task_cpus, 1),
                                                   ("--task-gpus", task_gpus, None)) if value != default]
        if given:
            raise ConfigError(f"{', '.join(given)} need(s) --engine ray (the local engine trains in this process)")
        return
    if isinstance(task_cpus, bool) or not isinstance(task_cpus, int) or task_cpus < 1:
        raise ConfigError(f"--task-cpus must be a whole number of CPUs, at least 1; got {task_cpus!r}")
    if task_gpus is not None and not (isinstance(task_gpus, (int, float)) and 0 <= task_gpus):
        raise ConfigError(f"--task-gpus must be a number of GPUs, 0 or more (e.g. 0.25); got {task_gpus!r}")
    if address is not None and address != "auto" and not re.fullmatch(r"[\w.\-]+:\d{1,5}", str(address)):
        raise ConfigError(f"cannot read --address {address!r}; use auto or HOST:PORT (e.g. 10.0.0.5:6379)")
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ConfigError("the ray engine needs Ray: pip install 'cxvae[ray]'") from None


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A one-line ConfigError unless something listens at ``HOST:PORT`` (Ray itself would retry for a minute)."""
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise ConfigError(f"no Ray cluster answers at {address} ({err.strerror or err}); start one with "
                          "`ray start --head` or give its address") from None


@contextlib.contextmanager
def ray_session(address: Optional[str] = None):
    """Connect to the Ray cluster at ``address`` (``'auto'``: the one ``ray start`` made on this
    machine; ``HOST:PORT``: its head), or start a local Ray without one, for the ``with`` block;
    disconnect (and stop a local Ray) after it. A Ray this process already started (``ray.init``)
    is used as it is and left running. A cluster that cannot be reached is a one-line ConfigError."""
    import ray

    if ray.is_initialized():
        yield
        return
    if address not in (None, "auto"):
        _check_reachable(address)
    kwargs = dict(address="local", include_dashboard=False) if address is None else dict(address=address)
    try:
        ray.init(logging_level="WARNING", **kwargs)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as err:
        where = "start a local Ray" if address is None else f"connect to a Ray cluster at {address}"
        lines = str(err).strip().splitlines() or [type(err).__name__]
        raise ConfigError(f"cannot {where}: {lines[0]}") from None
    try:
        yield
    finally:
        ray.shutdown()


def run_block(cfg, seeds: List[int], splits, cuda_graphs: bool = False, together: bool = False,
              threads: int = 1):
    """One Ray task: train the ``seeds`` of ``cfg``'s preset at once and score them, as the
    in-process sweep does; returns ``([(result, metrics, score_seconds), ...], provenance)``, the
    models on the CPU. ``splits`` are the sweep's data (moved to the task's device);
    ``threads``: torch's thread count (the task's CPUs)."""
    from .runner import provenance, scored
    from .train import resolve_device, train_seeds

    torch.set_num_threads(threads)
    device = resolve_device(cfg.device)
    prov = provenance(device)  # before training: the commit the task started from
    splits = {k: v.to(device) for k, v in splits.items()}
    results = train_seeds(cfg, seeds, splits, progress=False, cuda_graphs=cuda_graphs)
    runs = list(scored(results, splits, together))
    for result, _, _ in runs:
        result.model.cpu()
    return runs, prov


def _error_line(err: BaseException) -> str:
    """A task's error in one line: the exception raised in the task, else Ray's first line."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {str(cause).strip().splitlines()[0] if str(cause).strip() else ''}"
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


def default_task_gpus(device: str) -> float:
    """GPUs a task holds when ``--task-gpus`` is not given: 1 on a CUDA device (``auto`` where this
    machine has one), else 0."""
    cuda = str(device).startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return 1.0 if cuda else 0.0


def _check_resources(cpus: int, gpus: float) -> None:
    """A ConfigError when no node of the cluster could run a task of ``cpus`` CPUs and ``gpus``
    GPUs (Ray would wait for such a node for ever)."""
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if not any(r.get("CPU", 0) >= cpus and r.get("GPU", 0) >= gpus for r in nodes):
        have = ", ".join(f"{r.get('CPU', 0):g} CPUs and {r.get('GPU', 0):g} GPUs" for r in nodes) or "no nodes"
        raise ConfigError(f"no node of the Ray cluster has {cpus} CPUs and {gpus:g} GPUs for a task (it has: {have}); "
                          "lower --task-cpus or --task-gpus, or use --device cpu")


def run_on_ray(plans, cuda_graphs: bool = False, together: bool = False, task_cpus: int = 1,
               task_gpus: Optional[float] = None, progress: bool = True) -> None:
    """Submit every block of ``plans`` (:class:`~cxvae.runner.SweepPlan`, each a study folder)
    as a Ray task and write each run as its task's result comes (in a Ray session:
    :func:`ray_session`). One progress bar counts the runs. Raises :class:`TaskFailed` naming the
    blocks that failed, after every other block's runs were written."""
    import ray

    from .runner import format_seeds
    from .store import save_run

    submit, stored = {}, {}
    for plan in plans:
        if not plan.blocks:
            continue
        first = next(iter(plan.configs.values()))
        gpus = default_task_gpus(first.device) if task_gpus is None else task_gpus
        _check_resources(task_cpus, gpus)
        task = ray.remote(run_block).options(num_cpus=task_cpus, num_gpus=gpus, max_retries=MAX_RETRIES)
        if repr(first.data) not in stored:  # the data go to the object store once, not with every task or plan
            stored[repr(first.data)] = ray.put(plan.splits)
        splits = stored[repr(first.data)]
        for preset, block in plan.blocks:
            ref = task.remote(plan.config(preset, block[0]), block, splits, cuda_graphs, together, task_cpus)
            submit[ref] = (plan, preset, block)
    bar = tqdm(total=sum(len(block) for _, _, block in submit.values()), desc="sweep",
               disable=not progress or not submit)
    failures = []
    try:
        while submit:
            ready, _ = ray.wait(list(submit), num_returns=1, timeout=1.0)  # a timeout lets Ctrl-C through
            if not ready:
                continue
            ref = ready[0]
            plan, preset, block = submit.pop(ref)
            try:
                scored, prov = ray.get(ref)
            except ray.exceptions.RayError as err:
                failures.append(f"{preset} seeds {format_seeds(block)}: {_error_line(err)}")
                bar.write(f"failed: {failures[-1]}")
                continue
            for result, metrics, seconds in scored:
                save_run(plan.out, result, metrics, seconds, prov)  # not if another sweep sharing the folder did
            bar.update(len(scored))
    finally:
        bar.close()
        for ref in submit:  # interrupted: nothing more is collected
            ray.cancel(ref, force=True)
    if failures:
        raise TaskFailed(failures)
