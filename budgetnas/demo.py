"""``make demo``: the main job on the embedded defaults, as far as it exists today.

Today: the foundation. Samples ofa-mbv3 architectures at 224, describes them (FLOPs, params,
block keys) and builds and runs one whole model on this CPU.
"""

from __future__ import annotations

import time

import torch

from profiler.models import build_model
from spaces import get_space


def main() -> None:
    sp = get_space("ofa-mbv3", width=1.2, resolution=224)
    print(f"search space {sp.name}: {len(sp.decisions)} decisions, {len(sp.all_block_keys())} block keys")
    archs = sp.sample_many(5, seed=0)
    print(f"{'FLOPs (M)':>10} {'params (M)':>10} {'blocks':>6}  arch")
    for a in archs:
        print(f"{sp.flops(a) / 1e6:10.1f} {sp.params(a) / 1e6:10.3f} {len(sp.blocks(a)):6d}  {sp.format(a)}")
    model = build_model(sp, archs[0])
    x = torch.randn(1, *sp.input_shape)
    with torch.no_grad():
        model(x)
        t = time.perf_counter()
        model(x)
    print(f"one forward pass of the first arch on this CPU (torch, batch 1): {(time.perf_counter() - t) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
