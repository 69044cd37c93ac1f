"""End to end, on the wire: what the bank sends and receives while it scores a SecureBoost
version privately, over real holder node processes (gRPC, mutual TLS on loopback).

How the wire is captured: the test runs the bank's scoring half (``BankScorer``, the class the
bank node serves with) in this process, over the bank's own mTLS identity, with each holder
connection wrapped by a recorder that keeps every request the bank sends and every reply it
receives (the messages exactly as they cross the channel). ``_findings`` then lists what the
bank could read that it must not (a holder's reach mask, a decrypted per-leaf or per-tree
value) and what a holder received that it must not (a plaintext weight or score, a secret
key). Private mode must give no finding; the same check on the ``fast`` path (whose reach
masks are documented leakage) must find the masks - so the check can fail.

Also: a holder restarted mid-session loses its CKKS setup; the bank node sets it up again and
the next score is answered (transparent recovery), and the bank's own audit record of each
score names its serving mode.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from federation.audit import AuditLog, sqlite_url
from federation.transport.base import new_meta
from protos import bank_pb2, holder_pb2

pytestmark = pytest.mark.e2e

SALT = b"e2e-private-wire"
PARAMS = dict(n_trees=4, max_depth=3, learning_rate=0.3, max_bin=16, random_state=1)
MODEL = "credit-sbt-wire"


@dataclass
class Message:
    holder: str
    method: str
    request: Any
    reply: Any


class Recorder:
    """A holder connection that keeps every message the bank sends and receives on it."""

    def __init__(self, holder: str, peer: Any, log: list[Message]):
        self._holder, self._peer, self._log = holder, peer, log

    def call(self, method: str, request: Any, *args: Any, **kwargs: Any) -> Any:
        reply = self._peer.call(method, request, *args, **kwargs)
        self._log.append(Message(self._holder, method, request, reply))
        return reply

    def __getattr__(self, name: str) -> Any:
        return getattr(self._peer, name)


@pytest.fixture(scope="module")
def world(start_bank_world):
    from parties.bank.registry import mlflow_client
    from parties.bank.served import TAG_SERVING_MODE

    base = start_bank_world("wire", enterprises=400, seed=11, salt=SALT, align_job="wire-align")
    trained = base.train(MODEL, params=PARAMS)
    mlflow_client(base.tracking).set_model_version_tag(
        MODEL, str(trained.version), TAG_SERVING_MODE, "private"
    )
    return SimpleNamespace(**vars(base), **vars(trained))


@pytest.fixture(scope="module")
def scorer(world):
    """The bank's scoring half in this process, its holder connections recorded."""
    from parties.bank.registry import TrackingConfig
    from parties.bank.scoring import BankScorer
    from parties.data.loader import load_table
    from parties.node import holder_peers

    cfg = world.bank
    schema = cfg.data.table_schema(cfg.node_id)
    table = load_table(cfg.data.path, schema)
    log: list[Message] = []
    with holder_peers(cfg, audit=world.audit) as peers:
        bank = BankScorer(
            node_id=cfg.node_id,
            table=table,
            schema=schema,
            holders={h: Recorder(h, p, log) for h, p in peers.items()},
            models_dir=cfg.node_dir / "models",
            as_of=cfg.data.as_of,
            tracking=TrackingConfig.for_node(cfg).tracking,
        )
        try:
            yield SimpleNamespace(bank=bank, log=log)
        finally:
            bank.close()


def _owners(world) -> list[str]:
    return sorted(world.clf.model_.split_owners() - {"bank"})


def _scorable(world) -> list[str]:
    """Aligned enterprises every holder the model uses has an active authorisation for."""
    from federation.pki import load_platform_public_key
    from parties.bank.table import BankTable
    from parties.consent import ConsentRegistry

    table = BankTable.load(world.bank)
    codes = [table.codes[i] for i in world.alignment.bank_rows]
    for holder in _owners(world):
        node_dir = world.fed.node_dir(holder)
        key = load_platform_public_key(node_dir / "platform_signing.pub")
        with ConsentRegistry.for_node_dir(node_dir, key, node_id=holder) as reg:
            active = {r.auth.uscc for r in reg.list(bank_id="bank") if r.status == "active"}
        codes = [c for c in codes if c in active]
    return codes


