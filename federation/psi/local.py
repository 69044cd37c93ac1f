"""Both halves in one process: for tests, benchmarks and notebooks, never between parties."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from federation.psi.bank import PsiBank
from federation.psi.holder import PsiHolder
from federation.psi.results import LocalAlignment, LocalPsi
from federation.psi.workers import PARALLEL_MIN


def run_psi_local(
    bank_codes: Sequence[str],
    holder_codes: Sequence[str],
    *,
    salt: bytes,
    min_overlap: int | float = 1,
    workers: int | None = None,
    cache_dir: Path | str | None = None,
    parallel_min: int = PARALLEL_MIN,
) -> LocalPsi:
    """Run the whole protocol between a bank and one holder in this process."""
    bank = PsiBank(
        bank_codes, salt=salt, min_overlap=min_overlap, workers=workers, parallel_min=parallel_min
    )
    holder = PsiHolder(
        holder_codes, salt=salt, cache_dir=cache_dir, workers=workers, parallel_min=parallel_min
    )
    result = bank.finish(holder.blind_queries(bank.queries()), holder.blinded_set())
    holder_rows = holder.accept_intersection(result.positions_bytes())
    return LocalPsi(bank_rows=result.bank_rows, holder_rows=holder_rows, size=result.size)


def align_local(
    bank_codes: Sequence[str],
    holder_code_lists: Sequence[Sequence[str]],
    *,
    salt: bytes,
    min_overlap: int | float = 1,
    workers: int | None = None,
    parallel_min: int = PARALLEL_MIN,
) -> LocalAlignment:
    """Align the bank with several holders in this process: one common order for all."""
    bank = PsiBank(
        bank_codes, salt=salt, min_overlap=min_overlap, workers=workers, parallel_min=parallel_min
    )
    queries = bank.queries()
    holders = [
        PsiHolder(codes, salt=salt, workers=workers, parallel_min=parallel_min)
        for codes in holder_code_lists
    ]
    results = [bank.finish(h.blind_queries(queries), h.blinded_set()) for h in holders]
    aligned = bank.align(results)
    rows = tuple(h.accept_intersection(aligned.positions_bytes(i)) for i, h in enumerate(holders))
    return LocalAlignment(bank_rows=aligned.bank_rows, holder_rows=rows, size=aligned.size)
