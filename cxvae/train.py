"""Training a Group VAE: data splits, the adversarial training loop, checkpoints.

The VAE (encoders + decoder) minimises ``-ELBO + reg_weight * I_hat`` with Adam; the critic of
the regulariser (if any) maximises ``I_hat`` with its own Adam on the same batch. Both learning
rates follow a cosine decay. Seeded runs on the CPU are bit-for-bit repeatable.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import pandas as pd
import torch
from tqdm import tqdm

from .config import ConfigError, RunConfig, require_int, require_real
from .data import DataError, GroupBatchLoader, GroupedData, generate_exam_scores
from .model import GroupVAE
from .noise import TRAIN, VALID, seed_words, step_noise, word

__all__ = ["resolve_device", "make_splits", "train", "train_seeds", "train_step", "stack_step", "adversarial_backward", "SeedStack", "GraphedStep", "make_optimisers", "make_step", "TrainResult",
           "TrainingDiverged", "clip_grad_norm_per_seed_", "clip_into_flat_",
           "evaluate_neg_elbo", "save_checkpoint", "save_run", "EarlyStopping"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def resolve_device(name: str = "auto") -> torch.device:
    """``'auto'`` -> CUDA if available else CPU; ``'cpu'``/``'cuda'``/``'cuda:N'`` as given."""
    if isinstance(name, torch.device):
        name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(name, str) or not re.fullmatch(r"cpu|cuda(:\d+)?", name):
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was asked for but CUDA is not available here; use --device cpu")
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


def adversarial_backward(neg_elbo: torch.Tensor, mi: torch.Tensor, vae_params: Sequence[torch.Tensor],
                         critic_params: Sequence[torch.Tensor], reg_weight: float) -> None:
    """Both players' gradients from one backward pass: ``d(neg_elbo + reg_weight * mi)`` on the
    VAE's parameters and ``d(-mi)`` on the critic's (losses of any shape; they are summed).

    The critic's parameters reach the loss only through ``mi``, so the pass leaves
    ``reg_weight * d mi`` on them, which is then multiplied by ``-1 / reg_weight``; that is exact
    when ``reg_weight`` is a power of two (the default 1), so the gradients are bit for bit those of
    a second backward pass of ``-mi``, which this saves. With ``reg_weight = 0`` the critic gets
    its own pass.
    """
    vae_params, critic_params = list(vae_params), list(critic_params)
    if not critic_params:
        (neg_elbo + reg_weight * mi).sum().backward(inputs=vae_params)
        return
    if reg_weight == 0:
        (neg_elbo + reg_weight * mi).sum().backward(inputs=vae_params, retain_graph=True)
        (-mi).sum().backward(inputs=critic_params)
        return
    (neg_elbo + reg_weight * mi).sum().backward(inputs=vae_params + critic_params)
    torch._foreach_mul_([p.grad for p in critic_params], -1.0 / reg_weight)


def train_step(model: GroupVAE, batch: GroupedData, opt, critic_opt, tc,
               noise: Optional[Dict[str, torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
    """One adversarial step of a single model on ``batch``: the VAE's Adam step on
    ``-ELBO + reg_weight * I_hat``, then (if the model has a critic) the critic's Adam step on
    ``-I_hat`` (both gradients from one backward pass, :func:`adversarial_backward`); gradients
    are clipped to ``tc.grad_clip``. ``noise`` as :meth:`GroupVAE.draw_noise` returns it (drawn
    from the global RNG if None). Returns :meth:`GroupVAE.losses` of the batch (before the steps).
    With the noise of (seed, step), :func:`train` computes exactly this (through
    :func:`stack_step` with one seed); the tests check it."""
    out = model.losses(batch, noise)
    critic_params = model.critic_parameters() if critic_opt is not None else []
    opt.zero_grad(set_to_none=True)
    if critic_opt is not None:
        critic_opt.zero_grad(set_to_none=True)
    adversarial_backward(out["neg_elbo"], out["mi"], model.vae_parameters(), critic_params, tc.reg_weight)
    torch.nn.utils.clip_grad_norm_(model.vae_parameters(), tc.grad_clip)
    opt.step()
    if critic_opt is not None:
        torch.nn.utils.clip_grad_norm_(critic_params, tc.grad_clip)
        critic_opt.step()
    return out


class SeedStack:
    """Independent copies of one Group VAE, one per seed, trained in lock-step.

    Each seed's model is initialised exactly as a single run would be (``torch.manual_seed(seed)``
    then ``GroupVAE(cfg)``); its sampling noise and the critic's pairs at step t are
    :func:`cxvae.noise.step_noise` of (seed, t), drawn for all seeds in one vectorised call and
    independent of the other seeds, the padding and the device. The parameters are stacked on a leading
    seed axis ``(S, ...)`` and the loss is vectorised over that axis with ``torch.func.vmap``, so a
    step costs a few large batched matrix products instead of S small ones. Nothing mixes seeds:
    Adam is elementwise and gradients are clipped per seed (tested: one seed's loss has exactly
    zero gradient on the others). A seed trained in a stack and alone agree to float rounding
    only, because batched products round their last bits differently.

    Each player's stacked parameters (``vae_params``, ``critic_params``: leaves the loss is
    differentiated by) are views into one ``(S, P)`` tensor (``vae_flat``, ``critic_flat``), which
    is what the optimisers step: Adam and the clipping are then a few operations a step, not a few
    per parameter tensor, and compute the same numbers.
    """

    def __init__(self, model_cfg, seeds: Sequence[int], device: torch.device):
        self.seeds, self.device = [int(s) for s in seeds], device
        models = []
        for seed in self.seeds:
            torch.manual_seed(seed)
            models.append(GroupVAE(model_cfg).to(device))
        self.template = models[0]
        self.seed_words = seed_words(self.seeds, device)  # the noise's keys, made once
        params, self.buffers = torch.func.stack_module_state(models)
        vae_names = [n for n in params if not n.startswith("regulariser.")]
        critic_names = [n for n in params if n.startswith("regulariser.")]
        # each player's parameters live side by side in one (S, P) tensor, so that Adam and the
        # clipping are a few operations on it instead of a few per parameter tensor
        self.vae_flat, self.vae_params = _flat_leaves([params[n] for n in vae_names], device)
        self.critic_flat, self.critic_params = _flat_leaves([params[n] for n in critic_names], device)
        views = dict(zip(vae_names + critic_names, self.vae_params + self.critic_params))
        self.params = {n: views[n] for n in params}
        self._losses = torch.func.vmap(self._one_seed_losses, in_dims=(0, 0, 0, 0, 0, None))

    def _one_seed_losses(self, params, buffers, x, mask, noise, with_critic: bool):
        return torch.func.functional_call(self.template, (params, buffers), (x, mask, noise),
                                          dict(with_critic=with_critic))

    def draw_noise(self, masks: torch.Tensor, step: int, with_critic: bool = True,
                   phase: int = TRAIN) -> Dict[str, torch.Tensor]:
        """Every seed's noise for step ``step`` of a batch laid out as ``masks (S, B, K)``, stacked
        on the seed axis: seed s gets exactly ``GroupVAE.draw_noise(masks[s], seed=s, step=step)``."""
        return step_noise(self.seed_words, step, masks, self.template.cfg.u_dim, self.template.cfg.v_dim, phase=phase,
                          pairs=self.template.regulariser is not None and with_critic)

    def losses(self, x: torch.Tensor, masks: torch.Tensor, noise, with_critic: bool = True) -> Dict[str, torch.Tensor]:
        """:meth:`GroupVAE.forward` of every seed on its own batch: ``x (S, B, K, d)`` -> ``(S,)`` each.

        One seed runs the plain module on views of its parameters (vmap would only add overhead).
        """
        if len(self.seeds) == 1:
            first = lambda tensors: {n: t.squeeze(0) for n, t in tensors.items()}  # noqa: E731  (a view; t[0]'s backward would copy)
            out = self._one_seed_losses(first(self.params), first(self.buffers), x[0], masks[0], first(noise), with_critic)
            return {n: t[None] for n, t in out.items()}
        return self._losses(self.params, self.buffers, x, masks, noise, with_critic)

    def zero_grad(self) -> None:
        """Forget the gradients of every parameter (the per-tensor views and the flat tensors)."""
        for p in self.vae_params + self.critic_params + [self.vae_flat, self.critic_flat]:
            p.grad = None

    def model(self, i: int) -> GroupVAE:
        """Seed ``self.seeds[i]``'s model as a plain :class:`GroupVAE` (eval mode, own parameters)."""
        model = GroupVAE(self.template.cfg).to(self.device)
        state = {n: t[i].detach().clone() for n, t in {**self.params, **self.buffers}.items()}
        model.load_state_dict(state)
        return model.eval()


