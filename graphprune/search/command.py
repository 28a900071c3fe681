"""The shrink command's search options, checked before anything is loaded, as a SearchRequest."""

from __future__ import annotations

from graphprune.errors import InputError


def request_from_options(*, target_latency: float | None, speedup: float | None, strategy: str | None,
                         max_drop: float | None, provider: str, latency_batch: int | None, threads: int | None,
                         samples: int, seed: int, round_to: int | None, blocks: bool = False):
    """A SearchRequest, or None without a latency budget (plain shrink); one-line InputError for any bad value."""
    if target_latency is None and speedup is None:
        given = [flag for flag, value in (("--search", strategy), ("--max-drop", max_drop)) if value is not None]
        if given:
            raise InputError(f"{' and '.join(given)} need a latency budget: add --target-latency F or --speedup X")
        return None  # before the imports below: a plain shrink loads no ONNX Runtime
    from graphprune.search.budget import make_budget
    from graphprune.search.driver import STRATEGIES
    from graphprune.search.latency import PROVIDERS, LatencySettings
    from graphprune.search.request import SearchRequest

    budget = make_budget(target_latency, speedup)
    strategy = strategy or "greedy"
    if strategy not in STRATEGIES:
        raise InputError(f"--search {strategy!r} is not one of {', '.join(sorted(STRATEGIES))}")
    if provider not in PROVIDERS:
        raise InputError(f"--provider {provider!r} is not one of {', '.join(sorted(PROVIDERS))}")
    if max_drop is not None and not max_drop >= 0:
        raise InputError(f"--max-drop {max_drop} must be 0 or more (e.g. 0.01: one accuracy point)")
    for flag, value in (("--latency-batch", latency_batch), ("--threads", threads), ("--samples", samples),
                        ("--round-to", round_to)):
        if value is not None and value < 1:
            raise InputError(f"{flag} {value} must be 1 or more")
    latency = LatencySettings(provider=provider, batch=latency_batch, threads=threads)
    return SearchRequest(budget, strategy, latency=latency, max_drop=max_drop, samples=samples, seed=seed,
                         round_to=round_to, blocks=blocks)


def check_extras(request, blocks: bool, finetune_epochs: int, data) -> None:
    """`--search-blocks` and `--search-finetune-epochs E` need a latency search, and E epochs need
    data: refused before anything is loaded."""
    if (blocks or finetune_epochs) and request is None:
        raise InputError("--search-blocks and --search-finetune-epochs tune a latency search: add --speedup X or "
                         "--target-latency F")
    if finetune_epochs < 0:
        raise InputError(f"--search-finetune-epochs {finetune_epochs} must be 0 (off) or more")
    if finetune_epochs and data is None:
        raise InputError("--search-finetune-epochs fine-tunes each candidate on data; pass --data FILE")


def candidate_finetune(teacher, data, epochs: int):
    """`SearchRequest.finetune` for `--search-finetune-epochs E` (checked by `check_extras`): E epochs
    of recovery on `data` (graphprune.recovery.finetune, `teacher` distilling, best epoch kept) on
    every candidate before it is scored."""
    from graphprune.recovery import TrainOptions, finetune

    options = TrainOptions(epochs=epochs, patience=None)
    return lambda model: finetune(model, data, teacher=teacher, options=options).model


def options():
    """The typer options of the search, for `graphprune shrink` (graphprune/cli/main.py)."""
    import typer

    return {
        "target_latency": typer.Option(None, "--target-latency", help="search per-group widths for this fraction of "
                                       "the original's latency, measured in ONNX Runtime, e.g. 0.5"),
        "speedup": typer.Option(None, "--speedup", help="search for this measured speed-up, e.g. 2"),
        "search": typer.Option(None, "--search", help="search strategy: greedy (default), recursive, random, uniform"),
        "max_drop": typer.Option(None, "--max-drop", help="largest metric drop a search accepts (accuracy points as "
                                 "a fraction with labelled --data, else the loss against the original)"),
        "provider": typer.Option("cpu", "--provider", help="ONNX Runtime execution provider to measure on: cpu or cuda"),
        "latency_batch": typer.Option(None, "--latency-batch", help="batch to measure at [default: the example's]"),
        "threads": typer.Option(None, "--threads", help="ONNX Runtime intra-op threads [default: physical cores]"),
        "samples": typer.Option(16, "--samples", help="--search random: configurations sampled"),
        "seed": typer.Option(0, "--seed", help="--search random: seed"),
        "search_blocks": typer.Option(False, "--search-blocks", help="the search may also remove whole blocks "
                                      "(residual branches, repeated layers; inspect lists them) under the same budget"),
        "search_finetune": typer.Option(0, "--search-finetune-epochs", help="fine-tune every candidate for E epochs "
                                        "on --data (the original as teacher) before scoring it; slow"),
    }
