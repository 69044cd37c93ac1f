"""Scoring a scorecard or logistic-regression version (``ServedLinear``) through the holders.

Why apart from SecureBoost scoring (``parties.bank.scoring``): a linear model's holders answer
with numbers, not reach masks. Each holder of the model's LR job answers once, concurrently:
``LinearHolder.Predict`` (its linear predictor u_k, fixed point mod 2^64 and masked pairwise
with the other holders) or, for a scorecard, one ``ScorecardHolder.ScorePoints`` with
``by_category`` and ``with_predictor`` (the same u_k, its points masked the same way, and its
points summed per data category, for reason codes): one call per holder and score. The masks cancel only in the sum over holders, so the bank learns the total linear
predictor and the total points — with one holder, that holder's own part (inherent: the bank
knows its own part and the total). Holders address a linear model's rows by positions in the
model's PSI alignment, so only enterprises of that alignment can be scored (the others are
``<bank>:not-aligned``).

Every holder answer passes the holder gate (``models.base.HolderModule.gate``): outside the
training job's one evaluation, each enterprise's authorisation for this bank, the purpose and
the categories the model reads. One refused enterprise refuses the whole answer, so a batch is
first filtered with the holders' own per-enterprise answers (``DataHolder.CheckAuthorisation``):
refused enterprises are listed as excluded with the reason instead of failing the batch.

Reasons: scorecard — the data categories that lost the most points against their maximum
(``models.scorecard.reason_codes``); LR — the bank's own part against the holders' combined part
of the linear predictor (the only split the masks reveal), the parts that raised the risk.
"""

from __future__ import annotations

import copy
import math
import secrets
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message

from federation.errors import PeerError
from federation.transport.base import FAILED_PRECONDITION, PeerRefused, invalid, new_meta
from federation.transport.calls import SubjectAccess, child_request_id, prefix
from models.linear.backends import CONTRIBUTION_SCALE_BITS, BackendError, sum_contributions
from models.linear.reference import sigmoid
from models.scorecard import PdoScaling, combine_categories, reason_codes
from parties.bank.served import ScoringError
from parties.bank.served_linear import BANK_CATEGORY, ServedLinear
from parties.consent import check_auth_ids
from parties.data import uscc as uscc_codes
from protos import bank_pb2, holder_pb2, linear_pb2, scorecard_pb2

if TYPE_CHECKING:
    from federation.transport.client import PeerBase
    from parties.bank.scoring import BankScorer

__all__ = ["SERVING_MODE", "score_batch", "score_one"]

SERVING_MODE = "private"
"""Only masked totals (and category-level points for reasons) reach the bank."""
MAX_REASONS = 4
CHUNK = 4096
"""Enterprises per holder call in a batch."""

_VIEWS_LOCK = threading.Lock()


def _service_peer(scorer: BankScorer, holder: str, service: ServiceDescriptor) -> PeerBase:
    """A client of ``service`` at ``holder`` on the node's persistent connection (same channel,
    identity and audit log as its ``DataHolder`` client); built once per (holder, service)."""
    views: dict[tuple[str, str], PeerBase] = scorer.__dict__.setdefault("_service_peers", {})
    key = (holder, service.name)
    with _VIEWS_LOCK:
        found = views.get(key)
        if found is None:
            base = scorer.holders[holder]
            if not hasattr(base, "_prefix"):
                raise ScoringError(
                    f"holder {holder!r}: its client cannot reach {service.name} on the same "
                    "connection (give the scorer a gRPC client)"
                )
            found = copy.copy(base)
            found.service = service
            found.methods = {m.name: m for m in service.methods}
            found._reply = threading.local()
            found._prefix = f"/{service.full_name}/"  # type: ignore[attr-defined]
            views[key] = found
    return found


LINEAR_SERVICE = linear_pb2.DESCRIPTOR.services_by_name["LinearHolder"]
POINTS_SERVICE = scorecard_pb2.DESCRIPTOR.services_by_name["ScorecardHolder"]


