"""Feature distillation: match the outputs of named submodules in the teacher and the student.

Forward hooks go on the same dotted names in both (the pruned model takes hooks by the
original's names, graphprune.rewrite.trainable). A pruned layer's output is narrower than the
teacher's, and the student does not know which channels it kept, so only layers whose
output shapes agree are matched (a residual stream or block output that was not pruned,
a classifier head); the others are dropped on the first batch and named in the log:

    feature loss = mean over matched layers of mse(student_out, teacher_out)
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from graphprune.errors import InputError
from graphprune.measure.objective import first_tensor

log = logging.getLogger(__name__)


class FeatureMatch:
    """Hooks on `names` in both models; `loss()` after a forward of each compares what they saw."""

    def __init__(self, teacher: torch.nn.Module, student: torch.nn.Module, names: tuple[str, ...]):
        self.names = list(names)
        self.seen: dict[tuple[str, str], torch.Tensor] = {}
        self.handles = []
        self.checked = False
        for role, model in (("teacher", teacher), ("student", student)):
            for name in self.names:
                try:
                    module = model.get_submodule(name)
                except AttributeError as exc:
                    raise InputError(f"--feature-layers: the {role} has no submodule {name!r}; "
                                     "use names from the original model (graphprune.rewrite.trainable.scopes lists them)") from exc
                self.handles.append(module.register_forward_hook(self._hook(role, name)))

    def _hook(self, role: str, name: str):
        def hook(module, inputs, output):
            self.seen[(role, name)] = first_tensor(output)
        return hook

    def loss(self) -> torch.Tensor | None:
        if not self.checked:
            self._drop_mismatched()
        terms = [F.mse_loss(self.seen[("student", n)], self.seen[("teacher", n)].detach()) for n in self.names
                 if ("student", n) in self.seen and ("teacher", n) in self.seen]
        self.seen.clear()
        return torch.stack(terms).mean() if terms else None

    def _drop_mismatched(self) -> None:
        self.checked = True
        keep = []
        for n in self.names:
            s, t = self.seen.get(("student", n)), self.seen.get(("teacher", n))
            if s is None or t is None or s.shape != t.shape:
                log.warning("feature layer %s not matched: student %s, teacher %s", n,
                            None if s is None else tuple(s.shape), None if t is None else tuple(t.shape))
            else:
                keep.append(n)
        if self.names and not keep:
            raise InputError("--feature-layers: none of " + ", ".join(self.names) + " has the same output shape in the "
                             "teacher and the pruned model; pick layers whose width was not pruned")
        self.names = keep

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()
