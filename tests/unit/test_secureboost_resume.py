"""A SecureBoost job survives a holder restart (at most the current tree is grown again) and a
bank restart (it continues from its checkpoint), and the result equals an uninterrupted run.

Holders run in-process with real Paillier (1024-bit test keys); a "restart" replaces a holder's
servicer with a fresh one over the same node directories, losing everything held in memory.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_secureboost import KEY_BITS, city_data, small_keys

from federation.blobs import BlobStore
from federation.transport.base import CallFailed, ServiceRuntime
from federation.transport.inproc import InProcessPeer
from federation.transport.policy import PurposePolicy
from models.base import UNGATED
from models.secureboost import FederatedTrainingError, SecureBoostClassifier
from models.secureboost.passive import SecureBoostHolderServicer, local_holders
from models.secureboost.reference import SecureBoostError

PARAMS = dict(n_trees=4, max_depth=3, subsample=0.9, random_state=5, min_holder_node_samples=30)


class RestartingPeer(InProcessPeer):
    """At the ``crash_at``-th call of ``crash_method`` the holder process "dies": this call fails
    UNAVAILABLE and a fresh servicer (same blob and model directories) takes over."""

    crash_method = "Histograms"
    crash_at: int | None = None

    def __init__(self, runtime, **kwargs):
        super().__init__(runtime, **kwargs)
        self.seen = 0
        self.restarts = 0

    def _restart(self) -> None:
        old: SecureBoostHolderServicer = self.runtime.servicer
        fresh = SecureBoostHolderServicer(
            node_id=old.node_id,
            features=old.features,
            feature_names=old.feature_names,
            banks=old.banks,
            blobs=BlobStore(old.blobs.root, max_bytes=old.blobs.max_bytes),
            min_node_samples=old.min_node_samples,
            workers=1,
            models_dir=old.models_dir,
        ).use_gate(UNGATED)  # the test's own in-process data, as local_holders does
        self.runtime = ServiceRuntime(
            fresh, node_id=old.node_id, audit=None, purposes=PurposePolicy()
        )
        self.restarts += 1

    def _unary(self, method, raw, timeout):
        if method == self.crash_method:
            self.seen += 1
            if self.seen == self.crash_at:
                self._restart()
                raise CallFailed("UNAVAILABLE", f"connection to {self.node_id} reset")
        return super()._unary(method, raw, timeout)


def _trees(clf) -> list[dict]:
    return [t.to_dict() for t in clf.trees_]


def _splits(peers, job_id) -> dict:
    return {n: p.runtime.servicer.model("bank", job_id).splits for n, p in peers.items()}


@pytest.fixture(scope="module")
def data():
    return city_data(n_enterprises=1200, seed=21)


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    peers, _ = local_holders(
        data.holders, tmp_path_factory.mktemp("plain"), min_node_samples=30, keep_models=True
    )
    clf = SecureBoostClassifier(**PARAMS, key_bits=KEY_BITS, workers=1, job_id="job-a")
    with small_keys():
        clf.fit(data.X_bank, data.y, holders=peers)
    return _trees(clf), {
        n: p.runtime.servicer.model("bank", "job-a").splits for n, p in peers.items()
    }


def test_a_holder_restart_mid_tree_costs_one_tree_and_changes_nothing(
    data, uninterrupted, tmp_path
):
    peers, _ = local_holders(
        data.holders, tmp_path, min_node_samples=30, keep_models=True, peer_class=RestartingPeer
    )
    # Tree 0 is bank-only; trees 1-3 make 3 Histograms rounds each: die in tree 2's second level.
    peers["utility"].crash_at = 5
    trees_done: list[int] = []
    clf = SecureBoostClassifier(**PARAMS, key_bits=KEY_BITS, workers=1, job_id="job-a")
    with small_keys():
        clf.fit(
            data.X_bank,
            data.y,
            holders=peers,
            resume_wait_s=10,
            on_tree=trees_done.append,
        )
    assert peers["utility"].restarts == 1
    assert clf.model_.stats["resumes"] == 1
    assert trees_done == [0, 1, 2, 3]
    want_trees, want_splits = uninterrupted
    assert _trees(clf) == want_trees
    assert _splits(peers, "job-a") == want_splits
    # the finished job leaves no checkpoint behind at the holders
    assert not list(tmp_path.glob("*/models/bank/*.checkpoint.json"))


def test_without_resume_wait_a_holder_restart_fails_the_job_cleanly(data, tmp_path):
    peers, _ = local_holders(
        data.holders, tmp_path, min_node_samples=30, keep_models=True, peer_class=RestartingPeer
    )
    peers["tax"].crash_at = 2
    clf = SecureBoostClassifier(**PARAMS, key_bits=KEY_BITS, workers=1, job_id="job-b")
    with small_keys(), pytest.raises(FederatedTrainingError) as err:
        clf.fit(data.X_bank, data.y, holders=peers)
    assert err.value.holder == "tax" and "UNAVAILABLE" in str(err.value)
    assert not hasattr(clf, "trees_")


class BankCrash(BaseException):
    """Stands for the bank's process dying (not an error the bank could handle)."""


