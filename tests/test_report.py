"""The claim-verdict rule shared by the book's evidence chapters."""
import pytest

from cxvae.report import claim_verdict, span


@pytest.mark.parametrize("checks, expected", [
    ([True, True, True], "reproduced"),
    ([True, False], "partly reproduced"),
    ([False, False], "not reproduced"),
])
def test_verdicts_follow_the_checks(checks, expected):
    assert claim_verdict(checks, min_seeds=4) == expected


def test_a_single_seed_tests_nothing_and_a_claim_needs_checks():
    assert claim_verdict([True], min_seeds=1) == "not tested (one seed)"
    with pytest.raises(ValueError, match="at least one check"):
        claim_verdict([], min_seeds=3)


def test_span():
    assert span([0.1234, 0.1236]) == "0.123–0.124"
    assert span([0.5, 0.5001]) == "0.500"
    assert span([1.0, 2.0], digits=1) == "1.0–2.0"


def test_significant_rounds_floats_to_the_digits_the_prose_means():
    """4 significant digits by default; integers, bools, strings, NaN and 0 pass unchanged."""
    import math

    import numpy as np

    from cxvae.report import significant

    assert significant(0.5938164261508475) == 0.5938 and significant(0.5938164261508476) == 0.5938
    assert significant(249.2485) == 249.2 and significant(1.23456e-5) == 1.235e-5
    assert significant(np.float32(0.12345678)) == 0.1235 and significant(-2.71828, 2) == -2.7
    for same in (3, np.int64(5), True, "0.123456", 0.0):
        assert significant(same) == same and type(significant(same)) is type(same)
    assert math.isnan(significant(float("nan")))


def test_book_display_shows_tables_at_four_significant_digits():
    """Text and HTML renderings of a table round alike, so a stored table means what it shows."""
    import pandas as pd

    from cxvae.report import book_display

    with pd.option_context("display.float_format", None):
        book_display()
        table = pd.DataFrame({"a": [0.123456789, 249.2485]})
        assert "0.1235" in table.to_string() and "249.2" in table.to_string()
        assert "<td>0.1235</td>" in table.to_html() and "0.12345" not in table.to_html()


def test_kernel_spread_is_the_range_over_settings_relative_to_the_median():
    """(max - min) / |median| per (metric, scorer); an unmoved metric spreads 0."""
    import pandas as pd

    from cxvae.report import kernel_spread

    scores = pd.DataFrame([dict(setting=s, scorer=m, metric="x", value=v)
                           for s, m, v in [("a", "oracle", 2.0), ("b", "oracle", 2.0), ("a", "model", 1.0),
                                           ("b", "model", 1.1), ("c", "model", 1.05)]])
    spread = kernel_spread(scores)
    assert spread.loc["x", "oracle"] == 0.0
    assert spread.loc["x", "model"] == pytest.approx(0.1 / 1.05)


def test_span_prints_one_number_when_both_ends_print_alike():
    """'0.044', not '0.044 to 0.044'; a format spec such as '.2e' is honoured."""
    assert span([0.04412, 0.04449]) == "0.044"
    assert span([2.5e-4, 6.6e-5], fmt=".2e") == "6.60e-05–2.50e-04"
    assert span([1.234e-4, 1.2341e-4], fmt=".2e") == "1.23e-04"


# --- the checks of claims C1-C5 on a summary whose answers are known --------------------------

def _summary(cells):
    """A summary table (runner.summarise's columns) from {preset: {metric: (median, lo, hi)}}."""
    import pandas as pd

    from cxvae.metrics import METRICS

    return pd.DataFrame([dict(preset=p, metric=m, better=METRICS[m], n_seeds=0 if p == "oracle" else 20,
                              median=v[0], lo=v[1], hi=v[2]) for p, row in cells.items() for m, v in row.items()])


def _point(x, width=0.01):
    return (x, x - width, x + width)


def _known_study():
    """CxVAE clearly better than ml-vae everywhere, overlapping gvae on the u-probe and NLL,
    worse than gvae-ad on reconstruction; baselines' instance codes leak except gvae-ad's."""
    base = dict(recon_mse=0.5, translation_mse=1.5, u_probe_mse=0.15, v_probe_mse=0.04, holdout_nll=2.2,
                instance_probe_mse=0.08)
    cells = {"cxvae": {m: _point(v * 0.8 if m != "v_probe_mse" else 0.4) for m, v in base.items()},
             "ml-vae": {m: _point(v) for m, v in base.items()},
             "gvae": {m: _point(v) for m, v in base.items()},
             "gvae-ad": {m: _point(v) for m, v in base.items()},
             "oracle": {m: (v, v, v) for m, v in dict(base, v_probe_mse=0.2).items()}}
    cells["gvae"]["u_probe_mse"] = _point(0.12, 0.02)  # overlaps cxvae's 0.11-0.13
    cells["gvae"]["holdout_nll"] = _point(1.8, 0.1)
    cells["gvae-ad"]["recon_mse"] = _point(0.3)  # better than cxvae's 0.4
    cells["gvae-ad"]["v_probe_mse"] = _point(0.3)  # no leak: above the oracle's 0.2
    return cells


