"""What pruning did to a model's decisions and explanations: `graphprune explain`.

    from graphprune.explain import explain
    result = explain(original, pruned, data, samples=8, out=Path("report.html"))   # also writes report.json
    result.to_dict()["top1_agreement"]

One file per job: inputs (what the models are fed and read on), structure (widths, shrink
report), decisions (agreement on every input), attributions (captum methods), compare (map
agreement, ceiling and floor), figures and html (the page), write (the two files), run (the
pipeline), cli (the command).
"""

from __future__ import annotations

from pathlib import Path


def explain(original, pruned, data, *, samples: int = 8, out: Path | None = None, force: bool = False,
            report: dict | None = None, tokenizer=None, output_kind: str = "auto", ig_steps: int = 32, progress=None,
            sources: tuple[str, str] = ("original", "pruned")):
    """Compare the two models on `data` (graphprune.data.Data); with `out`, write OUT (HTML) and OUT.json.

    Keyword arguments as graphprune.explain.run.explain; `sources` names the two models on the page.
    """
    from graphprune.explain.run import explain as _explain

    result = _explain(original, pruned, data, samples=samples, report=report, tokenizer=tokenizer,
                      output_kind=output_kind, ig_steps=ig_steps, progress=progress)
    if out is not None:
        from graphprune.explain.write import write

        write(result, Path(out), force=force, sources=sources)
    return result


def __getattr__(name: str):
    if name == "Explanation":  # imported lazily: the command line loads this package for every command
        from graphprune.explain.run import Explanation

        return Explanation
    raise AttributeError(name)


__all__ = ["Explanation", "explain"]
