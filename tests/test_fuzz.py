"""Property-based fuzzing: on random tiny architectures, graphprune prunes exactly or refuses by name.

Rule (tests/fuzz_models.py, `check`): for every generated model, a ratio in [0, 0.9] and
drawn planner options (round_to, global ranking), analyze -> plan -> rewrite either raises
a GraphPruneError that names the node, or the pruned model keeps the output shape (also at
another batch when the capture is dynamic), passes the dead-channel oracle on the plan's
exact groups (LayerNorm groups are inexact by design: they are pruned and shape-checked,
but put back for the oracle) and, for about ONNX_PERCENT % of the draws, exports to ONNX
with parity. Anything else fails.

CI runs GRAPHPRUNE_FUZZ_EXAMPLES (default 200) derandomized examples; scripts/fuzz.py runs
any number with any seed and saves each failure, shrunk, under tests/regressions/.
"""

from __future__ import annotations

import os

from fuzz_models import cases, check
from hypothesis import HealthCheck, given, settings


@settings(
    max_examples=int(os.environ.get("GRAPHPRUNE_FUZZ_EXAMPLES", 200)),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=cases())
def test_prunes_exactly_or_refuses_by_name(case):
    assert check(**case).status in ("verified", "refused")