def _flat_leaves(tensors: Sequence[torch.Tensor], device: torch.device) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """Stacked tensors ``(S, ...)`` copied side by side into one ``(S, P)`` tensor, and each
    returned as a leaf view into it (sharing its memory, so updating the flat tensor in place
    updates them). No tensors: an empty ``(0, 0)`` tensor and no views."""
    if not tensors:
        return torch.zeros(0, 0, device=device), []
    flat = torch.cat([t.detach().flatten(1) for t in tensors], dim=1)
    views, start = [], 0
    for t in tensors:
        size = t[0].numel()
        views.append(flat[:, start:start + size].view(t.shape).detach().requires_grad_())
        start += size
    return flat, views


def _per_seed_grad_norms(params: Sequence[torch.Tensor], row_wise: Optional[bool] = None) -> torch.Tensor:
    """The ``(S,)`` norms of stacked ``(S, ...)`` parameters' gradients, one per seed
    (``row_wise`` as in :func:`clip_grad_norm_per_seed_`)."""
    n_seeds = params[0].shape[0]
    if row_wise is None:  # on a GPU a loop over seeds would cost 2 x S kernel launches a step
        row_wise = params[0].device.type == "cuda"
    if row_wise:
        norms = torch.stack([torch.linalg.vector_norm(p.grad.flatten(1), dim=1) for p in params], dim=1)
        return torch.linalg.vector_norm(norms, dim=1)
    slices = [p.grad[i] for i in range(n_seeds) for p in params]  # seed-major
    norms = torch._foreach_norm(slices)
    return torch.stack([torch.linalg.vector_norm(torch.stack(norms[i * len(params):(i + 1) * len(params)]))
                        for i in range(n_seeds)])


