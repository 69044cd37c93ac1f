"""Diagnosis of a broken chain: which record, and what happened to it.

Only a log that failed the streaming check is diagnosed, so this may read it whole. The idea:
the ``prev_hash`` links and the hashes (which cover each record's seq) say where every record
*originally* was in the chain, independently of the seq column it sits at now. Comparing the
two tells an edit (content no longer matches its hash) from a deletion (a position nobody
claims), an insertion (a second record claiming a position, or one beyond the head) and a
reordering (a record whose content belongs at another position). Each kind is one check
below, run in a fixed order because a later check skips rows an earlier one explained.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence

from federation.audit.chain import ChainRow
from federation.audit.records import GENESIS_HASH, AuditProblem

_UNSET = -1


def diagnose(rows: Sequence[ChainRow], head: tuple[int, str] | None) -> list[AuditProblem]:
    """Name every tampered record in ``rows`` (table order by seq) against the stored head."""
    d = _Diagnosis(rows, head)
    d.check_head_position()
    d.find_inserted()
    d.settle_genuine()
    d.find_edited()
    d.find_reordered()
    d.find_deleted()
    d.find_broken_links()
    d.check_tail()
    d.problems.sort(key=lambda p: (p.seq == 0, p.seq, p.kind))
    return d.problems


def _ranges(numbers: Iterable[int]) -> Iterator[tuple[int, int]]:
    """Consecutive runs of sorted integers as (first, last)."""
    run: list[int] = []
    for n in sorted(numbers):
        if run and n != run[-1] + 1:
            yield run[0], run[-1]
            run = []
        run.append(n)
    if run:
        yield run[0], run[-1]


def _span(first: int, last: int) -> str:
    return f"record {first}" if first == last else f"records {first}..{last}"


class _Diagnosis:
    """The state the checks share: where each row claims to belong, and what is explained."""

    def __init__(self, rows: Sequence[ChainRow], head: tuple[int, str] | None):
        self.rows = rows
        self.head = head
        self.idx_by_hash: dict[str, int] = {}
        for i, r in enumerate(rows):
            self.idx_by_hash.setdefault(r.hash, i)
        self.referenced = {r.prev_hash for r in rows}
        # claimed[i]: the seq at which row i's content matches its stored hash (None: at none).
        self.claimed: list[int | None] = [_UNSET] * len(rows)
        for i in range(len(rows)):
            if self.claimed[i] == _UNSET:
                self._resolve(i)
        self.problems: list[AuditProblem] = []
        self.flagged: set[int] = set()  # row indices already explained
        self.genuine_rows: list[int] = []
        self.positions: dict[int, int] = {}  # original position -> row index (genuine rows)
        self.last = 0  # last position held by a genuine row

    def position(self, i: int) -> int:
        c = self.claimed[i]
        return self.rows[i].seq if c is None or c == _UNSET else c

    def _resolve(self, start: int) -> None:
        """Fill ``claimed`` for ``start`` and the unresolved rows it links back to, oldest
        first, so each row can try the position right after its predecessor's."""
        rows, claimed, idx_by_hash = self.rows, self.claimed, self.idx_by_hash
        path: list[int] = []
        on_path: set[int] = set()
        cur = start
        while claimed[cur] == _UNSET and cur not in on_path:
            on_path.add(cur)
            path.append(cur)
            j = idx_by_hash.get(rows[cur].prev_hash)
            if rows[cur].prev_hash == GENESIS_HASH or j is None:
                break
            cur = j
        for k in reversed(path):
            r = rows[k]
            candidates = []
            if r.prev_hash == GENESIS_HASH:
                candidates.append(1)
            else:
                j = idx_by_hash.get(r.prev_hash)
                if j is not None and claimed[j] != _UNSET:
                    candidates.append(self.position(j) + 1)
            candidates += [r.seq, r.seq - 1, r.seq + 1]  # +-1: a renumbering after insert/delete
            claimed[k] = next(
                (t for t in dict.fromkeys(candidates) if t >= 1 and r.hash_at(t) == r.hash), None
            )

    def _flag(self, i: int, kind: str, detail: str) -> None:
        self.flagged.add(i)
        self.problems.append(AuditProblem(self.rows[i].seq, kind, detail))

    # -- the checks, in order ----------------------------------------------------------------

    def check_head_position(self) -> None:
        """The head's hash is harder to fake than its seq: if it names a record at another
        position, report that and trust the hash from here on."""
        head = self.head
        if head is None or head[1] not in self.idx_by_hash:
            return
        at = self.position(self.idx_by_hash[head[1]])
        if at != head[0]:
            self.problems.append(
                AuditProblem(
                    0,
                    "head",
                    f"edited — the stored head says record {head[0]} but holds the hash of "
                    f"record {at}",
                )
            )
            self.head = (at, head[1])

    def find_inserted(self) -> None:
        """Two rows claiming one position (the genuine one continues the chain), or rows
        beyond the stored head."""
        rows, head = self.rows, self.head
        by_position: dict[int, list[int]] = defaultdict(list)
        for i in range(len(rows)):
            by_position[self.position(i)].append(i)
        for pos, group in sorted(by_position.items()):
            if len(group) < 2:
                continue
            genuine = [
                i
                for i in group
                if rows[i].hash in self.referenced or (head is not None and rows[i].hash == head[1])
            ]
            keep = genuine[0] if len(genuine) == 1 else group[0]
            for i in group:
                if i == keep:
                    continue
                if rows[i].hash == rows[keep].hash:
                    what = f"a copy of record {pos} (now at seq {rows[keep].seq})"
                elif len(genuine) == 1:
                    what = (
                        f"forged: it claims to be record {pos}, but the chain continues from "
                        f"the record at seq {rows[keep].seq}"
                    )
                else:
                    what = (
                        f"it and the record at seq {rows[keep].seq} both claim to be record {pos}"
                    )
                self._flag(i, "inserted", f"inserted — {what}")
        if head is not None:
            for i in range(len(rows)):
                if i not in self.flagged and self.position(i) > head[0]:
                    self._flag(
                        i,
                        "inserted",
                        f"inserted — after the stored head (record {head[0]}): it was added "
                        "outside the audit log",
                    )

    def settle_genuine(self) -> None:
        """What is left after insertions is the chain as it was written."""
        self.genuine_rows = [i for i in range(len(self.rows)) if i not in self.flagged]
        self.positions = {self.position(i): i for i in self.genuine_rows}

    def find_edited(self) -> None:
        """Content that matches its hash at no position."""
        for i in self.genuine_rows:
            if self.claimed[i] is None:
                self._flag(i, "edited", "edited — stored hash does not match its content")

    def find_reordered(self) -> None:
        """Content that belongs at another position. Runs with one shift are one finding."""
        rows, claimed = self.rows, self.claimed

        def shift_of(i: int) -> int:
            return rows[i].seq - (claimed[i] or 0)

        moved = [
            i for i in self.genuine_rows if claimed[i] is not None and claimed[i] != rows[i].seq
        ]
        run: list[int] = []
        for i in moved:
            if run and (i != run[-1] + 1 or shift_of(i) != shift_of(run[-1])):
                self._report_moved(run)
                run = []
            run.append(i)
        self._report_moved(run)

    def _report_moved(self, run: list[int]) -> None:
        if not run:
            return
        first = self.rows[run[0]]
        if len(run) == 1:
            detail = f"reordered — holds the content of record {self.claimed[run[0]]}"
        else:
            shift = first.seq - (self.claimed[run[0]] or 0)
            detail = (
                f"reordered — records {first.seq}..{self.rows[run[-1]].seq} were renumbered "
                f"{shift:+d} (each holds the content of the record {abs(shift)} "
                f"{'below' if shift > 0 else 'above'} it)"
            )
        self.problems.append(AuditProblem(first.seq, "reordered", detail))
        self.flagged.update(run)

    def find_deleted(self) -> None:
        """Positions up to the last genuine one that no record claims."""
        self.last = max(self.positions, default=0)
        missing = [p for p in range(1, self.last) if p not in self.positions]
        for first, lastm in _ranges(missing):
            jump = (
                f"seq jumps {first - 1} → {lastm + 1}"
                if first > 1
                else f"the log starts at record {lastm + 1}"
            )
            what = "deleted" if first == lastm else f"records {first}..{lastm} deleted"
            self.problems.append(AuditProblem(first, "deleted", f"missing — {what} ({jump})"))

    def find_broken_links(self) -> None:
        """A record whose predecessor's hash exists nowhere, while a record still sits at the
        predecessor's position, means that record was rewritten with a recomputed hash."""
        for i in self.genuine_rows:
            c = self.claimed[i]
            if c is None:
                continue
            r = self.rows[i]
            if c == 1:
                if r.prev_hash != GENESIS_HASH and i not in self.flagged:
                    self._flag(
                        i,
                        "edited",
                        "edited — the first record does not start from the genesis hash",
                    )
                continue
            j = self.idx_by_hash.get(r.prev_hash)
            if j is None and (c - 1) in self.positions:
                q = self.positions[c - 1]
                if q not in self.flagged:
                    self._flag(
                        q,
                        "edited",
                        f"edited — rewritten with a recomputed hash (record {c} still links to "
                        "its original hash)",
                    )
            elif j is not None and self.position(j) != c - 1 and i not in self.flagged:
                self._flag(
                    i,
                    "edited",
                    f"edited — links to record {self.position(j)} but claims to be record {c}",
                )

    def check_tail(self) -> None:
        """The head: truncation of the tail, or a rewritten last record."""
        head, last = self.head, self.last
        if head is None:
            self.problems.append(
                AuditProblem(
                    0,
                    "head",
                    "missing — the head row was deleted, so truncation of the tail cannot be "
                    "checked",
                )
            )
        elif head[0] > last:
            self.problems.append(
                AuditProblem(
                    last + 1,
                    "truncated",
                    f"missing — log truncated: {_span(last + 1, head[0])} deleted after record "
                    f"{last} (the stored head is record {head[0]})",
                )
            )
        elif head[0] >= 1:
            tail = self.positions.get(head[0])
            if tail is not None and self.rows[tail].hash != head[1] and tail not in self.flagged:
                self.problems.append(
                    AuditProblem(
                        self.rows[tail].seq,
                        "edited",
                        "edited — its hash does not match the stored head (rewritten with a "
                        "recomputed hash)",
                    )
                )
