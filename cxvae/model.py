"""The Group VAE family in one file: group encoders, instance encoders, decoders and the model.

Generative model (paper section 2): ``u ~ N(0, I)``, ``v_k ~ N(0, I)``, ``x_k ~ p(x | u, v_k)``.
Variational posterior: ``q(u | x) prod_k q(v_k | x_k)`` (GVAE) or ``q(u | x) prod_k q(v_k | x_k, u)``
(CxVAE, paper section 4). Every posterior is a normal with diagonal covariance, returned as a
``(mean, var)`` pair.

Shapes: ``x (B, K, x_dim)``, ``mask (B, K)`` (True = observed, left aligned), ``u (B, u_dim)``,
``v (B, K, v_dim)``. Padded positions never influence a real output. A model with ``c_dim``
observed covariates (fixed effects, e.g. an intake score) takes ``x (B, K, x_dim + c_dim)``: the
encoders and the critic read every column, the decoder ``p(x | u, v, c)`` the covariates, and the
likelihood scores only the first ``x_dim`` columns (a conditional model, not a joint one).
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig, RunConfig
from .data import DataError, GroupedData, exam_scores_mean
from .layers import MLP, observed_noise, uniform_pair_noise  # noqa: F401  (MLP, uniform_pair_noise re-exported)
from .noise import TRAIN, step_noise
from .regularisers import make_regulariser, pairs_from_uniforms

Normal = Tuple[torch.Tensor, torch.Tensor]  # (mean, var)
MIN_VAR = 1e-6


# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------
def masked_sum(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of ``h (B, K, H)`` over the observed positions of each group -> ``(B, H)``."""
    return (h * mask[..., None].to(h.dtype)).sum(dim=1)


def masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``h (B, K, H)`` over the observed positions of each group -> ``(B, H)``."""
    return masked_sum(h, mask) / mask.sum(dim=1, keepdim=True).to(h.dtype)


def split_normal(raw: torch.Tensor) -> Normal:
    """Split the last dim of a network output into a mean and a positive variance."""
    mean, raw_var = raw.chunk(2, dim=-1)
    return mean, F.softplus(raw_var) + MIN_VAR


def kl_to_standard_normal(mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """``KL[N(mean, diag var) || N(0, I)]`` summed over the last dim (closed form).

    ``0.5 * sum(var + mean^2 - 1 - log var)``; shapes ``(..., d) -> (...)``.
    """
    return 0.5 * (var + mean ** 2 - 1.0 - var.log()).sum(dim=-1)


def gaussian_kl(mean: torch.Tensor, var: torch.Tensor, other_mean, other_var) -> torch.Tensor:
    """``KL[N(mean, diag var) || N(other_mean, diag other_var)]`` summed over the last dim.

    Through :func:`kl_to_standard_normal`, the library's one closed form: the KL is unchanged by
    the map ``z -> (z - other_mean) / sqrt(other_var)``, which takes the second normal to
    ``N(0, I)`` and the first to ``N((mean - other_mean) / sqrt(other_var), var / other_var)``.
    Shapes ``(..., d) -> (...)``; the second normal's tensors (or numbers) broadcast.
    """
    return kl_to_standard_normal((mean - other_mean) / other_var ** 0.5, var / other_var)


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """``log N(x; mean, diag var)`` summed over the last dim; ``(..., d) -> (...)``."""
    return -0.5 * (((x - mean) ** 2) / var + var.log() + math.log(2 * math.pi)).sum(dim=-1)


def log_importance_weight(values: torch.Tensor, x_mean: torch.Tensor, x_var: torch.Tensor, mask: torch.Tensor,
                          u: torch.Tensor, u_mean: torch.Tensor, u_var: torch.Tensor,
                          v: torch.Tensor, v_mean: torch.Tensor, v_var: torch.Tensor) -> torch.Tensor:
    """``log p(x_i, u, v_i) - log q(u, v_i | x_i)`` of each group at the drawn codes, ``(B,)``: the
    decoder's ``N(x_mean, x_var)`` and the ``N(0, I)`` priors against ``q(u) = N(u_mean, u_var)``
    and ``q(v_k) = N(v_mean, v_var)``, the per-observation terms summed over the observed ``mask
    (B, K)`` (float). Its mean over draws is the ELBO; its log-mean-exp the importance-weighted bound.
    Shapes: ``values, x_mean, x_var (B, K, x_dim)``, ``u, u_mean, u_var (B, u_dim)``,
    ``v, v_mean, v_var (B, K, v_dim)``."""
    zeros_u, zeros_v = torch.zeros_like(u), torch.zeros_like(v)
    return ((gaussian_log_prob(values, x_mean, x_var) * mask).sum(1)
            + gaussian_log_prob(u, zeros_u, zeros_u + 1)
            - gaussian_log_prob(u, u_mean, u_var)
            + ((gaussian_log_prob(v, zeros_v, zeros_v + 1)
                - gaussian_log_prob(v, v_mean, v_var)) * mask).sum(1))


def sample_normal(mean: torch.Tensor, var: torch.Tensor, mask: Optional[torch.Tensor] = None,
                  eps: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Reparameterised sample ``mean + sqrt(var) * eps``.

    ``eps`` (the shape of ``mean``, or with leading sample dimensions that broadcast against it,
    ``(S, *mean.shape)``) is the standard-normal noise; if None it is drawn from the
    global RNG, and with ``mask (B, K)`` (per-observation codes ``(B, K, d)``) only at the observed
    positions (:func:`observed_noise`).
    """
    if eps is None:
        eps = torch.randn_like(mean) if mask is None else observed_noise(mask, mean.shape[-1], dtype=mean.dtype)
    return mean + var.sqrt() * eps


