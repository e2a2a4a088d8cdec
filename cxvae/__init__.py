"""cxvae: group-instance disentanglement with the Group VAE family and the Context-Aware VAE.

An executable reproduction of "Context-Aware Variational Autoencoder" (CxVAE). The parts:

* :mod:`cxvae.data` — the exam-scores generator and ragged groups (padded + mask);
* :mod:`cxvae.model` — group encoders, instance encoders, decoders and :class:`GroupVAE`;
* :mod:`cxvae.regularisers` — the MINE critics (single-observation and group-wise);
* :mod:`cxvae.config` — run configuration, model presets and scales;
* :mod:`cxvae.train` — training (one seed, or many at once with :class:`~cxvae.train.SeedStack`), checkpoints;
* :mod:`cxvae.noise` — counter-based training noise, one vectorised draw for every seed of a stack;
* :mod:`cxvae.oracle` — the exact Bayes-optimal reference for the exam-scores model;
* :mod:`cxvae.metrics`, :mod:`cxvae.evaluation` — the metrics and the scorers they read;
* :mod:`cxvae.runner` — sweeps over presets and seeds, the oracle row, summary tables;
* :mod:`cxvae.bias` — the product-of-normals bias (eq. 1), exact and learned;
* :mod:`cxvae.strength` — the group-strength family, from unconfounded to emergent groups (6.3);
* :mod:`cxvae.report` — the rule that turns a claim's checks into a verdict;
* :mod:`cxvae.frames`, :mod:`cxvae.tabular`, :mod:`cxvae.mixed` — table checks, pandas data, the
  practitioner API, the mixed model;
* :mod:`cxvae.plots`, :mod:`cxvae.paper_values`, :mod:`cxvae.bench` — figures, reported values, timing;
* :mod:`cxvae.cli` — the ``cxvae`` command.
"""
__version__ = "0.1.0"

from .config import PRESETS, SCALES, ModelConfig, RunConfig, make_run_config, model_preset  # noqa: F401
from .data import GroupedData, DataError, from_groups, generate_exam_scores  # noqa: F401
from .model import GroupVAE, load_model  # noqa: F401
