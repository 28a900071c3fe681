"""Every failure scripts/fuzz.py ever found, replayed: fixed bugs stay fixed.

Rule: each tests/regressions/fuzz_*.json (a shrunk spec, ratio, plan options and onnx flag) satisfies the
fuzz property of fixtures/fuzz_models.py's `check`. A file with an `xfail` field is a known,
unfixed bug: the test is a strict xfail, so it turns red the day the bug is fixed, as a
reminder to delete the field.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixtures.fuzz_models import check

FILES = sorted((Path(__file__).parent / "regressions").glob("fuzz_*.json"))


def _param(path: Path):
    record = json.loads(path.read_text())
    marks = [pytest.mark.xfail(strict=True, reason=record["xfail"])] if record.get("xfail") else []
    return pytest.param(record, id=path.stem, marks=marks)


@pytest.mark.parametrize("record", [_param(p) for p in FILES])
def test_fuzz_regression(record):
    outcome = check(record["spec"], record["ratio"], record["onnx"], record.get("options"))
    assert outcome.status in ("verified", "refused")


def test_scaled_equality_allows_float_drift_of_deep_models_but_not_wrong_values():
    """The dead-channel oracle's tolerance is relative to each output's scale: all-MiniLM-L6-v2
    (outputs up to 5.8) drifted by 7.9e-5 in float32 when taylor changed its widths, and was refused."""
    import torch

    from graphprune.check.verify import check_equal
    from graphprune.errors import VerificationError

    ref = torch.zeros(4, 8)
    ref[0, 0] = 5.8
    drift = ref.clone()
    drift[1, 1] = 7.9e-5
    check_equal(ref, drift, atol=1e-4, scaled=True)
    with pytest.raises(VerificationError):
        check_equal(ref, drift, atol=1e-5)  # the old absolute tolerance
    wrong = ref.clone()
    wrong[2, 3] = 0.01  # a value a wrong index would leave: far above float drift
    with pytest.raises(VerificationError):
        check_equal(ref, wrong, atol=1e-4, scaled=True)
