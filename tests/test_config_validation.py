"""Settings that cannot train or score are refused when the configuration is built, with a
ConfigError naming the setting; every preset at every scale, and every committed configuration,
still passes. Study-folder files that cannot be read are one-line ConfigErrors too. No training."""
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxvae import runner
from cxvae.bench import benchmark_table, scoring_table
from cxvae.config import (PRESETS, SCALES, ConfigError, DataConfig, EvalConfig, ModelConfig, RunConfig, TrainConfig,
                          make_run_config, model_preset)
from cxvae.strength import strength_study
from studies import run_row

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("scale", sorted(SCALES))
def test_every_preset_at_every_scale_is_valid_and_round_trips(preset, scale):
    """The presets and scales pass the checks, and a config read back from its dict is equal."""
    cfg = make_run_config(preset, seed=7, scale=scale, device="cpu")
    assert RunConfig.from_dict(json.loads(cfg.to_json())) == cfg


def test_committed_study_configurations_still_load():
    """Every preset recorded in a committed config.json passes the new checks unchanged."""
    paths = sorted((ROOT / "results").glob("**/config.json"))
    assert paths, "no committed config.json found"
    for path in paths:
        for name, c in json.loads(path.read_text()).get("presets", {}).items():
            assert RunConfig.from_dict(dict(c, seed=0)).preset == name


def test_numpy_integers_and_integer_valued_reals_are_accepted():
    """Sizes may be numpy integers (e.g. a table's column count) or whole-number floats (``64.0``,
    ``2e2`` read from a JSON file), stored as ints; rates may be ints."""
    assert ModelConfig(decoder="mlp", x_dim=np.int64(3), hidden=np.int32(8)).x_dim == 3
    assert TrainConfig(epochs=np.int64(2), lr=1, reg_weight=0, lr_decay_to=1).lr == 1
    train = TrainConfig(epochs=2e2, batch_size=64.0)
    assert (train.epochs, train.batch_size) == (200, 64) and type(train.batch_size) is int
    assert make_run_config("gvae", seed=3.0, model=dict(hidden=16.0)).model.hidden == 16


@pytest.mark.parametrize("train, name", [
    (dict(epochs=0), "epochs"), (dict(epochs=-3), "epochs"), (dict(epochs=2.5), "epochs"),
    (dict(epochs=True), "epochs"), (dict(batch_size=0), "batch_size"), (dict(batch_size=64.5), "batch_size"),
    (dict(lr=0), "lr"), (dict(lr=-1.0), "lr"), (dict(lr=math.nan), "lr"), (dict(lr=math.inf), "lr"),
    (dict(lr="0.001"), "lr"), (dict(critic_lr=0.0), "critic_lr"), (dict(grad_clip=0), "grad_clip"),
    (dict(grad_clip=-1.0), "grad_clip"), (dict(reg_weight=-0.5), "reg_weight"),
    (dict(reg_weight=math.nan), "reg_weight"), (dict(lr_decay_to=-0.1), "lr_decay_to"),
    (dict(lr_decay_to=1.5), "lr_decay_to"),
])
def test_bad_training_settings_are_refused_on_every_construction_path(train, name):
    """make_run_config overrides, TrainConfig itself and RunConfig.from_dict all refuse the value
    with a ConfigError that names the setting."""
    with pytest.raises(ConfigError, match=f"^{name} must be"):
        make_run_config("gvae", train=train)
    with pytest.raises(ConfigError, match=f"^{name} must be"):
        TrainConfig(**train)
    d = make_run_config("gvae").to_dict()
    d["train"].update(train)
    with pytest.raises(ConfigError, match=f"^{name} must be"):
        RunConfig.from_dict(d)


def test_zero_epochs_message_matches_the_sizes_style():
    """Integer settings share one wording: 'NAME must be at least 1; got 0'."""
    with pytest.raises(ConfigError, match=r"^hidden must be at least 1; got 0$"):
        ModelConfig(hidden=0)
    with pytest.raises(ConfigError, match=r"^epochs must be at least 1; got 0$"):
        TrainConfig(epochs=0)
    with pytest.raises(ConfigError, match=r"^lr must be a finite number > 0; got -1$"):
        TrainConfig(lr=-1)


@pytest.mark.parametrize("model, name", [
    (dict(hidden=32.5), "hidden"), (dict(depth=2.5), "depth"), (dict(depth=0), "depth"),
    (dict(decoder="mlp", x_dim="2"), "x_dim"), (dict(decoder="mlp", u_dim=1.5), "u_dim"),
    (dict(decoder="mlp", v_dim=False), "v_dim"),
])
def test_non_integer_model_sizes_are_refused(model, name):
    with pytest.raises(ConfigError, match=f"^{name} must be"):
        model_preset("cxvae", **model)


@pytest.mark.parametrize("evaluation, name", [
    (dict(iwae_samples=0), "iwae_samples"), (dict(probe_steps=-1), "probe_steps"),
    (dict(probe_max_train=2.5), "probe_max_train"), (dict(translation_seed=-1), "translation_seed"),
])
def test_bad_evaluation_settings_are_refused(evaluation, name):
    with pytest.raises(ConfigError, match=f"^{name} must be"):
        make_run_config("gvae", eval=evaluation)


