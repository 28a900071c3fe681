"""Earlier releases' keyword options, turned into the option objects (with a DeprecationWarning).

    shrink(model, x, 0.4, criterion="taylor", calib_batches=32, remove_blocks=1)
 == shrink(model, x, plan=PlanOptions(ratio=0.4, criterion="taylor"), calibration=CalibrationOptions(batches=32),
           depth=DepthOptions(blocks=1))

A criterion that is not a name (an array of scores, or a callable graph -> array) becomes `scores`.
"""

from __future__ import annotations

import dataclasses
import warnings

from graphprune.data.options import CalibrationOptions
from graphprune.depth.options import DepthOptions
from graphprune.errors import InputError
from graphprune.plan.types import PlanOptions

# earlier keyword -> (options object, its field)
_RENAMED = {"calib_batches": ("calibration", "batches"), "recalibrate": ("calibration", "recalibrate"),
            "reconstruct": ("calibration", "reconstruct"),
            "compensate": ("calibration", "compensate"), "seed": ("calibration", "seed"),
            "remove_blocks": ("depth", "blocks"), "block_criterion": ("depth", "criterion")}
_PLAN_FIELDS = {f.name for f in dataclasses.fields(PlanOptions)}


def deprecated(names) -> None:
    warnings.warn(f"keyword options ({', '.join(names)}) are deprecated: pass plan=PlanOptions(...), "
                  "calibration=CalibrationOptions(...), depth=DepthOptions(...)", DeprecationWarning, stacklevel=4)


def from_keywords(args: tuple, kwargs: dict, plan, calibration, depth, scores):
    """The options objects that earlier releases' positional ratio and keyword options ask for."""
    if len(args) > 1:
        raise TypeError(f"shrink() takes one positional option (ratio), {len(args)} were given")
    kwargs = dict(kwargs, **({"ratio": args[0]} if args else {}))
    deprecated(kwargs)
    criterion = kwargs.pop("criterion", None)
    if criterion is not None and not isinstance(criterion, str):
        scores, criterion = criterion, None
    if criterion is not None:
        kwargs["criterion"] = criterion
    unknown = sorted(set(kwargs) - _PLAN_FIELDS - set(_RENAMED))
    if unknown:
        raise TypeError(f"shrink() got unexpected keyword arguments: {', '.join(unknown)}")
    given = {"plan": plan, "calibration": calibration, "depth": depth}
    fields: dict[str, dict] = {"plan": {}, "calibration": {}, "depth": {}}
    for key, value in kwargs.items():
        room, name = _RENAMED.get(key, ("plan", key))
        if given[room] is not None:
            raise InputError(f"pass {key} inside {room}= or as a keyword, not both")
        fields[room][name] = value
    return (plan or PlanOptions(**fields["plan"]), calibration or CalibrationOptions(**fields["calibration"]),
            depth or DepthOptions(**fields["depth"]), scores)
