"""In-memory copies of LUTs for prediction, invalidated when the LUT's revision changes.

A copy is confirmed against the LUT's revision in the database (one indexed read) and then used
for as long as the database's change watch (budgetnas/db/changes.py) has heard of no commit that could
have moved it, so a warm predict reads nothing from the database, and several workers or
replicas sharing one database still never serve a LUT another has changed. Without a watch (or
while it is down) a copy is re-confirmed every ``ttl`` seconds. Per LUT, the block-key row indices
of each architecture seen are cached, so repeated architectures skip parsing and the walk.

Every cache here is keyed by canonical strings only and bounded: ``/v1/predict`` is open to
anyone, and a key per spelling ("k03e3", " w1.2_r0224|...") would let one client grow the
server without limit by sending one architecture spelt a million ways.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from budgetnas.core.errors import InvalidArchitectureError, MissingKeysError
from budgetnas.db.changes import ChangeWatch
from budgetnas.luts.lut import LUT, LUTPredictor
from budgetnas.spaces import SearchSpace, UnitGrammar, space_from_description

ARCH_CACHE_SIZE = 20_000  # canonical archs per LUT (about 0.6 KB each); the fast path makes misses cheap
ANSWER_CACHE_SIZE = 20_000  # encoded answers per LUT (about 0.25 KB each) of small requests
ANSWERED_ARCHS = 32  # requests of at most this many archs keep their answers (batches would only churn them)


@dataclass
class Prepared:
    """One LUT ready to predict: its :class:`LUTPredictor` (whose ``from_rows`` is the one sum,
    calibration and error band) and the per-arch row cache, keyed by canonical strings."""

    revision: int
    lut: LUT
    space: SearchSpace[Any]
    predictor: LUTPredictor
    arch_rows: OrderedDict[str, tuple[str, tuple[int, ...]]] = field(default_factory=OrderedDict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    fast: UnitIndexer | None = None
    # (canonical arch, calibrated) -> its prediction as JSON: a warm small request is a few dict lookups
    answers: OrderedDict[tuple[str, bool], bytes] = field(default_factory=OrderedDict)

    @classmethod
    def build(cls, lut: LUT, revision: int) -> Prepared:
        space = space_from_description(lut.meta.space)
        predictor = LUTPredictor(lut, space)
        return cls(revision, lut, space, predictor, fast=UnitIndexer.build(space, predictor.index))

    def rows(self, archs: Sequence[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Canonical strings, concatenated LUT rows and per-arch start offsets; errors name the arch."""
        canon: list[str] = []
        flat: list[int] = []  # one list for the whole request: one array at the end, not one per arch
        lengths: list[int] = []
        missing: list[str] = []
        cache, fast = self.arch_rows, self.fast
        for i, text in enumerate(archs):
            hit: tuple[str, Sequence[int]] | None = cache.get(text)  # canonical keys: skips the parse
            if hit is None and fast is not None:
                hit = fast.rows(text)
            if hit is None:
                hit = self._walk(i, text, missing)
                if hit is None:
                    continue
            canon.append(hit[0])
            flat += hit[1]
            lengths.append(len(hit[1]))
        if missing:
            raise MissingKeysError(missing)
        starts = np.zeros(len(lengths), np.int64)
        np.cumsum(lengths[:-1], out=starts[1:])
        return canon, np.array(flat, np.int64), starts

    def _walk(self, i: int, text: str, missing: list[str]) -> tuple[str, tuple[int, ...]] | None:
        sp = self.space
        try:
            arch = sp.parse(text)
        except InvalidArchitectureError as exc:
            raise InvalidArchitectureError(f"archs[{i}]: {exc}") from None
        for attr in ("width", "resolution"):  # an arch string may carry its own; it must be the LUT's
            mine, lut_value = getattr(arch, attr, None), getattr(sp, attr, None)
            if mine is not None and lut_value is not None and mine != lut_value:
                raise InvalidArchitectureError(f"archs[{i}]: {attr} {mine} is not the LUT's {attr} {lut_value}")
        canon = sp.format(arch)
        hit = self.arch_rows.get(canon)  # another spelling of a known architecture
        if hit is not None:
            return hit
        keys, index = sp.block_keys(arch), self.predictor.index
        idx = [index.get(k, -1) for k in keys]
        if -1 in idx:
            missing.extend(k for k in keys if k not in index)
            return None
        hit = (canon, tuple(idx))
        with self.lock:
            self.arch_rows[canon] = hit
            if len(self.arch_rows) > ARCH_CACHE_SIZE:
                self.arch_rows.popitem(last=False)
        return hit

    def encoded(self, archs: Sequence[str], calibrated: bool = True) -> bytes:
        """``{"predictions": [...]}`` as JSON bytes (no breakdown), from the answer cache when every arch is in it.

        The cache is keyed by canonical strings only, like ``arch_rows``: another spelling misses and
        is answered (and remembered) under its canonical form.
        """
        answers = self.answers
        parts = []
        for text in archs:
            hit = answers.get((text, calibrated))
            if hit is None:
                break
            parts.append(hit)
        else:
            return b'{"predictions":[' + b",".join(parts) + b"]}"
        preds = self.predict(archs, calibrated=calibrated)
        if len(archs) > ANSWERED_ARCHS:
            return orjson.dumps({"predictions": preds})
        encoded = [orjson.dumps(p) for p in preds]
        with self.lock:
            for p, data in zip(preds, encoded, strict=True):
                answers[(p["arch"], calibrated)] = data
            while len(answers) > ANSWER_CACHE_SIZE:
                answers.popitem(last=False)
        return b'{"predictions":[' + b",".join(encoded) + b"]}"

    def predict(self, archs: Sequence[str], calibrated: bool = True, breakdown: bool = False
                ) -> list[dict[str, Any]]:
        canon, idx, starts = self.rows(archs)
        if not canon:
            return []
        lat, half, raw = self.predictor.from_rows(idx, starts, calibrated)
        out = [{"arch": a, "latency_ms": la, "low_ms": lo, "high_ms": hi, "raw_ms": r}
               for a, la, lo, hi, r in zip(canon, lat.tolist(), (lat - half).tolist(), (lat + half).tolist(),
                                           raw.tolist(), strict=True)]
        if breakdown:
            ends, keys, values = np.append(starts[1:], len(idx)), self.predictor.keys, self.predictor.values
            for p, s0, e0 in zip(out, starts.tolist(), ends.tolist(), strict=True):
                p["blocks"] = [{"key": keys[j], "ms": float(values[j])} for j in idx[s0:e0].tolist()]
        return out


