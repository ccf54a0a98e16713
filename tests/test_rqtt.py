"""ksqlDB's REST query-validation cases (../shared/rqtt) through the HTTP server, with a ratchet.

Every case is run, each on a fresh server of its own (``streamsql.testing.rest``), and
compared with its expectations (``streamsql.testing.rest_compare``); the ones listed in
``rqtt_ratchet.txt`` are known to pass and must keep passing. The share passing per file is
printed at the end of the run (see conftest). Refresh the ratchet after an improvement with::

    python -m streamsql.testing.rest_suite ../shared/rqtt --write-ratchet tests/rqtt_ratchet.txt
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from streamsql.testing.rest_suite import Outcome, run_folder, summarize
from tests.corpus import read_ratchet, run_corpus

HERE = Path(__file__).parent
RQTT = Path(os.environ.get("STREAMSQL_RQTT_DIR", HERE.parent.parent / "shared" / "rqtt"))
RATCHET = HERE / "rqtt_ratchet.txt"


@pytest.fixture(scope="session")
def outcomes(request: pytest.FixtureRequest) -> dict[str, Outcome]:
    return run_corpus(request, RQTT, "REST query-validation cases", run_folder, summarize, SUMMARY)


SUMMARY = pytest.StashKey[str]()


# The whole folder runs once for the session (about 100 s on 2 cores; the fixture's time is
# charged to the first test).
@pytest.mark.timeout(900)
def test_rqtt_cases_run(outcomes: dict[str, Outcome]) -> None:
    # The runner must produce an outcome for every case it found.
    assert outcomes, "no REST query-validation case was run"


@pytest.mark.timeout(900)
@pytest.mark.parametrize("case_id", read_ratchet(RATCHET))
def test_ratchet_case_still_passes(outcomes: dict[str, Outcome], case_id: str) -> None:
    outcome = outcomes.get(case_id)
    assert outcome is not None, f"{case_id} is in the ratchet but no longer exists"
    assert outcome.passed, outcome.reason
