"""The bank's scoring service: a registered SecureBoost version turned into scores (docs/scoring.md).

Why here, at the bank: the bank holds the tree shapes and leaf weights, its own splits and its
own rows; each holder keeps the meaning of its splits and answers only for enterprises that
authorised the bank. One score is one round: the bank computes the leaves its own splits allow,
asks every holder whose splits the model uses for the leaves *its* splits allow (concurrently,
one thread per holder, over the node's persistent connections), and intersects; exactly one
leaf per tree is left. Nothing is scored from partial data: a holder that refuses makes the
request fail (PERMISSION_DENIED naming the holder), one without data makes the reply say which
source is missing and carry no score (the number fields are unset, never 0).

A holder's failure reaches the bank's client with its status class kept and the holder named
once (``holder 'tax': ...``): its client error stays INVALID_ARGUMENT, a missing precondition
FAILED_PRECONDITION, a refusal PERMISSION_DENIED with its refusal code; only a holder that did
not answer (down, too slow) makes the bank answer UNAVAILABLE. Every call to a holder carries a
request id derived from the client's (``<id>.<holder>``), so both halves can be traced to it.

- ``parties.bank.served.ModelCache``: the versions served (resolved, checked, compiled once).
- ``BankScorer``: ``score`` (one enterprise), ``score_batch`` (a region prefix, an industry
  section or a list of codes: ranked whitelist above a points threshold) and ``verify``
  (a yes/no question proxied to one holder).
- ``score_codes``: the pyfunc's entry point (``xinyidai.tracking.BankScoringModel``): scores
  a list of codes through the live bank node named by the endpoint.

Reason categories (cheap, and never a holder's bin or threshold): per party, how far its splits
moved the margin: per tree, the weight of the leaf reached minus the training-sample-weighted
mean weight of the leaves still open under the *other* parties' splits (what the party's splits
decided), summed over trees. Parties with a positive contribution pushed the risk of default
up; their data categories, largest first, are the reason categories. Computed at the bank from
the reach masks it receives anyway.
"""

from __future__ import annotations

import json
import math
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from federation.errors import PeerError
from federation.transport.base import (
    FAILED_PRECONDITION,
    PeerBase,
    invalid,
    new_meta,
)
from federation.transport.calls import SubjectAccess, child_request_id, prefix, relay_failure
from models.scorecard import PdoScaling
from models.secureboost.bank_state import BANK
from models.secureboost.private_scoring import BankKeys, Layout, PrivateScoringError, path_credits
from models.secureboost.reference import sigmoid
from parties.bank.served import ModelCache, ScoringError, ServedModel
from parties.bank.served_linear import FamilyModelCache, ServedLinear
from parties.consent import check_auth_ids
from parties.data import uscc as uscc_codes
from parties.data.encoding import encode_table
from parties.data.schema import PartySchema
from protos import bank_pb2, holder_pb2

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from parties.bank.registry import TrackingConfig

PRIVATE_PAYLOAD = 6 << 20
"""Ciphertext bytes per private chain call of a batch (the packed CKKS layout: one ciphertext
of <= 1 MB holds ``slots // ((1 + H) · leaves)`` enterprises - 4 at 570 leaves, 2 holders,
N = 16384; a message's limit is 16 MB)."""
PRIVATE_IN_FLIGHT = 3
"""Private batch chunks in the chain at once (one per stage: bank, holder 1, holder 2)."""
BATCH_CHUNK = 4096
"""Enterprises per holder call in a batch (reach of 4096 x 800 leaves is 400 kB)."""
MAX_REASONS = 4
MODEL_FAMILY = "secureboost"
"""The family every served version belongs to today (scorecard/LR serving: docs/scoring.md)."""


@dataclass
class Scores:
    """Scores of n enterprises that every source answered for."""

    margin: np.ndarray
    probability: np.ndarray
    points: np.ndarray
    contributions: dict[str, np.ndarray]  # party -> log-odds its splits added, per enterprise
    base_margin: float = 0.0  # the model's base log-odds: points below its points need reasons


