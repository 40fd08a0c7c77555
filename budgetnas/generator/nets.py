"""PNAG's networks: budget embedding (K anchors, linear interpolation), the architecture
evaluator R(β|B;w), and the LSTM generator f(B;θ) that emits one token per decision."""

from __future__ import annotations

import torch
from torch import nn

EMBED = 64
HIDDEN = 64


class BudgetEmbedding(nn.Module):
    """K learnable anchors at budgets evenly spaced over [lo, hi]; any budget in between is the
    linear interpolation of its two neighbouring anchors (clamped outside the range)."""

    def __init__(self, k: int, lo: float, hi: float, dim: int = EMBED) -> None:
        super().__init__()
        self.k, self.lo, self.hi = int(k), float(lo), float(hi)
        self.anchors = nn.Parameter(torch.randn(self.k, dim) * 0.1)

    def forward(self, budgets: torch.Tensor) -> torch.Tensor:
        if self.k == 1:
            return self.anchors[0].expand(budgets.shape[0], -1)
        pos = ((budgets - self.lo) / max(self.hi - self.lo, 1e-12) * (self.k - 1)).clamp(0, self.k - 1)
        i = pos.floor().long().clamp(max=self.k - 2)
        frac = (pos - i).unsqueeze(1)
        return self.anchors[i] * (1 - frac) + self.anchors[i + 1] * frac


class Evaluator(nn.Module):
    """R(β|B;w): three fully connected layers (512, ReLU) over arch features ⊕ budget embedding."""

    def __init__(self, feature_dim: int, k: int, lo: float, hi: float) -> None:
        super().__init__()
        self.budget = BudgetEmbedding(k, lo, hi)
        self.net = nn.Sequential(nn.Linear(feature_dim + EMBED, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                                 nn.Linear(512, 1))

    def forward(self, features: torch.Tensor, budgets: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([features, self.budget(budgets)], dim=1)).squeeze(1)


class LSTMGenerator(nn.Module):
    """Token t's input is [embedding of token t-1 (a learned start vector at t=0), budget embedding];
    one LSTM cell is shared across steps, each decision has its own output head."""

    def __init__(self, sizes: list[int], k: int, lo: float, hi: float) -> None:
        super().__init__()
        self.sizes = list(sizes)
        self.budget = BudgetEmbedding(k, lo, hi)
        self.start = nn.Parameter(torch.zeros(EMBED))
        self.embeds = nn.ModuleList(nn.Embedding(s, EMBED) for s in sizes)
        self.cell = nn.LSTMCell(2 * EMBED, HIDDEN)
        self.heads = nn.ModuleList(nn.Linear(HIDDEN, s) for s in sizes)

    def _steps(self, budgets: torch.Tensor, tokens: torch.Tensor | None, gen: torch.Generator | None,
               temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        n = budgets.shape[0]
        b = self.budget(budgets)
        h = torch.zeros(n, HIDDEN)
        c = torch.zeros(n, HIDDEN)
        prev = self.start.expand(n, -1)
        out_tok, logps, ents, all_logits = [], [], [], []
        for t, head in enumerate(self.heads):
            h, c = self.cell(torch.cat([prev, b], dim=1), (h, c))
            logits = head(h) / temperature
            logp = torch.log_softmax(logits, dim=1)
            tok = torch.multinomial(logp.exp(), 1, generator=gen).squeeze(1) if tokens is None else tokens[:, t]
            out_tok.append(tok)
            logps.append(logp.gather(1, tok.unsqueeze(1)).squeeze(1))
            ents.append(-(logp.exp() * logp).sum(1))
            all_logits.append(logits)
            prev = self.embeds[t](tok)
        return torch.stack(out_tok, 1), torch.stack(logps, 1).sum(1), torch.stack(ents, 1).sum(1), all_logits

    def sample(self, budgets: torch.Tensor, gen: torch.Generator | None = None, temperature: float = 1.0
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(tokens, log-probability, entropy) of one sampled arch per budget (at ``temperature``)."""
        tok, logp, ent, _ = self._steps(budgets, None, gen, temperature)
        return tok, logp, ent

    def log_prob(self, budgets: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Log-probability of the given archs (teacher forcing), differentiable."""
        return self._steps(budgets, tokens, None)[1]

    def logits(self, budgets: torch.Tensor, tokens: torch.Tensor) -> list[torch.Tensor]:
        """Per-step logits with the given tokens fed back (teacher forcing)."""
        return self._steps(budgets, tokens, None)[3]
