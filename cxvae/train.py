"""Training a Group VAE: data splits, the adversarial training loop, checkpoints.

The VAE (encoders + decoder) minimises ``-ELBO + reg_weight * I_hat`` with Adam; the critic of
the regulariser (if any) maximises ``I_hat`` with its own Adam on the same batch. Both learning
rates follow a cosine decay. Seeded runs on the CPU are bit-for-bit repeatable.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

import pandas as pd
import torch
from tqdm import tqdm

from .config import ConfigError, RunConfig
from .data import GroupBatchLoader, GroupedData, generate_exam_scores
from .model import GroupVAE

__all__ = ["resolve_device", "make_splits", "train", "train_step", "TrainResult", "TrainingDiverged",
           "evaluate_neg_elbo", "save_checkpoint", "save_run"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def resolve_device(name: str = "auto") -> torch.device:
    """``'auto'`` -> CUDA if available else CPU; ``'cpu'``/``'cuda'``/``'cuda:N'`` as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was asked for but CUDA is not available here; use --device cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")
    return torch.device(name)


def make_splits(data_cfg) -> Dict[str, GroupedData]:
    """Disjoint ``train``, ``valid`` and ``holdout`` groups: consecutive slices of one exam-scores
    sample drawn with ``data_cfg.seed`` (so every model seed sees the same data)."""
    n = data_cfg.n_train + data_cfg.n_valid + data_cfg.n_holdout
    full = generate_exam_scores(n, mean_extra_size=data_cfg.mean_extra_size, min_size=data_cfg.min_size,
                                noise_std=data_cfg.noise_std, seed=data_cfg.seed)
    a, b = data_cfg.n_train, data_cfg.n_train + data_cfg.n_valid
    return dict(train=full.subset(slice(0, a)), valid=full.subset(slice(a, b)), holdout=full.subset(slice(b, n)))