def _ieee(values: np.ndarray, fmt: str) -> set[bytes]:
    """The IEEE bytes a plaintext value would have on the wire (``<d`` or ``<f``)."""
    return {
        struct.pack(fmt, float(v))
        for v in np.asarray(values, dtype=np.float64).ravel()
        if abs(v) > 1e-9
    }


def _without_ciphertexts(request: Any) -> bytes:
    """The request's bytes with the ciphertext fields emptied (4-byte patterns would match
    megabytes of ciphertext by chance; those fields are checked as ciphertexts instead)."""
    copy = type(request)()
    copy.CopyFrom(request)
    for name in ("payload", "ckks_context"):
        if name in copy.DESCRIPTOR.fields_by_name:
            copy.ClearField(name)
    return copy.SerializeToString()


def _findings(log: list[Message], served: Any, scores: list[float]) -> list[str]:
    """What the bank held that it must not, and what a holder received that it must not."""
    import tenseal as ts

    from federation.crypto.ckks import unpack_vectors
    from models.secureboost.private_scoring import Layout, load_public_context

    found: list[str] = []
    plain = np.concatenate([served.weights, np.asarray(scores, dtype=np.float64)])
    doubles, singles = _ieee(plain, "<d"), _ieee(plain, "<f")
    owners = list(served.owners)
    state = served.private
    for m in log:
        # -- what a holder received ---------------------------------------------------------
        raw, rest = m.request.SerializeToString(), _without_ciphertexts(m.request)
        if any(d in raw for d in doubles) or any(f in rest for f in singles):
            found.append(f"{m.holder}/{m.method}: a plaintext weight or score in the request")
        if isinstance(m.request, holder_pb2.PrivateScoreSetupRequest):
            try:
                load_public_context(bytes(m.request.ckks_context))
            except Exception as exc:
                found.append(f"{m.holder}/{m.method}: context not public-only ({exc})")
        if isinstance(m.request, holder_pb2.PrivateScoreRequest):
            if m.request.previous_holder:  # sealed by the previous holder: not even CKKS
                try:
                    unpack_vectors(bytes(m.request.payload), "relayed")
                    found.append(f"{m.holder}: relayed partial product readable as CKKS")
                except Exception:
                    pass
            else:  # the first holder: ciphertexts it cannot decrypt
                ctx = load_public_context(state.keys.public)
                for item in unpack_vectors(bytes(m.request.payload), "first"):
                    vec = ts.ckks_vector_from(ctx, item)
                    try:
                        vec.decrypt()
                        found.append(f"{m.holder}: could decrypt the bank's vector")
                    except Exception:
                        pass
        # -- what the bank received ---------------------------------------------------------
        if isinstance(m.reply, holder_pb2.ScoreReachReply) and m.reply.reach:
            found.append(f"{m.holder}/{m.method}: the holder's reach mask (its path)")
        if isinstance(m.reply, holder_pb2.PrivateScoreReply):
            payload = bytes(m.reply.payload)
            last = not m.request.next_holder
            if not last:
                try:
                    unpack_vectors(payload, "sealed")
                    found.append(f"{m.holder}: the bank could read a partial product")
                except Exception:
                    pass
                continue
            layout = Layout(
                n_leaves=int(served.weights.size), n_blocks=1 + len(owners), slots=state.keys.slots
            )
            n = len(m.request.usccs) or 1
            slots = np.concatenate(
                [
                    np.asarray(ts.ckks_vector_from(state.keys.ctx, it).decrypt())
                    for it in unpack_vectors(payload, "answer")
                ]
            )
            lanes = slots[: n * layout.lane].reshape(n, layout.n_blocks, layout.n_leaves)
            small = float((np.abs(lanes) < 8.0).mean())
            if small > 0.01:  # a leaf value or a 0 of the product, in the clear
                found.append(f"{m.holder}: {small:.0%} of decrypted slots are per-leaf values")
            per_tree = np.add.reduceat(lanes, served.tree_starts, axis=2)
            if per_tree.shape[2] > 1 and float((np.abs(per_tree) < 8.0).mean()) > 0.05:
                found.append(f"{m.holder}: per-tree values readable from the decrypted slots")
    return found