@dataclass
class _Answers:
    """What every holder said about n aligned rows, combined."""

    u: np.ndarray  # Σ holders' linear predictors
    points: np.ndarray | None = None  # Σ holders' points (scorecard)
    category_points: dict[str, np.ndarray] = field(default_factory=dict)
    category_max: dict[str, float] = field(default_factory=dict)
    category_owner: dict[str, str] = field(default_factory=dict)


@dataclass
class LinearScores:
    margin: np.ndarray
    probability: np.ndarray
    points: np.ndarray
    reasons: list[list[tuple[str, list[str], float]]]  # per row: (source, categories, value)
    categories: list[list[str]]  # per row: reason categories, most important first


def _decode(reply: Any, n: int, holder: str, masked: bool, what: str) -> bytes:
    if reply.scale_bits != CONTRIBUTION_SCALE_BITS or len(reply.values) != 8 * n:
        raise PeerError(holder, what, "answered the wrong number of rows", code=FAILED_PRECONDITION)
    if bool(reply.masked) != masked:
        raise PeerError(holder, what, "answered with the wrong masking", code=FAILED_PRECONDITION)
    return bytes(reply.values)


def _ask_holders(
    scorer: BankScorer,
    served: ServedLinear,
    purpose: str,
    positions: np.ndarray,
    *,
    request_id: str,
    part: int = 0,
) -> _Answers:
    """Every holder's answers for ``positions``, concurrently; a failure relayed naming it."""
    n = int(positions.size)
    rows = [int(p) for p in positions]
    masked = len(served.holders) > 1
    nonce = secrets.token_bytes(16)
    card = served.family == "scorecard"

    def meta(holder: str, k: int) -> Any:
        return new_meta(
            purpose,
            job_id=served.lr_job_id,
            model_id=served.model_id,
            request_id=child_request_id(request_id, holder, part * 4 + k),
        )

    def call(holder: str, service: ServiceDescriptor, method: str, request: Message) -> Any:
        return _service_peer(scorer, holder, service).call(method, request)

    jobs: dict[tuple[str, str], Future[Any]] = {}
    for h in served.holders:
        if h not in scorer.holders:
            raise ScoringError(
                f"model {served.model_id} needs holder {h!r}, not configured at this bank"
            )
        if card:  # one call: linear predictor, masked total points, category points (reasons)
            points = scorecard_pb2.ScorePointsRequest(
                meta=meta(h, 1),
                rows=rows,
                alignment_id=served.alignment_id,
                nonce=nonce,
                by_category=True,
                with_predictor=True,
            )
            jobs[(h, "ScorePoints")] = scorer._pool.submit(
                call, h, POINTS_SERVICE, "ScorePoints", points
            )
        else:
            predict = linear_pb2.LinearPredictRequest(
                meta=meta(h, 0), rows=rows, alignment_id=served.alignment_id, nonce=nonce
            )
            jobs[(h, "Predict")] = scorer._pool.submit(call, h, LINEAR_SERVICE, "Predict", predict)
    replies: dict[tuple[str, str], Any] = {}
    for (holder, what), future in jobs.items():
        try:
            replies[(holder, what)] = future.result()
        except BaseException as exc:
            for other in jobs.values():
                other.cancel()
            scorer._raise_for(holder, exc)

    def predictor(h: str) -> bytes:
        if not card:
            return _decode(replies[(h, "Predict")], n, h, masked, "Predict")
        got = replies[(h, "ScorePoints")]
        _decode(got, n, h, masked, "ScorePoints")  # scale and masking, shared with the points
        if len(got.predictor) != 8 * n:
            raise PeerError(
                h, "ScorePoints", "answered without its linear predictor", code=FAILED_PRECONDITION
            )
        return bytes(got.predictor)

    try:
        u = sum_contributions([predictor(h) for h in served.holders], n, "Predict")
        answers = _Answers(u=np.asarray(u, dtype=np.float64))
        if card:
            answers.points = np.asarray(
                sum_contributions(
                    [
                        _decode(replies[(h, "ScorePoints")], n, h, masked, "ScorePoints")
                        for h in served.holders
                    ],
                    n,
                    "ScorePoints",
                ),
                dtype=np.float64,
            )
            for h in served.holders:
                for item in replies[(h, "ScorePoints")].categories:
                    got = np.asarray(item.points, dtype=np.float64)
                    if got.size != n:
                        raise PeerError(
                            h,
                            "ScorePoints",
                            "answered the wrong number of rows",
                            code=FAILED_PRECONDITION,
                        )
                    cat = str(item.category)
                    answers.category_points = combine_categories(
                        answers.category_points, {cat: got}
                    )
                    answers.category_max[cat] = answers.category_max.get(cat, 0.0) + float(
                        item.max_points
                    )
                    answers.category_owner.setdefault(cat, h)
    except PeerError as exc:
        scorer._raise_for(exc.peer, exc)
    except BackendError as exc:
        raise ScoringError(f"model {served.model_id}: {exc}") from None
    return answers


