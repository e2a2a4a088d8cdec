"""Training a Group VAE: data splits, the adversarial training loop, checkpoints.

The VAE (encoders + decoder) minimises ``-ELBO + reg_weight * I_hat`` with Adam; the critic of
the regulariser (if any) maximises ``I_hat`` with its own Adam on the same batch. Both learning
rates follow a cosine decay. Seeded runs on the CPU are bit-for-bit repeatable.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import pandas as pd
import torch
from tqdm import tqdm

from .config import ConfigError, RunConfig
from .data import GroupBatchLoader, GroupedData, generate_exam_scores
from .model import GroupVAE

__all__ = ["resolve_device", "make_splits", "train", "train_seeds", "train_step", "stack_step", "SeedStack", "TrainResult",
           "TrainingDiverged", "clip_grad_norm_per_seed_",
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
                                noise_std=data_cfg.noise_std, group_strength=data_cfg.group_strength,
                                seed=data_cfg.seed)
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
    """One adversarial step of a single model on ``batch`` (global RNG): the VAE's Adam step on
    ``-ELBO + reg_weight * I_hat``, then (if the model has a critic) the critic's Adam step on
    ``-I_hat``; gradients are clipped to ``tc.grad_clip``. Returns :meth:`GroupVAE.losses` of the
    batch (before the steps). :func:`train` computes exactly this (through :func:`stack_step` with
    one seed); the tests check it."""
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


class SeedStack:
    """Independent copies of one Group VAE, one per seed, trained in lock-step.

    Each seed's model is initialised exactly as a single run would be (``torch.manual_seed(seed)``
    then ``GroupVAE(cfg)``) and keeps its own random stream (a ``torch.Generator`` continuing from
    there) for the sampling noise and the critic's pairs. The parameters are stacked on a leading
    seed axis ``(S, ...)`` and the loss is vectorised over that axis with ``torch.func.vmap``, so a
    step costs a few large batched matrix products instead of S small ones. Nothing mixes seeds:
    Adam is elementwise and gradients are clipped per seed (tested: one seed's loss has exactly
    zero gradient on the others). A seed trained in a stack and alone agree to float rounding
    only, because batched products round their last bits differently.
    """

    def __init__(self, model_cfg, seeds: Sequence[int], device: torch.device):
        self.seeds, self.device = [int(s) for s in seeds], device
        models, self.generators = [], []
        for seed in self.seeds:
            torch.manual_seed(seed)
            models.append(GroupVAE(model_cfg).to(device))
            gen = torch.Generator(device=device)
            if device.type == "cpu":  # continue the stream that initialised the model
                gen.set_state(torch.get_rng_state())
            else:  # the CUDA stream of torch.manual_seed(seed), untouched by the CPU-side init
                gen.manual_seed(seed)
            self.generators.append(gen)
        self.template = models[0]
        self.params, self.buffers = torch.func.stack_module_state(models)
        self.vae_params = [p for n, p in self.params.items() if not n.startswith("regulariser.")]
        self.critic_params = [p for n, p in self.params.items() if n.startswith("regulariser.")]
        self._losses = torch.func.vmap(self._one_seed_losses, in_dims=(0, 0, 0, 0, 0, None))

    def _one_seed_losses(self, params, buffers, x, mask, noise, with_critic: bool):
        return torch.func.functional_call(self.template, (params, buffers), (x, mask, noise),
                                          dict(with_critic=with_critic))

    def draw_noise(self, masks: torch.Tensor, with_critic: bool = True, generators=None) -> Dict[str, torch.Tensor]:
        """Each seed's noise for its batch, ``masks (S, B, K)``, stacked on the seed axis: seed s
        gets exactly what ``GroupVAE.draw_noise(masks[s], generators[s])`` draws.

        When every seed sees one batch (``masks`` expanded from one mask, as in training), its
        observed positions are found once, not in every seed's draw: on a GPU each lookup waits
        for the device.
        """
        generators = generators or self.generators
        observed = masks[0].flatten().nonzero().squeeze(1) if masks.stride(0) == 0 else None
        noises = [self.template.draw_noise(m, g, with_critic=with_critic, observed=observed)
                  for m, g in zip(masks, generators)]
        return {key: torch.stack([n[key] for n in noises]) for key in noises[0]}

    def losses(self, x: torch.Tensor, masks: torch.Tensor, noise, with_critic: bool = True) -> Dict[str, torch.Tensor]:
        """:meth:`GroupVAE.forward` of every seed on its own batch: ``x (S, B, K, d)`` -> ``(S,)`` each.

        One seed runs the plain module on views of its parameters (vmap would only add overhead).
        """
        if len(self.seeds) == 1:
            first = lambda tensors: {n: t[0] for n, t in tensors.items()}  # noqa: E731
            out = self._one_seed_losses(first(self.params), first(self.buffers), x[0], masks[0], first(noise), with_critic)
            return {n: t[None] for n, t in out.items()}
        return self._losses(self.params, self.buffers, x, masks, noise, with_critic)

    def model(self, i: int) -> GroupVAE:
        """Seed ``self.seeds[i]``'s model as a plain :class:`GroupVAE` (eval mode, own parameters)."""
        model = GroupVAE(self.template.cfg).to(self.device)
        state = {n: t[i].detach().clone() for n, t in {**self.params, **self.buffers}.items()}
        model.load_state_dict(state)
        return model.eval()