def _clip_coefficients(total: torch.Tensor, max_norm: float) -> torch.Tensor:
    return torch.clamp(max_norm / (total + 1e-6), max=1.0)


def clip_into_flat_(params: Sequence[torch.Tensor], flat: torch.Tensor, max_norm: float) -> torch.Tensor:
    """Clip each seed's gradient of the views ``params`` (:class:`SeedStack`) and set it, side by
    side, as the gradient of their ``(S, P)`` tensor ``flat``, the one the optimiser steps.
    The same numbers as :func:`clip_grad_norm_per_seed_`; returns the ``(S,)`` norms before clipping."""
    total = _per_seed_grad_norms(params)
    flat.grad = torch.cat([p.grad.flatten(1) for p in params], dim=1).mul_(_clip_coefficients(total, max_norm)[:, None])
    return total


def clip_grad_norm_per_seed_(params: Sequence[torch.Tensor], max_norm: float,
                             row_wise: Optional[bool] = None) -> torch.Tensor:
    """:func:`torch.nn.utils.clip_grad_norm_` applied to each seed of stacked ``(S, ...)``
    parameters separately; returns the ``(S,)`` norms before clipping.

    On a CPU every norm is taken over one seed's slice on its own, so the result does not depend
    on how many seeds are stacked (a reduction over a seed axis could change the rounding); on a
    GPU the norms are taken row-wise over the seed axis at once (equal up to rounding).
    ``row_wise`` chooses the way explicitly (default: row-wise on CUDA only).
    """
    total = _per_seed_grad_norms(params, row_wise)
    coef = _clip_coefficients(total, max_norm)
    for p in params:
        p.grad.mul_(coef.view(-1, *[1] * (p.dim() - 1)))
    return total


def stack_step(stack: SeedStack, x: torch.Tensor, mask: torch.Tensor, opt, critic_opt, tc,
               step: int) -> Dict[str, torch.Tensor]:
    """:func:`train_step` for every seed of ``stack`` at once, on ``x (S, B, K, d)``, ``mask (S, B, K)``:
    each seed's noise of training step ``step`` (:meth:`SeedStack.draw_noise`), gradients clipped
    per seed. Returns the ``(S,)`` losses."""
    out = stack.losses(x, mask, stack.draw_noise(mask, step))
    stack.zero_grad()
    adversarial_backward(out["neg_elbo"], out["mi"], stack.vae_params,
                         stack.critic_params if critic_opt is not None else [], tc.reg_weight)
    clip_into_flat_(stack.vae_params, stack.vae_flat, tc.grad_clip)
    opt.step()
    if critic_opt is not None:
        clip_into_flat_(stack.critic_params, stack.critic_flat, tc.grad_clip)
        critic_opt.step()
    return out


