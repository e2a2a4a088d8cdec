"""A learned Group VAE seen through the scorer interface of :func:`cxvae.metrics.evaluate`.

Codes are posterior means: ``u = E_q[u | x]`` and ``v_k = E_q[v_k | x_k, u]`` (the conditional
instance encoder reads that u). Reconstructions and translations decode those means. The holdout
likelihood is the importance-weighted bound (Burda et al. 2016) with ``n_samples`` samples::

    log p(x) >= log 1/S sum_s p(x | u_s, v_s) p(u_s) p(v_s) / (q(u_s | x) q(v_s | x, u_s))

On the exam scores, :class:`PluginScorer` is a model with some of its parts replaced by the exact
ones (chapter 11's decomposition), :func:`refine_group_posterior` optimises each group's
``q(u | x)`` on its own ELBO (the amortisation gap), and :func:`reflected_nll` is the holdout NLL
under the mirror-mixture bound :func:`iwae_log_marginal_reflected`.
"""
from __future__ import annotations

import math
from typing import Tuple

import torch

from .data import DataError, GroupBatchLoader, GroupedData, exam_scores_mean
from .model import GroupVAE, gaussian_log_prob, log_importance_weight, sample_normal
from .oracle import ExamScoresOracle, exact_v_given_u

__all__ = ["ModelScorer", "TrueFactorScorer", "iwae_log_marginal", "iwae_log_marginal_reflected", "bound_of",
           "PluginScorer", "refine_group_posterior", "reflected_nll"]


def iwae_log_marginal(model: GroupVAE, x: torch.Tensor, mask: torch.Tensor, n_samples: int) -> torch.Tensor:
    """Importance-weighted lower bound on ``log p(x_i)`` of each group: ``(B, K, x_dim) -> (B,)``.

    A model with covariates reads ``x (B, K, x_dim + c_dim)`` (the covariates last) and bounds
    ``log p(values_i | covariates_i)``: the covariates are conditioned on, not scored."""
    batch = x.shape[0]
    x_rep, mask_rep = x.repeat(n_samples, 1, 1), mask.repeat(n_samples, 1)  # (S*B, K, .)
    codes = model.encode(x_rep, mask_rep, sample=True)
    values, covariates = model.split_covariates(x_rep)
    x_mean, x_var = model.decode(codes["u"], codes["v"], covariates)
    log_w = log_importance_weight(values, x_mean, x_var, mask_rep.to(x.dtype), codes["u"], codes["u_mean"],
                                  codes["u_var"], codes["v"], codes["v_mean"], codes["v_var"])
    return torch.logsumexp(log_w.view(n_samples, batch), dim=0) - math.log(n_samples)


def iwae_log_marginal_reflected(model: GroupVAE, x: torch.Tensor, mask: torch.Tensor,
                                n_samples: int) -> torch.Tensor:
    """Importance-weighted lower bound on ``log p(x_i)``, ``(B, K, 1) -> (B,)``, with the model's
    ``q`` and its mirror image in sigma as a two-component mixture proposal.

    The proposal draws ``u0 ~ q(u|x)``, ``v ~ q(v|x,u0)``, then ``u = u0`` or its reflection
    ``(mu, -sigma)`` with probability 1/2 each; its density is ``q_mix(u, v) = (q(u) q(v|x,u) +
    q(r u) q(v|x, r u)) / 2``, a valid density whatever the network does with a reflected input.
    The true decoder and the N(0, I) prior are symmetric in sigma's sign, so ``p(x, u, v) =
    p(x, r u, v)`` and this bound recovers the mass of the mirror mode that a Gaussian misses."""
    if model.cfg.decoder != "true":
        raise DataError("the reflected proposal needs the true decoder, which is symmetric in sigma's sign")
    batch = x.shape[0]
    x_rep, m_rep = x.repeat(n_samples, 1, 1), mask.repeat(n_samples, 1)
    codes = model.encode(x_rep, m_rep, sample=True)
    flip = torch.tensor([1.0, -1.0], dtype=x.dtype, device=x.device)
    u0, v = codes["u"], codes["v"]
    reflect = torch.rand(u0.shape[0], device=x.device) < 0.5
    u = torch.where(reflect[:, None], u0 * flip, u0)
    m = m_rep.to(x.dtype)
    x_mean, x_var = model.decode(u, v)
    zu, zv = torch.zeros_like(u), torch.zeros_like(v)
    log_joint = ((gaussian_log_prob(x_rep, x_mean, x_var) * m).sum(1) + gaussian_log_prob(u, zu, zu + 1)
                 + (gaussian_log_prob(v, zv, zv + 1) * m).sum(1))

    def log_q(u_at: torch.Tensor) -> torch.Tensor:  # q(u_at) q(v | x, u_at)
        v_mean, v_var = model.instance_encoder(x_rep, u_at)
        return (gaussian_log_prob(u_at, codes["u_mean"], codes["u_var"])
                + (gaussian_log_prob(v, v_mean, v_var) * m).sum(1))

    log_q_mix = torch.logaddexp(log_q(u0), log_q(u0 * flip)) - math.log(2.0)
    log_w = log_joint - log_q_mix
    return torch.logsumexp(log_w.view(n_samples, batch), dim=0) - math.log(n_samples)


