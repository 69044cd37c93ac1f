"""The federated scorecard end to end over the in-process transport twin (1024-bit test keys).

Holders are built exactly as a holder node builds them: a ``WoeHolderServicer`` and a
``LinearHolderServicer`` whose features come from ``parties.holder.views.feature_views`` (its
own WOE values, resolved locally), both behind the real ``ServiceRuntime``; every message is
protobuf bytes on a recorded "wire".

What is checked:
- the federated scorecard equals the centralised one on the same bins: every enterprise's
  points within ±1 (train and test rows), coefficients within 1e-3, KS/AUC within 1e-3;
- IV selection: a useless holder column is dropped, and the holder is told so by index only;
- points: each holder keeps its own points table (file, 0600); the bank's part holds none of
  the holders' coefficients; reason codes are per data category and add up to the score;
- the wire: no label, raw feature value, WOE feature value, single holder's linear predictor
  or single holder's points crosses; the ScorePoints answers cancel only in the sum;
- CKKS: the same pipeline on the approximate backend reaches the centralised AUC.
"""

from __future__ import annotations

import json
import stat
import warnings
from pathlib import Path
from types import SimpleNamespace

import carriers
import numpy as np
import pandas as pd
import pytest
from carriers import RecordingPeer

from federation.blobs import BlobStore
from federation.transport.base import ServiceRuntime
from federation.transport.policy import PurposePolicy
from models.base import UNGATED
from models.linear import LinearHolderServicer
from models.linear.backends import encode_contribution
from models.metrics import ks_statistic, roc_auc
from models.scorecard.active import holder_category_points
from models.scorecard.passive import ScorecardHolderServicer
from models.woe import WoeHolderServicer, WoeWarning
from parties.bank.scorecard_model import FederatedScorecard, ScorecardParams
from parties.bank.scorecard_reference import centralised_scorecard
from parties.holder.views import FeatureViewError, feature_views, parse_view, woe_view
from protos import linear_pb2 as pb
from protos import scorecard_pb2 as spb

KEY_BITS = 1024
CATEGORY = {"tax": "tax", "utility": "electricity"}


def small_keys():
    return carriers.small_keys(WoeWarning)


class FixedTable:
    """A holder's encoded table for one pre-aligned job (the node's ``TrainingView`` twin)."""

    def __init__(self, values: np.ndarray, names: list[str]):
        self.values, self.names = values, names

    def features_for(self, bank: str, alignment_id: str) -> tuple[np.ndarray, list[str]]:
        return self.values, self.names


def make_data(n: int = 900, seed: int = 5) -> SimpleNamespace:
    rng = np.random.default_rng(seed)
    bank = np.column_stack(
        [rng.normal(size=n), rng.gamma(2.0, 2.0, n), rng.integers(20, 65, n).astype(float)]
    )
    tax = np.column_stack([rng.normal(size=n), rng.lognormal(1.0, 0.8, n)])
    tax[rng.random(n) < 0.05, 1] = np.nan  # missing values travel as their own bin
    utility = np.column_stack(
        [
            rng.integers(0, 6, n).astype(float),
            rng.normal(size=n),
            (rng.random(n) < 0.5).astype(float),
        ]
    )
    logit = (
        0.9 * bank[:, 0]
        - 0.25 * bank[:, 1]
        + 1.0 * tax[:, 0]
        + 0.4 * np.nan_to_num(np.log(tax[:, 1]), nan=0.5)
        + 0.45 * utility[:, 0]
        - 0.7 * utility[:, 1]
        - 2.2
    )
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    test = np.arange(n) % 5 == 0
    return SimpleNamespace(
        n=n,
        y=y,
        bank=bank,
        bank_names=["balance", "utilisation", "age"],
        holders={
            "tax": (tax, ["vat_paid", "income_tax"]),
            # utility's third column is a random flag: IV selection must drop it
            "utility": (utility, ["late_months", "usage_trend", "meter_noise"]),
        },
        train=np.flatnonzero(~test),
        test=np.flatnonzero(test),
        train_mask=~test,
    )