class GraphedStep:
    """:func:`stack_step` replayed from CUDA graphs, one graph per batch shape (opt-in, CUDA only).

    A stacked step launches about 1,500 operations' kernels from Python; on a GPU that launch time,
    not the arithmetic, sets the pace. A CUDA graph records a step's kernels once and replays them
    with one launch. Per batch shape, the first ``warmup`` steps run eagerly on a side stream (as
    PyTorch's CUDA-graph notes ask; they are real training steps), the next is captured, and every
    later batch of that shape is copied into the graph's static inputs and replayed, with the
    step number in a device tensor. Needs the optimisers of :func:`make_optimisers` with
    ``cuda_graphs=True`` (capturable Adam, learning rates as device tensors) and few batch shapes
    (the loader's ``k_multiple``). Replays compute what the eager step computes, to rounding.
    """

    def __init__(self, stack: SeedStack, opt, critic_opt, tc, warmup: int = 2):
        if stack.device.type != "cuda":
            raise ConfigError(f"CUDA graphs need a CUDA device; the stack is on {stack.device}")
        self.stack, self.opt, self.critic_opt, self.tc, self.warmup = stack, opt, critic_opt, tc, warmup
        self.step_word = torch.zeros((), dtype=torch.int32, device=stack.device)
        self.side = torch.cuda.Stream(device=stack.device)
        self.graphs: Dict[tuple, tuple] = {}
        self.eager_steps: Dict[tuple, int] = {}

    def __call__(self, batch: GroupedData, step: int) -> Dict[str, torch.Tensor]:
        shape = tuple(batch.x.shape)
        if shape in self.graphs:
            graph, static_x, static_mask, out = self.graphs[shape]
            static_x.copy_(batch.x)
            static_mask.copy_(batch.mask)
            self.step_word.fill_(word(step))
            graph.replay()
            return out
        n_seeds = len(self.stack.seeds)
        if self.eager_steps.get(shape, 0) < self.warmup:
            self.eager_steps[shape] = self.eager_steps.get(shape, 0) + 1
            self.side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.side):
                out = stack_step(self.stack, *_stack(batch, n_seeds), self.opt, self.critic_opt, self.tc, step)
            torch.cuda.current_stream().wait_stream(self.side)
            return out
        static_x, static_mask = batch.x.clone(), batch.mask.clone()
        x, mask = static_x.expand(n_seeds, *shape), static_mask.expand(n_seeds, *static_mask.shape)
        self.step_word.fill_(word(step))
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self.side):  # captured on the stream that warmed up
            out = stack_step(self.stack, x, mask, self.opt, self.critic_opt, self.tc, self.step_word)
        self.graphs[shape] = (graph, static_x, static_mask, out)
        graph.replay()  # capturing ran nothing
        return out


def make_optimisers(stack: SeedStack, tc, total_steps: int, cuda_graphs: bool = False):
    """Adam for the VAE's and the critic's stacked parameters (None without a critic) and their
    cosine learning-rate schedules over ``total_steps``: ``(opt, critic_opt, schedulers)``.
    ``cuda_graphs``: capturable Adam with learning rates as device tensors (:class:`GraphedStep`)."""
    schedule = lambda t: tc.lr_decay_to + (1 - tc.lr_decay_to) * 0.5 * (1 + math.cos(math.pi * t / total_steps))  # noqa: E731
    lr = lambda value: torch.tensor(value, device=stack.device) if cuda_graphs else value  # noqa: E731
    opt = torch.optim.Adam([stack.vae_flat], lr=lr(tc.lr), capturable=cuda_graphs)
    critic_opt = (torch.optim.Adam([stack.critic_flat], lr=lr(tc.critic_lr), capturable=cuda_graphs)
                  if stack.critic_params else None)
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, schedule) for o in (opt, critic_opt) if o is not None]
    return opt, critic_opt, schedulers


def make_step(stack: SeedStack, opt, critic_opt, tc, cuda_graphs: bool = False):
    """The training step as a function ``(batch, step) -> (S,) losses``: :func:`stack_step` on the
    batch seen by every seed, or its :class:`GraphedStep` replay."""
    if cuda_graphs:
        return GraphedStep(stack, opt, critic_opt, tc)
    return lambda batch, step: stack_step(stack, *_stack(batch, len(stack.seeds)), opt, critic_opt, tc, step)


