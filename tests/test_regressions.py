"""Every failure scripts/fuzz.py ever found, replayed: fixed bugs stay fixed.

Rule: each tests/regressions/fuzz_*.json (a shrunk spec, ratio, plan options and onnx flag) satisfies the
fuzz property of tests/fuzz_models.py's `check`. A file with an `xfail` field is a known,
unfixed bug: the test is a strict xfail, so it turns red the day the bug is fixed, as a
reminder to delete the field.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fuzz_models import check

FILES = sorted((Path(__file__).parent / "regressions").glob("fuzz_*.json"))


def _param(path: Path):
    record = json.loads(path.read_text())
    marks = [pytest.mark.xfail(strict=True, reason=record["xfail"])] if record.get("xfail") else []
    return pytest.param(record, id=path.stem, marks=marks)


@pytest.mark.parametrize("record", [_param(p) for p in FILES])
def test_fuzz_regression(record):
    outcome = check(record["spec"], record["ratio"], record["onnx"], record.get("options"))
    assert outcome.status in ("verified", "refused")