def combine(served: ServedModel, reaches: Mapping[str, np.ndarray]) -> Scores:
    """AND the parties' reach masks (bool n x leaves), check one leaf per tree, score, explain."""
    parties = list(reaches)
    total = np.logical_and.reduce([reaches[p] for p in parties])
    per_tree = np.add.reduceat(total, served.tree_starts, axis=1)
    if total.shape[0] and (per_tree != 1).any():
        row, tree = (int(x[0]) for x in np.nonzero(per_tree != 1))
        raise ScoringError(
            f"model {served.model_id}: enterprise #{row} reaches {int(per_tree[row, tree])} "
            f"leaves of tree {tree}; the parties' model parts do not fit together"
        )
    chosen = total.astype(np.float64) @ served.weights
    margin = served.base_score + chosen
    sw = served.samples * served.weights
    contributions: dict[str, np.ndarray] = {}
    for p in parties:
        others = [reaches[q] for q in parties if q != p]
        open_ = np.logical_and.reduce(others) if others else np.ones_like(total)
        num = np.add.reduceat(open_ * sw, served.tree_starts, axis=1)
        den = np.add.reduceat(open_ * served.samples, served.tree_starts, axis=1)
        contributions[p] = chosen - (num / den).sum(axis=1)
    probability = sigmoid(margin)
    return Scores(
        margin, probability, PdoScaling().score(margin), contributions, float(served.base_score)
    )


@dataclass
class _PrivateState:
    """The bank's side of private scoring for one served version."""

    keys: BankKeys
    values: np.ndarray  # (1 + H, leaves): leaf weights, then each holder's path credits
    root_total: float  # Σ over trees of the mean leaf weight (path credits start there)
    public: dict[str, bytes]  # holder -> its X25519 key for this version


def private_scores(served: ServedModel, totals: np.ndarray) -> Scores:
    """Scores from the private chain's decrypted sums: (n, 1 + H + 1) = [Σ weights reached,
    each holder's path credit, Σ_t root means]. The bank's own contribution is what is left."""
    chosen = totals[:, 0]
    holders = {h: totals[:, 1 + j] for j, h in enumerate(served.owners)}
    own = chosen - totals[:, -1] - sum(holders.values(), np.zeros_like(chosen))
    margin = served.base_score + chosen
    return Scores(
        margin,
        sigmoid(margin),
        PdoScaling().score(margin),
        {BANK: own, **holders},
        float(served.base_score),
    )


def reason_list(
    contributions: Mapping[str, np.ndarray],
    row: int,
    categories: Mapping[str, Sequence[str]],
    *,
    below_base: bool = False,
) -> tuple[list[tuple[str, float]], list[str]]:
    """(party, contribution) largest first (ties by party name, so replies are repeatable),
    and the categories of those that raised the risk.

    ``below_base``: the score is below the base points; a person then always gets a reason,
    so when no party's contribution is positive the categories of the largest one are given.
    """
    ranked = sorted(
        ((p, float(c[row])) for p, c in contributions.items()), key=lambda x: (-x[1], x[0])
    )
    cats: list[str] = []
    for party, value in ranked:
        if value > 1e-12:
            cats += [c for c in categories.get(party, [party]) if c not in cats]
    if not cats and below_base and ranked:
        cats = list(dict.fromkeys(categories.get(ranked[0][0], [ranked[0][0]])))
    return ranked, cats[:MAX_REASONS]


TIE_RESOLUTION = 1e-3
"""Points closer than this are one score: a ``private`` score carries CKKS noise (~1e-5 points),
so two enterprises on the same leaves differ in the last digits; they are shown as a tie and
ranked by USCC like exact ties, never by the noise."""


def tie_key(points: np.ndarray) -> np.ndarray:
    """Points on the tie grid (``TIE_RESOLUTION``): what ranking and tie marks compare."""
    return np.round(np.asarray(points, dtype=np.float64) / TIE_RESOLUTION)


def tied(points: np.ndarray) -> np.ndarray:
    """Per score: another score of the same reply has equal points, to ``TIE_RESOLUTION``
    (shown as a tie)."""
    if points.size == 0:
        return np.zeros(0, dtype=bool)
    _, inverse, counts = np.unique(tie_key(points), return_inverse=True, return_counts=True)
    return np.asarray(counts[inverse] > 1)


def _below_base(scores: Scores, k: int) -> bool:
    return bool(scores.margin[k] > scores.base_margin)


@dataclass
class HolderAnswer:
    statuses: list[str]
    reach: np.ndarray  # bool (n_ok, leaves)
    categories: list[str]
    auth_ids: list[str]  # per code: the authorisation the holder answered under ("" if none)


@dataclass
class _Batch:
    """What every source said about a batch of codes (before combining)."""

    status: np.ndarray  # object: "ok" or "<source>:<reason>" per code
    rows: np.ndarray  # the bank's table row per code (-1: none)
    reach: dict[str, np.ndarray]  # holder -> bool (codes, leaves)
    categories: dict[str, Sequence[str]]  # party -> data categories (reason categories)
    auth_ids: list[str]  # per code: "<holder>:<auth id>,..." the holders answered under
    totals: np.ndarray | None = None  # private mode: (codes, 1 + holders) decrypted block sums


