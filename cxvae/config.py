"""Configuration: dataclasses for a run, named model presets and named scales.

A run is fully described by a :class:`RunConfig`; its resolved form is written as
``config.json`` beside every result so that any number can be regenerated.

Model presets (paper sections 2 and 4)::

    ml-vae            product of normals  | q(v|x)    | no regulariser   (Bouchacourt et al. 2018)
    ml-vae-corrected  product, prior-corr.| q(v|x)    | no regulariser   (eq. 1 taken literally)
    gvae              average             | q(v|x)    | no regulariser   (Hosoya 2019)
    gvae-ad           average             | q(v|x)    | single-obs MINE  (Nemeth 2020)
    cxvae             Deep Sets           | q(v|x,u)  | group-wise MINE  (this paper)

and every single-part ablation of cxvae (``cxvae-average``, ``cxvae-product``,
``cxvae-product-corrected``, ``cxvae-unconditional``, ``cxvae-nemeth``, ``cxvae-none``).
"""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Dict

__all__ = [
    "ModelConfig", "DataConfig", "TrainConfig", "EvalConfig", "RunConfig",
    "GROUP_ENCODERS", "INSTANCE_ENCODERS", "REGULARISERS", "DECODERS", "GROUP_POSTERIORS",
    "PRESETS", "EPOCHS_FACTOR", "SCALES", "ConfigError", "model_preset", "scale_preset", "make_run_config", "check_seed",
    "require_int", "require_real",
]

GROUP_ENCODERS = ("average", "product", "product-corrected", "deepsets")
INSTANCE_ENCODERS = ("unconditional", "conditional")
REGULARISERS = ("none", "nemeth", "groupwise")
DECODERS = ("true", "mlp")
# the family of q(u | x): a Gaussian, or the Gaussian and its mirror image in sigma's sign as an
# equal mixture (cxvae.evaluation.iwae_log_marginal_reflected)
GROUP_POSTERIORS = ("gaussian", "mirror")


class ConfigError(ValueError):
    """An unknown preset, scale or component name, or an inconsistent configuration."""


def _choose(kind: str, name: str, valid) -> str:
    if name not in valid:
        raise ConfigError(f"unknown {kind} {name!r}; choose one of: {', '.join(valid)}")
    return name


def require_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """``value`` as an ``int`` in ``[low, high)``, or a :class:`ConfigError` naming ``name``.

    Whole-number floats (``64.0``, ``2e2`` from a JSON file) count as integers; a fraction (2.5
    epochs) or a bool would otherwise fail deep inside training, or not at all (0 epochs trains
    nothing).
    """
    whole = isinstance(value, numbers.Integral) or (isinstance(value, numbers.Real) and math.isfinite(value)
                                                     and float(value).is_integer())
    if isinstance(value, bool) or not whole:
        raise ConfigError(f"{name} must be an integer; got {value!r}")
    value = int(value)
    if value < low:
        raise ConfigError(f"{name} must be at least {low}; got {value}")
    if high is not None and value >= high:
        raise ConfigError(f"{name} must be below {high}; got {value}")
    return value


def require_real(name: str, value: Any, ok, what: str) -> None:
    """``value`` is a finite number for which ``ok(value)`` holds, or a :class:`ConfigError`
    naming ``name`` (``what`` says what ``ok`` asks, for the message, e.g. ``'> 0'``)."""
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not (real and math.isfinite(value) and ok(value)):
        raise ConfigError(f"{name} must be a finite number {what}; got {value!r}")


def _build(cls, section: str, values: Dict[str, Any]):
    """``cls(**values)``, with an unknown key (a typo such as ``decodr``) a ConfigError that lists
    the section's settings instead of a TypeError from ``__init__``."""
    names = tuple(f.name for f in dataclasses.fields(cls))
    for key in values:
        _choose(f"{section} setting", key, names)
    return cls(**values)


def check_seed(seed: Any) -> int:
    """A model seed as an ``int`` in [0, 2^32): the seeded noise (:mod:`cxvae.noise`) takes no other."""
    return require_int("seed", seed, 0, 1 << 32)