def build_holders(data: SimpleNamespace, workdir: Path) -> SimpleNamespace:
    """Each holder as a node hosts it: WOE and LR servicers, the LR's features from views."""
    woe_peers, lin_peers, pts_peers = {}, {}, {}
    woe_servicers, lin_servicers, pts_servicers, views = {}, {}, {}, {}
    for name, (values, names) in data.holders.items():
        blobs = BlobStore(workdir / name / "blobs", max_bytes=1 << 30)
        models = workdir / name / "models"
        woe = WoeHolderServicer(
            node_id=name,
            features=values,
            feature_names=names,
            banks=["bank"],
            blobs=blobs,
            min_bin_samples=20,
            workers=1,
            models_dir=models,
        )
        view = feature_views(
            FixedTable(values, names), woe, categories=dict.fromkeys(names, CATEGORY[name])
        )
        linear = LinearHolderServicer(
            node_id=name,
            features_for=view,
            banks=["bank"],
            blobs=blobs,
            workers=1,
            models_dir=models,
        )
        points = ScorecardHolderServicer(
            node_id=name, linear=linear, source=view, banks=["bank"], models_dir=models
        )
        for gated in (linear, points):  # in-process, the test's own data (as local_holders)
            gated.use_gate(UNGATED)
        for servicer, peers in ((woe, woe_peers), (linear, lin_peers), (points, pts_peers)):
            runtime = ServiceRuntime(servicer, node_id=name, audit=None, purposes=PurposePolicy())
            peers[name] = RecordingPeer(runtime, self_id="bank", audit=None, deadline_s=600)
        woe_servicers[name], lin_servicers[name], views[name] = woe, linear, view
        pts_servicers[name] = points
    return SimpleNamespace(
        woe_peers=woe_peers,
        lin_peers=lin_peers,
        pts_peers=pts_peers,
        points=pts_servicers,
        woe=woe_servicers,
        linear=lin_servicers,
        views=views,
        workdir=workdir,
    )


PARAMS = dict(key_bits=KEY_BITS, workers=1, max_iter=12, learning_rate=1.0, tol=None, alpha=1e-3)