def test_the_bank_never_holds_a_path_and_a_holder_never_a_weight_or_score(world, scorer):
    assert _owners(world), "no holder won a split: nothing private to score"
    codes = _scorable(world)[:30]
    assert len(codes) >= 10
    private = scorer.bank.models.get(MODEL, str(world.version))
    assert private.serving_mode == "private"
    del scorer.log[:]
    one = scorer.bank.score(codes[0], served=private, purpose="financing")
    batch = scorer.bank.score_batch(served=private, purpose="financing", usccs=codes)
    assert one.scored and all(e.status == "ok" for e in batch.enterprises)
    scores = [one.probability_default, *(e.probability_default for e in batch.enterprises)]
    methods = {(m.method, type(m.reply).__name__) for m in scorer.log}
    assert methods == {
        ("PrivateScoreSetup", "PrivateScoreSetupReply"),
        ("PrivateScore", "PrivateScoreReply"),
    }
    assert _findings(list(scorer.log), private, scores) == []

    # the same check on the fast path finds what fast mode reveals: every holder's mask
    fast = scorer.bank.models.get(world.report.job_id, "")
    assert fast.serving_mode == "fast"
    del scorer.log[:]
    reply = scorer.bank.score(codes[0], served=fast, purpose="financing")
    assert abs(reply.probability_default - one.probability_default) <= 1e-6
    leaks = _findings(list(scorer.log), private, [reply.probability_default])
    assert sorted(leaks) == sorted(
        f"{h}/ScoreReach: the holder's reach mask (its path)" for h in _owners(world)
    )


def _bank_call(world, method: str, request):
    from parties.node import operator_client

    with operator_client(world.bank) as client:
        return client.call(method, request)


def _score(world, code: str, name: str, ref: str) -> bank_pb2.ScoreReply:
    return _bank_call(
        world,
        "Score",
        bank_pb2.ScoreRequest(
            meta=new_meta("financing"), uscc=code, model_name=name, model_ref=ref
        ),
    )


def _setups(world, holder: str) -> int:
    log = AuditLog(sqlite_url(world.fed.node_dir(holder) / "audit.db"), holder)
    try:
        return sum(
            r.operation == "PrivateScoreSetup" and r.decision == "allow"
            for r in log.query(operation="PrivateScoreSetup")
        )
    finally:
        log.close()


def test_a_restarted_holder_is_set_up_again_and_the_score_answered(world):
    from xinyidai.launcher import start_nodes

    code = _scorable(world)[1]
    before = _score(world, code, MODEL, str(world.version))
    assert before.scored and before.serving_mode == "private"
    holder = _owners(world)[-1]
    setups = _setups(world, holder)
    proc = world.fed.processes[holder]
    proc.terminate()  # the node this module started: its CKKS setup is gone with it
    proc.wait(timeout=30)
    start_nodes(world.fed, only=[holder])
    after = _score(world, code, MODEL, str(world.version))
    assert after.scored
    assert abs(after.probability_default - before.probability_default) <= 1e-6
    assert _setups(world, holder) == setups + 1  # the bank re-ran the setup, once


def test_the_banks_audit_record_of_each_score_names_its_serving_mode(world):
    code = _scorable(world)[2]
    started = time.time()
    _score(world, code, MODEL, str(world.version))
    _score(world, code, world.report.job_id, "")
    bank = AuditLog(world.bank.resolved_audit_url, "bank")
    try:
        served = [
            r
            for r in bank.query(since=started - 1, operation="Score")
            if r.direction == "served" and r.decision == "allow"
        ]
    finally:
        bank.close()
    notes = {r.model_id: r.reason for r in served}
    assert notes[f"{MODEL}/{world.version}"] == "serving mode private"
    assert notes[world.report.job_id] == "serving mode fast"