@dataclass
class ModelConfig:
    """The parts of a Group VAE and their sizes.

    ``group_encoder`` in :data:`GROUP_ENCODERS`, ``instance_encoder`` in
    :data:`INSTANCE_ENCODERS`, ``regulariser`` in :data:`REGULARISERS`, ``decoder`` in
    :data:`DECODERS`. Defaults are the exam-scores sizes: u 2-d, v 1-d, x 1-d, MLPs with 3 hidden
    layers of 32 units. ``noise_std`` is the likelihood's standard deviation for the ``true``
    decoder (the data's noise) and ``group_strength`` its ``c`` (:mod:`cxvae.strength`); the
    ``mlp`` decoder learns its own. ``c_dim`` counts observed covariates (fixed effects): the
    last ``c_dim`` columns of every observation, read by the encoders, the critic and the
    ``mlp`` decoder but not modelled (``x_dim`` counts the modelled columns before them).
    ``group_posterior`` in :data:`GROUP_POSTERIORS`: ``'mirror'`` scores with ``q(u | x)`` and its
    reflection ``(mu, -sigma)`` as an equal mixture (the true decoder reads ``sigma^2``, so the
    exact posterior has both modes); it needs ``decoder='true'``.
    """

    group_encoder: str = "deepsets"
    instance_encoder: str = "conditional"
    regulariser: str = "groupwise"
    decoder: str = "true"
    x_dim: int = 1
    u_dim: int = 2
    v_dim: int = 1
    hidden: int = 32
    depth: int = 3
    noise_std: float = 0.1
    group_strength: float = 1.0
    c_dim: int = 0
    group_posterior: str = "gaussian"

    def __post_init__(self) -> None:
        _choose("group encoder", self.group_encoder, GROUP_ENCODERS)
        _choose("group posterior", self.group_posterior, GROUP_POSTERIORS)
        _choose("instance encoder", self.instance_encoder, INSTANCE_ENCODERS)
        _choose("regulariser", self.regulariser, REGULARISERS)
        _choose("decoder", self.decoder, DECODERS)
        for name in ("x_dim", "u_dim", "v_dim", "hidden", "depth"):
            setattr(self, name, require_int(name, getattr(self, name), 1))
        self.c_dim = require_int("c_dim", self.c_dim, 0)
        if self.decoder == "true" and (self.x_dim, self.u_dim, self.v_dim, self.c_dim) != (1, 2, 1, 0):
            raise ConfigError("the 'true' exam-scores decoder needs x_dim=1, u_dim=2, v_dim=1 and no covariates; "
                              f"got x_dim={self.x_dim}, u_dim={self.u_dim}, v_dim={self.v_dim}, c_dim={self.c_dim} "
                              "(use decoder='mlp')")
        if not self.noise_std > 0:
            raise ConfigError(f"noise_std must be positive; got {self.noise_std}")
        if self.group_posterior == "mirror" and self.decoder != "true":
            raise ConfigError("group_posterior='mirror' needs decoder='true', the decoder known to be symmetric in "
                              f"sigma's sign; got decoder={self.decoder!r} (use group_posterior='gaussian')")

    @property
    def min_batch_groups(self) -> int:
        """Fewest groups a training batch may hold: the MINE regularisers pair each group with
        another group of its batch, so they need two."""
        return 2 if self.regulariser != "none" else 1


@dataclass
class DataConfig:
    """The exam-scores data (paper section 3.1); train, validation and holdout groups are disjoint
    slices of one sample drawn with ``seed``, the same for every model seed."""

    n_train: int = 32_768
    n_valid: int = 1_024
    n_holdout: int = 4_096
    mean_extra_size: float = 16.0
    min_size: int = 8
    noise_std: float = 0.1
    group_strength: float = 1.0  # c of cxvae.strength; 1 = the paper's data
    seed: int = 20_240_601

    def __post_init__(self) -> None:
        # checked here so that a sweep refuses a bad setting before it writes anything
        self.n_train = require_int("n_train", self.n_train, 1)
        self.n_valid = require_int("n_valid", self.n_valid, 0)
        self.n_holdout = require_int("n_holdout", self.n_holdout, 0)
        self.min_size = require_int("min_size", self.min_size, 1)
        self.seed = require_int("data seed", self.seed, 0)
        require_real("mean_extra_size", self.mean_extra_size, lambda v: v >= 0, ">= 0")
        require_real("noise_std", self.noise_std, lambda v: v > 0, "> 0")
        require_real("group_strength", self.group_strength, lambda v: v >= 0, ">= 0 (the group strength c)")


