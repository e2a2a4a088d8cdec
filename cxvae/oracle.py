r"""The exact Bayes-optimal reference ("oracle") for the exam-scores problem (paper section 3.1).

Why an exact reference exists at all
------------------------------------
For real data the true generative model is unknown, so no model can be compared with the best
possible answer. The exam-scores data are synthetic: we *know* the model that generated them,

    u = (mu, sigma) ~ N(0, I_2),   v_k ~ N(0, 1) iid,   x_k = b mu + a v_k + eps_k,
    b = 2 c,   a = c sigma^2 + 1,   eps_k ~ N(0, s^2),   s = ``noise_std`` > 0,

where c = ``group_strength`` is 1 for the paper's data (b = 2, a = sigma^2 + 1; see
:mod:`cxvae.strength` for other c). Below, "2" of the paper's formula is written b.

so we can compute the true posterior p(u, v | x) and the true likelihood p(x) of every group.
They give the floor for the holdout NLL, the Bayes-optimal reconstruction and translation, and
the "encoder" that a perfectly disentangled model would approach.

Derivation (one group of K observations; the group index is dropped)
--------------------------------------------------------------------
1. Integrate each v_k: given u, the x_k are iid ``N(b mu, V)`` with ``V = a^2 + s^2``. The
   likelihood therefore depends on x only through ``K, S1 = sum_k x_k, S2 = sum_k x_k^2``:
   ``sum_k (x_k - b mu)^2 = S2 - 2 b mu S1 + b^2 K mu^2``.
2. Fix sigma. The likelihood is Gaussian in mu, and so is the N(0, 1) prior, hence
   ``mu | sigma, x ~ N(m, 1/P)`` with ``P = 1 + b^2 K/V`` and ``m = (b S1 / V) / P``, and

       log p(x | sigma) = -K/2 log(2 pi V) - S2/(2V) + P m^2 / 2 - log(P) / 2.

3. Given (mu, sigma), v_k depends on x only through x_k and is Gaussian (prior precision 1,
   likelihood precision a^2/s^2): mean ``r (x_k - b mu)`` with ``r = a / V``, variance ``s^2/V``.
   With mu integrated out: ``v_k | sigma, x ~ N(r (x_k - b m), s^2/V + b^2 r^2 / P)``.
4. Only sigma is left. It enters through sigma^2, so the posterior is symmetric and we integrate
   over sigma >= 0 against the half-normal prior 2 N(sigma; 0, 1) with the trapezoid rule on a
   uniform grid of ``n_sigma`` points in [0, sigma_max], in float64 with log-sum-exp. The
   integrand is smooth and even in sigma, so this is the trapezoid rule on a symmetric grid,
   which converges exponentially fast; the truncation error is below the prior mass beyond
   sigma_max (~1e-12 for sigma_max = 7) unless a group is wildly dispersed. The one exception is
   E[|sigma| | x]: |sigma| has a kink at 0, so we add the Euler-Maclaurin end correction
   ``h^2/12 * g(0)`` (g the posterior density of |sigma|, h the grid step), leaving O(h^4).

Every posterior quantity is then a mixture over the grid of closed-form Gaussians: exact up to a
1-D quadrature, which is far more accurate and cheaper than a 2-D grid over (mu, sigma) or any
sampling scheme. Because moments of v_k given sigma are polynomials in x_k with per-group
coefficients, everything costs O(N * n_sigma) regardless of group size.
"""
from __future__ import annotations

import math
from typing import Dict

import torch

from .data import DataError, GroupedData, exam_scores_mean, generate_exam_scores

__all__ = ["ExamScoresOracle", "single_observation_floor", "instance_predictions", "exact_v_given_u"]

_LOG_2PI = math.log(2.0 * math.pi)


