"""Property-based fuzzing: on random tiny architectures, graphprune prunes exactly or refuses by name.

Rule (fixtures/fuzz_models.py, `check`): for every generated model, a ratio in [0, 0.9] and
drawn planner options (round_to, global ranking), analyze -> plan -> rewrite either raises
a GraphPruneError that names the node, or the pruned model keeps the output shape (also at
another batch when the capture is dynamic), is smaller when anything was removed, passes
the dead-channel oracle on the example and a fresh input for the plan's exact groups
(LayerNorm groups are inexact by design: they are pruned and shape-checked, but put back
for the oracle) and, for about ONNX_PERCENT % of the draws, exports to ONNX with parity.
Anything else fails.

CI runs GRAPHPRUNE_FUZZ_EXAMPLES (default 200) derandomized examples, about a minute on two
cores; scripts/fuzz.py runs any number with any seed and saves each failure, shrunk, under
tests/regressions/. The small tests below check the property itself: that it has teeth (a
planted rule bug fails it) and that it tells named refusals from unnamed ones.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings

import graphprune
from fixtures.fuzz_models import FuzzFailure, Outcome, cases, check
from graphprune.errors import RewriteError
from graphprune.rules.registry import RULES, Rule

aten = torch.ops.aten
layer_norm = RULES[aten.layer_norm.default]


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


LN_SPEC = {"batch": 2, "channels": 4, "size": 6, "seed": 1, "outputs": 5, "head": "pool",
           "blocks": [{"kind": "conv", "out": 8, "k": 1, "groups": 1}, {"kind": "norm", "type": "ln", "groups": 1}]}
EXACT = {"round_to": 1, "global_ranking": False}


def test_inexact_groups_are_pruned_but_left_out_of_the_oracle():
    """Rule: LayerNorm features are pruned (inexact) and the oracle judges the rest."""
    outcome = check(LN_SPEC, 0.5, options=EXACT)
    assert outcome.status == "verified" and outcome.inexact


def test_the_oracle_catches_a_planted_bug(monkeypatch):
    """Rule: a layer-norm rule that forgets to mark its features inexact fails the property."""

    def forgetful(ctx):
        layer_norm.couple(ctx)
        ctx.spaces.inexact.clear()

    monkeypatch.setitem(RULES, aten.layer_norm.default, Rule("forgetful", forgetful, layer_norm.rewrite))
    with pytest.raises(FuzzFailure, match="oracle"):
        check(LN_SPEC, 0.5, options=EXACT)


@pytest.mark.parametrize("named", [True, False])
def test_refusals_must_name_the_node(monkeypatch, named):
    """Rule: a GraphPruneError is an accepted outcome only when its message names a node or op."""

    def refuse(plan):
        node = next(n for n in plan.graph.captured.graph.nodes if n.op == "call_function")
        raise RewriteError(f"cannot rewrite {node.name if named else 'a node'} for the pruned shapes")

    monkeypatch.setattr(graphprune, "rewrite", refuse)
    if named:
        assert check(LN_SPEC, 0.5, options=EXACT) == Outcome("refused", "RewriteError")
    else:
        with pytest.raises(FuzzFailure, match="names no node"):
            check(LN_SPEC, 0.5, options=EXACT)