class PredictorCache:
    """LUT id -> Prepared, least recently used first out.

    Each copy keeps the change watch's token read before its revision was confirmed: while the
    watch still gives that token, nothing committed since could have moved the revision and the
    copy is used as is, and once the token moved (or the watch went down) it is confirmed again.
    A copy confirmed without a token (no watch, or a watch that was down) is used for ``ttl``
    seconds without asking again (0: ask on every request). Writes in this process invalidate at once.
    """

    def __init__(self, size: int, ttl: float = 0.0, watch: ChangeWatch | None = None) -> None:
        self.size, self.ttl, self.watch = size, ttl, watch
        self._items: OrderedDict[int, tuple[Prepared, float, int | None]] = OrderedDict()
        self._lock = threading.Lock()

    def token(self) -> int | None:
        """The watch's token now: read it before confirming a revision, and pass it to ``get``."""
        return self.watch.token() if self.watch is not None else None

    def fresh(self, lut_id: int) -> Prepared | None:
        """The copy of ``lut_id`` if it is known to be current without asking the database."""
        with self._lock:
            hit = self._items.get(lut_id)
        if hit is None:
            return None
        prepared, confirmed, token = hit
        if token is not None:  # confirmed under the watch: current exactly while its token stays
            return prepared if self.token() == token else None
        return prepared if time.monotonic() - confirmed < self.ttl else None

    def get(self, lut_id: int, revision: int, load: Callable[[], LUT], token: int | None = None) -> Prepared:
        """The copy at ``revision`` (built with ``load`` unless held), confirmed now at ``token``."""
        now = time.monotonic()
        with self._lock:
            hit = self._items.get(lut_id)
            if hit is not None and hit[0].revision == revision:
                self._items[lut_id] = (hit[0], now, token)
                self._items.move_to_end(lut_id)
                return hit[0]
        prepared = Prepared.build(load(), revision)
        with self._lock:
            self._items[lut_id] = (prepared, now, token)
            self._items.move_to_end(lut_id)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return prepared

    def invalidate(self, lut_id: int) -> None:
        with self._lock:
            self._items.pop(lut_id, None)

    def close(self) -> None:
        if self.watch is not None:
            self.watch.close()


