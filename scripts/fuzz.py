"""Fuzz graphprune on random tiny architectures and save every failure as a regression test.

    python -m scripts.fuzz --examples 300 --seed 1

Two Hypothesis runs over fixtures/fuzz_models.py's `cases()`, both seeded with --seed:

1. survey: --examples draws, generation only; every outcome is counted (verified,
   refused per error type, failures per signature) and nothing stops the run;
2. shrink: the same draws again, now raising for the signatures the survey found, one
   exception class per signature so that Hypothesis shrinks each bug on its own. The last
   failing call of each signature is Hypothesis' final replay of its minimal example.

A signature already saved under tests/regressions/ is a known bug and is not saved again.
Each new one is written to tests/regressions/fuzz_<hash>.json with the case (spec, ratio,
plan options, onnx flag), its signature and error, and an `xfail` reason, so that CI stays
green until the bug is fixed; tests/test_regressions.py replays every file there (a strict
xfail: once the bug is fixed the test fails until the field is deleted).

Exit status: 1 if any example failed, else 0.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import logging
import sys
import time
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis.internal.conjecture import engine

from fixtures.fuzz_models import FuzzFailure, cases, check
from scripts.common import ROOT

REGRESSIONS = ROOT / "tests" / "regressions"


class _RuleFallbacks(logging.Handler):
    """Counts the depgraph's 'rule X failed on node' warnings: not failures, but worth a look."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.seen: collections.Counter = collections.Counter()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "graphprune.capture.depgraph" and "failed on" in str(record.msg):
            args = record.args if isinstance(record.args, tuple) and len(record.args) == 3 else None
            text = f"rule {args[0]}: {args[2]}" if args else record.getMessage()
            self.seen[text.splitlines()[0][:160]] += 1


def survey(examples: int, seed: int, max_blocks: int) -> tuple[collections.Counter, dict]:
    """Run `examples` draws; return outcome counts and the first case of each failure signature."""
    counts: collections.Counter = collections.Counter()
    first: dict = {}

    @hypothesis_seed(seed)
    @settings(max_examples=examples, database=None, derandomize=False, deadline=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(cases(max_blocks))
    def run(case):
        counts["run"] += 1
        try:
            outcome = check(**case)
        except FuzzFailure as exc:
            counts["failed"] += 1
            counts[f"failure: {exc.signature}"] += 1
            first.setdefault(exc.signature, (case, str(exc)))
            return
        counts[outcome.status] += 1
        if outcome.error:
            counts[f"refused: {outcome.error}"] += 1
        if outcome.onnx:
            counts[f"onnx {outcome.onnx}"] += 1
        if outcome.inexact:
            counts["oracle on the exact part only (inexact groups)"] += 1

    run()
    return counts, first


def shrink(examples: int, seed: int, max_blocks: int, wanted: set) -> dict:
    """Replay the survey's draws raising for `wanted` signatures; return {signature: (minimal case, error)}."""
    kinds = {sig: type(f"FuzzBug{k}", (FuzzFailure,), {}) for k, sig in enumerate(sorted(wanted))}
    latest: dict = {}

    @hypothesis_seed(seed)
    @settings(max_examples=examples, database=None, derandomize=False, deadline=None,
              phases=[Phase.generate, Phase.shrink], suppress_health_check=list(HealthCheck), report_multiple_bugs=True)
    @given(cases(max_blocks))
    def run(case):
        try:
            check(**case)
        except FuzzFailure as exc:
            if exc.signature not in kinds:
                return
            latest[exc.signature] = (case, str(exc))
            raise kinds[exc.signature](exc.signature, str(exc)) from None

    try:
        run()
    except (FuzzFailure, BaseExceptionGroup):
        pass
    return latest


def known_signatures(folder: Path) -> set:
    return {json.loads(p.read_text())["signature"] for p in folder.glob("fuzz_*.json")}


def save(folder: Path, case: dict, error: str, signature: str, found_by: str) -> Path:
    key = json.dumps(case, sort_keys=True)
    path = folder / f"fuzz_{hashlib.sha1(key.encode()).hexdigest()[:12]}.json"
    record = {
        "signature": signature,
        "xfail": f"known graphprune bug, unfixed: {signature}",
        "found_by": found_by,
        **case,
        "error": error.splitlines()[-12:],
    }
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-blocks", type=int, default=4, help="blocks after the stem, at most (CI uses 4)")
    parser.add_argument("--out", type=Path, default=REGRESSIONS, help="where failures are saved")
    parser.add_argument("--no-shrink", action="store_true", help="save the first failing case of each signature as found")
    parser.add_argument("--shrink-seconds", type=int, default=300, help="Hypothesis' cap on shrinking time per run")
    args = parser.parse_args(argv)
    fallbacks = _RuleFallbacks()
    logging.getLogger("graphprune").addHandler(fallbacks)
    logging.getLogger("graphprune").propagate = False  # counted above; the summary lists them
    engine.MAX_SHRINKING_SECONDS = args.shrink_seconds  # Hypothesis has no public setting for this

    start = time.perf_counter()
    counts, first = survey(args.examples, args.seed, args.max_blocks)
    surveyed = time.perf_counter() - start
    known = known_signatures(args.out)
    new = set(first) - known
    minimal = {} if args.no_shrink or not new else shrink(args.examples, args.seed, args.max_blocks, new)
    found_by = f"python -m scripts.fuzz --seed {args.seed} --max-blocks {args.max_blocks}"
    saved = [save(args.out, *minimal.get(sig, first[sig]), sig, found_by) for sig in sorted(new)]

    print(f"examples run: {counts['run']} in {surveyed:.0f}s (seed {args.seed}); "
          f"verified: {counts['verified']}; refused: {counts['refused']}; failures: {counts['failed']}")
    for key in sorted(k for k in counts if ":" in k or k.startswith("onnx") or k.startswith("oracle")):
        print(f"  {counts[key]:5d}  {key}")
    for text, n in fallbacks.seen.most_common():
        print(f"  {n:5d}  rule fallback (dims frozen, not a failure): {text}")
    for sig in sorted(set(first) & known):
        print(f"known bug (already in {args.out}): {sig}")
    for path in saved:
        record = json.loads(path.read_text())
        shrunk = "shrunk" if record["signature"] in minimal else "not shrunk"
        print(f"saved {path} ({shrunk}): {record['signature']}")
    print(f"total {time.perf_counter() - start:.0f}s")
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
