"""A fixed reference workload, timed beside every entry the protocol measures.

Its latency depends only on the machine's state (other processes, frequency, thermal), never on
what is being measured, so it makes interference visible: within a session, a visit whose
reference ran much slower than usual was disturbed (``Protocol.disturbed_ratio``); across
sessions, the ratio of their reference medians says how comparable they were and is divided out
when whole models measured in one session are compared with a LUT measured in another
(``budgetnas.luts.calibration.sessions``). The workload is small (two 3x3 convolutions at 28x28x32, ~15 MFLOP at
batch 1) so that timing it a few times per visit costs a few percent at most.
"""

from __future__ import annotations

import torch
from torch import nn

from budgetnas.profiler.targets import Target, module_target

REFERENCE_NAME = "__reference__"


class _Reference(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1),
                                  nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def reference_target(batch: int) -> Target:
    torch.manual_seed(0)  # fixed weights: the same artifact in every session
    return module_target(_Reference(), torch.zeros(batch, 32, 28, 28), REFERENCE_NAME)