def _evaluate(
    scorer: BankScorer,
    served: ServedLinear,
    purpose: str,
    positions: np.ndarray,
    *,
    request_id: str,
    part: int = 0,
) -> LinearScores:
    """Scores, probabilities and reasons of the aligned ``positions`` (all admitted)."""
    answers = _ask_holders(scorer, served, purpose, positions, request_id=request_id, part=part)
    bank_u = served.bank_u[positions]
    margin = bank_u + answers.u
    probability = np.asarray(sigmoid(margin), dtype=np.float64)
    reasons: list[list[tuple[str, list[str], float]]] = []
    cats: list[list[str]] = []
    if served.family == "scorecard":
        card = served.scorecard
        if card is None or answers.points is None:
            raise ScoringError(f"model {served.model_id}: no scorecard to score with")
        bank_bins_points = served.bank_points[positions] if served.bank_points is not None else None
        parts = [] if bank_bins_points is None else [bank_bins_points]
        parts.append(answers.points)
        # the same sum as Scorecard.score: base + the bank's points + the holders' total
        points = np.asarray(card.base_points + np.sum(parts, axis=0), dtype=np.float64)
        bank_cats = {c: v[positions] for c, v in served.bank_category_points.items()}
        by_cat = combine_categories(answers.category_points, bank_cats)
        maxima = dict(answers.category_max)
        for c, v in served.bank_category_max.items():
            maxima[c] = maxima.get(c, 0.0) + v
        owner = {**answers.category_owner, **{c: scorer.node_id for c in bank_cats}}
        codes = reason_codes(by_cat, maxima, k=MAX_REASONS) if by_cat else [[]] * positions.size
        for row in codes:
            cats.append([r.category for r in row])
            reasons.append([(owner.get(r.category, ""), [r.category], -r.points_lost) for r in row])
    else:
        points = np.asarray(PdoScaling().score(margin), dtype=np.float64)
        bank_part = bank_u - served.intercept
        holder_name = "+".join(served.holders)
        holder_cats = list(served.holders)
        for k in range(positions.size):
            ranked = sorted(
                [
                    (scorer.node_id, [BANK_CATEGORY], float(bank_part[k])),
                    (holder_name, holder_cats, float(answers.u[k])),
                ],
                key=lambda x: (-x[2], x[0]),
            )
            ranked = [r for r in ranked if r[1]]
            up = [c for r in ranked if r[2] > 1e-12 for c in r[1]]
            if not up and margin[k] > served.intercept and ranked:  # below the base points
                up = list(ranked[0][1])
            reasons.append(ranked)
            cats.append(list(dict.fromkeys(up))[:MAX_REASONS])
    return LinearScores(margin, probability, points, reasons, cats)


def _with_mode(reply: Message) -> None:
    if "serving_mode" in reply.DESCRIPTOR.fields_by_name:
        reply.serving_mode = SERVING_MODE  # type: ignore[attr-defined]