@dataclass
class TrainConfig:
    """Optimisation. ``batch_size`` counts groups. ``reg_weight`` multiplies the mutual-information
    estimate in the encoder's loss; the critic maximises the same estimate with its own Adam.
    ``shuffle_seed`` fixes the order in which the training groups are visited; it is shared by
    all model seeds, so seeds differ in their initialisation and sampling noise (the paper's
    "random initialisations") and can be trained side by side (:func:`cxvae.train.train_seeds`)."""

    epochs: int = 20
    batch_size: int = 128
    lr: float = 3e-3
    critic_lr: float = 1e-3
    reg_weight: float = 1.0
    lr_decay_to: float = 0.1  # cosine decay of lr to this fraction at the last step
    grad_clip: float = 10.0
    shuffle_seed: int = 0

    def __post_init__(self) -> None:
        # 0 epochs would return an untrained model as if trained, and torch's own errors for a bad
        # lr come with a traceback from deep inside training
        self.epochs = require_int("epochs", self.epochs, 1)
        self.batch_size = require_int("batch_size", self.batch_size, 1)
        for name in ("lr", "critic_lr", "grad_clip"):
            require_real(name, getattr(self, name), lambda v: v > 0, "> 0")
        require_real("reg_weight", self.reg_weight, lambda v: v >= 0, ">= 0")
        require_real("lr_decay_to", self.lr_decay_to, lambda v: 0 <= v <= 1, "between 0 and 1")
        self.shuffle_seed = require_int("shuffle_seed", self.shuffle_seed, 0)


@dataclass
class EvalConfig:
    """How models are scored (:mod:`cxvae.metrics`): importance samples of the likelihood bound,
    the probes' fixed budget and the seed of the translation pairs."""

    iwae_samples: int = 64
    probe_steps: int = 400
    probe_max_train: int = 4096
    probe_seed: int = 0
    translation_seed: int = 0

    def __post_init__(self) -> None:
        # 0 importance samples or probe steps would score nothing, and quietly
        self.iwae_samples = require_int("iwae_samples", self.iwae_samples, 1)
        self.probe_steps = require_int("probe_steps", self.probe_steps, 1)
        self.probe_max_train = require_int("probe_max_train", self.probe_max_train, 1)
        self.probe_seed = require_int("probe_seed", self.probe_seed, 0)
        self.translation_seed = require_int("translation_seed", self.translation_seed, 0)


