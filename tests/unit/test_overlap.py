"""Overlap (issue 14 part 3): a holder sums each tree's root histogram while the gradient blob
streams in. The sums must be the very integers of the all-at-once kernel, so the trees are
identical with and without overlap; a stream that does not fit its announcement is refused."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from carriers import small_keys
from gmpy2 import mpz
from phe import paillier

from federation.crypto import (
    GradHessPacker,
    generate_keypair,
    make_public_params,
    public_params_to_bytes,
)
from federation.crypto.histogram import (
    HistogramInputError,
    StreamingBinSums,
    encrypted_bin_sums,
)
from federation.crypto.paillier import PaillierEngine
from federation.crypto.wire import to_fixed
from federation.errors import PeerError
from models.rows import mask_to_bytes
from models.secureboost import SecureBoostClassifier
from models.secureboost.passive import local_holders
from protos import common_pb2
from protos import secureboost_pb2 as pb

KEY_BITS = 1024


@pytest.fixture(scope="module")
def key() -> paillier.PaillierPublicKey:
    pub, _ = paillier.generate_paillier_keypair(n_length=256)
    return pub


def _vector(key: paillier.PaillierPublicKey, n: int, f: int, n_bins: int, seed: int):
    rng = random.Random(seed)
    nsq = int(key.nsquare)
    cts = [mpz(rng.randrange(1, nsq)) for _ in range(n)]
    bins = np.random.default_rng(seed).integers(0, n_bins, size=(n, f), dtype=np.int64)
    bins[:, 0] = np.where(bins[:, 0] % 2 == 0, 0, 3)  # feature 0 leaves bins empty
    return cts, bins


@pytest.mark.parametrize(("n", "block", "piece"), [(300, 64, 100), (57, 8, 1), (1, 4096, 7)])
def test_streamed_sums_are_the_all_at_once_sums(key, n: int, block: int, piece: int) -> None:
    """Any cut of the wire bytes (pieces need not end on a ciphertext) gives the same sums."""
    cts, bins = _vector(key, n, 4, 8, seed=n)
    width = (int(key.nsquare).bit_length() + 7) // 8
    raw = to_fixed(cts, width)
    sums = StreamingBinSums(bins, 8, key, block=block)
    for at in range(0, len(raw), piece):
        sums.feed(raw[at : at + piece])
    got = sums.finish()
    assert got == encrypted_bin_sums(cts, bins, np.arange(n), 8, key)
    assert sums.ciphertexts == cts


def test_streamed_sums_on_worker_processes(key) -> None:
    cts, bins = _vector(key, 500, 3, 6, seed=9)
    width = (int(key.nsquare).bit_length() + 7) // 8
    with small_keys():
        params = make_public_params(key)
        with PaillierEngine(params, workers=2) as engine:
            sums = StreamingBinSums(bins, 6, key, engine=engine, block=128)
            sums.feed(to_fixed(cts, width))
            got = sums.finish()
    assert got == encrypted_bin_sums(cts, bins, np.arange(500), 6, key)


def test_a_stream_that_does_not_fit_its_announcement_is_refused(key) -> None:
    cts, bins = _vector(key, 10, 2, 4, seed=1)
    width = (int(key.nsquare).bit_length() + 7) // 8
    raw = to_fixed(cts, width)
    longer = StreamingBinSums(bins, 4, key, block=4)
    with pytest.raises(HistogramInputError, match="more than the 10 ciphertexts"):
        longer.feed(raw + raw[:width])
    shorter = StreamingBinSums(bins, 4, key, block=4)
    shorter.feed(raw[: 9 * width])
    with pytest.raises(HistogramInputError, match="9 ciphertexts for 10 rows"):
        shorter.finish()
    torn = StreamingBinSums(bins, 4, key, block=4)
    torn.feed(raw[:-1])
    with pytest.raises(HistogramInputError, match="inside a ciphertext"):
        torn.finish()
    zero = StreamingBinSums(bins, 4, key, block=4)
    with pytest.raises(HistogramInputError, match="ciphertext 2 is not in"):
        zero.feed(to_fixed([*cts[:2], mpz(0), *cts[3:]], width))


def _data(n: int = 700, seed: int = 11) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5))
    logit = 0.7 * x[:, 0] - 1.1 * x[:, 2] + 0.9 * x[:, 3] - 0.5 * x[:, 4]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame(x[:, :2], columns=["a", "b"]), y, x[:, 2:]


def _trees(clf: SecureBoostClassifier) -> list[list[tuple]]:
    return [
        sorted(
            (i, n.is_leaf, n.owner, n.feature, n.threshold, n.gain, n.weight)
            for i, n in t.nodes.items()
        )
        for t in clf.trees_
    ]


def test_training_with_overlap_grows_exactly_the_trees_without(tmp_path: Path) -> None:
    X, y, holder = _data()
    params = {
        "n_trees": 4,
        "max_depth": 3,
        "random_state": 0,
        "key_bits": KEY_BITS,
        "subsample": 0.8,
    }
    runs, streamed = {}, {}
    with small_keys():
        for overlap in (False, True):
            peers, servicers = local_holders(
                {"tax": (holder, ["c", "d", "e"])}, tmp_path / str(overlap)
            )
            servicer = servicers["tax"]
            used: list[int] = []
            original = servicer._streamed_root

            def spy(call, tree, _original=original, _used=used):
                root = _original(call, tree)
                if root is not None:
                    _used.append(tree)
                return root

            servicer._streamed_root = spy
            clf = SecureBoostClassifier(**params, workers=1)
            clf.fit(X, y, holders=peers, overlap=overlap)
            runs[overlap], streamed[overlap] = clf, used
    assert _trees(runs[True]) == _trees(runs[False])
    assert any(
        n.owner == "tax" for t in runs[True].trees_ for n in t.nodes.values() if not n.is_leaf
    )
    assert streamed[False] == []
    assert streamed[True] == [1, 2, 3]  # tree 0 is the bank's alone; every holder tree streamed


def test_a_holder_refuses_a_streamed_blob_longer_than_announced(tmp_path: Path) -> None:
    """Announce 50 rows, stream 51 ciphertexts: refused, and the tree has no gradients."""
    _, _, holder = _data(n=200)
    with small_keys():
        peers, _ = local_holders({"tax": (holder, ["c", "d", "e"])}, tmp_path)
        peer = peers["tax"]
        public, _ = generate_keypair(KEY_BITS)
        params = make_public_params(public)
        packer = GradHessPacker(
            n_samples_max=200, key_bits=KEY_BITS, precision_bits=40, g_bound=1.0, h_bound=0.25
        )
        meta = common_pb2.RequestMeta(purpose="financing", job_id="ov-bad")
        peer.call(
            "Start",
            pb.SecureBoostStart(
                meta=meta,
                paillier_params=public_params_to_bytes(params),
                n_rows=200,
                pack_n_samples_max=200,
                pack_precision_bits=40,
                pack_g_bound=1.0,
                pack_h_bound=0.25,
                pack_slot_bits=packer.slot_bits,
                max_bin=8,
                max_depth=2,
                n_trees=2,
                min_node_samples=20,
            ),
        )
        sample = np.zeros(200, dtype=bool)
        sample[:50] = True
        peer.call(
            "Gradients",
            pb.SecureBoostGradients(
                meta=meta,
                tree=0,
                blob_id="gradients-t0",
                samples=mask_to_bytes(sample),
                n_samples=50,
                streamed=True,
            ),
        )
        with PaillierEngine(params, workers=1) as engine:
            cts = engine.encrypt(list(range(1, 52)))
        width = engine.ciphertext_bytes
        with pytest.raises(PeerError, match="more than the 50 ciphertexts"):
            peer.put_blob("gradients-t0", to_fixed(cts, width), meta=meta)
        with pytest.raises(PeerError, match="no gradients"):
            peer.call(
                "Histograms",
                pb.SecureBoostHistogramRequest(
                    meta=meta,
                    tree=0,
                    depth=0,
                    nodes=[pb.SecureBoostNodeRequest(node=0, samples=mask_to_bytes(sample))],
                ),
            )