# ---------------------------------------------------------------------------------------------
# Group encoders q(u | x)  (paper section 2.2 and section 4, item 1)
# ---------------------------------------------------------------------------------------------
class AverageGroupEncoder(nn.Module):
    """Hosoya (2019): encode each observation to ``(mu_k, Sigma_k)`` and average them (paper 2.2).

    ``mu = 1/K sum_k mu_k``, ``Sigma = 1/K sum_k Sigma_k``; the averages are taken over the
    per-observation posteriors, before any other pooling.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.per_observation = MLP(cfg.x_dim + cfg.c_dim, 2 * cfg.u_dim, cfg.hidden, cfg.depth)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> Normal:
        """``x (B, K, x_dim)``, ``mask (B, K)`` -> ``q(u | x)`` as mean, var ``(B, u_dim)``."""
        mean_k, var_k = split_normal(self.per_observation(x))  # (B, K, u_dim) each
        return masked_mean(mean_k, mask), masked_mean(var_k, mask)


class ProductGroupEncoder(nn.Module):
    """Bouchacourt et al. (2018), ML-VAE: a product of the per-observation normals (paper 2.2).

    ``Sigma^-1 = sum_k Sigma_k^-1`` and ``mu^T Sigma^-1 = sum_k mu_k^T Sigma_k^-1``: precisions
    add and the mean is precision weighted. By eq. (1) this counts the prior K times.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.per_observation = MLP(cfg.x_dim + cfg.c_dim, 2 * cfg.u_dim, cfg.hidden, cfg.depth)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> Normal:
        """``x (B, K, x_dim)``, ``mask (B, K)`` -> ``q(u | x)`` as mean, var ``(B, u_dim)``."""
        mean_k, var_k = split_normal(self.per_observation(x))
        precision = masked_sum(1.0 / var_k, mask)  # (B, u_dim)
        mean = masked_sum(mean_k / var_k, mask) / precision
        return mean, 1.0 / precision


