"""The experiment runner: resumable sweeps, atomic rows, the oracle row and the summary table."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from cxvae import runner, store
from cxvae.cli import main
from cxvae.config import ConfigError
from cxvae.metrics import METRICS
from studies import run_row

TINY = dict(data=dict(n_train=256, n_valid=64, n_holdout=96), train=dict(epochs=1, batch_size=64),
            eval=dict(iwae_samples=4, probe_steps=20, probe_max_train=128))


def test_parse_seeds_reads_ranges_and_lists():
    """'0-3,7' is 0, 1, 2, 3, 7; bad input is a ConfigError."""
    assert runner.parse_seeds("0-3,7") == [0, 1, 2, 3, 7]
    assert runner.parse_seeds("5") == [5]
    for bad in ("", "a-b", "3-1"):
        with pytest.raises(ConfigError):
            runner.parse_seeds(bad)


def test_format_seeds_writes_ranges_that_parse_back():
    """[0..9, 12, 20, 21] is '0-9, 12, 20-21', and parse_seeds reads it back."""
    seeds = list(range(10)) + [12, 20, 21]
    assert runner.format_seeds(seeds[::-1]) == "0-9, 12, 20-21"
    assert runner.parse_seeds(runner.format_seeds(seeds).replace(" ", "")) == seeds
    assert runner.format_seeds([7]) == "7"


def test_sweep_writes_rows_config_and_provenance_then_skips_finished_runs(tmp_path, monkeypatch):
    """A sweep writes one row per run with every metric and provenance; a rerun trains nothing."""
    out = tmp_path / "study"
    table = runner.sweep(["ml-vae", "cxvae"], [0, 1], scale="smoke", device="cpu", out=out,
                         progress=False, overrides=TINY)
    assert len(table) == 4 and set(zip(table.preset, table.seed)) == {(p, s) for p in ("ml-vae", "cxvae") for s in (0, 1)}
    for col in list(METRICS) + ["train_seconds", "version", "git_commit", "device", "torch"]:
        assert col in table.columns and table[col].notna().all()
    assert sorted(p.name for p in (out / "histories").glob("*.csv")) == sorted(
        f"{p}-{s}.csv" for p in ("ml-vae", "cxvae") for s in (0, 1))
    assert len(list((out / "models").glob("*.pt"))) == 4
    gap = runner.posterior_gap_study(out, ["ml-vae"])
    assert set(gap.preset) == {"ml-vae"} and set(gap.seed) == {0, 1} and (gap.K == "all").sum() == 2
    assert (out / "posterior_gap.csv").exists()
    config = json.loads((out / "config.json").read_text())
    assert set(config["presets"]) == {"ml-vae", "cxvae"}
    assert config["presets"]["cxvae"]["model"]["group_encoder"] == "deepsets"

    calls = []
    monkeypatch.setattr(runner, "train_seeds", lambda *a, **k: calls.append(a) or pytest.fail("retrained"))
    again = runner.sweep(["ml-vae", "cxvae"], [0, 1], scale="smoke", device="cpu", out=out,
                         progress=False, overrides=TINY)
    assert calls == [] and again.equals(table)


def test_a_killed_sweep_keeps_finished_rows_and_resumes(tmp_path, monkeypatch):
    """If a run dies mid-sweep, finished rows survive, no partial file is left, and a rerun
    completes only what is missing."""
    out = tmp_path / "study"
    real_train = runner.train_seeds
    count = {"n": 0}

    def dying_train(*args, **kwargs):
        count["n"] += 1
        if count["n"] == 2:
            raise KeyboardInterrupt  # the machine went away during the second run
        return real_train(*args, **kwargs)

    monkeypatch.setattr(runner, "train_seeds", dying_train)
    with pytest.raises(KeyboardInterrupt):
        runner.sweep(["gvae"], [0, 1, 2], scale="smoke", device="cpu", out=out, progress=False, overrides=TINY)
    first = pd.read_csv(out / "runs.csv")
    assert list(first.seed) == [0]
    assert not list(out.glob("*.tmp"))

    trained = []
    monkeypatch.setattr(runner, "train_seeds", lambda *a, **k: trained.extend(a[1]) or real_train(*a, **k))
    final = runner.sweep(["gvae"], [0, 1, 2], scale="smoke", device="cpu", out=out, progress=False, overrides=TINY)
    assert trained == [1, 2]
    assert sorted(final.seed) == [0, 1, 2]
    assert final.loc[final.seed == 0].iloc[0].equals(first.iloc[0])


def test_sweep_refuses_to_mix_configurations_in_one_folder(tmp_path):
    """Runs with a different data/training set-up cannot be appended to an existing study."""
    out = tmp_path / "study"
    runner.sweep(["gvae"], [0], scale="smoke", device="cpu", out=out, progress=False, overrides=TINY)
    other = {**TINY, "train": dict(epochs=2, batch_size=64)}
    with pytest.raises(ConfigError, match="different configuration"):
        runner.sweep(["gvae"], [1], scale="smoke", device="cpu", out=out, progress=False, overrides=other)


def test_oracle_row_and_summary_table(tmp_path):
    """The oracle row is written beside the runs and appears in the summary with its value."""
    out = tmp_path / "study"
    runner.sweep(["gvae"], [0, 1, 2], scale="smoke", device="cpu", out=out, progress=False, overrides=TINY)
    metrics = runner.run_oracle(scale="smoke", out=out, overrides=TINY)
    study = runner.read_study(out)
    summary = runner.summarise(study["runs"], study["oracle"])
    oracle = summary[summary.preset == "oracle"].set_index("metric")
    assert oracle.loc["holdout_nll", "median"] == pytest.approx(metrics["holdout_nll"])
    gvae = summary[summary.preset == "gvae"]
    assert (gvae.n_seeds == 3).all() and (gvae.lo <= gvae["median"]).all() and (gvae["median"] <= gvae.hi).all()
    text = runner.main_sweep_summary(out)
    assert "oracle" in text and "gvae" in text


def test_summary_intervals_and_verdicts_on_known_data():
    """Bootstrap intervals cover the median; compare_to calls clear wins, losses and ties."""
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(40):
        rows.append(dict(preset="cxvae", seed=seed, **{m: 1.0 + 0.01 * rng.standard_normal() for m in METRICS}))
        rows.append(dict(preset="base", seed=seed, **{m: 2.0 + 0.01 * rng.standard_normal() for m in METRICS}))
        rows.append(dict(preset="same", seed=seed, **{m: 1.0 + 0.01 * rng.standard_normal() for m in METRICS}))
    summary = runner.summarise(pd.DataFrame(rows), n_boot=500)
    assert ((summary.lo <= summary["median"]) & (summary["median"] <= summary.hi)).all()
    verdicts = runner.compare_to(summary, "cxvae").set_index(["baseline", "metric"]).verdict
    assert verdicts[("base", "translation_mse")] == "better"  # lower is better: 1 < 2
    assert verdicts[("base", "v_probe_mse")] == "worse"  # higher is better: 1 < 2
    assert verdicts[("same", "translation_mse")] == "overlap"


def test_a_presets_interval_depends_on_its_own_runs_only():
    """Adding seeds of another preset, or reordering the rows, leaves a preset's interval exactly
    where it was (each interval has its own resampling stream)."""
    rng = np.random.default_rng(1)
    table = lambda preset, n: pd.DataFrame([dict(preset=preset, seed=s, **{m: rng.standard_normal() for m in METRICS})  # noqa: E731
                                            for s in range(n)])
    a, b = table("a", 12), table("b", 20)
    alone = runner.summarise(a, n_boot=300).set_index(["preset", "metric"])
    beside = runner.summarise(pd.concat([table("c", 7), b, a]), n_boot=300).set_index(["preset", "metric"])
    pd.testing.assert_frame_equal(beside.loc["a"], alone.loc["a"])
    fewer_b = runner.summarise(pd.concat([a, b.iloc[:5]]), n_boot=300).set_index(["preset", "metric"])
    pd.testing.assert_frame_equal(fewer_b.loc["a"], alone.loc["a"])


def test_cli_sweep_oracle_summary_and_evaluate_at_smoke_scale(tmp_path, capsys):
    """Every runner command works once at its smallest scale and prints what it promises."""
    out = tmp_path / "study"
    assert main(["sweep", "--presets", "gvae", "--seeds", "0", "--scale", "smoke", "--device", "cpu",
                 "--quiet", "--out", str(out)]) == 0
    assert "gvae" in capsys.readouterr().out
    assert main(["oracle", "--scale", "smoke", "--out", str(out)]) == 0
    assert "holdout_nll=" in capsys.readouterr().out
    assert main(["summary", "--out", str(out)]) == 0
    assert "oracle" in capsys.readouterr().out
    run = tmp_path / "run"
    assert main(["train", "--preset", "gvae", "--scale", "smoke", "--epochs", "1", "--device", "cpu",
                 "--quiet", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run / "model.pt"), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert all(m in printed for m in METRICS)


def test_cli_rejects_unknown_presets_and_missing_studies(tmp_path, capsys):
    """An unknown preset or a missing study folder is one clear line and exit status 2."""
    assert main(["sweep", "--presets", "nonsense", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'nonsense'" in err and "cxvae" in err and "Traceback" not in err
    assert main(["summary", "--out", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_scoring_a_block_together_matches_scoring_one_by_one(tmp_path):
    """The GPU path of the sweep (a block's probes trained side by side) writes the same rows as
    the CPU path, to rounding."""
    alone = runner.sweep(["cxvae"], [0, 1, 2], scale="smoke", device="cpu", out=tmp_path / "alone", progress=False,
                         overrides=TINY, stack=3, score_together=False)
    together = runner.sweep(["cxvae"], [0, 1, 2], scale="smoke", device="cpu", out=tmp_path / "together",
                            progress=False, overrides=TINY, stack=3, score_together=True)
    metrics = list(METRICS)
    assert list(together.seed) == [0, 1, 2] and (together.score_seconds > 0).all()
    np.testing.assert_allclose(together[metrics].to_numpy(), alone[metrics].to_numpy(), rtol=1e-3, atol=1e-5)


def test_cli_bench_prints_throughput(capsys):
    """`cxvae bench` at its smallest scale prints a positive throughput per preset."""
    assert main(["bench", "--presets", "gvae,cxvae", "--scale", "smoke", "--steps", "2", "--device", "cpu",
                 "--stacks", "1,3"]) == 0
    printed = capsys.readouterr().out
    assert "groups_per_s" in printed and "cxvae" in printed and "gvae" in printed and "stack" in printed
    assert "score_seconds" not in printed
    assert main(["bench", "--presets", "gvae", "--scale", "smoke", "--steps", "2", "--device", "cpu",
                 "--stacks", "1,2", "--score"]) == 0
    scored = [line.split() for line in capsys.readouterr().out.splitlines() if line.split()[:1] == ["gvae"]]
    assert len(scored) == 4 and all(float(row[-1]) > 0 for row in scored[2:])  # 2 training rows, then 2 scoring
    from cxvae.bench import training_throughput

    t = training_throughput("gvae", scale="smoke", device="cpu", steps=2, warmup=1)
    assert t["groups_per_s"] > 0 and t["observations_per_s"] > t["groups_per_s"]
    t3 = training_throughput("gvae", scale="smoke", device="cpu", steps=2, warmup=1, n_seeds=3)
    assert t3["seconds_per_step"] > 0 and t3["observations_per_s"] > t3["groups_per_s"]


def test_bench_repeats_report_the_median_window_and_the_spread(capsys):
    """With --repeats the throughput is the median window's, between the slowest and the fastest."""
    from cxvae.bench import training_throughput

    t = training_throughput("gvae", scale="smoke", device="cpu", steps=2, warmup=1, repeats=3)
    assert 0 < t["groups_per_s_min"] <= t["groups_per_s"] <= t["groups_per_s_max"]
    assert main(["bench", "--presets", "gvae", "--scale", "smoke", "--steps", "2", "--device", "cpu",
                 "--stacks", "1", "--repeats", "3"]) == 0
    header, row = capsys.readouterr().out.splitlines()[:2]
    columns = dict(zip(header.split(), row.split()))
    assert int(columns["slowest"]) <= int(columns["groups_per_s"]) <= int(columns["fastest"])
    with pytest.raises(ConfigError, match="repeats >= 1"):
        training_throughput("gvae", scale="smoke", device="cpu", steps=2, repeats=0)


def _copy_extended_elsewhere(tmp_path):
    """A study folder ``dest`` with ML-VAE seed 0, and ``src``: a copy of it that a sweep on another
    machine extended by seeds 1-2 (its pandas writing floats with other digits), plus a command
    for seeds 3-4 that was cut off before any of its runs finished."""
    src, dest = tmp_path / "copy", tmp_path / "study"
    runner.sweep(["ml-vae"], [0, 1, 2], scale="smoke", device="cpu", out=src, progress=False, overrides=TINY,
                 command="cxvae sweep --presets ml-vae --seeds 1-2 --scale smoke --out copy --stack 2")
    lines = (src / "runs.csv").read_text().splitlines()
    dest.mkdir()
    (dest / "runs.csv").write_text("\n".join(lines[:2]) + "\n")  # seed 0, as dest wrote it
    config = json.loads((src / "config.json").read_text())
    (dest / "config.json").write_text(json.dumps(dict(config, commands=["cxvae sweep --presets ml-vae --seeds 0"])))
    config["commands"].append("cxvae sweep --presets ml-vae --seeds 3-4 --scale smoke --out copy")
    (src / "config.json").write_text(json.dumps(config))
    pd.read_csv(src / "runs.csv").to_csv(src / "runs.csv", index=False, float_format="%.10g")
    return src, dest


def test_merge_study_appends_new_runs_and_finished_commands_only(tmp_path, capsys):
    """New rows are appended as the copy wrote them, the folder's own rows stay byte for byte, the
    curves come along, and only commands whose runs all arrived are recorded, naming the folder."""
    src, dest = _copy_extended_elsewhere(tmp_path)
    before = (dest / "runs.csv").read_text()
    added = runner.merge_study(src, dest)
    assert list(zip(added.preset, added.seed)) == [("ml-vae", 1), ("ml-vae", 2)]
    after = (dest / "runs.csv").read_text()
    assert after.startswith(before)
    assert after[len(before):].splitlines() == (src / "runs.csv").read_text().splitlines()[2:]
    assert sorted(p.name for p in (dest / "histories").iterdir()) == ["ml-vae-1.csv", "ml-vae-2.csv"]
    assert sorted(p.name for p in (dest / "models").iterdir()) == ["ml-vae-1.pt", "ml-vae-2.pt"]
    commands = json.loads((dest / "config.json").read_text())["commands"]
    assert commands == ["cxvae sweep --presets ml-vae --seeds 0",
                        f"cxvae sweep --presets ml-vae --seeds 1-2 --scale smoke --out {dest} --stack 2"]
    config_after = (dest / "config.json").read_text()
    assert runner.merge_study(src, dest).empty  # a second merge changes nothing
    assert (dest / "runs.csv").read_text() == after and (dest / "config.json").read_text() == config_after
    assert main(["merge", str(src), "--into", str(dest)]) == 0
    assert "nothing to merge" in capsys.readouterr().out


def test_merge_study_refuses_other_configurations_and_runs_without_curves(tmp_path, capsys):
    """A copy whose preset is configured differently, or whose new run has no curve, is refused
    with a one-line error, and the folder is left as it was."""
    src, dest = _copy_extended_elsewhere(tmp_path)
    before = (dest / "runs.csv").read_text()
    (src / "histories" / "ml-vae-2.csv").unlink()
    with pytest.raises(ConfigError, match="lacks the curves of ml-vae-2"):
        runner.merge_study(src, dest)
    config = json.loads((src / "config.json").read_text())
    config["presets"]["ml-vae"]["train"]["lr"] *= 2
    (src / "config.json").write_text(json.dumps(config))
    assert main(["merge", str(src), "--into", str(dest)]) == 2
    assert "configured differently" in capsys.readouterr().err
    assert (dest / "runs.csv").read_text() == before


def test_a_full_commit_hash_from_the_environment_is_shortened_like_git_does(monkeypatch):
    """CXVAE_GIT_COMMIT (a tree copied without .git) is recorded with git's 12 characters."""
    monkeypatch.setenv("CXVAE_GIT_COMMIT", "7664528202dac673de5f4286d173b3ebc55e8737")
    assert runner._git_commit() == "7664528202da"
    monkeypatch.setenv("CXVAE_GIT_COMMIT", "7664528-dirty")
    assert runner._git_commit() == "7664528-dirty"


def test_provenance_reads_the_commit_once_on_first_use(monkeypatch):
    """code_commit runs git (here: a stand-in) on its first call only and provenance records it."""
    calls = []
    monkeypatch.setattr(runner, "_git_commit", lambda: calls.append(1) or "0123456789ab")
    runner.code_commit.cache_clear()
    try:
        assert calls == []
        first = runner.provenance(torch.device("cpu"))["git_commit"]
        assert first == runner.provenance(torch.device("cpu"))["git_commit"] == runner.code_commit() == "0123456789ab"
        assert calls == [1]
    finally:
        runner.code_commit.cache_clear()


def test_made_on_cpu_only_names_the_presets_no_gpu_touched():
    """Known answer: 'a' only on CPUs, 'b' partly on a GPU, 'c' only on a GPU; order follows ``presets``."""
    runs = pd.DataFrame(dict(preset=["a", "a", "b", "b", "c", "d"], seed=[0, 1, 0, 1, 0, 0],
                             device=["cpu (x86_64)", "cpu (arm64)", "cpu (x86_64)", "NVIDIA H200", "NVIDIA H200",
                                     "cpu (x86_64)"]))
    assert runner.made_on_cpu_only(runs) == ["a", "d"]
    assert runner.made_on_cpu_only(runs, ["d", "c", "b", "a", "e"]) == ["d", "a"]
    assert runner.made_on_cpu_only(runs.iloc[:0]) == []


def test_short_of_seeds_names_the_presets_under_the_target():
    """Known answer: a preset with 3 seeds is short of 100 and of 4, one with 5 is short of 100 only;
    a preset asked for with no runs counts 0; none short gives the empty string."""
    runs = pd.DataFrame(dict(preset=["b"] * 3 + ["a"] * 5, seed=[0, 1, 2, 0, 1, 2, 3, 4]))
    assert runner.short_of_seeds(runs) == "a (5), b (3)"
    assert runner.short_of_seeds(runs, ["b", "a", "c"]) == "b (3), a (5), c (0)"
    assert runner.short_of_seeds(runs, target=4) == "b (3)"
    assert runner.short_of_seeds(runs, target=3) == ""


@pytest.mark.parametrize("metric, legacy", [("v_probe_mse", "v_probe_deepsets_mse"), ("u_probe_mse", "u_probe_mlp_mse")])
def test_rescore_moves_the_trained_probe_aside_and_scores_kept_models_again(tmp_path, capsys, metric, legacy):
    """cxvae rescore: runs with a kept model get the closed-form probe a fresh sweep gives them, the
    oracle too; the old scores stay in the legacy column; a run without its model gets NaN (it
    cannot be rescored); running it again changes nothing; summaries count the runs a metric scored."""
    out = tmp_path / "study"
    fresh = runner.sweep(["ml-vae", "cxvae"], [0, 1], scale="smoke", device="cpu", out=out, progress=False,
                         overrides=TINY)
    runner.run_oracle(scale="smoke", out=out, overrides=TINY)
    runs = pd.read_csv(out / "runs.csv")
    runs[metric] = [0.11, 0.12, 0.13, 0.14]  # stand-ins for a trained probe's scores
    runs.to_csv(out / "runs.csv", index=False)
    (out / "models" / "cxvae-1.pt").unlink()
    assert main(["rescore", str(out), "--quiet", "--metrics", metric]) == 0
    assert f"{metric} rescored for 3 of 4 runs" in capsys.readouterr().out
    table = pd.read_csv(out / "runs.csv")
    assert list(table.columns).index(legacy) == list(table.columns).index(metric) + 1
    assert table[legacy].tolist() == [0.11, 0.12, 0.13, 0.14]
    lost = (table.preset == "cxvae") & (table.seed == 1)
    assert table[metric][lost].isna().all()
    np.testing.assert_allclose(table[metric][~lost], fresh[metric][~lost.to_numpy()], rtol=1e-6)
    oracle = pd.read_csv(out / "oracle.csv")
    assert oracle[legacy].notna().all() and oracle[metric].notna().all()
    before = ((out / "runs.csv").read_text(), (out / "oracle.csv").read_text())
    runner.rescore(out, [metric], progress=False)
    assert ((out / "runs.csv").read_text(), (out / "oracle.csv").read_text()) == before
    # a run a fresh sweep adds after the migration is scored by the closed-form probe: it keeps its score
    runner.sweep(["cxvae"], [2], scale="smoke", device="cpu", out=out, progress=False, overrides=TINY)
    (out / "models" / "cxvae-2.pt").unlink()
    runner.rescore(out, [metric], progress=False)
    added = pd.read_csv(out / "runs.csv").query("preset == 'cxvae' and seed == 2")
    assert added[metric].notna().all() and added[legacy].isna().all()
    counts = runner.summarise(table).set_index(["preset", "metric"]).n_seeds
    assert counts[("cxvae", metric)] == 1 and counts[("cxvae", "translation_mse")] == 2


def test_study_provenance_names_seeds_devices_and_commits_and_made_by_is_one_line(tmp_path):
    """Per preset: how many seeds, which, on which devices by which commits (with counts); a
    study made by many commands is named in one line that points to the appendix."""
    out = tmp_path / "study"
    out.mkdir()
    pd.DataFrame([run_row(p, s, device=d, git_commit=c) for p, s, d, c in [
        ("ml-vae", 0, "cpu (x86_64)", "abc"), ("ml-vae", 1, "cpu (x86_64)", "abc"), ("ml-vae", 2, "NVIDIA H200", "def"),
        ("gvae", 5, "cpu (x86_64)", "abc")]]).to_csv(out / "runs.csv", index=False)
    table = runner.study_provenance(out)
    assert table.loc["ml-vae"].tolist() == [3, "0-2", "cpu (x86_64) (2), NVIDIA H200 (1)", "abc (2), def (1)"]
    assert table.loc["gvae", "seeds"] == "5" and table.loc["gvae", "n_seeds"] == 1
    assert runner.made_by(dict(command="cxvae sweep --out x", folder="x")) == "cxvae sweep --out x"
    many = runner.made_by(dict(command="one\ntwo\nthree", folder="results/paper"))
    assert "\n" not in many and "3 cxvae commands" in many and "appendix" in many


def test_run_history_reads_a_runs_curve_and_names_a_missing_one(tmp_path):
    """The curve of (preset, seed) from histories/, or a FileNotFoundError naming what is missing."""
    (tmp_path / "histories").mkdir()
    pd.DataFrame(dict(epoch=[1, 2], train_neg_elbo=[3.0, 2.0], valid_neg_elbo=[3.1, 2.1])).to_csv(
        tmp_path / "histories" / "cxvae-4.csv", index=False)
    assert runner.run_history(tmp_path, "cxvae", 4).valid_neg_elbo.tolist() == [3.1, 2.1]
    with pytest.raises(FileNotFoundError, match="cxvae seed 5"):
        runner.run_history(tmp_path, "cxvae", 5)


def test_rescoring_refuses_to_overwrite_rows_written_meanwhile(tmp_path):
    """The table is rewritten only if its (preset, seed) rows are still those it was read with: a
    row a sweep appended while the models were rescored would otherwise be lost."""
    path = tmp_path / "runs.csv"
    pd.DataFrame(dict(preset=["a", "a"], seed=[0, 1], v_probe_mse=[0.1, 0.2])).to_csv(path, index=False)
    read = pd.read_csv(path)
    runner.append_row(path, dict(preset="a", seed=2, v_probe_mse=0.3))  # a sweep, meanwhile
    with pytest.raises(ConfigError, match="changed while it was being rescored"):
        store.write_table(read.assign(v_probe_mse=[0.5, 0.6]), path)
    assert pd.read_csv(path).v_probe_mse.tolist() == [0.1, 0.2, 0.3]
    store.write_table(pd.read_csv(path).assign(v_probe_mse=[0.5, 0.6, 0.7]), path)  # unchanged rows: written
    assert pd.read_csv(path).v_probe_mse.tolist() == [0.5, 0.6, 0.7]


def test_runs_retrained_because_their_model_was_not_kept_replace_their_rows(tmp_path, capsys):
    """merge --replace: a study whose runs lost their models (scored by a retired trained probe,
    the closed-form score NaN after `cxvae rescore`) gets those runs retrained elsewhere into a
    fresh folder; their rows, curves and models replace the old ones, every other row stays as it
    was, and the legacy column stays empty for the replaced rows (the closed-form probe scored them)."""
    dest, src = tmp_path / "study", tmp_path / "redo"
    runner.sweep(["cxvae"], [0, 1, 2], scale="smoke", device="cpu", out=dest, progress=False, overrides=TINY)
    (dest / "models" / "cxvae-1.pt").unlink()
    runner.rescore(dest, ["u_probe_mse"], progress=False)
    before = pd.read_csv(dest / "runs.csv")
    assert before.u_probe_mse.isna().sum() == 1
    runner.sweep(["cxvae"], [1], scale="smoke", device="cpu", out=src, progress=False, overrides=TINY)
    with pytest.raises(ConfigError, match="different columns"):  # without --replace: refused
        runner.merge_study(src, dest)
    assert main(["merge", str(src), "--into", str(dest), "--replace"]) == 0
    assert "cxvae: seeds 1 replaced in" in capsys.readouterr().out
    after = pd.read_csv(dest / "runs.csv")
    assert sorted(after.seed) == [0, 1, 2] and after.u_probe_mse.notna().all()
    kept = after.seed != 1
    pd.testing.assert_frame_equal(after[kept].reset_index(drop=True), before[before.seed != 1].reset_index(drop=True))
    assert after[~kept].u_probe_mlp_mse.isna().all()
    assert (dest / "models" / "cxvae-1.pt").exists()