@dataclass
class RunConfig:
    """Everything that defines one training run."""

    preset: str = "cxvae"
    seed: int = 0
    scale: str = "smoke"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    device: str = "auto"

    def __post_init__(self) -> None:
        self.seed = check_seed(self.seed)
        if self.model.decoder == "true" and self.model.group_strength != self.data.group_strength:
            raise ConfigError(f"the 'true' decoder has group_strength={self.model.group_strength} but the data "
                              f"have {self.data.group_strength}; set both (make_run_config copies the data's)")

    def to_dict(self) -> Dict[str, Any]:
        """The run as nested plain dicts (``model``, ``data``, ``train``, ``eval`` and the top-level fields).
        ``model.c_dim`` is left out when 0 and ``model.group_posterior`` when ``'gaussian'``, so a
        run without them reads as before they existed (studies compare their ``config.json`` key by key)."""
        d = dataclasses.asdict(self)
        if d["model"]["c_dim"] == 0:
            del d["model"]["c_dim"]
        if d["model"]["group_posterior"] == "gaussian":
            del d["model"]["group_posterior"]
        return d

    def to_json(self) -> str:
        """:meth:`to_dict` as indented JSON with sorted keys (what ``config.json`` files hold)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "RunConfig":
        """The run of a :meth:`to_dict` dict (e.g. a loaded ``config.json``); a missing section or an
        unknown or bad setting is a :class:`ConfigError`."""
        d = dict(d)
        missing = [name for name in ("model", "data", "train") if name not in d]
        if missing:
            raise ConfigError(f"the configuration lacks its {', '.join(missing)} section(s)")
        sections = dict(model=_build(ModelConfig, "model", d.pop("model")),
                        data=_build(DataConfig, "data", d.pop("data")),
                        train=_build(TrainConfig, "train", d.pop("train")),
                        eval=_build(EvalConfig, "eval", d.pop("eval", {})))  # older runs have none
        return _build(cls, "run", {**d, **sections})


PRESETS: Dict[str, Dict[str, str]] = {
    "ml-vae": dict(group_encoder="product", instance_encoder="unconditional", regulariser="none"),
    "ml-vae-corrected": dict(group_encoder="product-corrected", instance_encoder="unconditional",
                             regulariser="none"),
    "gvae": dict(group_encoder="average", instance_encoder="unconditional", regulariser="none"),
    "gvae-ad": dict(group_encoder="average", instance_encoder="unconditional", regulariser="nemeth"),
    "cxvae": dict(group_encoder="deepsets", instance_encoder="conditional", regulariser="groupwise"),
    # single-part ablations of cxvae (paper section 6.2, Figure 5)
    "cxvae-average": dict(group_encoder="average", instance_encoder="conditional", regulariser="groupwise"),
    "cxvae-product": dict(group_encoder="product", instance_encoder="conditional", regulariser="groupwise"),
    "cxvae-product-corrected": dict(group_encoder="product-corrected", instance_encoder="conditional",
                                    regulariser="groupwise"),
    "cxvae-unconditional": dict(group_encoder="deepsets", instance_encoder="unconditional",
                                regulariser="groupwise"),
    "cxvae-nemeth": dict(group_encoder="deepsets", instance_encoder="conditional", regulariser="nemeth"),
    "cxvae-none": dict(group_encoder="deepsets", instance_encoder="conditional", regulariser="none"),
    # beyond the paper (issue 25, chapter 11): CxVAE scored with the mirror-mixture q(u|x), trained 4x longer
    "cxvae-mirror-long": dict(group_encoder="deepsets", instance_encoder="conditional", regulariser="groupwise",
                              group_posterior="mirror"),
}

# presets that train for a multiple of their scale's epochs (an explicit train=dict(epochs=...) wins)
EPOCHS_FACTOR: Dict[str, int] = {"cxvae-mirror-long": 4}

SCALES: Dict[str, Dict[str, Dict[str, Any]]] = {
    # a couple of seconds on a 2-core CPU: for tests, CI and smoke runs of the book
    "smoke": dict(data=dict(n_train=2_048, n_valid=256, n_holdout=512),
                  train=dict(epochs=4, batch_size=64),
                  eval=dict(iwae_samples=16, probe_steps=200, probe_max_train=1024)),
    # a quarter of the paper's data for a quarter of its epochs: for studies with many settings
    # (cxvae.strength) on a CPU; the paper scale is the reference for every claim
    "study": dict(data=dict(n_train=8_192, n_valid=512, n_holdout=1_024),
                  train=dict(epochs=10, batch_size=128),
                  eval=dict(iwae_samples=32, probe_steps=400, probe_max_train=1024)),
    # the paper's data size (N = 32,768 training groups)
    "paper": dict(data=dict(n_train=32_768, n_valid=1_024, n_holdout=4_096),
                  train=dict(epochs=40, batch_size=128),
                  eval=dict(iwae_samples=64, probe_steps=400, probe_max_train=4096)),
}


def model_preset(name: str, **overrides: Any) -> ModelConfig:
    """The :class:`ModelConfig` of preset ``name`` with ``overrides`` (e.g. ``decoder='mlp'``)."""
    _choose("preset", name, tuple(PRESETS))
    return _build(ModelConfig, "model", {**PRESETS[name], **overrides})


def scale_preset(name: str) -> Dict[str, Dict[str, Any]]:
    """The data and training settings of scale ``name`` (``smoke`` or ``paper``)."""
    return SCALES[_choose("scale", name, tuple(SCALES))]


def make_run_config(preset: str = "cxvae", seed: int = 0, scale: str = "smoke", device: str = "auto",
                    model: Dict[str, Any] | None = None, data: Dict[str, Any] | None = None,
                    train: Dict[str, Any] | None = None, eval: Dict[str, Any] | None = None) -> RunConfig:
    """Resolve a preset and a scale (plus optional per-section overrides) into a RunConfig.
    A preset of :data:`EPOCHS_FACTOR` trains that multiple of the scale's epochs unless ``train``
    gives ``epochs``."""
    sc = scale_preset(scale)
    train = dict(train or {})
    if preset in EPOCHS_FACTOR and "epochs" not in train:
        train["epochs"] = EPOCHS_FACTOR[preset] * sc["train"]["epochs"]
    model = dict(model or {})
    if data and "group_strength" in data:  # the true decoder follows the data unless told otherwise
        model.setdefault("group_strength", data["group_strength"])
    return RunConfig(
        preset=preset, seed=seed, scale=scale, device=device,  # RunConfig checks the seed (2.5 is not one)
        model=model_preset(preset, **(model or {})),
        data=_build(DataConfig, "data", {**sc.get("data", {}), **(data or {})}),
        train=_build(TrainConfig, "train", {**sc.get("train", {}), **(train or {})}),
        eval=_build(EvalConfig, "eval", {**sc.get("eval", {}), **(eval or {})}),
    )
