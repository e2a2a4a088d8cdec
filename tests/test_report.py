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
