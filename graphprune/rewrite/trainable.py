"""A rewritten graph that trains like the original and takes the original's forward hooks.

The captured graph is an eval-mode trace: batch norm and dropout carry `training=False` as a
constant argument, and the user's submodules are gone (only their parameters keep their names).
`make_trainable` edits a rewritten `fx.GraphModule` in place, twice:

* **Train switches.** Every op whose rule names a `train_arg` (graphprune.rules: batch norm,
  dropout) becomes a call of a `TrainSwitch` module that passes its own `self.training` in that
  position. `model.train()` then gives batch statistics, running-statistic updates (with the
  momentum of the original layer; a momentum of None, captured as 0, averages cumulatively) and
  active dropout; `model.eval()` the captured inference behaviour.
* **Scopes.** Every submodule of the original that produced exactly one tensor (found from the
  nodes' `nn_module_stack`) becomes a `Scope` module at the same dotted name, holding the same
  parameters. It is called on that tensor and put in the data path, so a forward hook registered
  on `model.get_submodule(name)` fires with `(module, inputs, output)` and may replace the output,
  as on the original. Forward *pre*-hooks fire too but cannot change inputs already consumed.

Neither edit adds a parameter or buffer: `state_dict` keys stay the original's.
"""

from __future__ import annotations

import logging

import torch
import torch.fx as fx

from graphprune.rules import lookup

log = logging.getLogger(__name__)

HIDDEN = "_graphprune"  # prefix of the modules this pass adds that the user did not write


def _resolve(qualified: str):
    ns, packet, overload = qualified.split(".")
    return getattr(getattr(getattr(torch.ops, ns), packet), overload)


class TrainSwitch(torch.nn.Module):
    """Calls an ATen op with its `training` argument (at `index`) set to this module's mode.

    With `statistics` the op has batch norm's layout: running mean and variance right before
    `training` (index - 2, index - 1), the momentum right after it (index + 1).
    """

    def __init__(self, op: str, index: int, statistics: bool = False):
        super().__init__()
        self.op = op  # 'aten.batch_norm.default': a string, so the module pickles
        self.index = index
        self.statistics = statistics  # it keeps running statistics (graphprune.rewrite.recalibrate re-estimates them)
        self.cumulative = False  # average batch statistics over all batches seen
        self.reset = False  # zero the running statistics at the next training call

    def forward(self, *args, counter: torch.Tensor | None = None):
        args = list(args)
        args[self.index] = self.training
        if self.training and self.reset and self.statistics:
            with torch.no_grad():
                args[self.index - 2].zero_()
                args[self.index - 1].fill_(1.0)
                if counter is not None:
                    counter.zero_()
            self.reset = False
        if self.training and counter is not None:
            counter.add_(1)
            if self.cumulative or args[self.index + 1] == 0.0:  # momentum None -> cumulative average
                args[self.index + 1] = 1.0 / float(counter)
        return _resolve(self.op)(*args)

    def extra_repr(self) -> str:
        return self.op


class Scope(torch.nn.Module):
    """Stands for one of the original's submodules: returns `output`, so hooks see and may replace it."""

    def __init__(self, kind: str = ""):
        super().__init__()
        self.kind = kind  # the original's class name, for repr

    def forward(self, *inputs, output):
        return output

    def extra_repr(self) -> str:
        return self.kind


def _running_mean(node: fx.Node, index: int) -> fx.Node | None:
    """The running-mean buffer of a batch-norm layout op (mean and variance buffers two and one
    before `training`), or None."""
    stats = node.args[index - 2:index] if index >= 2 else ()
    if len(stats) == 2 and all(isinstance(a, fx.Node) and a.op == "get_attr" for a in stats):
        return stats[0]
    return None


def _counter_target(gm: fx.GraphModule, mean: fx.Node) -> str | None:
    """The num_batches_tracked buffer beside a batch norm's running mean, if there is one."""
    owner, _, _ = mean.target.rpartition(".")
    target = f"{owner}.num_batches_tracked" if owner else "num_batches_tracked"
    try:
        gm.get_buffer(target)
    except AttributeError:
        return None
    return target