def _stack(batch: GroupedData, n_seeds: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The batch seen by every seed: ``x (S, B, K, d)``, ``mask (S, B, K)`` (expanded views)."""
    return batch.x.expand(n_seeds, *batch.x.shape), batch.mask.expand(n_seeds, *batch.mask.shape)


@torch.no_grad()
def _valid_neg_elbo(stack: SeedStack, data: GroupedData, batch_size: int = 1024) -> torch.Tensor:
    """The negative ELBO per observation of ``data`` for every seed at once, ``(S,)``: one sample
    per group, the noise of seed s's validation stream (the same in every pass)."""
    total, n_obs = torch.zeros(len(stack.seeds), dtype=torch.float64, device=stack.device), 0
    for i, batch in enumerate(GroupBatchLoader(data, batch_size, shuffle=False, bucket=False)):
        x, mask = _stack(batch, len(stack.seeds))
        out = stack.losses(x, mask, stack.draw_noise(mask, i, with_critic=False, phase=VALID), with_critic=False)
        total -= out["elbo_sum"].double()
        n_obs += batch.n_observations
    return total / n_obs


@dataclass(frozen=True)
class EarlyStopping:
    """Train until the validation bound stops improving, within a budget of optimiser steps.

    After every epoch the negative ELBO per observation of the ``'valid'`` split is computed
    (the same noise in every pass, so two evaluations differ only by the weights). Training stops
    once it has not improved by more than ``min_delta`` nats for ``patience`` steps (rounded up to
    whole epochs), and the weights of the best evaluation are restored. The learning rate follows
    the usual cosine decay, over ``max_steps`` (rounded up to whole epochs). A run that reaches
    the budget while still improving is *not converged* (:attr:`TrainResult.converged`).
    """

    max_steps: int
    patience: int = 600
    min_delta: float = 1e-3

    def __post_init__(self) -> None:
        require_int("max_steps", self.max_steps, 1)
        require_int("patience", self.patience, 1)
        require_real("min_delta", self.min_delta, lambda v: v >= 0, ">= 0")


@dataclass
class TrainResult:
    """A trained model, its per-epoch history and the wall time of training (seconds).

    With :class:`EarlyStopping`: ``best_step`` is the step whose weights the model has (the best
    validation bound) and ``converged`` says whether training stopped because the bound stopped
    improving (False: the step budget ran out first). Without: ``best_step`` is the last step and
    ``converged`` is None (not checked)."""

    model: GroupVAE
    history: pd.DataFrame
    seconds: float
    config: RunConfig
    best_step: Optional[int] = None
    converged: Optional[bool] = None


def train(cfg: RunConfig, splits: Optional[Dict[str, GroupedData]] = None, progress: bool = True,
          stopping: Optional[EarlyStopping] = None) -> TrainResult:
    """Train the model of ``cfg`` (seed ``cfg.seed``) on the training split and record the
    validation curve; the same as ``train_seeds(cfg, [cfg.seed])[0]``.

    Args:
        cfg: the run (model, data, optimisation, seed, device).
        splits: precomputed :func:`make_splits` output (made from ``cfg.data`` if None).
        progress: show a progress bar with the running loss.
        stopping: stop early on the ``'valid'`` split's bound (:class:`EarlyStopping`; then
            ``cfg.train.epochs`` is ignored and ``splits`` needs a ``'valid'`` entry).
    Returns:
        :class:`TrainResult`; ``history`` has one row per epoch with ``train_neg_elbo``,
        ``train_mi`` and ``valid_neg_elbo`` (per observation) and ``skipped_groups``: the groups
        of a single observation that the regulariser had nothing to pair within that epoch
        (they still train the VAE; 0 without a regulariser).
    Raises:
        TrainingDiverged: if the loss becomes NaN or infinite (with where and what to try).
        DataError: if the data do not suit the model (e.g. fewer than 2 groups for a regulariser).
    """
    return train_seeds(cfg, [cfg.seed], splits, progress, stopping=stopping)[0]


def train_seeds(cfg: RunConfig, seeds: Sequence[int], splits: Optional[Dict[str, GroupedData]] = None,
                progress: bool = True, cuda_graphs: bool = False,
                stopping: Optional[EarlyStopping] = None) -> List[TrainResult]:
    """Train one model per seed of ``seeds`` at once (a :class:`SeedStack`), each exactly as
    :func:`train` would train it alone; ``cfg.seed`` is ignored.

    All seeds visit the training groups in the same order (``cfg.train.shuffle_seed``), so every
    step holds one batch for all of them. Returns one :class:`TrainResult` per seed, in the order
    of ``seeds``; their ``seconds`` is the shared wall time divided by the number of seeds.
    ``cuda_graphs`` (CUDA only): replay the step from CUDA graphs (:class:`GraphedStep`), with
    batches padded to a multiple of 8 positions so that there are few shapes to capture.
    With a regulariser, a last batch of one group joins the batch before it (a batch needs
    ``cfg.model.min_batch_groups``); until commit ``e5a822c`` it was a step of its own, whose
    critic compared the group with itself.
    ``stopping``: :class:`EarlyStopping` on the ``'valid'`` split, each seed on its own bound
    (training goes on while any seed still improves; each gets its own best weights back).
    """
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"train_seeds needs distinct seeds; got {seeds}")
    device = resolve_device(cfg.device)
    splits = splits if splits is not None else make_splits(cfg.data)
    _check_splits(splits, cfg)
    train_data = splits["train"]
    tc = cfg.train
    if cuda_graphs and device.type != "cuda":
        raise ConfigError(f"cuda_graphs needs a CUDA device; this run is on {device}")
    stack = SeedStack(cfg.model, seeds, device)
    data_on_device = train_data.to(device)
    valid_data = splits["valid"].to(device) if "valid" in splits else None  # splits may be on the CPU
    loader = GroupBatchLoader(data_on_device, tc.batch_size, shuffle=True, bucket=True, k_multiple=8 if cuda_graphs else 1,
                              drop_last=train_data.n_groups >= 2 * tc.batch_size, seed=tc.shuffle_seed,
                              min_batch=cfg.model.min_batch_groups)
    if stopping is not None and valid_data is None:
        raise DataError("early stopping needs a 'valid' split of groups to watch")
    epochs = tc.epochs if stopping is None else max(1, math.ceil(stopping.max_steps / len(loader)))
    total_steps = max(1, epochs * len(loader))
    opt, critic_opt, schedulers = make_optimisers(stack, tc, total_steps, cuda_graphs)
    train_step_fn = make_step(stack, opt, critic_opt, tc, cuda_graphs)

    histories = [[] for _ in seeds]
    start = time.perf_counter()
    label = f"{cfg.preset} seed {seeds[0]}" if len(seeds) == 1 else f"{cfg.preset} {len(seeds)} seeds"
    bar = tqdm(total=total_steps, desc=label, disable=not progress, leave=False)
    step = 0
    if stopping is not None:
        patience_epochs = max(1, math.ceil(stopping.patience / len(loader)))
        best = [math.inf] * len(seeds)  # the best bound so far, its step and its weights
        best_step, best_state = [0] * len(seeds), [None] * len(seeds)
        last_gain = [0] * len(seeds)  # the epoch of the last improvement by more than min_delta
    for epoch in range(1, epochs + 1):
        sum_loss = torch.zeros(len(seeds), device=device)
        sum_mi = torch.zeros(len(seeds), device=device)
        skipped = torch.zeros((), dtype=torch.long, device=device)  # summed on the device: no sync a step
        n_batches = 0
        for batch in loader:
            out = train_step_fn(batch, step)
            if stack.template.regulariser is not None:
                skipped += (batch.mask.sum(dim=1) == 1).sum()  # what regularisers.skipped_groups counts
            for scheduler in schedulers:
                scheduler.step()
            sum_loss += out["neg_elbo"].detach()
            sum_mi += out["mi"].detach()
            n_batches += 1
            step += 1
            if progress and (step % 20 == 0 or step == total_steps):
                bar.set_postfix(loss=f"{float(out['neg_elbo'].detach().mean()):.3f}",
                                mi=f"{float(out['mi'].detach().mean()):.3f}")
            bar.update(1)
        train_loss = (sum_loss / max(n_batches, 1)).tolist()
        bad = [s for s, loss in zip(seeds, train_loss) if not math.isfinite(loss)]
        if bad:
            bar.close()
            raise TrainingDiverged(
                f"{cfg.preset} (seed {', '.join(map(str, bad))}) diverged in epoch {epoch}: the training loss is "
                f"not finite. Try a smaller learning rate (now lr={tc.lr}) or a smaller reg_weight (now {tc.reg_weight}).")
        valid = (_valid_neg_elbo(stack, valid_data).tolist() if valid_data is not None
                 else [float("nan")] * len(seeds))
        train_mi = (sum_mi / max(n_batches, 1)).tolist()
        for i in range(len(seeds)):
            histories[i].append(dict(epoch=epoch, step=step, train_neg_elbo=train_loss[i], train_mi=train_mi[i],
                                     valid_neg_elbo=valid[i], skipped_groups=int(skipped),
                                     seconds=time.perf_counter() - start))
        if stopping is not None:
            for i in range(len(seeds)):
                if valid[i] < best[i] - stopping.min_delta:
                    last_gain[i] = epoch
                if valid[i] < best[i]:
                    best[i], best_step[i] = valid[i], step
                    best_state[i] = [flat[i].clone() for flat in (stack.vae_flat, stack.critic_flat) if len(flat)]
            if all(epoch - g >= patience_epochs for g in last_gain):
                break
    bar.close()
    converged = [None] * len(seeds)
    if stopping is not None:
        with torch.no_grad():
            for i in range(len(seeds)):
                for flat, saved in zip([f for f in (stack.vae_flat, stack.critic_flat) if len(f)], best_state[i] or []):
                    flat[i].copy_(saved)  # no best state: the bound was never finite, the last weights stay
        converged = [epoch - g >= patience_epochs for g in last_gain]
    else:
        best_step = [step] * len(seeds)
    seconds = (time.perf_counter() - start) / len(seeds)
    return [TrainResult(stack.model(i), pd.DataFrame(histories[i]), seconds, dataclasses.replace(cfg, seed=seed),
                        best_step[i], converged[i]) for i, seed in enumerate(seeds)]