def clip_grad_norm_per_seed_(params: Sequence[torch.Tensor], max_norm: float,
                             row_wise: Optional[bool] = None) -> torch.Tensor:
    """:func:`torch.nn.utils.clip_grad_norm_` applied to each seed of stacked ``(S, ...)``
    parameters separately; returns the ``(S,)`` norms before clipping.

    On a CPU every norm is taken over one seed's slice on its own, so the result does not depend
    on how many seeds are stacked (a reduction over a seed axis could change the rounding); on a
    GPU the norms are taken row-wise over the seed axis at once (equal up to rounding).
    ``row_wise`` chooses the way explicitly (default: row-wise on CUDA only).
    """
    n_seeds = params[0].shape[0]
    if row_wise is None:  # on a GPU a loop over seeds would cost 2 x S kernel launches a step
        row_wise = params[0].device.type == "cuda"
    if row_wise:
        norms = torch.stack([torch.linalg.vector_norm(p.grad.flatten(1), dim=1) for p in params], dim=1)
        total = torch.linalg.vector_norm(norms, dim=1)
    else:
        slices = [p.grad[i] for i in range(n_seeds) for p in params]  # seed-major
        norms = torch._foreach_norm(slices)
        total = torch.stack([torch.linalg.vector_norm(torch.stack(norms[i * len(params):(i + 1) * len(params)]))
                             for i in range(n_seeds)])
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for p in params:
        p.grad.mul_(coef.view(-1, *[1] * (p.dim() - 1)))
    return total


def stack_step(stack: SeedStack, x: torch.Tensor, mask: torch.Tensor, opt, critic_opt, tc) -> Dict[str, torch.Tensor]:
    """:func:`train_step` for every seed of ``stack`` at once, on ``x (S, B, K, d)``, ``mask (S, B, K)``:
    each seed's noise from its own stream, gradients clipped per seed. Returns the ``(S,)`` losses."""
    out = stack.losses(x, mask, stack.draw_noise(mask))
    opt.zero_grad(set_to_none=True)
    (out["neg_elbo"] + tc.reg_weight * out["mi"]).sum().backward(inputs=stack.vae_params)
    clip_grad_norm_per_seed_(stack.vae_params, tc.grad_clip)
    opt.step()
    if critic_opt is not None:
        critic_opt.zero_grad(set_to_none=True)
        out["critic_loss"].sum().backward(inputs=stack.critic_params)
        clip_grad_norm_per_seed_(stack.critic_params, tc.grad_clip)
        critic_opt.step()
    return out