def bound_of(model: GroupVAE):
    """The per-group likelihood bound of ``model``'s posterior family (``cfg.group_posterior``):
    :func:`iwae_log_marginal` for a Gaussian ``q(u|x)``, :func:`iwae_log_marginal_reflected` for
    the mirror mixture."""
    return iwae_log_marginal_reflected if model.cfg.group_posterior == "mirror" else iwae_log_marginal


class ModelScorer:
    """Wrap a trained :class:`GroupVAE` with the scorer interface (batched, no gradients).

    Args:
        model: the trained model (any device; outputs are returned on the CPU).
        batch_size: groups per forward pass.
        n_samples: importance samples S for :meth:`nll_per_observation`.
        seed: seed for the sampling in the likelihood bound (results are repeatable).
        bound: the per-group bound ``(model, x, mask, n_samples) -> (B,)`` that
            :meth:`nll_per_observation` averages; default :func:`bound_of` the model (its
            posterior family's: :func:`iwae_log_marginal` or :func:`iwae_log_marginal_reflected`).
    """

    def __init__(self, model: GroupVAE, batch_size: int = 512, n_samples: int = 64, seed: int = 0,
                 bound=None):
        self.model, self.batch_size, self.n_samples, self.seed = model.eval(), batch_size, n_samples, seed
        self.bound = bound_of(model) if bound is None else bound
        self.device = next(model.parameters()).device

    def _batches(self, data: GroupedData):
        self.model.check_batch(data, training=False)  # a clear DataError, not a shape error deep in torch
        for batch in GroupBatchLoader(data, self.batch_size, shuffle=False, bucket=False):
            yield batch.to(self.device)

    def _pad_cat(self, parts, k_max):
        return torch.cat([torch.nn.functional.pad(p, (0, 0, 0, k_max - p.shape[1])) for p in parts])

    @torch.no_grad()
    def codes(self, data: GroupedData) -> Tuple[torch.Tensor, torch.Tensor]:
        """Posterior-mean codes: group ``(N, u_dim)`` and instance ``(N, K_max, v_dim)`` (0 at padding)."""
        us, vs = [], []
        for b in self._batches(data):
            c = self.model.encode(b.x, b.mask, sample=False)
            us.append(c["u"].cpu())
            vs.append((c["v"] * b.mask[..., None]).cpu())
        return torch.cat(us), self._pad_cat(vs, data.x.shape[1])

    @torch.no_grad()
    def reconstruction(self, data: GroupedData) -> torch.Tensor:
        """Decoded posterior-mean codes, ``(N, K_max, x_dim)``."""
        out = []
        for b in self._batches(data):
            c = self.model.encode(b.x, b.mask, sample=False)
            out.append(self.model.decode(c["u"], c["v"])[0].cpu())
        return self._pad_cat(out, data.x.shape[1])

    @torch.no_grad()
    def sampled_reconstructions(self, data: GroupedData, n_draws: int) -> torch.Tensor:
        """Decoder means at codes drawn from the posterior, ``u ~ q(u|x)`` then ``v ~ q(v|x,u)``:
        ``(n_draws, N, K_max, x_dim)``, seeded by ``seed`` (repeatable). For the mirror family the
        draw is from the encoder's Gaussian, the mixture's first component."""
        out = []
        gen_devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=gen_devices):
            torch.manual_seed(self.seed)
            for b in self._batches(data):
                draws, group = [], None
                for _ in range(n_draws):
                    c = self.model.encode(b.x, b.mask, sample=True, group_posterior=group)
                    group = (c["u_mean"], c["u_var"])
                    draws.append(self.model.decode(c["u"], c["v"])[0].cpu())
                out.append(torch.stack(draws))
        k_max = data.x.shape[1]
        return torch.cat([torch.nn.functional.pad(p, (0, 0, 0, k_max - p.shape[2])) for p in out], dim=1)

    @torch.no_grad()
    def translation(self, data: GroupedData, target: torch.Tensor) -> torch.Tensor:
        """Instance codes of group i decoded with the group code of group ``target[i]``
        (paper section 5.1), ``(N, K_max, x_dim)``."""
        target = torch.as_tensor(target).cpu()
        if target.shape != (data.n_groups,) or target.is_floating_point() or target.dtype == torch.bool:
            raise DataError(f"target must be {data.n_groups} integer group indices, shape ({data.n_groups},); "
                            f"got {target.dtype} of shape {tuple(target.shape)}")
        if len(target) and (int(target.min()) < 0 or int(target.max()) >= data.n_groups):
            raise DataError(f"target indices must lie in [0, {data.n_groups}); got {int(target.min())} to "
                            f"{int(target.max())}")
        target = target.long()
        u_code, v_code = self.codes(data)
        out = []
        for start in range(0, data.n_groups, self.batch_size):
            idx = torch.arange(start, min(start + self.batch_size, data.n_groups))
            u_target = u_code[target[idx]].to(self.device)
            out.append(self.model.decode(u_target, v_code[idx].to(self.device))[0].cpu())
        return torch.cat(out)

    @torch.no_grad()
    def nll_per_observation(self, data: GroupedData) -> float:
        """``-sum_i log p(x_i) / sum_i K_i`` with the IWAE bound (an upper bound on the true NLL),
        in batches of ``batch_size // 4`` groups."""
        self.model.check_batch(data, training=False)
        total, n_obs = 0.0, 0
        gen_devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=gen_devices):
            torch.manual_seed(self.seed)
            for b in GroupBatchLoader(data, max(1, self.batch_size // 4), shuffle=False, bucket=False):
                b = b.to(self.device)
                total -= float(self.bound(self.model, b.x, b.mask, self.n_samples).sum())
                n_obs += b.n_observations
        return total / n_obs


class TrueFactorScorer:
    """A reference "encoder" that returns the ground-truth factors (optionally distorted).

    Used for the known-answer tests of :mod:`cxvae.metrics` and in the book: the true factors
    should score best on ``u_probe_mse`` and ``instance_probe_mse``, and translate perfectly.

    Args:
        group_code: ``'true'`` (u itself), ``'constant'`` (zeros: no group information).
        instance_code: ``'true'`` (v itself), ``'constant'`` (zeros), ``'leaky'`` (v plus the
            group's mu: group information copied into every instance code).
    """

    def __init__(self, group_code: str = "true", instance_code: str = "true"):
        if group_code not in ("true", "constant") or instance_code not in ("true", "constant", "leaky"):
            raise ValueError(f"unknown code kind: group_code={group_code!r}, instance_code={instance_code!r}")
        self.group_code, self.instance_code = group_code, instance_code

    def codes(self, data: GroupedData) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(N, 2)`` group codes and ``(N, K_max, 1)`` instance codes."""
        u, v = data.u.cpu(), data.v.cpu()
        group = u if self.group_code == "true" else torch.zeros_like(u)
        if self.instance_code == "true":
            inst = v
        elif self.instance_code == "constant":
            inst = torch.zeros_like(v)
        else:
            inst = (v + u[:, None, :1]) * data.mask.cpu()[..., None]
        return group, inst

    def reconstruction(self, data: GroupedData) -> torch.Tensor:
        """The noiseless mean ``2 mu + (sigma^2 + 1) v`` of each observation, ``(N, K_max, 1)``."""
        from .data import exam_scores_mean

        return exam_scores_mean(data.u.cpu()[:, None, :], data.v.cpu()) * data.mask.cpu()[..., None]

    def sampled_reconstructions(self, data: GroupedData, n_draws: int) -> torch.Tensor:
        """The factors are points, so every draw is :meth:`reconstruction`: ``(n_draws, N, K_max, 1)``."""
        return self.reconstruction(data).expand(n_draws, -1, -1, -1)

    def translation(self, data: GroupedData, target: torch.Tensor) -> torch.Tensor:
        """The ground-truth translation (:func:`cxvae.data.true_translation`)."""
        from .data import true_translation

        return true_translation(data.to("cpu"), target)

    def nll_per_observation(self, data: GroupedData) -> float:
        """Not defined for a factor "encoder" without a likelihood: NaN."""
        return float("nan")


class PluginScorer:
    """A trained model with some of its parts replaced by the exact ones (:data:`cxvae.gap.STEPS`).

    Args:
        model: a :class:`~cxvae.model.GroupVAE` with the true decoder (``decoder='true'``).
        oracle: the exact posterior of the same data (:class:`~cxvae.oracle.ExamScoresOracle`).
        u: ``'model'`` (q(u|x)'s mean), ``'refined'`` (the mean of each group's q(u|x) optimised on
            its own ELBO, :func:`refine_group_posterior`: the amortisation gap) or ``'exact'``
            (``(E[mu|x], E[|sigma| |x])``).
        v: ``'model'`` (q(v|x,u)'s mean at that u) or ``'exact'`` (:func:`exact_v_given_u` at that u).
        readout: ``'point'`` (decode the codes, as a model does) or ``'bayes'`` (the oracle's
            posterior expectations; needs ``u = v = 'exact'``: it is the oracle).

    The scorer interface of :func:`cxvae.metrics.evaluate`: ``codes``, ``reconstruction``,
    ``translation``, ``nll_per_observation`` (the model's own bound; the oracle's exact NLL
    with the Bayes read-out, since both parts are then exact).
    """

    def __init__(self, model: GroupVAE, oracle: ExamScoresOracle, u: str = "model", v: str = "model",
                 readout: str = "point", n_samples: int = 64, seed: int = 0, refine: dict | None = None):
        if model.cfg.decoder != "true":
            raise DataError("the decomposition needs a model with the true decoder (decoder='true'): "
                            f"this one has decoder={model.cfg.decoder!r}")
        if u not in ("model", "refined", "exact") or v not in ("model", "exact") or readout not in ("point", "bayes"):
            raise ValueError(f"unknown parts: u={u!r}, v={v!r}, readout={readout!r}")
        if readout == "bayes" and (u, v) != ("exact", "exact"):
            raise ValueError("the Bayes read-out is the oracle's: it needs u='exact' and v='exact'")
        self.model, self.oracle, self.u, self.v, self.readout = model.eval(), oracle, u, v, readout
        self.scorer = ModelScorer(model, n_samples=n_samples, seed=seed)
        self.device = next(model.parameters(), torch.empty(0)).device
        self.refine, self._refined = dict(refine or {}), []  # [(data, refined means)]: one refinement per data set

    def _refined_u(self, data: GroupedData) -> torch.Tensor:
        for seen, u in self._refined:
            if seen is data:
                return u
        u = refine_group_posterior(self.model, data, **self.refine)[0]
        self._refined.append((data, u))
        return u

    def codes(self, data: GroupedData) -> Tuple[torch.Tensor, torch.Tensor]:
        """Group codes ``(N, 2)`` and instance codes ``(N, K_max, 1)`` (float32, CPU)."""
        if self.readout == "bayes":
            u, v = self.oracle.codes(data)
            return u.float(), v.float()
        u_model, v_model = self.scorer.codes(data)
        u = dict(model=lambda: u_model, refined=lambda: self._refined_u(data),
                 exact=lambda: self.oracle.codes(data)[0].float())[self.u]()
        if self.v == "exact":
            v = exact_v_given_u(data.x.cpu().float(), data.mask.cpu(), u, self.model.cfg.noise_std,
                                self.model.cfg.group_strength)
        elif self.u == "model":
            v = v_model
        elif self.u == "refined":  # the model's instance encoder at the refined group code
            with torch.no_grad():
                v_mean, _ = self.model.instance_encoder(data.x.to(self.device), u.to(self.device))
            v = (v_mean * data.mask.to(self.device)[..., None]).cpu()
        else:
            # the model's instance encoder learned one sign of sigma per group (the decoder reads
            # sigma^2): give it the exact |sigma| with the sign its own group code has
            sign = torch.where(u_model[:, 1:2] < 0, -1.0, 1.0)
            u_in = torch.cat([u[:, :1], sign * u[:, 1:2]], dim=1)
            with torch.no_grad():
                v_mean, _ = self.model.instance_encoder(data.x.to(self.device), u_in.to(self.device))
            v = (v_mean * data.mask.to(self.device)[..., None]).cpu()
        return u, v

    def _decode(self, u: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return exam_scores_mean(u[:, None, :], v, self.model.cfg.group_strength) * mask.cpu()[..., None]

    def reconstruction(self, data: GroupedData) -> torch.Tensor:
        """Decoded codes ``(N, K_max, 1)`` (the oracle's posterior expectation with the Bayes read-out)."""
        if self.readout == "bayes":
            return self.oracle.reconstruction(data).float()
        u, v = self.codes(data)
        return self._decode(u, v, data.mask)

    def translation(self, data: GroupedData, target: torch.Tensor) -> torch.Tensor:
        """Group i's instance codes decoded with group ``target[i]``'s group code, ``(N, K_max, 1)``."""
        if self.readout == "bayes":
            return self.oracle.translation(data, target).float()
        u, v = self.codes(data)
        return self._decode(u[torch.as_tensor(target).long()], v, data.mask)

    def nll_per_observation(self, data: GroupedData) -> float:
        """The model's own IWAE bound (its inference is unchanged here), or the exact NLL."""
        if self.readout == "bayes":
            return self.oracle.nll_per_observation(data)
        return self.scorer.nll_per_observation(data)


def refine_group_posterior(model: GroupVAE, data: GroupedData, steps: int = 300, lr: float = 0.01,
                           n_samples: int = 8, seed: int = 0, batch_size: int = 2048) -> Tuple[torch.Tensor, torch.Tensor]:
    """Each group's own ``q(u | x_i) = N(m_i, diag s_i^2)``, optimised on its ELBO (the amortisation gap).

    Starts from the encoder's ``(m_i, s_i^2)`` and takes ``steps`` Adam steps on the group's ELBO
    with ``n_samples`` reparameterised samples of ``u`` and ``v``, the instance encoder
    ``q(v | x, u)`` and the decoder kept as trained (their parameters get no update). The groups
    are summed, and Adam is elementwise, so each group's parameters follow their own ELBO.
    Returns the refined means and variances ``(N, u_dim)`` (float32, CPU); seeded by ``seed``."""
    model = model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator(device="cpu").manual_seed(seed)
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:  # the network stays as trained: no gradients into it
        p.requires_grad_(False)
    try:
        return _refine(model, data, steps, lr, n_samples, gen, batch_size, device)
    finally:
        for p in trainable:
            p.requires_grad_(True)


def _refine(model, data, steps, lr, n_samples, gen, batch_size, device):
    means, variances = [], []
    for batch in GroupBatchLoader(data, batch_size, shuffle=False, bucket=False):
        x, mask = batch.x.to(device), batch.mask.to(device)
        with torch.no_grad():
            u_mean, u_var = model.group_encoder(x, mask)
        m, log_var = u_mean.clone().requires_grad_(True), u_var.log().clone().requires_grad_(True)
        opt = torch.optim.Adam([m, log_var], lr=lr)
        x_rep, mask_rep = x.repeat(n_samples, 1, 1), mask.repeat(n_samples, 1).to(x.dtype)
        for _ in range(steps):
            mean, var = m.repeat(n_samples, 1), log_var.exp().repeat(n_samples, 1)
            u = sample_normal(mean, var, eps=torch.randn(mean.shape, generator=gen).to(device))
            v_mean, v_var = model.instance_encoder(x_rep, u)
            v = sample_normal(v_mean, v_var, eps=torch.randn(v_mean.shape, generator=gen).to(device))
            x_mean, x_var = model.decode(u, v)
            elbo = log_importance_weight(x_rep, x_mean, x_var, mask_rep, u, mean, var, v, v_mean, v_var)
            opt.zero_grad()
            (-elbo.sum() / n_samples).backward()
            opt.step()
        means.append(m.detach().cpu())
        variances.append(log_var.detach().exp().cpu())
    return torch.cat(means).float(), torch.cat(variances).float()


def reflected_nll(model: GroupVAE, data: GroupedData, n_samples: int = 64, seed: int = 0) -> float:
    """Holdout NLL per observation from :func:`iwae_log_marginal_reflected` (an upper bound on
    the exact NLL): :meth:`cxvae.evaluation.ModelScorer.nll_per_observation` with that bound."""
    scorer = ModelScorer(model, n_samples=n_samples, seed=seed, bound=iwae_log_marginal_reflected)
    return scorer.nll_per_observation(data)