@torch.no_grad()
def evaluate_neg_elbo(model: GroupVAE, data: GroupedData, batch_size: int = 1024, seed: int = 0) -> float:
    """Negative ELBO per observation of ``data`` (one sample per group, fixed seed)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        total, n_obs = 0.0, 0
        for batch in GroupBatchLoader(data, batch_size, shuffle=False, bucket=False):
            batch = batch.to(device)
            total += float(-model.elbo_terms(batch.x, batch.mask)["elbo"].sum())
            n_obs += batch.n_observations
    model.train(was_training)
    return total / n_obs


def train_step(model: GroupVAE, batch: GroupedData, opt, critic_opt, tc) -> Dict[str, torch.Tensor]:
    """One adversarial step on ``batch``: the VAE's Adam step on ``-ELBO + reg_weight * I_hat``,
    then (if the model has a critic) the critic's Adam step on ``-I_hat``; gradients are clipped
    to ``tc.grad_clip``. Returns :meth:`GroupVAE.losses` of the batch (before the steps)."""
    out = model.losses(batch)
    opt.zero_grad(set_to_none=True)
    (out["neg_elbo"] + tc.reg_weight * out["mi"]).backward(inputs=model.vae_parameters())
    torch.nn.utils.clip_grad_norm_(model.vae_parameters(), tc.grad_clip)
    opt.step()
    if critic_opt is not None:
        critic_params = model.critic_parameters()
        critic_opt.zero_grad(set_to_none=True)
        out["critic_loss"].backward(inputs=critic_params)
        torch.nn.utils.clip_grad_norm_(critic_params, tc.grad_clip)
        critic_opt.step()
    return out


@dataclass
class TrainResult:
    """A trained model, its per-epoch history and the wall time of training (seconds)."""

    model: GroupVAE
    history: pd.DataFrame
    seconds: float
    config: RunConfig


def train(cfg: RunConfig, splits: Optional[Dict[str, GroupedData]] = None, progress: bool = True) -> TrainResult:
    """Train the model of ``cfg`` on the training split and record the validation curve.

    Args:
        cfg: the run (model, data, optimisation, seed, device).
        splits: precomputed :func:`make_splits` output (made from ``cfg.data`` if None).
        progress: show a progress bar with the running loss.
    Returns:
        :class:`TrainResult`; ``history`` has one row per epoch with ``train_neg_elbo``,
        ``train_mi`` and ``valid_neg_elbo`` (per observation).
    Raises:
        TrainingDiverged: if the loss becomes NaN or infinite (with where and what to try).
        DataError: if the data do not suit the model (e.g. groups too small for a regulariser).
    """
    device = resolve_device(cfg.device)
    splits = splits if splits is not None else make_splits(cfg.data)
    train_data = splits["train"]
    torch.manual_seed(cfg.seed)
    model = GroupVAE(cfg.model).to(device)
    model.check_batch(train_data)
    tc = cfg.train
    loader = GroupBatchLoader(train_data.to(device), tc.batch_size, shuffle=True, bucket=True,
                              drop_last=train_data.n_groups >= 2 * tc.batch_size, seed=cfg.seed)
    total_steps = max(1, tc.epochs * len(loader))
    schedule = lambda step: tc.lr_decay_to + (1 - tc.lr_decay_to) * 0.5 * (1 + math.cos(math.pi * step / total_steps))  # noqa: E731
    opt = torch.optim.Adam(model.vae_parameters(), lr=tc.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    critic_params = model.critic_parameters()
    critic_opt = torch.optim.Adam(critic_params, lr=tc.critic_lr) if critic_params else None
    critic_sched = torch.optim.lr_scheduler.LambdaLR(critic_opt, schedule) if critic_opt else None

    rows, start = [], time.perf_counter()
    bar = tqdm(total=total_steps, desc=f"{cfg.preset} seed {cfg.seed}", disable=not progress, leave=False)
    step = 0
    for epoch in range(1, tc.epochs + 1):
        model.train()
        sum_loss = torch.zeros((), device=device)
        sum_mi = torch.zeros((), device=device)
        n_batches = 0
        for batch in loader:
            out = train_step(model, batch, opt, critic_opt, tc)
            sched.step()
            if critic_sched is not None:
                critic_sched.step()
            sum_loss += out["neg_elbo"].detach()
            sum_mi += out["mi"].detach()
            n_batches += 1
            step += 1
            if progress and (step % 20 == 0 or step == total_steps):
                bar.set_postfix(loss=f"{float(out['neg_elbo']):.3f}", mi=f"{float(out['mi']):.3f}")
            bar.update(1)
        train_loss = float(sum_loss) / max(n_batches, 1)
        if not math.isfinite(train_loss):
            bar.close()
            raise TrainingDiverged(
                f"{cfg.preset} (seed {cfg.seed}) diverged in epoch {epoch}: the training loss is {train_loss}. "
                f"Try a smaller learning rate (now lr={tc.lr}) or a smaller reg_weight (now {tc.reg_weight}).")
        valid = evaluate_neg_elbo(model, splits["valid"], seed=cfg.seed) if "valid" in splits else float("nan")
        rows.append(dict(epoch=epoch, step=step, train_neg_elbo=train_loss,
                         train_mi=float(sum_mi) / max(n_batches, 1), valid_neg_elbo=valid,
                         seconds=time.perf_counter() - start))
    bar.close()
    model.eval()
    return TrainResult(model, pd.DataFrame(rows), time.perf_counter() - start, cfg)


def save_checkpoint(path, model: GroupVAE, cfg: RunConfig) -> None:
    """Write ``{'config_json': str, 'state_dict': ...}``, loadable with ``weights_only=True``
    (:func:`cxvae.model.load_model`); written to a temporary file first, then renamed."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"config_json": cfg.to_json(), "state_dict": state}, tmp)
    os.replace(tmp, path)


def save_run(out_dir, result: TrainResult) -> Path:
    """Write ``config.json``, ``model.pt`` and ``history.csv`` of a run into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(result.config.to_json() + "\n")
    save_checkpoint(out / "model.pt", result.model, result.config)
    result.history.to_csv(out / "history.csv", index=False)
    return out