def _check_splits(splits, cfg: RunConfig) -> None:
    """Raise :class:`~cxvae.data.DataError` unless ``splits`` is a dict with a ``'train'``
    :class:`GroupedData` (and optionally ``'valid'``) that the model of ``cfg`` can train on."""
    if not isinstance(splits, dict) or "train" not in splits:
        raise DataError("splits must be a dict with a 'train' entry (and optionally 'valid'), each a GroupedData "
                        f"(e.g. from cxvae.data.from_groups); got {type(splits).__name__}"
                        + (f" with keys {sorted(splits)}" if isinstance(splits, dict) else ""))
    model = GroupVAE(cfg.model)
    for name in ("train", "valid"):
        if name in splits:
            if not isinstance(splits[name], GroupedData):
                raise DataError(f"splits[{name!r}] must be a GroupedData (e.g. from cxvae.data.from_groups); "
                                f"got {type(splits[name]).__name__}")
            try:
                model.check_batch(splits[name], training=name == "train")
            except DataError as err:
                raise DataError(f"the {name!r} split: {err}") from None
    if cfg.train.batch_size < cfg.model.min_batch_groups:
        raise ConfigError(f"the {cfg.model.regulariser!r} regulariser pairs each group with another group of its "
                          f"batch; use a batch size of at least {cfg.model.min_batch_groups} (got {cfg.train.batch_size})")


def save_checkpoint(path, model: GroupVAE, cfg: RunConfig, extra: Optional[Dict[str, object]] = None) -> None:
    """Write ``{'config_json': str, 'state_dict': ...}``, loadable with ``weights_only=True``
    (:func:`cxvae.model.load_model`); written to a temporary file first, then renamed.
    ``extra``: more entries of the same kinds (strings, tensors), e.g. a saved table model's."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({**(extra or {}), "config_json": cfg.to_json(), "state_dict": state}, tmp)
    os.replace(tmp, path)


def _write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``: a reader
    (or a crash) never sees half a file. (The study folder's writers are :mod:`cxvae.store`'s.)"""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_run(out_dir, result: TrainResult) -> Path:
    """Write ``config.json``, ``model.pt`` and ``history.csv`` of a run into ``out_dir``, each
    atomically (a temporary file, then a rename)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_text_atomically(out / "config.json", result.config.to_json() + "\n")
    save_checkpoint(out / "model.pt", result.model, result.config)
    _write_text_atomically(out / "history.csv", result.history.to_csv(index=False))
    return out
