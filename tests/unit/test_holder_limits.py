"""A dishonest bank is bounded by the holder's policy limits (issue 10, items 4 and 6).

The bank here is played by hand against a real SecureBoost holder over the in-process transport
twin (protobuf bytes, the holder's real runtime), with real Paillier (1024-bit test keys under
the test-only switch). Each test reproduces one finding:

- a "probe model" (every split on one holder feature, each at a new threshold) is refused at
  ``max_thresholds_per_feature`` and leaves an audit alert;
- ``ApplySplit`` with more rows than the node has is refused;
- a 4,097-bit (or 32,768-bit) Paillier modulus is refused, even under the small-key switch,
  before the key is verified;
- too many trees, too deep, too many bins are refused before anything is opened;
- resumes per job and jobs per alignment per day are bounded, and a restart does not reset them;
- ``min_holders`` and every limit come from ``node.yaml``'s ``policy:``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from carriers import small_keys
from phe import PaillierPublicKey

from federation.audit import AuditLog, sqlite_url
from federation.crypto import (
    GradHessPacker,
    PaillierEngine,
    ciphertexts_to_bytes,
    generate_keypair,
    make_public_params,
    public_params_to_bytes,
)
from federation.errors import ConfigError, PeerError
from federation.transport.base import PeerRefused, new_meta
from models.limits import HolderLimits, JobLedger, paillier_modulus_bits
from models.rows import mask_from_bytes, mask_to_bytes
from models.secureboost.passive import local_holders
from protos import secureboost_pb2 as pb

KEY_BITS = 1024
MIN_NODE = 20


# --------------------------------------------------------------------------------------------
# a bank played by hand


def _features(n: int, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.uniform(0, 1000, n), rng.normal(size=n)])


def _holder(tmp_path: Path, n: int, *, keep_models: bool = False, **kw):
    peers, servicers = local_holders(
        {"tax": (_features(n), ["turnover", "other"])},
        tmp_path,
        min_node_samples=MIN_NODE,
        keep_models=keep_models,
        **kw,
    )
    return peers["tax"], servicers["tax"]


class HandBank:
    """Sends exactly the messages a (possibly dishonest) bank chooses."""

    def __init__(self, peer, n: int, *, job_id: str = "probe", key_bits: int = KEY_BITS):
        self.peer, self.n, self.job_id = peer, n, job_id
        public, private = generate_keypair(key_bits)
        self.params = make_public_params(public)
        self.packer = GradHessPacker(n_samples_max=n, key_bits=key_bits, g_bound=1.0, h_bound=0.25)
        self.engine = PaillierEngine(self.params, private_key=private, workers=1)
        self.meta = new_meta(job_id=job_id)

    def start_request(self, **over) -> pb.SecureBoostStart:
        fields = dict(
            meta=self.meta,
            paillier_params=public_params_to_bytes(self.params),
            n_rows=self.n,
            pack_n_samples_max=self.n,
            pack_precision_bits=self.packer.precision_bits,
            pack_g_bound=1.0,
            pack_h_bound=0.25,
            pack_slot_bits=self.packer.slot_bits,
            max_bin=64,
            max_depth=8,
            n_trees=3,
            min_node_samples=MIN_NODE,
        )
        fields.update(over)
        return pb.SecureBoostStart(**fields)

    def start(self, **over):
        return self.peer.call("Start", self.start_request(**over))

    def gradients(self, tree: int) -> None:
        rng = np.random.default_rng(tree)
        g, h = rng.uniform(-1, 1, self.n), rng.uniform(0, 0.25, self.n)
        blob_id = f"grad-{tree}"
        cts = self.engine.encrypt(self.packer.pack(g, h))
        self.peer.put_blob(blob_id, ciphertexts_to_bytes(cts, self.params), meta=self.meta)
        everyone = np.ones(self.n, dtype=bool)
        self.peer.call(
            "Gradients",
            pb.SecureBoostGradients(
                meta=self.meta,
                tree=tree,
                blob_id=blob_id,
                samples=mask_to_bytes(everyone),
                n_samples=self.n,
            ),
        )

    def histograms(self, tree: int, depth: int, nodes: dict[int, np.ndarray]) -> None:
        request = pb.SecureBoostHistogramRequest(meta=self.meta, tree=tree, depth=depth)
        for node, rows in sorted(nodes.items()):
            sib = node + 1 if node % 2 else node - 1
            by_sub = node != 0 and (
                rows.sum() > nodes[sib].sum() or (rows.sum() == nodes[sib].sum() and node % 2 == 0)
            )
            request.nodes.add(node=node, samples=mask_to_bytes(rows), by_subtraction=by_sub)
        self.peer.call("Histograms", request)

    def apply(self, tree: int, node: int, split_id: int, rows: np.ndarray) -> np.ndarray:
        reply = self.peer.call(
            "ApplySplit",
            pb.SecureBoostApplySplit(
                meta=self.meta, tree=tree, node=node, split_ids=[split_id], rows=mask_to_bytes(rows)
            ),
        )
        return mask_from_bytes(reply.left, self.n, "left")


def _open_job(servicer, job_id: str):
    return servicer._jobs[("bank", job_id)]


def _probe_tree(bank: HandBank, servicer, tree: int = 0) -> list[tuple[int, int]]:
    """Grow one tree splitting every node on feature 0 near the node's median bin: every split
    is a new threshold (the nodes of a level cover disjoint bin ranges). Returns the splits
    the holder applied, (node, threshold) in order; stops at the first refusal (re-raised)."""
    job = _open_job(servicer, bank.job_id)
    level = {0: np.ones(bank.n, dtype=bool)}
    applied: list[tuple[int, int]] = []
    for depth in range(7):
        if not level:
            break
        bank.histograms(tree, depth, level)
        following: dict[int, np.ndarray] = {}
        for node, rows in sorted(level.items()):
            table = job.tree.candidates[node]
            options = [(b, i) for i, (f, b) in table.items() if f == 0]
            if not options:
                continue
            median = float(np.median(job.bins[rows, 0]))
            threshold, split_id = min(options, key=lambda o: abs(o[0] - median))
            left = bank.apply(tree, node, split_id, rows)
            applied.append((node, threshold))
            right = rows & ~left
            if left.sum() >= MIN_NODE and right.sum() >= MIN_NODE:
                following[2 * node + 1], following[2 * node + 2] = left, right
        level = following
    return applied


# --------------------------------------------------------------------------------------------
# (a) the probe model


def test_a_probe_model_is_refused_at_the_default_thresholds_limit(tmp_path):
    n = 4000
    peer, servicer = _holder(tmp_path, n)
    with small_keys():
        bank = HandBank(peer, n)
        bank.start()
        bank.gradients(0)
        with pytest.raises(PeerRefused) as refused:
            _probe_tree(bank, servicer)
    assert refused.value.refusal == "limit"
    assert "max_thresholds_per_feature = 32" in refused.value.detail
    assert "feature #0" in refused.value.detail and "turnover" not in refused.value.detail
    job = _open_job(servicer, "probe")
    used = {t for splits in job.splits.values() for f, t in splits.values() if f == 0}
    assert len(used) == 32  # the 33rd threshold never reached the bank
    bank.engine.close()


def test_the_refusal_writes_an_audit_alert(tmp_path):
    n = 1200
    audit = AuditLog(sqlite_url(tmp_path / "audit.db"), "tax")
    limits = HolderLimits(max_thresholds_per_feature=3, audit=audit)
    peer, servicer = _holder(tmp_path, n, limits=limits)
    with small_keys():
        bank = HandBank(peer, n, job_id="probe")
        bank.start()
        bank.gradients(0)
        with pytest.raises(PeerRefused) as refused:
            _probe_tree(bank, servicer)
    assert "max_thresholds_per_feature = 3" in refused.value.detail
    alerts = audit.query(decision="alert")
    assert len(alerts) == 1
    assert alerts[0].peer == "bank" and alerts[0].job_id == "probe"
    assert "max_thresholds_per_feature" in alerts[0].reason
    # the refusal stays: the same node cannot be split later at yet another threshold
    assert sum(len(s) for s in _open_job(servicer, "probe").splits.values()) == 3
    audit.close()
    bank.engine.close()


def test_thresholds_revealed_before_a_resume_still_count(tmp_path):
    """Re-growing a tree after a resume does not give the bank a fresh threshold budget."""
    n = 1200
    limits = HolderLimits(max_thresholds_per_feature=3)
    peer, servicer = _holder(tmp_path, n, limits=limits)
    with small_keys():
        bank = HandBank(peer, n)
        bank.start()
        bank.gradients(0)
        with pytest.raises(PeerRefused):
            _probe_tree(bank, servicer)
        bank.start(resume_from_tree=0 + 1)  # keep tree 0's splits...
        bank.gradients(1)
        with pytest.raises(PeerRefused) as again:  # ...and tree 1 cannot add a threshold
            _probe_tree(bank, servicer, tree=1)
    assert "max_thresholds_per_feature = 3" in again.value.detail
    bank.engine.close()


# --------------------------------------------------------------------------------------------
# (c) ApplySplit rows


def test_apply_split_with_more_rows_than_the_node_is_refused(tmp_path):
    n = 600
    peer, servicer = _holder(tmp_path, n)
    with small_keys():
        bank = HandBank(peer, n)
        bank.start()
        bank.gradients(0)
        everyone = np.ones(n, dtype=bool)
        bank.histograms(0, 0, {0: everyone})
        # the bank splits the root itself (any partition it likes) and asks for depth 1
        half = np.arange(n) < n // 2
        bank.histograms(0, 1, {1: half, 2: ~half})
        split_id = next(iter(_open_job(servicer, "probe").tree.candidates[1]))
        with pytest.raises(PeerError) as superset:
            bank.apply(0, 1, split_id, everyone)  # node 1 holds half the rows
        assert superset.value.code == "INVALID_ARGUMENT"
        assert "ApplySplit.rows" in superset.value.detail
        left = bank.apply(0, 1, split_id, half)  # the node's own rows are served
    assert not (left & ~half).any()
    bank.engine.close()


# --------------------------------------------------------------------------------------------
# (e) the Paillier modulus


def _params_with_modulus(bits: int, *, valid: bool = True) -> bytes:
    """Public parameters whose modulus has ``bits`` bits (not a real key: refused first)."""
    rng = np.random.default_rng(bits)
    n = (1 << (bits - 1)) | int.from_bytes(rng.bytes(bits // 8), "big") % (1 << (bits - 1)) | 1
    if valid:
        return public_params_to_bytes(make_public_params(PaillierPublicKey(n)))
    head = public_params_to_bytes(make_public_params(PaillierPublicKey(1 << 2047 | 1)))
    magic = head[:4]
    nb = (bits + 7) // 8
    return magic + bytes([1]) + nb.to_bytes(2, "big") + n.to_bytes(nb, "big") + bytes([32])


def test_a_4097_bit_modulus_is_refused_even_under_the_small_key_switch(tmp_path):
    n = 300
    peer, servicer = _holder(tmp_path, n)
    with small_keys():
        bank = HandBank(peer, n)
        params = _params_with_modulus(4097)
        assert paillier_modulus_bits(params) == 4097
        with pytest.raises(PeerRefused) as refused:
            bank.start(paillier_params=params)
        assert refused.value.refusal == "limit"
        assert "paillier_max_bits = 4096" in refused.value.detail and "4097" in refused.value.detail
        # a 32,768-bit modulus (seconds of verification) is refused from its header, at once
        huge = _params_with_modulus(32768, valid=False)
        began = time.perf_counter()
        with pytest.raises(PeerRefused) as big:
            bank.start(paillier_params=huge)
        assert time.perf_counter() - began < 1.0 and "32768" in big.value.detail
    assert servicer.open_jobs() == []
    bank.engine.close()


def test_woe_and_lr_refuse_a_4097_bit_modulus_too(tmp_path):
    from models.linear.passive import local_holders as linear_holders
    from models.woe.passive import local_woe_holders
    from protos import linear_pb2, woe_pb2

    params = _params_with_modulus(4097)
    woe_peers, _ = local_woe_holders({"tax": (_features(300), ["a", "b"])}, tmp_path / "woe")
    woe_start = woe_pb2.WoeStart(
        meta=new_meta(job_id="woe"),
        paillier_params=params,
        n_rows=300,
        max_bin=8,
        min_bin_samples=50,
    )
    lr_peers, _ = linear_holders({"tax": (_features(300), ["a", "b"])}, tmp_path / "lr")
    meta = new_meta(job_id="lr")
    lr_peers["tax"].put_blob("key", params, meta=meta)
    lr_start = linear_pb2.LinearStart(
        meta=meta,
        backend="paillier",
        public_key_blob="key",
        n_rows=300,
        n_holders=1,
        max_iter=1,
        residual_scale_bits=32,
    )
    with small_keys():
        for peer, start in ((woe_peers["tax"], woe_start), (lr_peers["tax"], lr_start)):
            with pytest.raises(PeerRefused) as refused:
                peer.call("Start", start)
            assert refused.value.refusal == "limit"
            assert "paillier_max_bits = 4096" in refused.value.detail
    assert not list((tmp_path / "lr").rglob("key"))  # the refused key is not kept


def test_a_key_below_the_policy_minimum_is_refused_outside_the_test_switch(tmp_path):
    n = 300
    peer, _ = _holder(tmp_path, n, limits=HolderLimits(paillier_min_bits=3072))
    with small_keys():
        bank = HandBank(peer, n)
    # 1024 bits without the switch: the crypto layer's own minimum (2048) refuses it too
    with pytest.raises(PeerError) as refused:
        bank.start()
    assert "1024" in refused.value.detail
    limits = HolderLimits(paillier_min_bits=3072)
    with pytest.raises(Exception) as policy:
        limits.check_paillier(_params_with_modulus(2048))
    assert "paillier_min_bits = 3072" in str(policy.value)
    limits.check_paillier(_params_with_modulus(3072))
    bank.engine.close()


# --------------------------------------------------------------------------------------------
# (d) trees, depth, bins, resumes, jobs per day


@pytest.mark.parametrize(
    ("over", "limit"),
    [
        ({"n_trees": 201}, "max_trees = 200"),
        ({"max_depth": 9}, "max_depth = 8"),
        ({"max_bin": 65}, "max_bins = 64"),
    ],
)
def test_too_many_trees_too_deep_or_too_many_bins_is_refused(tmp_path, over, limit):
    n = 300
    peer, servicer = _holder(tmp_path, n)
    with small_keys():
        bank = HandBank(peer, n)
        with pytest.raises(PeerRefused) as refused:
            bank.start(**over)
    assert refused.value.refusal == "limit" and limit in refused.value.detail
    assert servicer.open_jobs() == []
    bank.engine.close()


def test_resumes_per_job_are_bounded_by_default(tmp_path):
    n = 300
    peer, _ = _holder(tmp_path, n)
    with small_keys():
        bank = HandBank(peer, n)
        bank.start(n_trees=2)
        for _ in range(10):
            bank.start(n_trees=2, resume_from_tree=1)
        with pytest.raises(PeerRefused) as refused:
            bank.start(n_trees=2, resume_from_tree=1)
    assert "max_resumes_per_job = 10" in refused.value.detail
    bank.engine.close()


def test_resume_and_job_counts_survive_a_restart(tmp_path):
    n = 300
    ledger = tmp_path / "limits.json"

    def limits() -> HolderLimits:
        return HolderLimits(
            max_resumes_per_job=1, max_jobs_per_alignment_per_day=2, ledger=JobLedger(ledger)
        )

    peer, _ = _holder(tmp_path / "a", n, keep_models=True, limits=limits())
    with small_keys():
        bank = HandBank(peer, n)
        bank.start()
        bank.start(resume_from_tree=1)
        other = HandBank(peer, n, job_id="second")
        other.start()
        assert ledger.stat().st_mode & 0o777 == 0o600
        # the holder restarts (same node folder, fresh process state)
        peer, _ = _holder(tmp_path / "a", n, keep_models=True, limits=limits())
        bank.peer = other.peer = peer
        with pytest.raises(PeerRefused) as resume:
            bank.start(resume_from_tree=1)
        assert "max_resumes_per_job = 1" in resume.value.detail
        third = HandBank(peer, n, job_id="third")
        with pytest.raises(PeerRefused) as daily:
            third.start()
        assert "max_jobs_per_alignment_per_day = 2" in daily.value.detail
    for b in (bank, other, third):
        b.engine.close()


def test_a_damaged_ledger_stops_the_holder_instead_of_resetting_the_counts(tmp_path):
    path = tmp_path / "limits.json"
    path.write_text('{"jobs": [1, 2', encoding="utf-8")
    with pytest.raises(ConfigError) as damaged:
        JobLedger(path)
    assert str(path) in str(damaged.value) and "damaged" in str(damaged.value)


def test_jobs_per_alignment_per_day_are_bounded_by_default(tmp_path):
    n = 300
    peer, _ = _holder(tmp_path, n)
    with small_keys():
        banks = [HandBank(peer, n, job_id=f"job-{i}") for i in range(25)]
        for bank in banks[:24]:
            bank.start()
            peer.call("Finish", pb.SecureBoostFinish(meta=bank.meta, abort=True))
        with pytest.raises(PeerRefused) as refused:
            banks[24].start()
    assert "max_jobs_per_alignment_per_day = 24" in refused.value.detail
    for bank in banks:
        bank.engine.close()


# --------------------------------------------------------------------------------------------
# (f) node.yaml


def _node_yaml(tmp_path: Path, policy: str) -> Path:
    path = tmp_path / "node.yaml"
    path.write_text(
        "node_id: tax\nrole: holder\nplatform_public_key: p.pub\n"
        "tls: {ca: ca.pem, cert: tax.pem, key: tax.key}\n" + policy,
        encoding="utf-8",
    )
    return path


def test_min_holders_and_every_limit_come_from_node_yaml(tmp_path):
    from parties.config import load_node_config
    from parties.node import holder_limits

    config = load_node_config(
        _node_yaml(
            tmp_path,
            "policy:\n  min_holders: 2\n  max_trees: 50\n  max_thresholds_per_feature: 8\n"
            "  paillier_max_bits: 3072\n",
        )
    )
    limits = holder_limits(config, audit=None)
    assert limits.min_holders == 2 and limits.max_trees == 50
    assert limits.max_thresholds_per_feature == 8 and limits.paillier_max_bits == 3072
    assert limits.ledger.path == config.node_dir / "limits.json"
    defaults = holder_limits(load_node_config(_node_yaml(tmp_path, "")), audit=None)
    assert defaults == HolderLimits()


@pytest.mark.parametrize(
    "policy",
    [
        "policy:\n  max_bins: 300\n",
        "policy:\n  min_holders: 0\n",
        "policy:\n  paillier_min_bits: 4096\n  paillier_max_bits: 2048\n",
        "policy:\n  max_treez: 5\n",
    ],
)
def test_a_bad_policy_names_the_field(tmp_path, policy):
    from parties.config import load_node_config

    with pytest.raises(ConfigError) as bad:
        load_node_config(_node_yaml(tmp_path, policy))
    assert "policy" in str(bad.value)


def test_linear_holder_refuses_fewer_holders_than_its_policy(tmp_path):
    """min_holders reaches LR's Start through the limits (not a constant in parties/node.py)."""
    from federation.errors import Refused
    from models.linear.passive import local_holders as linear_holders
    from protos import linear_pb2

    _, servicers = linear_holders(
        {"tax": (_features(50), ["a", "b"])}, tmp_path, limits=HolderLimits(min_holders=2)
    )
    start = linear_pb2.LinearStart(backend="paillier", n_holders=1, alpha=0.0, max_iter=1)
    with pytest.raises(Refused) as refused:
        servicers["tax"]._check_start(start)
    assert refused.value.code == "min_holders" and "min_holders = 2" in refused.value.reason