def _list_every_code(
    reply: bank_pb2.ScoreBatchReply,
    codes: list[str],
    batch: _Batch,
    good: np.ndarray,
    scores: Scores,
) -> None:
    """Every code in the given order, with its status and (if scored) its score."""
    position = {int(g): k for k, g in enumerate(good)}
    ties = tied(scores.points)
    for at, code in enumerate(codes):
        k = position.get(at)
        item = reply.enterprises.add(uscc=code, status=str(batch.status[at]))
        if k is not None:
            item.probability_default = float(scores.probability[k])
            item.points = float(scores.points[k])
            item.tie = bool(ties[k])
            item.reason_categories.extend(
                reason_list(
                    scores.contributions,
                    k,
                    batch.categories,
                    below_base=_below_base(scores, k),
                )[1]
            )


def _list_above(
    reply: bank_pb2.ScoreBatchReply,
    codes: list[str],
    batch: _Batch,
    good: np.ndarray,
    scores: Scores,
    *,
    threshold: float,
    limit: int,
) -> None:
    """The whitelist: scored codes with points >= ``threshold``, highest first, at most
    ``limit`` (0: all)."""
    keep = np.flatnonzero(scores.points >= threshold) if math.isfinite(threshold) else None
    order = np.arange(good.size) if keep is None else keep
    # Highest points first; equal points by USCC, so the same request ranks the same way.
    listed = np.asarray([codes[good[j]] for j in order], dtype=object)
    order = order[np.lexsort((listed, -tie_key(scores.points[order])))] if order.size else order
    ties = tied(scores.points[order])
    if limit:
        order, ties = order[:limit], ties[:limit]
    for j, tie in zip(order, ties, strict=True):
        reply.enterprises.add(
            uscc=codes[good[j]],
            status="ok",
            probability_default=float(scores.probability[j]),
            points=float(scores.points[j]),
            tie=bool(tie),
            reason_categories=reason_list(
                scores.contributions,
                int(j),
                batch.categories,
                below_base=_below_base(scores, int(j)),
            )[1],
        )


def joined_ids(ids: Sequence[str], limit: int = 128) -> str:
    """``holder:auth_id`` pairs for one audit subject row, as many as fit its 128 characters
    (each holder's own record names its authorisation in full)."""
    out = ""
    for item in ids:
        candidate = f"{out},{item}" if out else item
        if len(candidate) > limit:
            break
        out = candidate
    return out