class ExamScoresOracle:
    """Exact posterior and likelihood of the exam-scores model (see the module docstring).

    Args:
        noise_std: the observation noise standard deviation s (> 0) used to generate the data.
        group_strength: the generator's c (>= 0; 1 for the paper's data).
        n_sigma: number of quadrature points on [0, sigma_max].
        sigma_max: upper end of the sigma grid.
        chunk_elements: groups are processed in chunks of about ``chunk_elements / n_sigma``.

    All methods take a :class:`~cxvae.data.GroupedData` with ``x_dim == 1`` on any device and
    return float64 CPU tensors; padded positions of per-observation outputs are 0.
    """

    def __init__(self, noise_std: float = 0.1, n_sigma: int = 2001, sigma_max: float = 7.0,
                 chunk_elements: int = 2 ** 22, group_strength: float = 1.0):
        if not (math.isfinite(noise_std) and noise_std > 0):
            raise ValueError(f"noise_std must be a finite positive number (the oracle divides by it); "
                             f"got {noise_std}")
        if int(n_sigma) < 3 or not (math.isfinite(sigma_max) and sigma_max > 0):
            raise ValueError(f"need n_sigma >= 3 and sigma_max > 0; got {n_sigma}, {sigma_max}")
        if not (math.isfinite(group_strength) and group_strength >= 0):
            raise ValueError(f"group_strength must be a finite non-negative number; got {group_strength}")
        self.noise_std, self.n_sigma, self.sigma_max = float(noise_std), int(n_sigma), float(sigma_max)
        self.group_strength, self._b = float(group_strength), 2.0 * float(group_strength)
        self.chunk = max(1, int(chunk_elements) // self.n_sigma)
        f64 = torch.float64
        self.sigma = torch.linspace(0.0, self.sigma_max, self.n_sigma, dtype=f64)  # (G,)
        h = self.sigma_max / (self.n_sigma - 1)
        quad = torch.full((self.n_sigma,), h, dtype=f64)
        quad[0] = quad[-1] = h / 2  # trapezoid weights
        # log(quadrature weight x half-normal prior density 2 N(sigma; 0, 1))
        self._log_prior = quad.log() + math.log(2.0) - 0.5 * _LOG_2PI - 0.5 * self.sigma ** 2
        self._a = self.group_strength * self.sigma ** 2 + 1.0
        self._V = self._a ** 2 + self.noise_std ** 2

    # -- internals -----------------------------------------------------------------------------
    def _xmask(self, data: GroupedData):
        if not isinstance(data, GroupedData):
            raise TypeError(f"expected GroupedData; got {type(data).__name__}")
        if data.x.dim() != 3 or data.x.shape[-1] != 1:
            raise DataError(f"the exam-scores oracle needs scalar observations, x of shape "
                            f"(n_groups, max_group_size, 1); got {tuple(data.x.shape)}")
        data.validate(what="the exam-scores oracle")
        mask = data.mask.detach().cpu()
        return data.x.detach().cpu().to(torch.float64)[..., 0] * mask, mask  # (N, K_max) each

    def _grid(self, K, S1, S2):
        """Given-sigma closed forms for a chunk: P, m, normalised log weights (n, G); log p(x) (n,)."""
        V, b = self._V, self._b
        P = 1.0 + b ** 2 * K[:, None] / V
        m = b * S1[:, None] / V / P
        log_lik = (-0.5 * K[:, None] * (_LOG_2PI + V.log()) - S2[:, None] / (2.0 * V)
                   + 0.5 * P * m ** 2 - 0.5 * P.log())
        joint = log_lik + self._log_prior
        log_marg = torch.logsumexp(joint, dim=1)
        return P, m, joint - log_marg[:, None], log_marg

    def _chunks(self, data: GroupedData):
        K, S1, S2 = self.sufficient_stats(data)
        for start in range(0, K.shape[0], self.chunk):  # chunks of groups, vectorised inside
            sl = slice(start, start + self.chunk)
            yield sl, self._grid(K[sl], S1[sl], S2[sl])

    def _summaries(self, data: GroupedData) -> dict:
        """Per-group posterior expectations, each (N,), over the sigma mixture."""
        s2, a, V, sig, b = self.noise_std ** 2, self._a, self._V, self.sigma, self._b
        c, h = a / V, self.sigma_max / (self.n_sigma - 1)
        one = torch.ones_like(a)
        parts = []
        for _, (P, m, log_w, log_marg) in self._chunks(data):
            w = log_w.exp()
            # E[f(sigma) g(m, P)] = (w * g) @ f: few (n, G) products, the rest are matmuls
            e_sig, e_sig2, e_a, e_c, e_c2, e_ac, e_s2v = (w @ torch.stack(
                [sig, sig ** 2, a, c, c ** 2, a * c, s2 / V], dim=1)).unbind(1)
            e_m, e_cm, e_c2m, e_m_1mac = ((w * m) @ torch.stack([one, c, c ** 2, 1.0 - a * c], dim=1)).unbind(1)
            e_m2, e_c2m2 = ((w * m ** 2) @ torch.stack([one, c ** 2], dim=1)).unbind(1)
            e_ip, e_c2ip = ((w / P) @ torch.stack([one, c ** 2], dim=1)).unbind(1)
            parts.append(dict(
                log_marginal=log_marg, mu_mean=e_m, mu_sq=e_m2 + e_ip,
                abs_sigma_mean=e_sig + h / 6.0 * w[:, 0],  # kink correction: w0 = g(0) h / 2
                sigma_sq=e_sig2, a_mean=e_a,
                # E[v_k | x] = v0 + v1 x_k  and  E[v_k^2 | x] = q0 + q1 x_k + q2 x_k^2
                v0=-b * e_cm, v1=e_c, q0=e_s2v + b ** 2 * e_c2ip + b ** 2 * e_c2m2, q1=-2.0 * b * e_c2m, q2=e_c2,
                # E[b mu + a v_k | x] = r0 + r1 x_k  (given sigma: b m + (a^2/V)(x_k - b m))
                r0=b * e_m_1mac, r1=e_ac,
            ))
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    # -- public API ----------------------------------------------------------------------------
    def sufficient_stats(self, data: GroupedData):
        """``(K, S1, S2)``: group sizes, sums and sums of squares of x, each ``(N,)`` float64."""
        x, mask = self._xmask(data)
        return mask.sum(dim=1).to(torch.float64), x.sum(dim=1), (x * x).sum(dim=1)

    def log_marginal(self, data: GroupedData) -> torch.Tensor:
        """Exact ``log p(x_i)`` of each whole group (all K_i observations jointly), ``(N,)``."""
        return torch.cat([lm for _, (_, _, _, lm) in self._chunks(data)])

    def nll_per_observation(self, data: GroupedData) -> float:
        """Exact holdout NLL per observation, ``-sum_i log p(x_i) / sum_i K_i`` (a float, nats)."""
        return float(-self.log_marginal(data).sum() / data.n_observations)

    def sigma_posterior(self, data: GroupedData):
        """``(sigma_grid (G,), log_weights (N, G))``: the posterior of |sigma| as normalised
        quadrature weights (``log_weights.exp().sum(1) == 1``; quadrature weights included)."""
        return self.sigma.clone(), torch.cat([lw for _, (_, _, lw, _) in self._chunks(data)])

    def posterior_u(self, data: GroupedData) -> dict:
        """Posterior moments of the group factors, each ``(N,)``: ``mu_mean``, ``mu_var``,
        ``abs_sigma_mean``, ``abs_sigma_var`` (of |sigma|) and ``a_mean`` = E[a | x] = E[c sigma^2 + 1 | x]."""
        s = self._summaries(data)
        return dict(mu_mean=s["mu_mean"], mu_var=s["mu_sq"] - s["mu_mean"] ** 2,
                    abs_sigma_mean=s["abs_sigma_mean"], abs_sigma_var=s["sigma_sq"] - s["abs_sigma_mean"] ** 2,
                    a_mean=s["a_mean"])

    def posterior_v(self, data: GroupedData, _s: dict | None = None):
        """Exact marginal posterior ``(mean, var)`` of each v_k given the whole group x, each
        ``(N, K_max, 1)``, zero at padding."""
        x, mask = self._xmask(data)
        s = self._summaries(data) if _s is None else _s
        col = lambda k: s[k][:, None]  # noqa: E731
        mean = col("v0") + col("v1") * x
        var = col("q0") + col("q1") * x + col("q2") * x ** 2 - mean ** 2
        return (mean * mask)[..., None], (var.clamp_min(0.0) * mask)[..., None]

    def reconstruction(self, data: GroupedData) -> torch.Tensor:
        """Bayes-optimal denoised observations ``E[b mu + a v_k | x]``, ``(N, K_max, 1)``
        (computed through the sigma mixture, not as b E[mu] + E[a] E[v_k])."""
        x, mask = self._xmask(data)
        s = self._summaries(data)
        return ((s["r0"][:, None] + s["r1"][:, None] * x) * mask)[..., None]

    def sampled_reconstructions(self, data: GroupedData, n_draws: int, seed: int = 0) -> torch.Tensor:
        """Noiseless observations ``b mu + a v_k`` at factors drawn from the exact posterior
        (:meth:`sample_posterior`, seeded by ``seed``): ``(n_draws, N, K_max, 1)``, 0 at padding."""
        u, v = self.sample_posterior(data, n_draws, generator=torch.Generator().manual_seed(seed))
        x_hat = exam_scores_mean(u[:, :, None, :], v, self.group_strength)
        return x_hat * data.mask.cpu()[None, ..., None]

    def translation(self, data: GroupedData, target: torch.Tensor) -> torch.Tensor:
        """MSE-optimal prediction of the true translation ``b mu_j + a_j v_ik`` with
        ``j = target[i]`` (``target``: ``(N,)`` long). Groups i and j are independent, so it is
        ``b E[mu_j | x_j] + E[a_j | x_j] E[v_ik | x_i]``. Returns ``(N, K_max, 1)``."""
        s = self._summaries(data)
        v_mean, _ = self.posterior_v(data, _s=s)
        j = torch.as_tensor(target, dtype=torch.long).cpu()
        if j.shape != (data.n_groups,):
            raise ValueError(f"target must have shape ({data.n_groups},); got {tuple(j.shape)}")
        out = self._b * s["mu_mean"][j, None, None] + s["a_mean"][j, None, None] * v_mean
        return out * data.mask.cpu()[..., None]

    def codes(self, data: GroupedData):
        """The oracle as an encoder: ``group_code (N, 2) = (E[mu|x], E[|sigma| |x])`` and
        ``instance_code (N, K_max, 1) = E[v_k|x]``."""
        s = self._summaries(data)
        v_mean, _ = self.posterior_v(data, _s=s)
        return torch.stack([s["mu_mean"], s["abs_sigma_mean"]], dim=1), v_mean

    def sample_posterior(self, data: GroupedData, n_samples: int, generator: torch.Generator | None = None):
        """Exact posterior samples ``u (S, N, 2)`` and ``v (S, N, K_max, 1)`` (v is 0 at padding):
        sigma from the grid weights with a random sign, then mu | sigma, x, then v | mu, sigma, x."""
        x, mask = self._xmask(data)
        S, us, vs = int(n_samples), [], []
        randn = lambda *shape: torch.randn(*shape, generator=generator, dtype=torch.float64)  # noqa: E731
        for sl, (P, m, log_w, _) in self._chunks(data):
            idx = torch.multinomial(log_w.exp(), S, replacement=True, generator=generator).T  # (S, n)
            sign = 2.0 * torch.randint(0, 2, idx.shape, generator=generator, dtype=torch.float64) - 1.0
            a, V = self._a[idx], self._V[idx]
            Ps, ms = P.T.gather(0, idx), m.T.gather(0, idx)  # (G, n) -> (S, n)
            mu = ms + randn(*idx.shape) / Ps.sqrt()
            v = (a / V)[..., None] * (x[sl] - self._b * mu[..., None])
            v = v + self.noise_std / V.sqrt()[..., None] * randn(*v.shape)
            us.append(torch.stack([mu, sign * self.sigma[idx]], dim=-1))
            vs.append((v * mask[sl])[..., None])
        return torch.cat(us, dim=1), torch.cat(vs, dim=1)


def single_observation_floor(group_strength: float = 1.0, n_groups: int = 20_000, noise_std: float = 0.1,
                             seed: int = 0) -> float:
    """The lowest mean squared error on ``v`` of any prediction from one observation alone:
    ``E[Var(v_k | x_k)]``, the exact posterior variance of v given one score, averaged over
    ``n_groups`` scores drawn from the model (groups of size 1; ``group_strength`` c as in
    :func:`~cxvae.data.generate_exam_scores`).

    An instance encoder ``q(v_k | x_k)`` and any probe of its codes are such predictions, so this
    is their floor; an encoder that also reads the group can go below it. It is ``s^2 / (1 + s^2)``
    (about the noise) at c = 0, where ``x_k = v_k + eps_k``, and grows with c. Averaging the exact
    variance rather than the squared error of the posterior mean estimates the same number with
    far less Monte Carlo error (standard error about 4e-4 rather than 6e-3 at c = 1 and 20,000
    draws).
    """
    single = generate_exam_scores(n_groups, mean_extra_size=0.0, min_size=1, noise_std=noise_std,
                                  group_strength=group_strength, seed=seed)
    _, v_var = ExamScoresOracle(noise_std, group_strength=group_strength).posterior_v(single)
    return float(v_var[:, 0, 0].mean())


def instance_predictions(data, noise_std: float = 0.1) -> Dict[str, torch.Tensor]:
    """The best predictions of every observed ``v_ik`` under three amounts of information (paper
    section 3; chapters 1 and 4), flattened over the observed positions, float64 ``(n_obs,)``:

    * ``'x_ik alone'``: ``E[v_ik | x_ik]``, each observation cut out into a group of its own (the
      best any instance encoder ``q(v_k | x_k)`` can do);
    * ``'whole group x_i'``: ``E[v_ik | x_i]``, the target of a group-aware encoder;
    * ``'x_ik and the true u_i'``: ``E[v_ik | x_ik, u_i] = a (x_ik - 2 mu) / (a^2 + s^2)`` with
      ``a = sigma^2 + 1`` (closed form: given u, v and x are jointly normal), a floor nobody reaches.

    Also ``'true v'``, the factors themselves. ``data`` is exam-scores :class:`GroupedData` at
    strength 1 with its true factors.
    """
    oracle = ExamScoresOracle(noise_std=noise_std)
    n = data.n_observations
    one_each = GroupedData(x=data.x[data.mask][:, None, :], mask=torch.ones(n, 1, dtype=torch.bool))
    mu, a = data.u[:, :1].double(), data.u[:, 1:].double() ** 2 + 1.0
    known_u = a * (data.x[..., 0].double() - 2.0 * mu) / (a ** 2 + noise_std ** 2)  # (N, K)
    return {"x_ik alone": oracle.posterior_v(one_each)[0][:, 0, 0],
            "whole group x_i": oracle.posterior_v(data)[0][data.mask][:, 0],
            "x_ik and the true u_i": known_u[data.mask],
            "true v": data.v[data.mask][:, 0].double()}


def exact_v_given_u(x: torch.Tensor, mask: torch.Tensor, u: torch.Tensor, noise_std: float,
                    group_strength: float = 1.0) -> torch.Tensor:
    """``E[v_k | x_k, mu, sigma]`` of the exam-scores model, ``(N, K, 1)`` (0 at padding).

    Given ``u = (mu, sigma)`` ``(N, 2)``, ``x_k = b mu + a v_k + e`` with ``b = 2c``, ``a = c
    sigma^2 + 1``, ``v_k ~ N(0, 1)``, ``e ~ N(0, s^2)``: the posterior mean is ``a (x_k - b mu) /
    (a^2 + s^2)``, one observation at a time (the v_k are independent given u)."""
    b = 2.0 * group_strength
    a = group_strength * u[:, 1:2] ** 2 + 1.0  # (N, 1)
    mean = a * (x[..., 0] - b * u[:, 0:1]) / (a ** 2 + noise_std ** 2)
    return (mean * mask.to(mean.dtype))[..., None]