def test_a_fractional_seed_is_refused_not_truncated():
    with pytest.raises(ConfigError, match="^seed must be an integer; got 2.5"):
        make_run_config("gvae", seed=2.5)
    assert make_run_config("gvae", seed=3.0).seed == 3


@pytest.mark.parametrize("seed", [-1, 1 << 32])
def test_seeds_outside_the_noise_range_are_refused(seed):
    """The seeded noise takes seeds in [0, 2^32); others were a ValueError from deep in training."""
    with pytest.raises(ConfigError, match="^seed must be"):
        make_run_config("gvae", seed=seed)


@pytest.mark.parametrize("section, cls", [("model", ModelConfig), ("data", DataConfig), ("train", TrainConfig),
                                          ("eval", EvalConfig)])
def test_an_unknown_override_names_it_and_lists_the_valid_settings(section, cls):
    """A typo such as model 'decodr' is a ConfigError listing the section's settings, not a TypeError."""
    with pytest.raises(ConfigError) as err:
        make_run_config("cxvae", **{section: dict(decodr="mlp")})
    message = str(err.value)
    assert f"unknown {section} setting 'decodr'" in message
    assert all(f.name in message for f in cls.__dataclass_fields__.values())
    d = make_run_config("cxvae").to_dict()
    d[section]["decodr"] = "mlp"
    with pytest.raises(ConfigError, match="'decodr'"):
        RunConfig.from_dict(d)
    with pytest.raises(ConfigError, match="unknown run setting 'sede'"):
        RunConfig.from_dict(dict(make_run_config("cxvae").to_dict(), sede=1))


def test_bench_refuses_empty_stacks_before_timing_anything():
    for stacks in ([0], [1, 0], [-2], [], [1.5]):
        with pytest.raises(ConfigError, match="stack size"):
            benchmark_table(["gvae"], scale="smoke", device="cpu", steps=1, stacks=stacks)
        with pytest.raises(ConfigError, match="stack size"):
            scoring_table(["gvae"], scale="smoke", device="cpu", stacks=stacks)
    with pytest.raises(ConfigError, match=r"seeds \(of the cost estimate\) must be at least 1"):
        benchmark_table(["gvae"], scale="smoke", device="cpu", steps=1, seeds=0, stacks=[1])


@pytest.mark.parametrize("bad", [math.nan, -1.0, math.inf])
def test_strength_study_refuses_bad_strengths_before_writing(tmp_path, bad):
    """Every strength is checked before the first setting's folder is made."""
    with pytest.raises(ConfigError, match="group_strength must be a finite number >= 0"):
        strength_study([0.0, bad], ["gvae"], [0], scale="smoke", out=tmp_path / "s", device="cpu", progress=False)
    assert not (tmp_path / "s").exists()


def test_sweep_checks_its_settings_before_recording_its_command(tmp_path):
    """A sweep that cannot run (CUDA graphs on a CPU, a negative seed) leaves no folder behind."""
    for kwargs in (dict(seeds=[0], cuda_graphs=True), dict(seeds=[-1])):
        with pytest.raises(ConfigError):
            runner.sweep(["gvae"], scale="smoke", device="cpu", out=tmp_path / "d", progress=False, **kwargs)
        assert not (tmp_path / "d").exists()


def _fake_study(folder: Path, seeds, epochs: int) -> None:
    """A study folder holding rows of ML-VAE ``seeds`` trained for ``epochs`` (no real training)."""
    folder.mkdir()
    config = {k: v for k, v in make_run_config("ml-vae", train=dict(epochs=epochs)).to_dict().items() if k != "seed"}
    (folder / "config.json").write_text(json.dumps(dict(presets={"ml-vae": config}, commands=[])))
    pd.DataFrame([run_row("ml-vae", s, scale=config["scale"], holdout_nll=1.0) for s in seeds]).to_csv(
        folder / "runs.csv", index=False)


def test_merge_names_which_folder_holds_which_setting(tmp_path):
    """'40 in DEST, 99 in SRC' rather than '40 there, 99 now'."""
    src, dest = tmp_path / "src_diff", tmp_path / "dest"
    _fake_study(dest, [0], epochs=40)
    _fake_study(src, [0, 1], epochs=99)
    with pytest.raises(ConfigError, match=f"train.epochs: 40 in {dest}, 99 in {src}"):
        runner.merge_study(src, dest)


def test_unreadable_study_tables_are_one_line_errors_naming_the_file(tmp_path):
    """An empty runs.csv, one with only its header, or one without a preset column."""
    folder = tmp_path / "study"
    folder.mkdir()
    runs = folder / "runs.csv"
    cases = [("", "is empty"), ("preset,seed\n", "holds no runs"), ("name,seed\na,0\n", "no 'preset' column")]
    for text, words in cases:
        runs.write_text(text)
        with pytest.raises(ConfigError, match=words) as err:
            runner.main_sweep_summary(folder)
        assert str(runs) in str(err.value) and "\n" not in str(err.value)