# -- one enterprise ------------------------------------------------------------------------------
def score_one(
    scorer: BankScorer,
    code: str,
    *,
    served: ServedLinear,
    purpose: str,
    auth_ids: Sequence[str] = (),
    request_id: str = "",
) -> bank_pb2.ScoreReply:
    """``Bank.Score`` for a scorecard or LR version; a holder's refusal is relayed naming it
    and the reason (PERMISSION_DENIED)."""
    code = uscc_codes.normalise(code)
    bad = uscc_codes.problem(code)
    if bad is not None:
        raise invalid(f"uscc {prefix(code)}: {bad}")
    if check_auth_ids(auth_ids, "ScoreRequest.auth_ids"):
        raise invalid(
            f"auth_ids are not supported for {served.family} versions yet ({served.model_id}): "
            "its holders answer under any valid authorisation they store"
        )
    reply = bank_pb2.ScoreReply(
        uscc=code, model_name=served.name, model_version=served.version, model_family=served.family
    )
    _with_mode(reply)
    if code not in scorer.row_of:
        reply.sources.add(node_id=scorer.node_id, status="no-data")
        reply.missing_sources.append(scorer.node_id)
        return reply
    position = served.positions.get(code)
    if position is None:  # holders key a linear model's rows by its alignment
        reply.sources.add(node_id=scorer.node_id, status="not-aligned")
        reply.missing_sources.append(scorer.node_id)
        return reply
    reply.sources.add(node_id=scorer.node_id, status="ok")
    scores = _evaluate(
        scorer, served, purpose, np.asarray([position], dtype=np.int64), request_id=request_id
    )
    for holder in served.holders:
        reply.sources.add(node_id=holder, status="ok")
    reply.scored = True
    reply.probability_default = float(scores.probability[0])
    reply.points = float(scores.points[0])
    reply.reason_categories.extend(scores.categories[0])
    for source, categories, value in scores.reasons[0]:
        reply.reasons.add(source=source, categories=categories, contribution=value)
    return reply


# -- many enterprises ----------------------------------------------------------------------------
_STATUS_WORDS = ("revoked", "expired", "not-yet-valid", "purpose", "category", "disputed")


def _status_of(exc: PeerRefused) -> str:
    """A holder's refusal of one enterprise as a short status word."""
    detail = exc.detail.lower()
    for word in _STATUS_WORDS:
        if word in detail:
            return word
    return "no-consent" if exc.refusal in ("consent", "policy", "") else exc.refusal[:32]


def _admitted(
    scorer: BankScorer,
    served: ServedLinear,
    purpose: str,
    codes: Sequence[str],
    *,
    request_id: str,
) -> tuple[list[str], list[list[str]]]:
    """Per code: "ok" or "<holder>:<why>" from each holder's ``CheckAuthorisation`` (its own
    consent check, recorded at the holder per enterprise), and the authorisations that cover it."""
    statuses = ["ok"] * len(codes)
    covered: list[list[str]] = [[] for _ in codes]

    def check(holder: str, i: int) -> tuple[str, str]:
        request = holder_pb2.AuthorisationQuery(
            meta=new_meta(
                purpose,
                model_id=served.model_id,
                request_id=child_request_id(request_id, holder, 100000 + i),
            ),
            uscc=codes[i],
        )
        try:
            answer = scorer.holders[holder].call("CheckAuthorisation", request)
        except PeerRefused as exc:
            return _status_of(exc), ""
        return ("ok" if answer.has_data else "no-data"), str(answer.auth_id)

    futures = {
        (h, i): scorer._pool.submit(check, h, i) for i in range(len(codes)) for h in served.holders
    }
    for (holder, i), future in futures.items():
        try:
            status, auth_id = future.result()
        except BaseException as exc:
            for other in futures.values():
                other.cancel()
            scorer._raise_for(holder, exc)
        if status != "ok" and statuses[i] == "ok":
            statuses[i] = f"{holder}:{status}"
        if auth_id:
            covered[i].append(f"{holder}:{auth_id}")
    return statuses, covered


