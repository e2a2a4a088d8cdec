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
