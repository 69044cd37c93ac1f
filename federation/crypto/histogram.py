"""Encrypted per-(feature, bin) sums: the primitive SecureBoost and federated WOE/IV share.

A data holder has one ciphertext per sample (from the bank) and its own binned features. For
the samples in a tree node it multiplies, per feature and bin, the ciphertexts of the samples
that fall in that bin (homomorphic addition), all as raw gmpy2 integers mod n^2. The bank then
sees only (packed, re-randomised) sums — never which sample went where.

The sibling trick: a node's two children partition its samples, so the holder accumulates the
smaller child and gets the other as ``parent − child`` (:func:`subtract`), halving the work.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

import gmpy2
import numpy as np
from gmpy2 import mpz
from phe.paillier import PaillierPublicKey

from federation.crypto.errors import CryptoError
from federation.crypto.keys import PublicParams, byte_len
from federation.crypto.paillier import PaillierEngine
from federation.crypto.wire import from_fixed, to_fixed

_f_mod = gmpy2.f_mod


class HistogramInputError(CryptoError):
    """Bins, sample index or ciphertexts do not fit together; nothing was computed."""


def _nsquare(public_key: PaillierPublicKey | PublicParams) -> mpz:
    key = public_key.public_key if isinstance(public_key, PublicParams) else public_key
    if not isinstance(key, PaillierPublicKey):
        raise HistogramInputError(f"expected a phe PaillierPublicKey, got {type(key).__name__}")
    return mpz(key.nsquare)


def _accumulate(cts: Sequence[mpz], cols: np.ndarray, n_bins: int, nsq: mpz) -> list[list[mpz]]:
    """Per column of ``cols``, the product mod n^2 of the ciphertexts in each bin (empty → 1).

    Why a plain per-row scan: it runs within a few per cent of the GMP multiply-reduce floor
    (experiments/bench_histogram.py); sorting rows by bin first was slower, because visiting
    the ciphertexts in permuted order loses cache locality.

    **The heaviest bin by division.** Credit data is full of flags, grades and zero-inflated
    amounts, whose most common bin holds most rows. When the rows in each column's heaviest bin
    outnumber the rows (plus a little), the block's total ``T`` (one product per row) is made
    once and each column skips its heaviest bin, which is then ``T · (Π other bins)^{-1}`` — the
    same integer mod n^2 as the direct product (Z*_{n^2} is a group), so the same sums and
    trees, for fewer multiplications (``experiments/bench_histogram.py --skip-heaviest``).
    """
    one = mpz(1)
    n, n_cols = len(cts), cols.shape[1]
    heavy: list[int] = []
    skipped = 0
    if n:
        for j in range(n_cols):
            counts = np.bincount(cols[:, j], minlength=n_bins)
            h = int(counts.argmax())
            worth = int(counts[h]) > n_bins + 16  # one inversion + n_bins products to undo it
            heavy.append(h if worth else -1)
            skipped += int(counts[h]) if worth else 0
    use_total = skipped > n + 16 * n_cols
    total = None
    if use_total:
        total = cts[0]
        for c in cts[1:]:
            total = _f_mod(total * c, nsq)
    out = []
    for j in range(n_cols):
        acc: list[Any] = [None] * n_bins
        h = heavy[j] if use_total else -1
        column = cols[:, j]
        if h < 0:
            for c, b in zip(cts, column.tolist(), strict=True):
                a = acc[b]
                acc[b] = c if a is None else _f_mod(a * c, nsq)
        else:
            rows = np.flatnonzero(column != h)
            for i, b in zip(rows.tolist(), column[rows].tolist(), strict=True):
                a = acc[b]
                c = cts[i]
                acc[b] = c if a is None else _f_mod(a * c, nsq)
            rest = one
            for a in acc:
                if a is not None:
                    rest = _f_mod(rest * a, nsq)
            try:
                acc[h] = _f_mod(total * gmpy2.invert(rest, nsq), nsq)
            except ZeroDivisionError:  # not a unit mod n^2 (no valid ciphertext): scan instead
                acc[h] = None
                for i in np.flatnonzero(column == h).tolist():
                    a = acc[h]
                    acc[h] = cts[i] if a is None else _f_mod(a * cts[i], nsq)
        out.append([one if a is None else a for a in acc])
    return out


def _hist_task(buf: bytes, width: int, cols: np.ndarray, n_bins: int, nsq: int) -> bytes:
    """Pool task: ciphertexts of a sample block (fixed-width bytes) and their bin columns."""
    hist = _accumulate(from_fixed(buf, width), cols, n_bins, mpz(nsq))
    return to_fixed([c for row in hist for c in row], width)


def _validate(
    n_cts: int, bins: Any, sample_index: Any, n_bins: Any
) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise HistogramInputError(f"n_bins must be a positive integer, got {n_bins!r}")
    if not isinstance(bins, np.ndarray) or bins.ndim != 2:
        raise HistogramInputError("bins must be a 2-D numpy array (n_samples, n_features)")
    if not np.issubdtype(bins.dtype, np.integer):
        raise HistogramInputError(f"bins must hold integers, got dtype {bins.dtype}")
    if bins.shape[0] != n_cts:
        raise HistogramInputError(
            f"{n_cts} ciphertexts but bins has {bins.shape[0]} rows: one ciphertext per sample"
        )
    idx = np.asarray(sample_index)
    if idx.ndim != 1 or not (idx.size == 0 or np.issubdtype(idx.dtype, np.integer)):
        raise HistogramInputError("sample_index must be a 1-D integer array")
    idx = idx.astype(np.int64, copy=False)
    if idx.size and (idx.min() < 0 or idx.max() >= n_cts):
        raise HistogramInputError(f"sample_index has entries outside [0, {n_cts})")
    if np.unique(idx).size != idx.size:
        raise HistogramInputError("sample_index repeats a sample: it would be counted twice")
    cols = bins[idx]
    if cols.size and (cols.min() < 0 or cols.max() >= n_bins):
        bad = np.argwhere((cols < 0) | (cols >= n_bins))[0]
        raise HistogramInputError(
            f"bins[{idx[bad[0]]}, {bad[1]}]={cols[bad[0], bad[1]]} is outside [0, {n_bins})"
        )
    return idx, np.ascontiguousarray(cols, dtype=np.int64)


def encrypted_bin_sums(
    ciphertexts: Sequence[int],
    bins: np.ndarray,
    sample_index: np.ndarray,
    n_bins: int,
    public_key: PaillierPublicKey | PublicParams,
    *,
    engine: PaillierEngine | None = None,
    parallel_threshold: int = 50_000,
) -> list[list[mpz]]:
    """Encrypted sums per feature and bin over the samples in ``sample_index``.

    ``bins[i, f]`` is sample i's bin for feature f, in [0, n_bins); give missing values their
    own bin (conventionally the last). Returns ``out[f][b]`` as gmpy2 integers mod n^2; an empty
    bin is ``1``, the trivial encryption of 0 — re-randomise before anything leaves the holder.
    With an ``engine`` with several workers and at least ``parallel_threshold`` sample×feature
    products, the work is split over features (and samples, if features are fewer than workers).
    """
    nsq = _nsquare(public_key)
    idx, cols = _validate(len(ciphertexts), bins, sample_index, n_bins)
    n_bins = int(n_bins)
    n_features = cols.shape[1]
    selected = [mpz(ciphertexts[i]) for i in idx.tolist()]
    for pos, c in enumerate(selected):
        if not 0 < c < nsq:
            raise HistogramInputError(f"ciphertext {idx[pos]} is not in [1, n^2)")
    workers = 1 if engine is None else engine.workers
    if workers <= 1 or n_features == 0 or len(selected) * n_features < parallel_threshold:
        return _accumulate(selected, cols, n_bins, nsq)

    # Task grid: feature blocks × sample blocks; partial products over sample blocks multiply.
    f_blocks = np.array_split(np.arange(n_features), min(n_features, workers))
    n_sblocks = max(1, -(-workers // len(f_blocks)))
    s_bounds = np.linspace(0, len(selected), n_sblocks + 1).astype(int)
    width = byte_len(nsq)
    tasks, layout = [], []
    for a, b in itertools.pairwise(s_bounds.tolist()):
        if b == a:
            continue
        buf = to_fixed(selected[a:b], width)
        for fb in f_blocks:
            tasks.append((buf, width, cols[a:b, fb], n_bins, int(nsq)))
            layout.append(fb)
    assert engine is not None
    out: list[list[mpz] | None] = [None] * n_features
    for fb, buf in zip(layout, engine.run_tasks(_hist_task, tasks), strict=True):
        flat = from_fixed(buf, width)
        for k, f in enumerate(fb.tolist()):
            part = flat[k * n_bins : (k + 1) * n_bins]
            row = out[f]
            out[f] = (
                part
                if row is None
                else [_f_mod(r * p, nsq) for r, p in zip(row, part, strict=True)]
            )
    return [row if row is not None else [mpz(1)] * n_bins for row in out]


class StreamingBinSums:
    """Bin sums of a ciphertext vector that arrives in pieces (a holder's gradient stream).

    Why: the holder's root histogram is every sample's ciphertext multiplied into its bins, so
    it can be summed while the bank still encrypts and sends (issue 14, overlap). ``feed`` takes
    the wire bytes as they come; every ``block`` ciphertexts it checks them and starts their
    partial sums on the engine's workers (or here, with one worker); ``finish`` multiplies the
    partials. Products mod n² commute, so the result is the same integers as
    ``encrypted_bin_sums`` over all rows at once, and so the same candidates and trees.

    ``bins``: the bins of the rows the ciphertexts belong to, in stream order; more bytes than
    ``bins`` has rows, a partial ciphertext or a value outside [1, n²) is refused
    (``HistogramInputError``), and nothing is returned.
    """

    def __init__(
        self,
        bins: np.ndarray,
        n_bins: int,
        public_key: PaillierPublicKey | PublicParams,
        *,
        engine: PaillierEngine | None = None,
        block: int = 4096,
    ):
        if block < 1:
            raise HistogramInputError(f"block must be >= 1, got {block}")
        self._nsq = _nsquare(public_key)
        _, self._cols = _validate(bins.shape[0], bins, np.arange(bins.shape[0]), n_bins)
        self._n_bins = int(n_bins)
        self._width = byte_len(self._nsq)
        self._engine = engine
        self._block = int(block)
        self._buf = bytearray()
        self._parts: list[Future[bytes]] = []
        self.ciphertexts: list[mpz] = []

    @property
    def expected(self) -> int:
        """How many ciphertexts the stream must hold (one per row of ``bins``)."""
        return int(self._cols.shape[0])

    def feed(self, data: bytes) -> None:
        """Take the next wire bytes; full blocks start summing at once."""
        self._buf += data
        if len(self.ciphertexts) * self._width + len(self._buf) > self.expected * self._width:
            raise HistogramInputError(
                f"the stream holds more than the {self.expected} ciphertexts announced"
            )
        while len(self._buf) >= self._block * self._width:
            self._take(self._block)

    def _take(self, count: int) -> None:
        size = count * self._width
        raw = bytes(self._buf[:size])
        del self._buf[:size]
        start = len(self.ciphertexts)
        cts = from_fixed(raw, self._width)
        for k, c in enumerate(cts):
            if not 0 < c < self._nsq:
                raise HistogramInputError(f"ciphertext {start + k} is not in [1, n^2)")
        self.ciphertexts.extend(cts)
        cols = self._cols[start : start + count]
        if self._engine is None:
            done: Future[bytes] = Future()
            done.set_result(_hist_task(raw, self._width, cols, self._n_bins, int(self._nsq)))
            self._parts.append(done)
        else:
            self._parts.append(
                self._engine.submit(
                    _hist_task, raw, self._width, cols, self._n_bins, int(self._nsq)
                )
            )

    def finish(self) -> list[list[mpz]]:
        """``out[f][b]`` over the whole stream (empty bin: ``1``), once every byte is here."""
        if len(self._buf) % self._width:
            raise HistogramInputError("the stream ends inside a ciphertext")
        if self._buf:
            self._take(len(self._buf) // self._width)
        if len(self.ciphertexts) != self.expected:
            raise HistogramInputError(
                f"the stream held {len(self.ciphertexts)} ciphertexts for {self.expected} rows"
            )
        n_features, n_bins, nsq = self._cols.shape[1], self._n_bins, self._nsq
        parts = (
            [f.result() for f in self._parts]
            if self._engine is None
            else self._engine.collect(self._parts)
        )
        out: list[list[mpz]] = [[mpz(1)] * n_bins for _ in range(n_features)]
        for buf in parts:
            flat = from_fixed(buf, self._width)
            for f in range(n_features):
                row = out[f]
                for b in range(n_bins):
                    p = flat[f * n_bins + b]
                    if p != 1:
                        row[b] = p if row[b] == 1 else _f_mod(row[b] * p, nsq)
        return out

    def cancel(self) -> None:
        """Drop what was received and stop partial sums not yet started."""
        for f in self._parts:
            f.cancel()
        self._parts.clear()
        self.ciphertexts = []
        self._buf.clear()


def subtract(
    parent: Sequence[Any], child: Sequence[Any], public_key: PaillierPublicKey | PublicParams
) -> list[Any]:
    """Encrypted ``parent − child`` elementwise (``parent · child^{-1} mod n^2``), for 1-D or
    nested (feature × bin) lists of the same shape: the sibling's histogram for free."""
    nsq = _nsquare(public_key)

    def sub(p: Any, c: Any, where: str) -> Any:
        if isinstance(p, list | tuple):
            if not isinstance(c, list | tuple) or len(p) != len(c):
                raise HistogramInputError(f"parent and child differ in shape at {where or 'top'}")
            return [
                sub(pi, ci, f"{where}[{i}]") for i, (pi, ci) in enumerate(zip(p, c, strict=True))
            ]
        pm, cm = mpz(p), mpz(c)
        if not (0 < pm < nsq and 0 < cm < nsq):
            raise HistogramInputError(f"ciphertext{where} is not in [1, n^2)")
        try:
            return _f_mod(pm * gmpy2.invert(cm, nsq), nsq)
        except ZeroDivisionError as exc:
            raise HistogramInputError(f"child ciphertext{where} is not invertible mod n^2") from exc

    difference: list[Any] = sub(parent, child, "")
    return difference


__all__ = ["HistogramInputError", "StreamingBinSums", "encrypted_bin_sums", "subtract"]