def score_batch(
    scorer: BankScorer,
    *,
    served: ServedLinear,
    purpose: str,
    region: str = "",
    industry: str = "",
    usccs: Sequence[str] = (),
    threshold: float = 0.0,
    limit: int = 0,
    subjects: list[SubjectAccess] | None = None,
    request_id: str = "",
) -> bank_pb2.ScoreBatchReply:
    """``Bank.ScoreBatch`` for a scorecard or LR version (same reply as SecureBoost's)."""
    from parties.bank.scoring import joined_ids, tie_key, tied

    listed = bool(usccs)
    if listed:
        if region.strip() or industry.strip():
            raise invalid("give either usccs or a region/industry, not both")
        codes = [uscc_codes.normalise(str(c)) for c in usccs]
    else:
        codes = scorer.candidates(region=region, industry=industry)
    status = np.full(len(codes), "ok", dtype=object)
    ask: list[int] = []
    for i, code in enumerate(codes):
        if code not in scorer.row_of:
            bad = uscc_codes.problem(code)
            status[i] = f"{scorer.node_id}:{'invalid-uscc' if bad else 'no-data'}"
        elif code not in served.positions:
            status[i] = f"{scorer.node_id}:not-aligned"
        else:
            ask.append(i)
    covered: list[list[str]] = [[] for _ in codes]
    if ask:
        got, ids = _admitted(
            scorer, served, purpose, [codes[i] for i in ask], request_id=request_id
        )
        for k, i in enumerate(ask):
            status[i], covered[i] = got[k], ids[k]
    if subjects is not None:
        subjects.extend(
            SubjectAccess(
                code[:64],
                joined_ids(covered[i]),
                "allow" if status[i] == "ok" else f"refused:{status[i]}"[:64],
            )
            for i, code in enumerate(codes)
        )
    good = np.flatnonzero(status == "ok")
    positions = np.asarray([served.positions[codes[i]] for i in good], dtype=np.int64)
    margin, probability, points = (np.zeros(0) for _ in range(3))
    cats: list[list[str]] = []
    for k, start in enumerate(range(0, positions.size, CHUNK)):
        s = _evaluate(
            scorer,
            served,
            purpose,
            positions[start : start + CHUNK],
            request_id=request_id,
            part=k,
        )
        margin = np.concatenate([margin, s.margin])
        probability = np.concatenate([probability, s.probability])
        points = np.concatenate([points, s.points])
        cats += s.categories
    reply = bank_pb2.ScoreBatchReply(
        model_name=served.name,
        model_version=served.version,
        model_family=served.family,
        candidates=len(codes),
        scored=int(good.size),
    )
    _with_mode(reply)
    for r in sorted({str(s) for s in status if s != "ok"}):
        reply.excluded[r] = int((status == r).sum())
    if listed:
        at = {int(g): k for k, g in enumerate(good)}
        ties = tied(points)
        for i, code in enumerate(codes):
            item = reply.enterprises.add(uscc=code, status=str(status[i]))
            found = at.get(i)
            if found is not None:
                item.probability_default = float(probability[found])
                item.points = float(points[found])
                item.tie = bool(ties[found])
                item.reason_categories.extend(cats[found])
        return reply
    keep = np.flatnonzero(points >= threshold) if math.isfinite(threshold) else np.arange(good.size)
    names = np.asarray([codes[good[j]] for j in keep], dtype=object)
    order = keep[np.lexsort((names, -tie_key(points[keep])))] if keep.size else keep
    ties = tied(points[order])
    if limit:
        order, ties = order[:limit], ties[:limit]
    for j, tie in zip(order, ties, strict=True):
        reply.enterprises.add(
            uscc=codes[good[j]],
            status="ok",
            probability_default=float(probability[j]),
            points=float(points[j]),
            tie=bool(tie),
            reason_categories=cats[int(j)],
        )
    return reply