class CorrectedProductGroupEncoder(nn.Module):
    """ML-VAE with the K-1 surplus priors of eq. (1) divided out, for the N(0, I) prior.

    Each observation contributes a Gaussian *likelihood factor* with mean ``m_k`` and precision
    ``l_k >= 0``; the group posterior is ``prior x prod_k factor_k``::

        precision = 1 + sum_k l_k,    mean = (sum_k l_k m_k) / (1 + sum_k l_k).

    This is exactly eq. (1), ``q(u|x) ∝ q(u)^-(K-1) prod_k q(u|x_k)``, when each per-observation
    posterior is ``q(u|x_k) = N(0, I) x factor_k`` (precision ``1 + l_k``, mean
    ``l_k m_k / (1 + l_k)``): dividing out K-1 priors leaves one prior times all factors. Unlike
    dividing normals directly, this parameterisation is a valid normal for every K.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.per_observation = MLP(cfg.x_dim + cfg.c_dim, 2 * cfg.u_dim, cfg.hidden, cfg.depth)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> Normal:
        """``x (B, K, x_dim)``, ``mask (B, K)`` -> ``q(u | x)`` as mean, var ``(B, u_dim)``."""
        m_k, raw_precision = self.per_observation(x).chunk(2, dim=-1)
        l_k = F.softplus(raw_precision)  # likelihood precisions, >= 0
        precision = 1.0 + masked_sum(l_k, mask)
        return masked_sum(l_k * m_k, mask) / precision, 1.0 / precision


class DeepSetsGroupEncoder(nn.Module):
    """CxVAE (paper section 4, item 1): ``mu, Sigma = E_B(sum_k E_A(x_k))`` (Zaheer et al. 2017)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.element = MLP(cfg.x_dim + cfg.c_dim, cfg.hidden, cfg.hidden, cfg.depth)  # E_A
        self.pooled = MLP(cfg.hidden, 2 * cfg.u_dim, cfg.hidden, cfg.depth)  # E_B

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> Normal:
        """``x (B, K, x_dim)``, ``mask (B, K)`` -> ``q(u | x)`` as mean, var ``(B, u_dim)``."""
        return split_normal(self.pooled(masked_sum(self.element(x), mask)))


GROUP_ENCODER_CLASSES = {
    "average": AverageGroupEncoder,
    "product": ProductGroupEncoder,
    "product-corrected": CorrectedProductGroupEncoder,
    "deepsets": DeepSetsGroupEncoder,
}


# ---------------------------------------------------------------------------------------------
# Instance encoders q(v_k | x_k) and q(v_k | x_k, u)  (paper section 4, item 2)
# ---------------------------------------------------------------------------------------------
class InstanceEncoder(nn.Module):
    """``q(v_k | x_k)`` (``conditional=False``) or ``q(v_k | x_k, u)`` (``conditional=True``).

    The conditional encoder reads the concatenation ``[x_k, u]``; the caller passes the *same*
    sample of u that the decoder and the KL term use.
    """

    def __init__(self, cfg: ModelConfig, conditional: bool):
        super().__init__()
        self.conditional = conditional
        in_dim = cfg.x_dim + cfg.c_dim + (cfg.u_dim if conditional else 0)
        self.net = MLP(in_dim, 2 * cfg.v_dim, cfg.hidden, cfg.depth)

    def forward(self, x: torch.Tensor, u: Optional[torch.Tensor]) -> Normal:
        """``x (B, K, x_dim)`` and ``u (B, u_dim)`` (None if unconditional) -> mean, var ``(B, K, v_dim)``."""
        if self.conditional:
            if u is None:
                raise ValueError("the conditional instance encoder q(v|x,u) needs a group code u")
            x = torch.cat([x, u[:, None, :].expand(-1, x.shape[1], -1)], dim=-1)  # (B, K, x+u)
        return split_normal(self.net(x))


# ---------------------------------------------------------------------------------------------
# Decoders p(x | u, v)
# ---------------------------------------------------------------------------------------------
class ExamScoresDecoder(nn.Module):
    """The true generative model of paper 3.1 used as the decoder, as the paper does:
    ``x = 2 mu + (sigma^2 + 1) v`` with Gaussian noise of the data's standard deviation."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.register_buffer("log_var", torch.tensor([2.0 * math.log(cfg.noise_std)]))
        self.group_strength = cfg.group_strength

    def forward(self, u: torch.Tensor, v: torch.Tensor, covariates: Optional[torch.Tensor] = None) -> Normal:
        """``u (B, u_dim)``, ``v (B, K, v_dim)`` -> ``p(x | u, v)`` as mean, var ``(B, K, x_dim)``
        (``covariates`` is always None: the config refuses them for this decoder)."""
        mean = exam_scores_mean(u[:, None, :], v, self.group_strength)  # (B, K, 1)
        return mean, self.log_var.exp().expand_as(mean)


class MLPDecoder(nn.Module):
    """A neural decoder ``x ~ N(f([u, v]), diag s^2)`` with a learned per-dimension noise s."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.net = MLP(cfg.u_dim + cfg.v_dim + cfg.c_dim, cfg.x_dim, cfg.hidden, cfg.depth)
        self.log_var = nn.Parameter(torch.zeros(cfg.x_dim))
        self.c_dim = cfg.c_dim

    def forward(self, u: torch.Tensor, v: torch.Tensor, covariates: Optional[torch.Tensor] = None) -> Normal:
        """``u (B, u_dim)``, ``v (B, K, v_dim)`` and, with ``c_dim`` covariates, ``covariates
        (B, K, c_dim)`` -> ``p(x | u, v, c)`` as mean, var ``(B, K, x_dim)``."""
        if (covariates is None) != (self.c_dim == 0):
            raise DataError(f"this decoder was built for {self.c_dim} covariate column(s); "
                            f"got {'none' if covariates is None else covariates.shape[-1]}")
        parts = [u[:, None, :].expand(-1, v.shape[1], -1), v] + ([] if covariates is None else [covariates])
        h = torch.cat(parts, dim=-1)  # (B, K, u + v + c)
        mean = self.net(h)
        return mean, (self.log_var.exp() + MIN_VAR).expand_as(mean)


