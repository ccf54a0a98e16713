"""ksqlDB's query-validation cases (../shared/qtt) through the test runner, with a ratchet.

Every case is run; the ones listed in ``qtt_ratchet.txt`` are known to pass and must keep
passing. The share passing per category is printed at the end of the run (see conftest).
Refresh the ratchet after an improvement with::

    python -m streamsql.testing.suite ../shared/qtt --write-ratchet tests/qtt_ratchet.txt
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from streamsql.testing.suite import Outcome, run_folder, summarize
from tests.corpus import read_ratchet, run_corpus

HERE = Path(__file__).parent
QTT = Path(os.environ.get("STREAMSQL_QTT_DIR", HERE.parent.parent / "shared" / "qtt"))
RATCHET = HERE / "qtt_ratchet.txt"


@pytest.fixture(scope="session")
def outcomes(request: pytest.FixtureRequest) -> dict[str, Outcome]:
    return run_corpus(request, QTT, "QTT cases", run_folder, summarize, SUMMARY)


SUMMARY = pytest.StashKey[str]()


def test_qtt_cases_run(outcomes: dict[str, Outcome]) -> None:
    # The runner must produce an outcome for every case it found.
    assert outcomes, "no QTT case was run"


@pytest.mark.parametrize("case_id", read_ratchet(RATCHET))
def test_ratchet_case_still_passes(outcomes: dict[str, Outcome], case_id: str) -> None:
    outcome = outcomes.get(case_id)
    assert outcome is not None, f"{case_id} is in the ratchet but no longer exists"
    assert outcome.passed, outcome.reason
