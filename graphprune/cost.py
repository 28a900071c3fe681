"""What a model costs: parameters and multiply-accumulates (MACs) for one forward.

MACs come from torch's own FlopCounterMode (MACs = FLOPs / 2) on the example input,
so every op torch counts is counted, for the original and the pruned model alike. Both
run in eval mode (the user's model is put back in its mode after).
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode, flop_registry, register_flop_formula, sdpa_flop_count

_CPU_SDPA = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
if _CPU_SDPA is not None and _CPU_SDPA not in flop_registry:  # torch counts the GPU kernels only

    @register_flop_formula(_CPU_SDPA)
    def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: torch.nn.Module, args: tuple, kwargs: dict | None = None) -> int:
    from graphprune.verify import eval_mode

    counter = FlopCounterMode(display=False)
    with eval_mode(model), counter, torch.no_grad():
        model(*args, **(kwargs or {}))
    return int(counter.get_total_flops() // 2)