class BankScorer:
    """The bank's half of scoring, driven by ``BankServicer``'s Score/ScoreBatch/Verify.

    ``table``/``schema``: the bank's validated table (indexed by USCC); ``holders``: the
    node's persistent ``DataHolder`` clients; ``models``: the served-model cache (default one
    over ``models_dir`` and the default registry).
    """

    def __init__(
        self,
        *,
        node_id: str,
        table: pd.DataFrame,
        schema: PartySchema,
        holders: Mapping[str, PeerBase],
        models_dir: Path,
        as_of: Any = None,
        tracking: TrackingConfig | None = None,
        models: ModelCache | None = None,
    ):
        self.node_id = node_id
        self.table = table
        self.holders = dict(holders)
        values, names = encode_table(table, schema, as_of=as_of)
        self.codes = np.asarray(table.index, dtype=object)
        self.row_of = {code: i for i, code in enumerate(table.index)}
        self.regions = np.array([c[2:8] for c in table.index], dtype="<U6")
        self.industry = (
            table["industry"].astype("string").fillna("").to_numpy(dtype=object)
            if "industry" in table.columns
            else np.full(len(table), "", dtype=object)
        )
        self.models = models or FamilyModelCache(  # every family: parties.bank.served_linear
            features=pd.DataFrame(values, columns=names),
            codes=list(table.index),
            models_dir=models_dir,
            tracking=tracking,
        )
        self.categories = {BANK: ["bank"]}
        self._private_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(
            max_workers=max(4, 4 * len(self.holders)), thread_name_prefix="score"
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- asking the holders ------------------------------------------------------------------
    def _ask(
        self,
        served: ServedModel,
        purpose: str,
        codes: Sequence[str],
        *,
        single: bool,
        auth_ids: Sequence[str] = (),
        request_id: str = "",
        part: int = 0,
    ) -> dict[str, Future[HolderAnswer]]:
        """One ``ScoreReach`` per holder the model uses, concurrently; ``request_id``: the
        client's, from which each call's is derived (``part``: the chunk of a batch)."""

        def one(holder: str) -> HolderAnswer:
            request = holder_pb2.ScoreReachRequest(
                meta=new_meta(
                    purpose,
                    job_id=served.job_id,
                    model_id=served.model_id,
                    request_id=child_request_id(request_id, holder, part),
                ),
                part_sha256=served.digests.get(holder, ""),
                auth_ids=auth_ids,
            )
            if single:
                request.uscc = codes[0]
            else:
                request.usccs.extend(codes)
            reply = self.holders[holder].call("ScoreReach", request)
            statuses = list(reply.statuses)
            n_ok = statuses.count("ok")
            n_leaves = int(served.weights.size)
            if len(statuses) != len(codes) or reply.n_leaves != n_leaves:
                raise PeerError(
                    holder,
                    "ScoreReach",
                    "answer does not fit the request/model",
                    code=FAILED_PRECONDITION,
                )
            bits = np.unpackbits(np.frombuffer(reply.reach, dtype=np.uint8))
            if bits.size < n_ok * n_leaves or bits[n_ok * n_leaves :].any():
                raise PeerError(
                    holder, "ScoreReach", "reach mask has the wrong size", code=FAILED_PRECONDITION
                )
            reach = bits[: n_ok * n_leaves].astype(bool).reshape(n_ok, n_leaves)
            ids = list(reply.auth_ids) if len(reply.auth_ids) == len(codes) else [""] * len(codes)
            return HolderAnswer(statuses, reach, list(reply.categories), ids)

        missing = [h for h in served.owners if h not in self.holders]
        if missing:
            raise ScoringError(
                f"model {served.model_id} needs holder(s) {missing}, not configured at this bank"
            )
        return {h: self._pool.submit(one, h) for h in served.owners}

    @staticmethod
    def _raise_for(holder: str, exc: BaseException) -> None:
        """Answer the client with the holder's failure, its status class kept (``relay_failure``:
        only a holder that did not answer becomes UNAVAILABLE), the holder named once."""
        if isinstance(exc, PeerError):
            if exc.peer != holder:  # raised about another node: name the one we asked
                exc = PeerError(holder, exc.operation, exc.detail, code=exc.code)
            raise relay_failure(exc, role="holder") from None
        raise exc

    # -- one enterprise ----------------------------------------------------------------------
    def score(
        self,
        code: str,
        *,
        served: ServedModel,
        purpose: str,
        auth_ids: Sequence[str] = (),
        request_id: str = "",
    ) -> bank_pb2.ScoreReply:
        """``bank_pb2.ScoreReply``; a holder's refusal or failure is relayed (``_raise_for``).

        ``served``: ``self.models.get(name, version_or_alias)``; ``auth_ids``: the
        enterprise's authorisations (``ScoreRequest.auth_ids``), given to every holder, which
        then answers only under one of them. Each source names the authorisation it answered
        under."""
        if isinstance(served, ServedLinear):  # scorecard / LR: parties.bank.scoring_linear
            from parties.bank import scoring_linear

            return scoring_linear.score_one(
                self,
                code,
                served=served,
                purpose=purpose,
                auth_ids=auth_ids,
                request_id=request_id,
            )
        code = uscc_codes.normalise(code)
        bad = uscc_codes.problem(code)
        if bad is not None:
            raise invalid(f"uscc {prefix(code)}: {bad}")
        auth_ids = check_auth_ids(auth_ids, "ScoreRequest.auth_ids")
        reply = bank_pb2.ScoreReply(
            uscc=code,
            model_name=served.name,
            model_version=served.version,
            model_family=MODEL_FAMILY,
            serving_mode=served.serving_mode,
        )
        row = self.row_of.get(code)
        if row is None:  # the holders are not even asked: nothing to score with
            reply.sources.add(node_id=self.node_id, status="no-data")
            reply.missing_sources.append(self.node_id)
            return reply
        reply.sources.add(node_id=self.node_id, status="ok")
        answers: dict[str, HolderAnswer] = {}
        totals = None
        if served.serving_mode == "private":  # the bank decrypts totals only
            answers, totals = self._private_chain(
                served, purpose, [code], np.array([row]), auth_ids=auth_ids, request_id=request_id
            )
        else:
            futures = self._ask(
                served, purpose, [code], single=True, auth_ids=auth_ids, request_id=request_id
            )
            for holder, future in futures.items():
                try:
                    answers[holder] = future.result()
                except BaseException as exc:
                    for other in futures.values():
                        other.cancel()
                    self._raise_for(holder, exc)
        for holder, answer in answers.items():
            reply.sources.add(
                node_id=holder, status=answer.statuses[0], auth_id=answer.auth_ids[0][:64]
            )
            if answer.statuses[0] != "ok":
                reply.missing_sources.append(holder)
        if reply.missing_sources:
            return reply
        if totals is not None:
            scores = private_scores(served, totals)
        else:
            reaches = {BANK: served.bank_reach[[row]], **{h: a.reach for h, a in answers.items()}}
            scores = combine(served, reaches)
        categories = {**self.categories, **{h: a.categories for h, a in answers.items()}}
        ranked, cats = reason_list(
            scores.contributions, 0, categories, below_base=_below_base(scores, 0)
        )
        reply.scored = True
        reply.probability_default = float(scores.probability[0])
        reply.points = float(scores.points[0])
        reply.reason_categories.extend(cats)
        for party, value in ranked:
            name = self.node_id if party == BANK else party
            reply.reasons.add(source=name, categories=categories.get(party, []), contribution=value)
        return reply

    # -- many enterprises --------------------------------------------------------------------
    def candidates(self, *, region: str, industry: str) -> list[str]:
        """The bank's applicants in a region (code prefix of USCC positions 3-8) or industry."""
        region, industry = region.strip(), industry.strip().upper()
        if bool(region) == bool(industry):
            raise invalid("give exactly one of region (code prefix), industry (section) or usccs")
        if region:
            if not region.isdigit() or len(region) > 6:
                raise invalid(f"region {region!r} must be 1-6 digits of a GB/T 2260 code")
            mask = np.char.startswith(self.regions, region)
        else:
            if len(industry) != 1 or not industry.isalpha():
                raise invalid(f"industry {industry!r} must be a GB/T 4754 section letter")
            mask = self.industry == industry
        return [str(c) for c in self.codes[mask]]

    def score_batch(
        self,
        *,
        served: ServedModel,
        purpose: str,
        region: str = "",
        industry: str = "",
        usccs: Sequence[str] = (),
        threshold: float = 0.0,
        limit: int = 0,
        subjects: list[SubjectAccess] | None = None,
        request_id: str = "",
    ) -> bank_pb2.ScoreBatchReply:
        """``bank_pb2.ScoreBatchReply``. Region/industry: the whitelist (points >= threshold,
        highest first, at most ``limit``). ``usccs``: every code, in the given order, with its
        status and (if scored) its score; the threshold is not applied. ``subjects``: filled
        with one audit row per candidate (the bank's record of whom the batch was about)."""
        if isinstance(served, ServedLinear):  # scorecard / LR: parties.bank.scoring_linear
            from parties.bank import scoring_linear

            return scoring_linear.score_batch(
                self,
                served=served,
                purpose=purpose,
                region=region,
                industry=industry,
                usccs=usccs,
                threshold=threshold,
                limit=limit,
                subjects=subjects,
                request_id=request_id,
            )
        listed = bool(usccs)
        if listed:
            if region.strip() or industry.strip():
                raise invalid("give either usccs or a region/industry, not both")
            codes = [uscc_codes.normalise(str(c)) for c in usccs]
        else:
            codes = self.candidates(region=region, industry=industry)
        batch = self._batch_reach(served, purpose, codes, request_id=request_id)
        if subjects is not None:
            subjects.extend(
                SubjectAccess(
                    code[:64],
                    batch.auth_ids[i],
                    "allow" if batch.status[i] == "ok" else f"refused:{batch.status[i]}"[:64],
                )
                for i, code in enumerate(codes)
            )
        good = np.flatnonzero(batch.status == "ok")
        reply = bank_pb2.ScoreBatchReply(
            model_name=served.name,
            model_version=served.version,
            model_family=MODEL_FAMILY,
            serving_mode=served.serving_mode,
            candidates=len(codes),
            scored=good.size,
        )
        reasons = {str(s) for s in batch.status if s != "ok"}
        for r in sorted(reasons):
            reply.excluded[r] = int((batch.status == r).sum())
        if batch.totals is not None:
            scores = private_scores(served, batch.totals[good])
        else:
            scores = combine(
                served,
                {
                    BANK: served.bank_reach[batch.rows[good]],
                    **{h: m[good] for h, m in batch.reach.items()},
                },
            )
        if listed:
            _list_every_code(reply, codes, batch, good, scores)
        else:
            _list_above(reply, codes, batch, good, scores, threshold=threshold, limit=limit)
        return reply

    def _batch_reach(
        self, served: ServedModel, purpose: str, codes: list[str], *, request_id: str = ""
    ) -> _Batch:
        """Every holder's reach for ``codes`` it admits, in chunks of ``BATCH_CHUNK``; a code
        any source cannot score gets ``<source>:<reason>`` as its status."""
        n = len(codes)
        status = np.full(n, "ok", dtype=object)
        rows = np.array([self.row_of.get(c, -1) for c in codes], dtype=np.int64)
        for i in np.flatnonzero(rows < 0):
            bad = uscc_codes.problem(codes[i])
            status[i] = f"{self.node_id}:{'invalid-uscc' if bad else 'no-data'}"
        ask = np.flatnonzero(rows >= 0)
        if served.serving_mode == "private":
            return self._batch_private(served, purpose, codes, status, rows, ask, request_id)
        chunks = [ask[i : i + BATCH_CHUNK] for i in range(0, ask.size, BATCH_CHUNK)]
        pending = [
            (
                chunk,
                self._ask(
                    served,
                    purpose,
                    [codes[i] for i in chunk],
                    single=False,
                    request_id=request_id,
                    part=k,
                ),
            )
            for k, chunk in enumerate(chunks)
        ]
        reach: dict[str, np.ndarray] = {
            h: np.zeros((n, served.weights.size), dtype=bool) for h in served.owners
        }
        categories: dict[str, Sequence[str]] = dict(self.categories)
        covered: list[list[str]] = [[] for _ in range(n)]
        for chunk, futures in pending:
            for holder, future in futures.items():
                try:
                    answer = future.result()
                except BaseException as exc:
                    self._raise_for(holder, exc)
                categories[holder] = answer.categories
                got = np.asarray(answer.statuses, dtype=object)
                ok = got == "ok"
                reach[holder][chunk[ok]] = answer.reach
                for i, s in zip(chunk[~ok], got[~ok], strict=True):
                    if status[i] == "ok":
                        status[i] = f"{holder}:{s}"
                for i, auth_id in zip(chunk, answer.auth_ids, strict=True):
                    if auth_id:
                        covered[i].append(f"{holder}:{auth_id}")
        return _Batch(
            status=status,
            rows=rows,
            reach=reach,
            categories=categories,
            auth_ids=[joined_ids(ids) for ids in covered],
        )

    # -- private mode (docs/scoring.md, "Serving modes") -------------------------------------
    def _private_state(
        self, served: ServedModel, purpose: str, request_id: str, *, renew: bool = False
    ) -> _PrivateState:
        """Per served version, once: the bank's CKKS key, the per-leaf values (weights and each
        holder's path credits), and every holder's setup (public context in, X25519 key out)."""
        with self._private_lock:
            state = served.private
            if state is not None and not renew:
                return state
            owners = list(served.owners)
            if not owners:
                raise ScoringError(f"model {served.model_id}: no holder to score privately with")
            missing = [h for h in owners if h not in self.holders]
            if missing:
                raise ScoringError(
                    f"model {served.model_id} needs holder(s) {missing}, not configured here"
                )
            keys = BankKeys(len(owners))
            credits, root_total = path_credits(served.clf.trees_, [BANK, *owners])
            values = np.stack([served.weights, *(credits[h] for h in owners)])
            public: dict[str, bytes] = {}
            for holder in owners:
                try:
                    reply = self.holders[holder].call(
                        "PrivateScoreSetup",
                        holder_pb2.PrivateScoreSetupRequest(
                            meta=new_meta(
                                purpose,
                                job_id=served.job_id,
                                model_id=served.model_id,
                                request_id=child_request_id(request_id, holder, 0) + ".setup",
                            ),
                            part_sha256=served.digests.get(holder, ""),
                            ckks_context=keys.public,
                        ),
                    )
                except PeerError as exc:
                    self._raise_for(holder, exc)
                if reply.context_sha256 != keys.digest or reply.n_leaves != served.weights.size:
                    raise PeerError(
                        holder,
                        "PrivateScoreSetup",
                        "setup answer does not fit the model",
                        code=FAILED_PRECONDITION,
                    )
                public[holder] = bytes(reply.x25519_public_key)
            state = _PrivateState(keys, values, root_total, public)
            # encryptions of zero made ahead by a niced worker: a score adds its plaintext
            layout = Layout(
                n_leaves=int(served.weights.size), n_blocks=1 + len(owners), slots=keys.slots
            )
            keys.keep_zeros_ready()
            if keys.zeros is not None:
                keys.zeros.prepare(layout.per_vector * layout.lane)
            old = served.private
            if old is not None and old.keys.zeros is not None:
                old.keys.zeros.close()  # a chunk still on the old key encrypts inline
            served.private = state
            return state

    def _private_chain(
        self,
        served: ServedModel,
        purpose: str,
        codes: Sequence[str],
        rows: np.ndarray,
        *,
        single: bool = True,
        auth_ids: Sequence[str] = (),
        request_id: str = "",
        part: int = 0,
    ) -> tuple[dict[str, HolderAnswer], np.ndarray]:
        """The chain bank -> holder 1 -> ... -> holder H -> bank for ``codes`` (the bank's
        ``rows``): each holder's statuses, and the decrypted (n, 1 + H) block sums. A holder
        that lost its setup (restarted) is set up again once."""
        for attempt in (0, 1):
            state = self._private_state(served, purpose, request_id, renew=attempt == 1)
            try:
                return self._private_turns(
                    served, state, purpose, codes, rows, single, auth_ids, request_id, part
                )
            except PeerError as exc:
                if attempt or exc.code != FAILED_PRECONDITION or "private-setup" not in exc.detail:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _private_turns(
        self,
        served: ServedModel,
        state: _PrivateState,
        purpose: str,
        codes: Sequence[str],
        rows: np.ndarray,
        single: bool,
        auth_ids: Sequence[str],
        request_id: str,
        part: int,
    ) -> tuple[dict[str, HolderAnswer], np.ndarray]:
        owners = list(served.owners)
        layout = Layout(
            n_leaves=int(served.weights.size), n_blocks=1 + len(owners), slots=state.keys.slots
        )
        values = state.values[None, :, :] * served.bank_reach[rows][:, None, :]
        payload = state.keys.encrypt(layout, values)
        answers: dict[str, HolderAnswer] = {}
        for k, holder in enumerate(owners):
            before = owners[k - 1] if k else ""
            after = owners[k + 1] if k + 1 < len(owners) else ""
            request = holder_pb2.PrivateScoreRequest(
                meta=new_meta(
                    purpose,
                    job_id=served.job_id,
                    model_id=served.model_id,
                    request_id=child_request_id(request_id, holder, part),
                ),
                part_sha256=served.digests.get(holder, ""),
                auth_ids=auth_ids,
                context_sha256=state.keys.digest,
                n_blocks=layout.n_blocks,
                payload=payload,
                previous_holder=before,
                previous_public_key=state.public.get(before, b""),
                next_holder=after,
                next_public_key=state.public.get(after, b""),
            )
            if single:
                request.uscc = codes[0]
            else:
                request.usccs.extend(codes)
            try:
                reply = self.holders[holder].call("PrivateScore", request)
            except PeerError as exc:
                if exc.code == FAILED_PRECONDITION and "private-setup" in exc.detail:
                    raise
                self._raise_for(holder, exc)
            if len(reply.statuses) != len(codes):
                raise relay_failure(
                    PeerError(
                        holder,
                        "PrivateScore",
                        "answer does not fit the request",
                        code=FAILED_PRECONDITION,
                    ),
                    role="holder",
                )
            ids = list(reply.auth_ids) if len(reply.auth_ids) == len(codes) else [""] * len(codes)
            answers[holder] = HolderAnswer(
                list(reply.statuses), np.zeros((0, 0), dtype=bool), list(reply.categories), ids
            )
            payload = bytes(reply.payload)
        try:
            totals = state.keys.totals(layout, payload, len(codes))
        except PrivateScoringError as exc:
            raise ScoringError(f"model {served.model_id}: {exc}") from None
        return answers, np.column_stack([totals, np.full(len(codes), state.root_total)])

    def _batch_private(
        self,
        served: ServedModel,
        purpose: str,
        codes: list[str],
        status: np.ndarray,
        rows: np.ndarray,
        ask: np.ndarray,
        request_id: str,
    ) -> _Batch:
        """``_batch_reach`` in private mode: chunks through the chain, each as many enterprises
        as fit ``PRIVATE_PAYLOAD`` bytes of ciphertexts (a message stays far below 16 MB), up to
        ``PRIVATE_IN_FLIGHT`` chunks at once (a pipeline: the bank encrypts chunk k+1 while
        holder 1 multiplies chunk k and holder 2 chunk k-1, each in its own process)."""
        n = len(codes)
        state = self._private_state(served, purpose, request_id)
        layout = Layout(
            n_leaves=int(served.weights.size),
            n_blocks=1 + len(served.owners),
            slots=state.keys.slots,
        )
        size = layout.per_vector * max(1, PRIVATE_PAYLOAD // state.keys.vector_bytes)
        totals = np.zeros((n, 2 + len(served.owners)))
        categories: dict[str, Sequence[str]] = dict(self.categories)
        covered: list[list[str]] = [[] for _ in range(n)]
        chunks = [ask[start : start + size] for start in range(0, ask.size, size)]

        def run(k: int) -> tuple[dict[str, HolderAnswer], np.ndarray]:
            return self._private_chain(
                served,
                purpose,
                [codes[i] for i in chunks[k]],
                rows[chunks[k]],
                single=False,
                request_id=request_id,
                part=k,
            )

        pending: deque[Future[tuple[dict[str, HolderAnswer], np.ndarray]]] = deque()
        for k in range(min(PRIVATE_IN_FLIGHT, len(chunks))):
            pending.append(self._pool.submit(run, k))
        for k, chunk in enumerate(chunks):
            try:
                answers, got = pending.popleft().result()
            except BaseException:
                for other in pending:
                    other.cancel()
                raise
            if k + PRIVATE_IN_FLIGHT < len(chunks):
                pending.append(self._pool.submit(run, k + PRIVATE_IN_FLIGHT))
            totals[chunk] = got
            for holder, answer in answers.items():
                categories[holder] = answer.categories
                for i, s, auth_id in zip(chunk, answer.statuses, answer.auth_ids, strict=True):
                    if s != "ok" and status[i] == "ok":
                        status[i] = f"{holder}:{s}"
                    if auth_id:
                        covered[i].append(f"{holder}:{auth_id}")
        return _Batch(
            status=status,
            rows=rows,
            reach={},
            categories=categories,
            auth_ids=[joined_ids(ids) for ids in covered],
            totals=totals,
        )

    # -- verification (proxied) --------------------------------------------------------------
    def verify(
        self, *, holder: str, code: str, predicate_json: str, purpose: str, request_id: str = ""
    ) -> bank_pb2.BankVerifyReply:
        """The holder's yes/no answer; its failure relayed with its status class kept."""
        peer = self.holders.get(holder)
        if peer is None:
            raise invalid(
                f"holder {holder!r} is not configured at this bank "
                f"(configured: {', '.join(sorted(self.holders)) or 'none'})"
            )
        try:
            answer = peer.call(
                "Verify",
                holder_pb2.VerifyRequest(
                    meta=new_meta(purpose, request_id=child_request_id(request_id, holder)),
                    uscc=code,
                    predicate_json=predicate_json,
                ),
            )
        except PeerError as exc:
            self._raise_for(holder, exc)
        return bank_pb2.BankVerifyReply(holder=holder, answer=answer.answer)


# -------------------------------------------------------------------------------------------
# the pyfunc's entry point


def score_codes(
    endpoint: Mapping[str, Any], model_name: str, version: str, codes: list[str]
) -> pd.DataFrame:
    """Score ``codes`` with ``model_name``/``version`` through the live bank node.

    ``endpoint``: ``{"node_config": "<bank node.yaml>"}`` (recorded with the version), or the
    ``XINYIDAI_BANK_CONFIG`` environment variable. One row per code, in order: ``uscc``,
    ``status`` (``ok`` or ``<source>:<reason>``), ``probability_default``, ``points``
    (NaN when not scored), ``reason_categories`` (comma-separated), ``model_name``,
    ``model_version``. A refusal of the whole request (purpose, model part) raises.
    """
    import os

    from parties.config import load_node_config
    from parties.node import operator_client

    path = endpoint.get("node_config") or os.environ.get("XINYIDAI_BANK_CONFIG")
    if not path:
        raise ScoringError(
            "the model's scoring endpoint names no bank node config (node_config) and "
            "XINYIDAI_BANK_CONFIG is not set"
        )
    config = load_node_config(Path(str(path)))
    purpose = str(endpoint.get("purpose") or "financing")
    with operator_client(config) as client:
        reply = client.call(
            "ScoreBatch",
            bank_pb2.ScoreBatchRequest(
                meta=new_meta(purpose, model_id=f"{model_name}/{version}"),
                model_name=model_name,
                model_ref=str(version),
                usccs=codes,
            ),
        )
    rows = scored_rows(reply)
    return pd.DataFrame(rows, columns=list(rows[0]) if rows else None)


def scored_rows(reply: bank_pb2.ScoreBatchReply) -> list[dict[str, Any]]:
    """One plain row per enterprise of a batch reply; a number the reply does not carry (the
    enterprise was not scored) is NaN, never 0."""

    def number(e: bank_pb2.ScoredEnterprise, name: str) -> float:
        return float(getattr(e, name)) if e.HasField(name) else math.nan

    return [
        {
            "uscc": e.uscc,
            "status": e.status,
            "probability_default": number(e, "probability_default"),
            "points": number(e, "points"),
            "reason_categories": ",".join(e.reason_categories),
            "tie": bool(e.tie),
            "model_name": reply.model_name,
            "model_version": reply.model_version,
            "model_family": reply.model_family,
            "serving_mode": reply.serving_mode or "fast",
        }
        for e in reply.enterprises
    ]


def reply_dict(reply: Message) -> dict[str, Any]:
    """A reply as plain JSON-able data (CLI output)."""
    from google.protobuf.json_format import MessageToDict

    return json.loads(json.dumps(MessageToDict(reply, preserving_proto_field_name=True)))


__all__ = [
    "BankScorer",
    "ModelCache",
    "ScoringError",
    "ServedModel",
    "combine",
    "score_codes",
]