class UnitIndexer:
    """LUT rows of an arch string of units (ofa-mbv3) from small caches: no parse and no walk per arch.

    For spaces whose canonical strings split into units of layer tokens (``space.unit_grammar()``).
    Relies on the walk being (fixed stem blocks, one block per layer unit by unit, fixed tail
    blocks) with a layer's block depending only on its unit, whether it is the unit's first layer
    and its own token (how budgetnas/spaces/ofa_mbv3.py caches its walk). ``build`` learns every piece from
    the space itself (parsing reference architectures) and checks the fast rows against the walk
    on sample architectures, returning None (use the walk) if anything differs. Strings it does not
    recognise (other heads, dict forms, bad tokens or depths, any non-canonical spelling) go to the
    checking walk, which names the error. Its caches keep canonical pieces only (a few thousand
    unit strings at most): nothing a client sends can grow them beyond that.
    """

    MAX_LEARNT_DEPTH = 16  # depths above this are not learnt (the walk rejects them)

    def __init__(self, space: SearchSpace[Any], index: dict[str, int], grammar: UnitGrammar, n_units: int) -> None:
        self.space, self.index, self.grammar, self.n_units = space, index, grammar, n_units
        self.ref, self.other = grammar.probes
        ref = self._arch([[self.ref] * 2] * n_units)
        keys = space.block_keys(ref)
        self.n_stem = self._stem_length()
        self.stem = [index.get(k, -1) for k in keys[:self.n_stem]]
        self.tail = [index.get(k, -1) for k in keys[self.n_stem + 2 * n_units:]]
        self.layers: dict[tuple[int, int, str], tuple[str, int] | None] = {}
        self.depths: dict[tuple[int, int], bool] = {}
        # values are tuples of atoms, which the garbage collector stops tracking: a cache it need not walk
        # one dict per unit position: a lookup needs no (position, piece) key built per unit
        self.units: list[dict[str, tuple[int, ...]]] = [{} for _ in range(n_units)]
        self.lock = threading.Lock()

    def _arch(self, units: list[list[str]]) -> Any:
        return self.space.parse(self.grammar.join(units))

    def _stem_length(self) -> int:
        """Where unit 1's first layer sits in the walk: the first key that changing it moves."""
        base = [[self.ref] * 2 for _ in range(self.n_units)]
        a = self.space.block_keys(self._arch(base))
        b = self.space.block_keys(self._arch([[self.other, self.ref], *base[1:]]))
        return next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)

    def _depth_ok(self, u: int, depth: int) -> bool:
        if depth > self.MAX_LEARNT_DEPTH:
            return False
        if (u, depth) not in self.depths:
            units = [[self.ref] * 2 for _ in range(self.n_units)]
            units[u] = [self.ref] * depth
            try:
                self._arch(units)
                ok = True
            except InvalidArchitectureError:
                ok = False
            self.depths[(u, depth)] = ok
        return self.depths[(u, depth)]

    def _layer(self, u: int, li: int, tok: str) -> tuple[str, int] | None:
        """The canonical token and LUT row of a layer; None (and nothing learnt) unless ``tok`` is canonical."""
        key = (u, min(li, 1), tok)
        if key in self.layers:
            return self.layers[key]
        units = [[self.ref] * 2 for _ in range(self.n_units)]
        units[u][min(li, 1)] = tok
        got: tuple[str, int] | None
        try:
            arch = self._arch(units)
        except InvalidArchitectureError:
            got = None
        else:
            pieces = self.grammar.units(self.space.format(arch))
            assert pieces is not None  # the space's own canonical string has the grammar's head
            canon = pieces[u].split(self.grammar.layer_sep)[min(li, 1)]
            got = (canon, self.index.get(self.space.block_keys(arch)[self.n_stem + 2 * u + min(li, 1)], -1))
        if got is None or got[0] != tok:
            return None  # not canonical: the walk parses it (or names what is wrong with it)
        with self.lock:
            self.layers[key] = got
        return got

    def _unit(self, u: int, text: str) -> tuple[int, ...] | None:
        hit = self.units[u].get(text)
        if hit is not None:
            return hit
        toks = text.split(self.grammar.layer_sep)
        if not self._depth_ok(u, len(toks)):
            return None
        layers, rows = self.layers, []
        for li, tok in enumerate(toks):
            got = layers.get((u, 0 if li == 0 else 1, tok)) or self._layer(u, li, tok)
            if got is None:
                return None
            rows.append(got[1])
        # every token was canonical (``_layer`` answers for no other), so the unit is: bounded by the space's units
        hit = tuple(rows)
        with self.lock:
            self.units[u][text] = hit
        return hit

    def rows(self, text: str) -> tuple[str, list[int]] | None:
        """``text`` (canonical: every unit found is its own canonical form) and its LUT rows, or None."""
        parts = self.grammar.units(text)
        if parts is None or len(parts) != self.n_units:
            return None
        idx = list(self.stem)
        for u, (known, part) in enumerate(zip(self.units, parts)):  # noqa: B905 - lengths checked above
            hit = known.get(part) or self._unit(u, part)
            if hit is None:
                return None
            idx += hit
        idx += self.tail
        if -1 in idx:
            return None  # the walk reports the missing keys
        return text, idx

    @classmethod
    def build(cls, space: SearchSpace[Any], index: dict[str, int]) -> UnitIndexer | None:
        """The fast path of ``space``, or None where it has no unit grammar or the fast rows are not the walk's."""
        grammar = space.unit_grammar()
        if grammar is None:
            return None
        try:
            units = grammar.units(space.format(space.sample_many(1, seed=0)[0]))
            if units is None:
                return None
            fast = cls(space, index, grammar, len(units))
            for arch in space.sample_many(64, seed=1):  # the fast rows must be the walk's rows
                text = space.format(arch)
                got = fast.rows(text)
                want = [index.get(k, -1) for k in space.block_keys(arch)]
                if got is not None and (got[0] != text or got[1] != want):
                    return None
        except (InvalidArchitectureError, StopIteration, ValueError, AttributeError, IndexError):
            return None
        return fast

