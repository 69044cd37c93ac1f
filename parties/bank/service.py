"""The bank's gRPC service: its operators drive the federation through it.

``Greet`` asks every configured holder for its ``Hello`` concurrently and reports each answer or the
reason a holder could not be greeted (down, refused, too slow) — one holder's failure never hides the
others' answers.

``Score``/``ScoreBatch``/``Verify`` are the scoring service (``parties.bank.scoring``,
docs/scoring.md), for the bank's operators only. Their audit records carry the served version as
``model_id`` ("<name>/<version>") at the bank and at every holder asked, and each call to a holder
a request id derived from the operator's (``<id>.<holder>``). A retry of one of these requests
(the same bytes under the same request id) is answered again from the first answer and recorded
as a retry (``replayable``): no holder is asked twice for one request.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pandas as pd

from federation.errors import PeerError, Refused
from federation.transport.base import CallInfo, PeerBase, new_meta
from federation.transport.calls import SubjectAccess, child_request_id
from parties.bank.registry import TrackingConfig
from parties.bank.score_log import ScoreLog, log_served
from parties.bank.scoring import BankScorer, joined_ids
from parties.bank.served import ServedModel
from parties.config import NodeConfig
from parties.data.schema import PartySchema
from parties.summary import (
    PROTOCOL_VERSION,
    data_categories,
    hello_reply,
    node_aliases,
    table_summary,
)
from protos import bank_pb2, common_pb2

OPERATOR_METHODS = {"Greet", "Score", "ScoreBatch", "Verify"}


def greet_holders(
    holders: dict[str, PeerBase], *, purpose: str, job_id: str = "", request_id: str = ""
) -> list[bank_pb2.PeerGreeting]:
    """Call ``Hello`` on every holder at once; one ``PeerGreeting`` per holder, failures included.

    ``request_id``: the operator's, from which each ``Hello``'s is derived."""

    def greet(node_id: str, peer: PeerBase) -> bank_pb2.PeerGreeting:
        started = time.perf_counter()
        greeting = bank_pb2.PeerGreeting(node_id=node_id, address=getattr(peer, "address", ""))
        try:
            hello = peer.call(
                "Hello",
                common_pb2.HelloRequest(
                    meta=new_meta(
                        purpose, job_id=job_id, request_id=child_request_id(request_id, node_id)
                    ),
                    protocol_version=PROTOCOL_VERSION,
                ),
            )
        except PeerError as exc:
            greeting.ok, greeting.error = False, str(exc)
        else:
            greeting.ok = True
            greeting.hello.CopyFrom(hello)
        greeting.round_trip_ms = (time.perf_counter() - started) * 1000
        return greeting

    if not holders:
        return []
    with ThreadPoolExecutor(max_workers=len(holders)) as pool:
        return list(pool.map(lambda item: greet(*item), holders.items()))


class BankServicer:
    service = bank_pb2.DESCRIPTOR.services_by_name["Bank"]
    replayable = frozenset(OPERATOR_METHODS)
    """A retry of these is answered from the first answer (``ServiceRuntime._replay``)."""

    def __init__(
        self,
        *,
        config: NodeConfig,
        table: pd.DataFrame,
        schema: PartySchema,
        holders: dict[str, PeerBase],
        column_key: bytes,
        scorer: BankScorer | None = None,
        score_log: ScoreLog | None = None,
    ):
        """``scorer``: the scoring service (default: one over ``NODE_DIR/models`` and the
        registry the node serves from, ``TrackingConfig.for_node(config)``: the environment's
        ``MLFLOW_TRACKING_URI``, else ``node.yaml`` ``mlflow:``, else ``NODE_DIR/mlflow``).
        ``score_log``: where served scores go for monitoring (default ``ScoreLog.for_config``)."""
        self.config = config
        self.holders = holders
        self.scorer = scorer or BankScorer(
            node_id=config.node_id,
            table=table,
            schema=schema,
            holders=holders,
            models_dir=config.node_dir / "models",
            as_of=config.data.as_of if config.data is not None else None,
            tracking=TrackingConfig.for_node(config).tracking,
        )
        self.score_log = score_log or ScoreLog.for_config(config)
        self._summary = table_summary(
            table, schema, column_key, aliases=node_aliases(config, schema)
        )
        self.categories = data_categories(schema)
        self._operators = set(config.operators) or {config.node_id}
        self._known = self._operators | {p.node_id for p in config.peers}

    def authorise_caller(self, caller: str, method: str) -> None:
        allowed = self._operators if method in OPERATOR_METHODS else self._known
        if caller not in allowed:
            whom = "operators" if method in OPERATOR_METHODS else "operators or peers"
            raise Refused(
                "caller", f"'{caller}' may not call {method} here (not one of its {whom})"
            )

    def Hello(self, request: common_pb2.HelloRequest, call: CallInfo) -> common_pb2.HelloReply:
        return hello_reply(self.config, call.caller, self.categories, self._summary)

    def Greet(self, request: bank_pb2.GreetRequest, call: CallInfo) -> bank_pb2.GreetReply:
        greetings = greet_holders(
            self.holders,
            purpose=request.meta.purpose,
            job_id=request.meta.job_id,
            request_id=request.meta.request_id,
        )
        call.counts["holders"] = len(greetings)
        call.counts["holders_ok"] = sum(g.ok for g in greetings)
        return bank_pb2.GreetReply(peers=greetings)

    # -- scoring (docs/scoring.md) -----------------------------------------------------------
    def _model(
        self, request: bank_pb2.ScoreRequest | bank_pb2.ScoreBatchRequest, call: CallInfo
    ) -> ServedModel:
        """Resolve the version first, so that even a refusal's audit record names it."""
        served = self.scorer.models.get(request.model_name, request.model_ref)
        call.meta.model_id = served.model_id
        # the bank's own record of the score names how it was served (docs/scoring.md)
        call.note = f"serving mode {getattr(served, 'serving_mode', 'fast')}"
        return served

    def Score(self, request: bank_pb2.ScoreRequest, call: CallInfo) -> bank_pb2.ScoreReply:
        served = self._model(request, call)
        reply = self.scorer.score(
            request.uscc,
            served=served,
            purpose=call.meta.purpose,
            auth_ids=list(request.auth_ids),
            request_id=call.meta.request_id,
        )
        covered = [f"{s.node_id}:{s.auth_id}" for s in reply.sources if s.auth_id]
        call.subjects.append(
            SubjectAccess(
                reply.uscc[:64],
                joined_ids(covered),
                "allow" if reply.scored else f"not-scored:{','.join(reply.missing_sources)}"[:64],
            )
        )
        call.counts["scored"] = int(reply.scored)
        log_served(self.score_log, reply, kind="one", counts=call.counts)
        return reply

    def ScoreBatch(
        self, request: bank_pb2.ScoreBatchRequest, call: CallInfo
    ) -> bank_pb2.ScoreBatchReply:
        served = self._model(request, call)
        reply = self.scorer.score_batch(
            served=served,
            purpose=call.meta.purpose,
            region=request.region,
            industry=request.industry,
            usccs=list(request.usccs),
            threshold=request.threshold,
            limit=request.limit,
            subjects=call.subjects,  # one audit row per enterprise asked about
            request_id=call.meta.request_id,
        )
        call.counts["candidates"] = int(reply.candidates)
        call.counts["scored"] = int(reply.scored)
        call.counts["listed"] = len(reply.enterprises)
        log_served(self.score_log, reply, kind="batch", counts=call.counts)
        return reply

    def Verify(
        self, request: bank_pb2.BankVerifyRequest, call: CallInfo
    ) -> bank_pb2.BankVerifyReply:
        return self.scorer.verify(
            holder=request.holder,
            code=request.uscc,
            predicate_json=request.predicate_json,
            purpose=call.meta.purpose,
            request_id=call.meta.request_id,
        )
