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
WALKED_ARCHS = 8  # requests of at most this many archs are walked (and cached): the batch path's fixed cost
# (~0.1 ms of numpy calls) is more than walking a few


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
        n, fast = len(archs), self.fast
        if fast is not None and n > WALKED_ARCHS:  # canonical strings in one pass; the rest are walked one by one
            ok, fast_rows, fast_lengths = fast.block_rows(archs)
        else:
            ok, fast_rows, fast_lengths = np.zeros(n, bool), np.zeros(0, np.int64), np.zeros(0, np.int64)
        if ok.all():
            starts = np.zeros(n, np.int64)
            np.cumsum(fast_lengths[:-1], out=starts[1:])
            return list(archs), fast_rows, starts
        canon = list(archs)
        lengths = np.zeros(n, np.int64)
        lengths[ok] = fast_lengths
        walked: list[tuple[int, Sequence[int]]] = []
        missing: list[str] = []
        cache = self.arch_rows
        for i in np.flatnonzero(~ok).tolist():
            text = archs[i]
            hit: tuple[str, Sequence[int]] | None = cache.get(text)  # canonical keys: skips the parse
            if hit is None:
                hit = self._walk(i, text, missing)
                if hit is None:
                    continue
            canon[i] = hit[0]
            lengths[i] = len(hit[1])
            walked.append((i, hit[1]))
        if missing:
            raise MissingKeysError(missing)
        starts = np.zeros(n, np.int64)
        np.cumsum(lengths[:-1], out=starts[1:])
        idx = np.empty(int(lengths.sum()), np.int64)
        if fast_rows.size:  # each fast arch's rows, moved from its place among the fast ones to its place among all
            fast_starts = np.cumsum(fast_lengths) - fast_lengths
            idx[np.arange(fast_rows.size) + np.repeat(starts[ok] - fast_starts, fast_lengths)] = fast_rows
        for i, r in walked:
            idx[starts[i]:starts[i] + len(r)] = r
        return canon, idx, starts

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
    """LUT rows of a batch of arch strings of units (ofa-mbv3), in numpy: no parse, walk or object per arch.

    For spaces whose canonical strings split into units of layer tokens (``space.unit_grammar()``)
    with one-character separators and tokens of one fixed length (the probes' length, 1 to 7 ASCII
    characters). Relies on the walk being (fixed stem blocks, one block per layer unit by unit, fixed
    tail blocks) with a layer's block depending only on its unit, whether it is the unit's first
    layer and its own token (how budgetnas/spaces/ofa_mbv3.py caches its walk). ``build`` learns every piece
    from the space itself (parsing reference architectures) and checks the fast rows against the
    walk on sample architectures, returning None (use the walk) if anything differs. Strings it does
    not recognise (other heads, dict forms, bad tokens or depths, any non-canonical spelling, a key
    the LUT lacks) go to the checking walk, which names the error. Its caches keep canonical pieces
    only (tokens and depths): nothing a client sends can grow them beyond the space's few tokens.

    A batch is read as one byte string: token ``j`` of a text starts ``len(head) + j * (width + 1)``
    bytes in, one unaligned 8-byte read there gives the token (as an integer) and the separator
    after it, the separators say where units end, and a perfect hash of the learnt tokens gives
    their rows: a 10,000-arch batch is a few dozen array operations.
    """

    MAX_LEARNT_DEPTH = 16  # depths above this are not learnt (the walk rejects them)
    MAX_NEW_TOKENS = 16  # unknown token spellings tried per batch: junk costs a few parses, not one per arch
    EMPTY = np.uint64(2**64 - 1)  # a hash slot without a token (a token's code is below 2**56)

    def __init__(self, space: SearchSpace[Any], index: dict[str, int], grammar: UnitGrammar, n_units: int) -> None:
        self.space, self.index, self.grammar, self.n_units = space, index, grammar, n_units
        self.ref, self.other = grammar.probes
        self.width = len(self.ref)
        head = (grammar.head + grammar.unit_sep).encode("ascii")
        self.head_len = len(head)
        # the head compared 8 bytes at a time: (offset, mask, value)
        self.head_words = [(o, (1 << 8 * len(head[o:o + 8])) - 1, int.from_bytes(head[o:o + 8], "little"))
                           for o in range(0, len(head), 8)]
        self.unit_sep, self.layer_sep = ord(grammar.unit_sep), ord(grammar.layer_sep)
        ref = self._arch([[self.ref] * 2] * n_units)
        keys = space.block_keys(ref)
        self.n_stem = self._stem_length()
        self.stem = np.array([index.get(k, -1) for k in keys[:self.n_stem]], np.int64)
        self.tail = np.array([index.get(k, -1) for k in keys[self.n_stem + 2 * n_units:]], np.int64)
        self.layers: dict[tuple[int, int, str], tuple[str, int] | None] = {}
        # depth_ok[u, d]: unit u may have d layers (d = 0 and d > MAX_LEARNT_DEPTH: never)
        self.depth_ok = np.zeros((n_units, self.MAX_LEARNT_DEPTH + 2), bool)
        for u in range(n_units):
            for d in range(1, self.MAX_LEARNT_DEPTH + 1):
                self.depth_ok[u, d] = self._depth_ok(u, d)
        # the canonical tokens learnt (code: the token's bytes as one integer) -> [row of (unit, later layer?)]
        # (-1: a key the LUT lacks, -2: not canonical there), and their perfect hash (see _rehash)
        self.learnt: dict[int, list[int]] = {}
        self.lock = threading.Lock()
        self.hashed = self._rehash(self.learnt)
        self._learn([self._code(self.ref), self._code(self.other)])

    def _arch(self, units: list[list[str]]) -> Any:
        return self.space.parse(self.grammar.join(units))

    def _stem_length(self) -> int:
        """Where unit 1's first layer sits in the walk: the first key that changing it moves."""
        base = [[self.ref] * 2 for _ in range(self.n_units)]
        a = self.space.block_keys(self._arch(base))
        b = self.space.block_keys(self._arch([[self.other, self.ref], *base[1:]]))
        return next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)

    def _depth_ok(self, u: int, depth: int) -> bool:
        units = [[self.ref] * 2 for _ in range(self.n_units)]
        units[u] = [self.ref] * depth
        try:
            self._arch(units)
        except InvalidArchitectureError:
            return False
        return True

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

    @staticmethod
    def _code(tok: str) -> int:
        return int.from_bytes(tok.encode("ascii"), "little")

    def _learn(self, codes: Sequence[int]) -> None:
        """Learn which of these tokens (by code) are canonical, and where; hash the canonical ones."""
        seps = (self.grammar.unit_sep, self.grammar.layer_sep)
        new: dict[int, list[int]] = {}
        for code in codes:
            tok = code.to_bytes(8, "little")[:self.width].decode("ascii", "replace")
            if code in self.learnt or code >= 1 << 8 * self.width or any(c in tok for c in seps):
                continue  # known, or not a token this layout can hold (the walk reads such strings)
            got = [self._layer(u, li, tok) for u in range(self.n_units) for li in (0, 1)]
            if any(g is not None for g in got):  # canonical somewhere: bounded by the space's tokens
                new[code] = [-2 if g is None else g[1] for g in got]
        if new:
            with self.lock:
                self.learnt = {**self.learnt, **new}
                self.hashed = self._rehash(self.learnt)

    def _rehash(self, learnt: dict[int, list[int]]) -> tuple[int, int, np.ndarray, np.ndarray]:
        """(multiplier, shift, slot -> code, (unit, later layer?, slot) -> row): a multiplicative hash
        ``(code * multiplier mod 2**64) >> shift`` without collisions among the learnt codes."""
        n = len(learnt)
        for bits in range(max(2, n.bit_length() + 1), 21):
            for i in range(64):
                mult = (0x9E3779B97F4A7C15 * (2 * i + 1)) % 2**64
                slots = {(c * mult % 2**64) >> (64 - bits): c for c in learnt}
                if len(slots) == n:
                    size = 1 << bits
                    codes = np.full(size, self.EMPTY)
                    rows = np.full((self.n_units * 2, size), -2, np.int64)
                    for slot, c in slots.items():
                        codes[slot] = c
                        rows[:, slot] = learnt[c]
                    return mult, 64 - bits, codes, rows.reshape(-1)
        return self.hashed  # no hash found (never seen): the new tokens stay unknown, their archs are walked

    def _find(self, codes: np.ndarray, place: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found, row) of each token code at its place (unit * 2 + 1 for a unit's later layers): row -1 for
        a key the LUT lacks, -2 where the token is not canonical. In place where it can: these are the
        batch's largest arrays."""
        mult, shift, known, rows = self.hashed
        slot = codes * np.uint64(mult)
        slot >>= np.uint64(shift)
        at = place * known.size
        at += slot.view(np.int64)
        return known[slot.view(np.int64)] == codes, rows[at]

    def block_rows(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Which ``texts`` are canonical with every key in the LUT (a bool per text) and, for those in order,
        their concatenated LUT rows and each one's number of rows. The others are for the walk."""
        n, w, hl, n_units = len(texts), self.width, self.head_len, self.n_units
        none = np.zeros(0, np.int64)
        if n == 0 or -1 in self.stem or -1 in self.tail:
            return np.zeros(n, bool), none, none  # a fixed key is missing: the walk lists it
        lens = np.fromiter(map(len, texts), np.int64, n)
        n_layers = (lens - hl + 1) // (w + 1)
        ok = ((lens - hl + 1) % (w + 1) == 0) & (n_layers >= n_units) & (n_layers <= n_units * self.MAX_LEARNT_DEPTH)
        blob = "".join(texts)
        if not blob.isascii():  # encoded one byte per character, '?' for the others: those are not canonical
            ok &= np.fromiter(map(str.isascii, texts), bool, n)
        sel = np.flatnonzero(ok)
        if sel.size == 0:
            return ok, none, none
        at, nl = (lens.cumsum() - lens)[sel], n_layers[sel]
        width = int(nl.max())
        # the bytes, padded so that every read below (8 bytes from any token of any text) is inside
        data = blob.encode("ascii", "replace") + bytes(hl + width * (w + 1) + 8)
        word = np.ndarray((len(data) - 7,), "<u8", data, 0, (1,))  # the 8 bytes from each offset, unaligned
        good = np.ones(sel.size, bool)
        for o, bits, value in self.head_words:
            good &= word[at + o] & np.uint64(bits) == np.uint64(value)
        j = np.arange(width)
        live = j < nl[:, None]  # token j exists
        read = word[at[:, None] + (hl + j * (w + 1))]  # token j and the separator after it
        seps = read[:, :-1] >> np.uint64(8 * w)
        seps &= np.uint64(0xFF)
        codes = read
        codes &= np.uint64((1 << 8 * w) - 1)
        inner = live[:, 1:]  # a separator follows token j
        unit_end = inner & (seps == self.unit_sep)
        good &= (unit_end | (seps == self.layer_sep) | ~inner).all(1) & (unit_end.sum(1) == n_units - 1)
        first = np.empty(live.shape, bool)  # token j begins a unit
        first[:, 0] = True
        first[:, 1:] = unit_end
        if not good.all():  # what follows assumes n_units units per text
            sel, nl, live, codes, first = sel[good], nl[good], live[good], codes[good], first[good]
        begins = np.nonzero(first)[1].reshape(-1, n_units)
        depths = np.diff(begins, axis=1, append=nl[:, None])
        fits = np.asarray(self.depth_ok[np.arange(n_units), np.minimum(depths, self.MAX_LEARNT_DEPTH + 1)].all(1))
        place = np.cumsum(first, 1)  # unit + 1, then unit * 2 + (0 for a unit's first layer, 1 for later ones)
        place *= 2
        place -= 1
        place -= first
        found, rows = self._find(codes, place)
        new = codes[live & ~found & fits[:, None]]
        if new.size:
            # a few distinct ones (np.unique would import numpy.ma on first use: ~20 ms, once)
            self._learn(sorted(set(new[:4096].tolist()))[:self.MAX_NEW_TOKENS])
            found, rows = self._find(codes, place)
        fits &= ((found & (rows >= 0)) | ~live).all(1)
        if not fits.all():
            sel, nl, live, rows = sel[fits], nl[fits], live[fits], rows[fits]
        ok = np.zeros(n, bool)
        ok[sel] = True
        m = nl.size
        full = np.concatenate([np.broadcast_to(self.stem, (m, self.stem.size)), rows,
                               np.broadcast_to(self.tail, (m, self.tail.size))], 1)
        mask = np.concatenate([np.ones((m, self.stem.size), bool), live, np.ones((m, self.tail.size), bool)], 1)
        return ok, full[mask], nl + self.stem.size + self.tail.size

    @classmethod
    def build(cls, space: SearchSpace[Any], index: dict[str, int]) -> UnitIndexer | None:
        """The fast path of ``space``, or None where it has no unit grammar or the fast rows are not the walk's."""
        grammar = space.unit_grammar()
        if grammar is None:
            return None
        ref, other = grammar.probes
        if not (len(grammar.unit_sep) == len(grammar.layer_sep) == 1 and 1 <= len(ref) == len(other) <= 7
                and (grammar.head + grammar.unit_sep + grammar.layer_sep + ref + other).isascii()):
            return None  # not a layout block_rows reads
        try:
            units = grammar.units(space.format(space.sample_many(1, seed=0)[0]))
            if units is None:
                return None
            fast = cls(space, index, grammar, len(units))
            archs = space.sample_many(64, seed=1)  # the fast rows must be the walk's rows
            texts = [space.format(a) for a in archs]
            ok, rows, lengths = fast.block_rows(texts)
            got = iter(np.split(rows, np.cumsum(lengths)[:-1]))
            for arch, accepted in zip(archs, ok.tolist(), strict=True):
                if accepted and next(got).tolist() != [index.get(k, -1) for k in space.block_keys(arch)]:
                    return None
        except (InvalidArchitectureError, StopIteration, ValueError, AttributeError, IndexError):
            return None
        return fast