def test_c1_to_c4_checks_give_their_known_answers():
    from cxvae.report import c1_checks, c3_checks, c4_checks

    summary = _summary(_known_study())
    c1 = c1_checks(summary)
    assert c1["instance codes leak"].to_dict() == {"ml-vae": True, "gvae": True, "gvae-ad": False}
    assert c1["group code better"].to_dict() == {"ml-vae": True, "gvae": False, "gvae-ad": True}
    c3 = c3_checks(summary)
    assert list(c3.columns) == ["recon_mse", "translation_mse", "u_probe_mse", "v_probe_mse"]
    assert c3.values.sum() == 12 - 2 and not c3.loc["gvae", "u_probe_mse"] and not c3.loc["gvae-ad", "recon_mse"]
    assert c4_checks(summary).to_dict() == {"ml-vae": True, "gvae": False, "gvae-ad": True}
    # the same claim with reconstruction from sampled codes: CxVAE better than gvae-ad there too
    cells = _known_study()
    for p, row in cells.items():
        row["recon_sampled_mse"] = _point(0.8 if p == "cxvae" else 1.0) if p != "oracle" else (0.7, 0.7, 0.7)
    sampled = c3_checks(_summary(cells), recon="recon_sampled_mse")
    assert list(sampled.columns) == ["recon_sampled_mse", "translation_mse", "u_probe_mse", "v_probe_mse"]
    assert sampled["recon_sampled_mse"].all() and sampled.values.sum() == 12 - 1
    with pytest.raises(ValueError, match="oracle"):
        c1_checks(summary[summary.preset != "oracle"])


def test_a_missing_model_fails_its_checks_rather_than_raising():
    """While a sweep fills the folder: a baseline without runs is never called worse than CxVAE."""
    from cxvae.report import c3_checks, c4_checks

    summary = _summary({k: v for k, v in _known_study().items() if k != "gvae-ad"})
    assert not c3_checks(summary).loc["gvae-ad"].any() and not c4_checks(summary)["gvae-ad"]
    assert not c4_checks(summary[summary.preset != "cxvae"]).any()


def test_c2_checks_the_closed_form_and_the_trained_halves_apart():
    from cxvae.report import c2_checks

    summary = _summary({"ml-vae-corrected": dict(holdout_nll=_point(2.0), translation_mse=_point(1.5)),
                        "ml-vae": dict(holdout_nll=_point(2.2), translation_mse=_point(1.505))})
    assert c2_checks(summary, 0.97).to_dict() == {"closed form pulled to the prior": True,
                                                  "holdout_nll better": True, "translation_mse better": False}
    assert not c2_checks(summary, 1.0)["closed form pulled to the prior"]


def test_c5_costs_rank_the_parts_by_the_mean_cost_of_their_swaps():
    """Costs 3 (instance encoder), mean(2, 1) = 1.5 (regulariser), mean(0.5, -0.1) (group
    encoder): the paper's order on every metric; one swap better than CxVAE breaks its checks."""
    from cxvae.report import PAPER_ORDER, PAPER_SWAPS, c5_checks, part_ranking, swap_costs

    cost = {"cxvae-unconditional": 3.0, "cxvae-nemeth": 2.0, "cxvae-none": 1.0, "cxvae-average": 0.5,
            "cxvae-product": -0.1}
    metrics = ["recon_mse", "translation_mse", "holdout_nll"]
    cells = {"cxvae": {m: _point(1.0) for m in metrics}}
    cells.update({s: {m: _point(1.0 + c) for m in metrics} for s, c in cost.items()})
    summary = _summary(cells)
    assert swap_costs(summary, PAPER_SWAPS).translation_mse.round(6).to_dict() == cost
    part_cost, ranking = part_ranking(summary)
    assert list(part_cost.index) == list(PAPER_ORDER) and part_cost.recon_mse.round(6).tolist() == [3.0, 1.5, 0.2]
    assert ranking["matches the paper"].all()
    swap_checks, ranking = c5_checks(summary)
    assert swap_checks.values.sum() == 8 and not swap_checks.loc["cxvae-product"].any()
    _, partial = part_ranking(_summary({k: v for k, v in cells.items() if k != "cxvae-none"}))
    assert partial["matches the paper"].all()  # the regulariser still has cxvae-nemeth
    _, unranked = part_ranking(_summary({k: v for k, v in cells.items() if k != "cxvae-unconditional"}))
    assert not unranked["matches the paper"].any()  # a part without runs cannot be ranked