def _stack(batch: GroupedData, n_seeds: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The batch seen by every seed: ``x (S, B, K, d)``, ``mask (S, B, K)`` (expanded views)."""
    return batch.x.expand(n_seeds, *batch.x.shape), batch.mask.expand(n_seeds, *batch.mask.shape)


@torch.no_grad()
def _valid_neg_elbo(stack: SeedStack, data: GroupedData, batch_size: int = 1024) -> torch.Tensor:
    """:func:`evaluate_neg_elbo` of every seed at once (seed s draws its noise from seed s), ``(S,)``."""
    generators = [torch.Generator(device=stack.device).manual_seed(s) for s in stack.seeds]
    total, n_obs = torch.zeros(len(stack.seeds), dtype=torch.float64, device=stack.device), 0
    for batch in GroupBatchLoader(data, batch_size, shuffle=False, bucket=False):
        x, mask = _stack(batch, len(stack.seeds))
        out = stack.losses(x, mask, stack.draw_noise(mask, with_critic=False, generators=generators), with_critic=False)
        total -= out["elbo_sum"].double()
        n_obs += batch.n_observations
    return total / n_obs


@dataclass
class TrainResult:
    """A trained model, its per-epoch history and the wall time of training (seconds)."""

    model: GroupVAE
    history: pd.DataFrame
    seconds: float
    config: RunConfig


def train(cfg: RunConfig, splits: Optional[Dict[str, GroupedData]] = None, progress: bool = True) -> TrainResult:
    """Train the model of ``cfg`` (seed ``cfg.seed``) on the training split and record the
    validation curve; the same as ``train_seeds(cfg, [cfg.seed])[0]``.

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
    return train_seeds(cfg, [cfg.seed], splits, progress)[0]


def train_seeds(cfg: RunConfig, seeds: Sequence[int], splits: Optional[Dict[str, GroupedData]] = None,
                progress: bool = True) -> List[TrainResult]:
    """Train one model per seed of ``seeds`` at once (a :class:`SeedStack`), each exactly as
    :func:`train` would train it alone; ``cfg.seed`` is ignored.

    All seeds visit the training groups in the same order (``cfg.train.shuffle_seed``), so every
    step holds one batch for all of them. Returns one :class:`TrainResult` per seed, in the order
    of ``seeds``; their ``seconds`` is the shared wall time divided by the number of seeds.
    """
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"train_seeds needs distinct seeds; got {seeds}")
    device = resolve_device(cfg.device)
    splits = splits if splits is not None else make_splits(cfg.data)
    train_data = splits["train"]
    GroupVAE(cfg.model).check_batch(train_data)
    tc = cfg.train
    stack = SeedStack(cfg.model, seeds, device)
    data_on_device = train_data.to(device)
    loader = GroupBatchLoader(data_on_device, tc.batch_size, shuffle=True, bucket=True,
                              drop_last=train_data.n_groups >= 2 * tc.batch_size, seed=tc.shuffle_seed)
    total_steps = max(1, tc.epochs * len(loader))
    schedule = lambda step: tc.lr_decay_to + (1 - tc.lr_decay_to) * 0.5 * (1 + math.cos(math.pi * step / total_steps))  # noqa: E731
    opt = torch.optim.Adam(stack.vae_params, lr=tc.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    critic_opt = torch.optim.Adam(stack.critic_params, lr=tc.critic_lr) if stack.critic_params else None
    critic_sched = torch.optim.lr_scheduler.LambdaLR(critic_opt, schedule) if critic_opt else None

    histories = [[] for _ in seeds]
    start = time.perf_counter()
    label = f"{cfg.preset} seed {seeds[0]}" if len(seeds) == 1 else f"{cfg.preset} {len(seeds)} seeds"
    bar = tqdm(total=total_steps, desc=label, disable=not progress, leave=False)
    step = 0
    for epoch in range(1, tc.epochs + 1):
        sum_loss = torch.zeros(len(seeds), device=device)
        sum_mi = torch.zeros(len(seeds), device=device)
        n_batches = 0
        for batch in loader:
            x, mask = _stack(batch, len(seeds))
            out = stack_step(stack, x, mask, opt, critic_opt, tc)
            sched.step()
            if critic_sched is not None:
                critic_sched.step()
            sum_loss += out["neg_elbo"].detach()
            sum_mi += out["mi"].detach()
            n_batches += 1
            step += 1
            if progress and (step % 20 == 0 or step == total_steps):
                bar.set_postfix(loss=f"{float(out['neg_elbo'].mean()):.3f}", mi=f"{float(out['mi'].mean()):.3f}")
            bar.update(1)
        train_loss = (sum_loss / max(n_batches, 1)).tolist()
        bad = [s for s, loss in zip(seeds, train_loss) if not math.isfinite(loss)]
        if bad:
            bar.close()
            raise TrainingDiverged(
                f"{cfg.preset} (seed {', '.join(map(str, bad))}) diverged in epoch {epoch}: the training loss is "
                f"not finite. Try a smaller learning rate (now lr={tc.lr}) or a smaller reg_weight (now {tc.reg_weight}).")
        valid = (_valid_neg_elbo(stack, splits["valid"]).tolist() if "valid" in splits
                 else [float("nan")] * len(seeds))
        train_mi = (sum_mi / max(n_batches, 1)).tolist()
        for i in range(len(seeds)):
            histories[i].append(dict(epoch=epoch, step=step, train_neg_elbo=train_loss[i], train_mi=train_mi[i],
                                     valid_neg_elbo=valid[i], seconds=time.perf_counter() - start))
    bar.close()
    seconds = (time.perf_counter() - start) / len(seeds)
    return [TrainResult(stack.model(i), pd.DataFrame(histories[i]), seconds, dataclasses.replace(cfg, seed=seed))
            for i, seed in enumerate(seeds)]


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