def split(data: SimpleNamespace, rows: np.ndarray) -> dict[str, np.ndarray]:
    out = {"bank": data.bank[rows]}
    out.update({h: v[rows] for h, (v, _) in data.holders.items()})
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    data = make_data()
    h = build_holders(data, tmp_path_factory.mktemp("scorecard"))
    params = ScorecardParams(**PARAMS)
    X_bank = pd.DataFrame(data.bank, columns=data.bank_names)
    card = FederatedScorecard(params, job_id="card")
    with small_keys():
        card.fit(
            X_bank.iloc[data.train].reset_index(drop=True),
            data.y[data.train],
            woe_holders=h.woe_peers,
            linear_holders=h.lin_peers,
            points_holders=h.pts_peers,
            alignment_rows=data.train_mask,
        )
    features = {"bank": (data.bank[data.train], data.bank_names)}
    features.update({k: (v[data.train], n) for k, (v, n) in data.holders.items()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", WoeWarning)
        central = centralised_scorecard(
            features, data.y[data.train], params, categories={"bank": "bank", **CATEGORY}
        )
    everyone = np.arange(data.n)
    fed_points = card.score(X_bank, holders=h.pts_peers, rows=everyone)
    fed_proba = card.predict_proba(X_bank, holders=h.lin_peers, rows=everyone)[:, 1]
    central_points = central.score(split(data, everyone))
    central_proba = central.predict_proba(split(data, everyone))[:, 1]
    return SimpleNamespace(
        data=data,
        h=h,
        card=card,
        central=central,
        X_bank=X_bank,
        fed_points=fed_points,
        fed_proba=fed_proba,
        central_points=central_points,
        central_proba=central_proba,
    )


# --------------------------------------------------------------------------------------------
# the federation equals the centralised scorecard on the same bins


def test_points_match_the_centralised_scorecard_within_one_point(run):
    diff = np.abs(run.fed_points - run.central_points)
    assert diff.max() <= 1.0, f"max |Δpoints| = {diff.max()}"
    assert np.mean(diff == 0) > 0.99  # rounding of identical bins: in practice equal
    assert run.fed_points.std() > 20  # the scores spread: the check has teeth
    assert run.card.scorecard_.base_points == run.central.scorecard.base_points


def test_ks_auc_and_coefficients_match_the_centralised_scorecard(run):
    d = run.data
    y = d.y[d.test]
    for fed, ref in (
        (run.fed_proba[d.test], run.central_proba[d.test]),
        (-run.fed_points[d.test], -run.central_points[d.test]),
    ):
        assert abs(roc_auc(y, fed) - roc_auc(y, ref)) < 1e-3
        assert abs(ks_statistic(y, fed) - ks_statistic(y, ref)) < 1e-3
    assert roc_auc(y, run.fed_proba[d.test]) > 0.7
    coefs = run.central.coefficients
    assert np.abs(run.card.lr_.coef_[0] - coefs["bank"]).max() < 1e-3
    for name, servicer in run.h.linear.items():
        weights = servicer.model("bank", run.card.lr_.job_id_).weights
        assert np.abs(weights - coefs[name]).max() < 1e-3
        assert np.abs(weights).min() > 1e-2  # every kept feature moved
    # points grow with safety: a riskier probability never has more points on average
    assert np.corrcoef(run.fed_points, run.fed_proba)[0, 1] < -0.9


def test_iv_selection_drops_the_useless_column_by_index(run):
    sel = run.card.selected_
    assert sel["tax"] == [0, 1] and 2 not in sel["utility"] and 0 in sel["utility"]
    assert sel == {k: v for k, v in run.central.selected.items()}
    starts = [
        pb.LinearStart.FromString(raw)
        for m, d, raw in run.h.lin_peers["utility"].wire
        if (m, d) == ("Start", "request")
    ]
    assert [s.feature_view for s in starts] == [woe_view(run.card.woe_.job_id_, sel["utility"])]
    assert "meter_noise" not in starts[0].SerializeToString().decode("latin-1")


# --------------------------------------------------------------------------------------------
# points stay with their party; reason codes are per category


def test_each_holder_keeps_its_points_table_and_the_bank_keeps_none(run):
    job = run.card.lr_.job_id_
    bank_part = run.card.to_json()
    for name, servicer in run.h.points.items():
        path = run.h.workdir / name / "models" / "bank" / f"{job}.points.json"
        assert path.exists() and stat.S_IMODE(path.stat().st_mode) == 0o600
        table = servicer.points_table("bank", job)
        assert {f.category for f in table.features} == {CATEGORY[name]}
        for f in table.features:
            assert f"{f.coefficient!r}" not in bank_part
            assert f.name not in bank_part
    assert json.loads(bank_part)["holders"] == ["tax", "utility"]


def test_reason_codes_are_per_category_and_add_up_to_the_score(run):
    rows = run.data.test[:5]
    X = run.X_bank.iloc[rows].reset_index(drop=True)
    reasons = run.card.reasons(X, holders=run.h.pts_peers, rows=rows, k=3)
    assert len(reasons) == 5
    assert {r.category for rs in reasons for r in rs} <= {"bank", "tax", "electricity"}
    assert any(reasons)
    # the per-category answers are consistent with the masked totals
    points, _ = holder_category_points(run.card.lr_.model_, run.h.pts_peers, rows)
    bank_bins = run.card.bank_bins(X)
    total = run.card.scorecard_.score(bank_bins, {"holders": sum(points.values())})
    assert np.array_equal(total, run.fed_points[rows])


# --------------------------------------------------------------------------------------------
# what crosses the wire


def _patterns(values: np.ndarray) -> np.ndarray:
    """Distinctive float64 byte patterns (both byte orders; at least half the bytes non-zero,
    so round numbers like 20.0 that any binary message contains are not counted)."""
    arr = np.unique(np.asarray(values, dtype=np.float64))
    arr = arr[np.isfinite(arr) & (arr != 0)]
    arr = arr[(arr.view(np.uint8).reshape(-1, 8) != 0).sum(axis=1) >= 4]
    native = arr.view(np.uint64)
    return np.unique(np.concatenate([native, native.byteswap()]))


def _found(pats: np.ndarray, buf: bytes) -> bool:
    """Does any 8-byte window of ``buf`` (at any offset) equal one of ``pats``?"""
    pats = np.sort(pats)
    for k in range(8):
        win = np.frombuffer(buf, dtype=np.uint64, count=(len(buf) - k) // 8, offset=k)
        idx = np.minimum(np.searchsorted(pats, win), pats.size - 1)
        if (pats[idx] == win).any():
            return True
    return False


def test_no_label_feature_woe_value_or_single_holder_part_crosses_the_wire(run):
    d, h = run.data, run.h
    wire = [
        raw
        for peers in (h.woe_peers, h.lin_peers, h.pts_peers)
        for p in peers.values()
        for *_, raw in p.wire
    ]
    everything = b"".join(wire)
    assert len(everything) > 200_000  # ciphertexts did travel
    job = run.card.lr_.job_id_
    secrets = {"bank features": d.bank.ravel()}
    for name, (values, _) in d.holders.items():
        secrets[f"{name} features"] = values.ravel()
        view = h.linear[name].model("bank", job).feature_view
        woe_values, _ = h.views[name]("bank", "", view)
        secrets[f"{name} WOE features"] = woe_values.ravel()
        weights = h.linear[name].model("bank", job).weights
        secrets[f"{name} linear predictor"] = woe_values @ weights
    # (a holder's points are whole numbers, not distinctive as bytes: the masking test below
    # checks them in the form they would travel)
    # The bank computes every bin's WOE and sends the tables in WoeFinish (by design); which
    # bin a row is in — its WOE value — must not come back, nor be part of the LR traffic.
    back = b"".join(
        [raw for ps in (h.lin_peers, h.pts_peers) for p in ps.values() for *_, raw in p.wire]
        + [raw for p in h.woe_peers.values() for _, d_, raw in p.wire if d_ == "response"]
    )
    for what, values in secrets.items():
        pats = _patterns(values)
        assert pats.size >= 4, what
        assert not _found(pats, back if "WOE" in what else everything), f"a {what} crossed"
    # the detector has teeth: the WOE tables the bank sent (per bin, by design) are found
    tables = np.concatenate([t.woe for t in run.card.woe_.tables_["tax"]])
    assert _found(_patterns(tables), everything)
    y = d.y
    for form in (np.packbits(y.astype(bool)).tobytes(), y.astype(np.uint8).tobytes()):
        assert form[:24] not in everything, "the label vector crossed the wire"


def test_score_points_answers_are_masked_and_cancel_in_the_sum(run):
    h, job = run.h, run.card.lr_.job_id_
    got, true = {}, {}
    for name, peer in h.pts_peers.items():
        pairs = [
            (spb.ScorePointsRequest.FromString(q), spb.PointsReply.FromString(a))
            for (m1, d1, q), (m2, d2, a) in zip(peer.wire, peer.wire[1:], strict=False)
            if (m1, d1, m2, d2) == ("ScorePoints", "request", "ScorePoints", "response")
        ]
        request, reply = next((q, a) for q, a in pairs if not q.by_category)
        assert reply.masked and not reply.categories
        rows = np.asarray(request.rows)
        view = h.linear[name].model("bank", job).feature_view
        table = h.points[name].points_table("bank", job)
        true[name] = encode_contribution(
            table.score(h.views[name].bins("bank", "", view)[rows]), "t"
        )
        got[name] = np.frombuffer(reply.values, dtype="<u8")
        assert (got[name] != true[name]).mean() > 0.99, f"{name}: points are unmasked"
    assert np.array_equal(got["tax"] + got["utility"], true["tax"] + true["utility"])


# --------------------------------------------------------------------------------------------
# views, refusals and the CKKS backend


def test_feature_views_parse_and_refuse():
    assert parse_view("woe:job-1") == ("job-1", None)
    assert parse_view("woe:job-1:0,3") == ("job-1", [0, 3])
    for bad in ("", "raw", "woe:", "woe:j:3,1", "woe:j:1,1", "woe:../x", "woe:j:a"):
        with pytest.raises(FeatureViewError):
            parse_view(bad)


def test_a_view_of_an_unknown_woe_job_or_column_is_refused(run):
    view = run.h.views["tax"]
    with pytest.raises(FeatureViewError):
        view("bank", "", woe_view(run.card.woe_.job_id_, [5]))
    drifted = type(view)(FixedTable(run.data.holders["tax"][0], ["a", "b"]), run.h.woe["tax"])
    with pytest.raises(FeatureViewError, match="schema drift"):
        drifted("bank", "", woe_view(run.card.woe_.job_id_))


def test_ckks_scorecard_reaches_the_centralised_auc(tmp_path):
    data = make_data(n=600, seed=9)
    h = build_holders(data, tmp_path)
    params = ScorecardParams(**{**PARAMS, "backend": "ckks", "max_iter": 8})
    X_bank = pd.DataFrame(data.bank, columns=data.bank_names)
    with small_keys():
        card = FederatedScorecard(params).fit(
            X_bank.iloc[data.train].reset_index(drop=True),
            data.y[data.train],
            woe_holders=h.woe_peers,
            linear_holders=h.lin_peers,
            points_holders=h.pts_peers,
            alignment_rows=data.train_mask,
        )
    features = {"bank": (data.bank[data.train], data.bank_names)}
    features.update({k: (v[data.train], n) for k, (v, n) in data.holders.items()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", WoeWarning)
        central = centralised_scorecard(features, data.y[data.train], params)
    rows = data.test
    X = X_bank.iloc[rows].reset_index(drop=True)
    fed = card.score(X, holders=h.pts_peers, rows=rows)
    ref = central.score(split(data, rows))
    y = data.y[rows]
    assert abs(roc_auc(y, -fed) - roc_auc(y, -ref)) < 0.01
    assert np.abs(fed - ref).max() <= 2.0  # approximate arithmetic: a rounding step at most