def _switches(gm: fx.GraphModule) -> int:
    graph = gm.graph
    count = 0
    for node in list(graph.nodes):
        found = lookup(node) if node.op == "call_function" else None
        if found is None or found.train_arg is None or len(node.args) <= found.train_arg:
            continue
        if node.args[found.train_arg] is not False:  # always-on (batch statistics without running ones, MC dropout)
            continue
        name = f"{HIDDEN}_train_{count}"
        mean = _running_mean(node, found.train_arg)
        gm.add_module(name, TrainSwitch(str(node.target), found.train_arg, statistics=mean is not None))
        kwargs = {}
        counter = _counter_target(gm, mean) if mean is not None else None
        with graph.inserting_before(node):
            if counter is not None:
                kwargs["counter"] = graph.get_attr(counter)
            new = graph.call_module(name, node.args, kwargs)
        new.meta = dict(node.meta)
        node.replace_all_uses_with(new)
        graph.erase_node(node)
        count += 1
    return count


def _calls(graph: fx.Graph) -> dict:
    """nn_module_stack key of every module call -> (path, class name, depth)."""
    calls = {}
    for node in graph.nodes:
        stack = node.meta.get("nn_module_stack") or {}
        for depth, (key, entry) in enumerate(stack.items()):
            path, kind = entry[0], entry[1]
            if path and not path.startswith(HIDDEN) and key not in calls:
                calls[key] = (path, kind.rsplit(".", 1)[-1] if isinstance(kind, str) else getattr(kind, "__name__", ""), depth)
    return calls


def _in(node: fx.Node, key: str) -> bool:
    return key in (node.meta.get("nn_module_stack") or {})


def _tensor(node: fx.Node) -> bool:
    return isinstance(node.meta.get("val"), torch.Tensor)


def _install(gm: fx.GraphModule, path: str, kind: str) -> bool:
    """Make the module at `path` a Scope, keeping what it holds; False if the name is taken otherwise."""
    *parents, name = path.split(".")
    holder = gm
    for part in parents:
        nxt = getattr(holder, part, None)
        if nxt is None:
            holder.add_module(part, torch.nn.Module())
            nxt = getattr(holder, part)
        if not isinstance(nxt, torch.nn.Module):
            return False
        holder = nxt
    old = getattr(holder, name, None)
    if isinstance(old, Scope):
        return True
    if old is not None and (not isinstance(old, torch.nn.Module) or type(old) is not torch.nn.Module):
        return False
    scope = Scope(kind)
    if old is not None:
        scope._parameters, scope._buffers, scope._modules = old._parameters, old._buffers, old._modules
        scope._non_persistent_buffers_set = old._non_persistent_buffers_set
    holder.add_module(name, scope)
    return True


def _tap(gm: fx.GraphModule, key: str, path: str, kind: str) -> bool:
    graph = gm.graph
    inside = [n for n in graph.nodes if n.op != "get_attr" and _in(n, key)]
    members = set(inside)
    escaping = [n for n in inside if any(u not in members for u in n.users)]
    if len(escaping) != 1 or not _tensor(escaping[0]):
        return False
    out = escaping[0]
    inputs = []
    for n in inside:
        for a in n.all_input_nodes:
            if a not in members and a.op != "get_attr" and _tensor(a) and a not in inputs:
                inputs.append(a)
    if not _install(gm, path, kind):
        return False
    order = {n: k for k, n in enumerate(graph.nodes)}
    last = max([out, *inputs], key=order.__getitem__)
    with graph.inserting_after(last):
        tap = graph.call_module(path, tuple(inputs), {"output": out})
    tap.meta = dict(out.meta)
    for user in list(out.users):
        if user is not tap and user not in members:
            user.replace_input_with(out, tap)
    return True


def make_trainable(gm: fx.GraphModule) -> fx.GraphModule:
    """Add train switches and scopes to `gm` (in place) and return it."""
    switches = _switches(gm)
    calls = _calls(gm.graph)
    tapped = 0
    for key, (path, kind, _) in sorted(calls.items(), key=lambda kv: -kv[1][2]):
        tapped += _tap(gm, key, path, kind)
    gm.graph.lint()
    gm.recompile()
    gm.eval()  # the captured behaviour; shrink gives the pruned model the original's mode
    log.info("%d train switches, %d of %d module calls tapped for hooks", switches, tapped, len(calls))
    return gm


def scopes(model: torch.nn.Module) -> list[str]:
    """Names of the submodules whose forward hooks fire on a pruned model."""
    return [name for name, m in model.named_modules() if isinstance(m, Scope)]


def switches(model: torch.nn.Module) -> list[TrainSwitch]:
    return [m for m in model.modules() if isinstance(m, TrainSwitch)]