def test_a_bank_restart_continues_from_its_checkpoint(data, uninterrupted, tmp_path):
    peers, _ = local_holders(
        data.holders, tmp_path, min_node_samples=30, keep_models=True, peer_class=RestartingPeer
    )
    ckpt = tmp_path / "bank-checkpoints"

    def crash_after_tree_1(t: int) -> None:
        if t == 1:
            raise BankCrash

    first = SecureBoostClassifier(**PARAMS, key_bits=KEY_BITS, workers=1, job_id="job-a")
    with small_keys(), pytest.raises(BankCrash):
        first.fit(
            data.X_bank, data.y, holders=peers, checkpoint_dir=ckpt, on_tree=crash_after_tree_1
        )
    saved = json.loads((ckpt / "job-a.checkpoint.json").read_text())
    assert len(saved["trees"]) == 2
    # The holders' processes restart too (their checkpoints are all they keep).
    for peer in peers.values():
        peer._restart()
    trees_done: list[int] = []
    second = SecureBoostClassifier(**PARAMS, key_bits=KEY_BITS, workers=1, job_id="job-a")
    with small_keys():
        second.fit(
            data.X_bank, data.y, holders=peers, checkpoint_dir=ckpt, on_tree=trees_done.append
        )
    assert trees_done == [2, 3]  # trees 0 and 1 were not grown again
    want_trees, want_splits = uninterrupted
    assert _trees(second) == want_trees
    assert _splits(peers, "job-a") == want_splits
    assert not (ckpt / "job-a.checkpoint.json").exists()


def test_a_checkpoint_of_other_data_is_refused(data, tmp_path):
    peers, _ = local_holders(data.holders, tmp_path, min_node_samples=30, keep_models=True)
    ckpt = tmp_path / "ckpt"

    def crash(t: int) -> None:
        raise BankCrash

    clf = SecureBoostClassifier(**PARAMS, key_bits=KEY_BITS, workers=1, job_id="job-c")
    with small_keys(), pytest.raises(BankCrash):
        clf.fit(data.X_bank, data.y, holders=peers, checkpoint_dir=ckpt, on_tree=crash)
    flipped = np.asarray(data.y).copy()
    flipped[:10] = 1 - flipped[:10]
    with small_keys(), pytest.raises(SecureBoostError, match="other data or parameters"):
        clf.fit(data.X_bank, flipped, holders=peers, checkpoint_dir=ckpt)
    assert (ckpt / "job-c.checkpoint.json").exists()  # nothing lost: the original can resume


def test_a_holder_refuses_to_resume_a_job_it_never_saw(data, tmp_path):
    peers, _ = local_holders(
        data.holders, tmp_path, min_node_samples=30, keep_models=True, peer_class=RestartingPeer
    )
    ckpt = tmp_path / "ckpt"
    clf = SecureBoostClassifier(**PARAMS, key_bits=KEY_BITS, workers=1, job_id="job-d")

    def crash(t: int) -> None:
        raise BankCrash

    with small_keys(), pytest.raises(BankCrash):
        clf.fit(data.X_bank, data.y, holders=peers, checkpoint_dir=ckpt, on_tree=crash)
    for d in Path(tmp_path).glob("*/models/bank/job-d.checkpoint.json"):
        d.unlink()
    for peer in peers.values():
        peer._restart()
    with small_keys(), pytest.raises(FederatedTrainingError, match="neither open nor checkpointed"):
        clf.fit(data.X_bank, data.y, holders=peers, checkpoint_dir=ckpt)


def test_housekeeping_drops_abandoned_jobs_but_keeps_their_checkpoint(data, tmp_path):
    peers, servicers = local_holders(data.holders, tmp_path, min_node_samples=30, keep_models=True)
    ckpt = tmp_path / "ckpt"

    def crash(t: int) -> None:
        if t == 1:
            raise BankCrash

    clf = SecureBoostClassifier(**PARAMS, key_bits=KEY_BITS, workers=1, job_id="job-e")
    with small_keys(), pytest.raises(BankCrash):
        clf.fit(data.X_bank, data.y, holders=peers, checkpoint_dir=ckpt, on_tree=crash)
    tax = servicers["tax"]
    assert tax.open_jobs() == [("bank", "job-e")]
    # the gradient blob was deleted as soon as it was read into memory
    assert not list((tmp_path / "tax" / "blobs").glob("**/gradients-*"))
    assert tax.sweep(idle_s=3600) == {"jobs": 0, "checkpoints": 0}  # not idle long enough
    assert tax.sweep(idle_s=0) == {"jobs": 1, "checkpoints": 0}
    assert tax.open_jobs() == []
    assert (tmp_path / "tax" / "models" / "bank" / "job-e.checkpoint.json").exists()
    assert tax.sweep(idle_s=0, checkpoint_days=-1) == {"jobs": 0, "checkpoints": 1}
    assert not (tmp_path / "tax" / "models" / "bank" / "job-e.checkpoint.json").exists()