DECODER_CLASSES = {"true": ExamScoresDecoder, "mlp": MLPDecoder}


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------
class GroupVAE(nn.Module):
    """A Group VAE with a swappable group encoder, instance encoder, regulariser and decoder.

    ``GroupVAE(model_preset("cxvae"))`` is the CxVAE; ``model_preset("ml-vae")`` the ML-VAE, etc.
    The regulariser's critic lives in ``self.regulariser`` (None for ``'none'``); its parameters
    are kept apart from the VAE's (:meth:`vae_parameters`, :meth:`critic_parameters`) because the
    two are optimised adversarially.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.group_encoder = GROUP_ENCODER_CLASSES[cfg.group_encoder](cfg)
        self.instance_encoder = InstanceEncoder(cfg, conditional=cfg.instance_encoder == "conditional")
        self.decoder = DECODER_CLASSES[cfg.decoder](cfg)
        self.regulariser = make_regulariser(cfg)

    # -- parameters ---------------------------------------------------------------------------
    def vae_parameters(self):
        """The encoders' and decoder's parameters (everything but the critic's)."""
        return [p for name, p in self.named_parameters() if not name.startswith("regulariser.")]

    def critic_parameters(self):
        """The regulariser's critic's parameters (none without a regulariser)."""
        return [] if self.regulariser is None else list(self.regulariser.parameters())

    # -- checks -------------------------------------------------------------------------------
    def check_batch(self, batch: GroupedData, training: bool = True) -> None:
        """Raise a clear :class:`~cxvae.data.DataError` if the groups do not fit this model.

        ``training``: also check what the regulariser needs to train (at least
        ``cfg.min_batch_groups`` groups); encoding and scoring need no such thing. Groups of one
        observation are fine: the regulariser skips them (:func:`cxvae.regularisers.pairable`).
        """
        batch.validate(1)
        if batch.x_dim != self.cfg.x_dim + self.cfg.c_dim:
            raise DataError(f"the model expects observations with x_dim={self.cfg.x_dim}"
                            + (f" plus {self.cfg.c_dim} covariate(s)" if self.cfg.c_dim else "")
                            + f"; got {batch.x_dim} column(s)")
        dtype = next(self.parameters()).dtype
        if batch.x.dtype != dtype:
            raise DataError(f"the model's parameters are {dtype} but the observations are {batch.x.dtype}; "
                            f"convert them with x.to({dtype})")
        if training and batch.n_groups < self.cfg.min_batch_groups:
            raise DataError(f"the {self.cfg.regulariser!r} regulariser pairs each group with another group; "
                            f"it needs at least {self.cfg.min_batch_groups} groups, got {batch.n_groups}")

    # -- inference ----------------------------------------------------------------------------
    def draw_noise(self, mask: torch.Tensor, seed: Optional[int] = None, step: int = 0, dtype=torch.float32,
                   with_critic: bool = True, phase: int = TRAIN) -> Dict[str, torch.Tensor]:
        """All the randomness of one training step for groups with ``mask (B, K)``.

        Returns ``u (B, u_dim)`` and ``v (B, K, v_dim)`` standard-normal noise for the
        reparameterised samples and, if the model has a critic (and ``with_critic``), ``pairs
        (3, B, K)`` uniforms for :func:`~cxvae.regularisers.pairs_from_uniforms`; zero at padding.
        The numbers are :func:`cxvae.noise.step_noise` of ``seed`` at ``step``: a training run
        draws exactly these (:class:`cxvae.train.SeedStack`). ``seed=None`` takes a seed from the
        global RNG, so ``torch.manual_seed`` fixes the draw.
        """
        if seed is None:
            seed = int(torch.randint(0, 1 << 32, (), dtype=torch.int64))
        drawn = step_noise([seed], step, mask, self.cfg.u_dim, self.cfg.v_dim, phase=phase, dtype=dtype,
                           pairs=self.regulariser is not None and with_critic)
        return {key: t[0] for key, t in drawn.items()}

    def encode(self, x: torch.Tensor, mask: torch.Tensor, sample: bool = True,
               noise: Optional[Dict[str, torch.Tensor]] = None,
               group_posterior: Optional[Tuple[torch.Tensor, torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
        """Infer the codes of a batch of groups.

        Returns a dict with ``u_mean, u_var (B, u_dim)``, ``u (B, u_dim)`` (a sample, or the mean
        when ``sample=False``), ``v_mean, v_var (B, K, v_dim)`` (the conditional encoder reads
        that ``u``) and ``v (B, K, v_dim)`` (a sample, or the mean). ``noise`` (from
        :meth:`draw_noise`) fixes the samples' noise; if None it is drawn from the global RNG.
        ``group_posterior``: ``(u_mean, u_var)`` the group encoder already gave for ``x`` (several
        draws of the same groups then run it once).
        """
        noise = noise or {}
        u_mean, u_var = self.group_encoder(x, mask) if group_posterior is None else group_posterior
        u = sample_normal(u_mean, u_var, eps=noise.get("u")) if sample else u_mean
        v_mean, v_var = self.instance_encoder(x, u)
        v = sample_normal(v_mean, v_var, mask, eps=noise.get("v")) if sample else v_mean
        return dict(u_mean=u_mean, u_var=u_var, u=u, v_mean=v_mean, v_var=v_var, v=v)

    def decode(self, u: torch.Tensor, v: torch.Tensor, covariates: Optional[torch.Tensor] = None) -> Normal:
        """``p(x | u, v)``: ``u (B, u_dim)``, ``v (B, K, v_dim)`` -> mean, var ``(B, K, x_dim)``.
        A model with ``c_dim`` covariates needs them, ``covariates (B, K, c_dim)``
        (:meth:`split_covariates`)."""
        return self.decoder(u, v, covariates)

    def split_covariates(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``x (..., x_dim + c_dim)`` -> the modelled values ``(..., x_dim)`` and the covariates
        ``(..., c_dim)`` (None without covariates; then the values are ``x`` itself)."""
        if self.cfg.c_dim == 0:
            return x, None
        return x[..., :self.cfg.x_dim], x[..., self.cfg.x_dim:]

    # -- objective ----------------------------------------------------------------------------
    def elbo_terms(self, x: torch.Tensor, mask: torch.Tensor,
                   noise: Optional[Dict[str, torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
        """One-sample ELBO of each group (paper section 2.1), with its parts, all ``(B,)``.

        ``elbo = sum_k E_q log p(x_k | u, v_k) - KL[q(u|x) || p(u)] - sum_k KL[q(v_k|.) || p(v)]``
        with reparameterised samples and closed-form Gaussian KLs (for q(v|x,u) the KL is taken
        at the sampled u). Also returns the codes of :meth:`encode` (``noise`` as there).
        """
        codes = self.encode(x, mask, sample=True, noise=noise)
        values, covariates = self.split_covariates(x)
        x_mean, x_var = self.decode(codes["u"], codes["v"], covariates)
        m = mask.to(x.dtype)
        log_lik = (gaussian_log_prob(values, x_mean, x_var) * m).sum(dim=1)
        kl_u = kl_to_standard_normal(codes["u_mean"], codes["u_var"])
        kl_v = (kl_to_standard_normal(codes["v_mean"], codes["v_var"]) * m).sum(dim=1)
        return dict(codes, log_lik=log_lik, kl_u=kl_u, kl_v=kl_v, elbo=log_lik - kl_u - kl_v)

    def losses(self, batch: GroupedData, noise: Optional[Dict[str, torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
        """The training losses of one batch, per observation (see :meth:`forward`)."""
        if noise is None:
            noise = self.draw_noise(batch.mask, dtype=batch.x.dtype)
        return self(batch.x, batch.mask, noise)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, noise: Dict[str, torch.Tensor],
                with_critic: bool = True) -> Dict[str, torch.Tensor]:
        """The training losses of groups ``x (B, K, x_dim)``, ``mask (B, K)``, per observation.

        ``vae_loss = -ELBO / n_obs + reg_weight * I_hat`` is minimised by the VAE over its own
        parameters, and ``-I_hat`` by the critic over the critic's, where ``I_hat`` (``mi``) is the
        regulariser's Donsker-Varadhan estimate (eq. 2 or eq. 3; zero without a regulariser). ``mi``
        is computed once and reaches both: its gradient on the codes drives the encoders, its
        gradient on the critic's parameters the critic (:func:`cxvae.train.train_step` takes both
        from one backward pass). ``reg_weight`` is applied by the trainer; here ``mi`` is unweighted, and
        ``elbo_sum`` is the batch's total ELBO (not per observation). All the
        randomness comes from ``noise`` (:meth:`draw_noise`), and there is no data-dependent
        Python control flow, so the function can be vectorised over seeds with ``torch.func.vmap``.
        ``with_critic=False`` skips the regulariser (``mi`` is then 0), e.g. for validation.
        """
        terms = self.elbo_terms(x, mask, noise)
        n_obs = mask.sum().to(x.dtype)
        elbo_sum = terms["elbo"].sum()
        out = dict(neg_elbo=-elbo_sum / n_obs, elbo_sum=elbo_sum, kl_u=terms["kl_u"].sum() / n_obs,
                   kl_v=terms["kl_v"].sum() / n_obs, log_lik=terms["log_lik"].sum() / n_obs)
        if self.regulariser is not None and with_critic:
            pairs = pairs_from_uniforms(mask, noise["pairs"])
            out["mi"] = self.regulariser(x, terms["v"], mask, pairs)
        else:
            out["mi"] = torch.zeros((), dtype=x.dtype, device=x.device)
        return out


def _first_line(err: Exception, limit: int) -> str:
    """The first line of an error's message, cut to ``limit`` characters (torch's are long)."""
    return (str(err).strip().splitlines() or [""])[0][:limit]


def load_model(path, map_location="cpu") -> Tuple[GroupVAE, dict]:
    """Load a checkpoint written by :func:`cxvae.train.save_checkpoint` (no pickle execution:
    ``torch.load(weights_only=True)``). Returns the model (eval mode) and the run config dict.

    Raises ``FileNotFoundError`` for a missing file and :class:`~cxvae.data.DataError` for a file
    that is not such a checkpoint.
    """
    import json
    import os
    import pickle

    if isinstance(path, (str, os.PathLike)) and not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint file at {path}")
    not_ours = f"{path} is not a cxvae checkpoint (a model.pt written by `cxvae train` or cxvae.train.save_checkpoint)"
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    # torch's weights-only unpickler fails on a foreign file in many ways (e.g. KeyError on text)
    except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, IndexError, TypeError, ValueError) as err:
        raise DataError(f"{not_ours}: {type(err).__name__}: {_first_line(err, 200)}") from None
    if not isinstance(blob, dict) or not {"config_json", "state_dict"} <= set(blob):
        raise DataError(f"{not_ours}: it holds a {type(blob).__name__}"
                        + (f" with keys {sorted(map(str, blob))}" if isinstance(blob, dict) else ""))
    try:
        config = json.loads(blob["config_json"])
    except (TypeError, ValueError) as err:
        raise DataError(f"{not_ours}: its config_json is not JSON ({err})") from None
    model = GroupVAE(RunConfig.from_dict(config).model)  # a ConfigError names a bad setting
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as err:
        raise DataError(f"the weights in {path} do not fit the model its config describes: "
                        f"{_first_line(err, 300)}") from None
    return model.eval(), config
