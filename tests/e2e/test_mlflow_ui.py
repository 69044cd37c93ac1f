"""The lineage an auditor needs is visible in the MLflow UI itself, not only through the API.

A real (small, in-process) SecureBoost job is logged and registered; ``mlflow server`` serves the
store; headless Chromium renders the run page and the registered version's page, and the test
reads the rendered DOM for the lineage tags and each party's dataset input, and keeps a
screenshot. CI installs Debian's chromium and sets ``XINYIDAI_REQUIRE_BROWSER=1`` so this cannot
silently skip there; elsewhere it skips with a message when no chromium is installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from federation.crypto.testing import InsecureKeyWarning, allow_insecure_key_sizes
from models.secureboost import SecureBoostClassifier
from models.secureboost.passive import local_holders
from parties.bank.reports import TrainingReport
from xinyidai.launcher import free_ports
from xinyidai.tracking import (
    PartyDataset,
    TrackingConfig,
    log_training,
    mlflow_client,
    secureboost_record,
)

pytestmark = pytest.mark.e2e

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")


def _browser() -> str:
    if BROWSER is None:
        if os.environ.get("XINYIDAI_REQUIRE_BROWSER") == "1":
            pytest.fail("XINYIDAI_REQUIRE_BROWSER=1 but no chromium is installed")
        pytest.skip("no chromium on this machine (apt-get install chromium to run this test)")
    return BROWSER


def _render(url: str, screenshot: Path) -> str:
    """The DOM after the single-page app rendered (and a PNG of the same page)."""
    common = [
        _browser(),
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--virtual-time-budget=20000",
        "--window-size=1400,2200",
    ]
    subprocess.run(
        [*common, f"--screenshot={screenshot}", url], capture_output=True, timeout=120, check=False
    )
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    return dom.stdout


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """One registered model version from a real federated job (three in-process parties)."""
    rng = np.random.default_rng(0)
    n = 600
    X_bank = pd.DataFrame(rng.normal(size=(n, 3)), columns=["b0", "b1", "b2"])
    tax = rng.normal(size=(n, 2))
    y = (X_bank["b0"] + tax[:, 0] + rng.normal(size=n) > 0).astype(float).to_numpy()
    work = tmp_path_factory.mktemp("ui")
    peers, _ = local_holders({"tax": (tax, ["t0", "t1"])}, work)
    clf = SecureBoostClassifier(n_trees=2, max_depth=2, key_bits=1024, workers=1, job_id="ui-job")
    started = time.perf_counter()
    with allow_insecure_key_sizes(), warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyWarning)
        clf.fit(X_bank, y, holders=peers)
    report = TrainingReport(
        job_id="ui-job",
        alignment_id="ui-psi",
        n_aligned=n,
        n_labelled=n,
        n_train=n,
        n_test=0,
        auc=0.8,
        ks=0.5,
        baseline_auc=0.7,
        baseline_ks=0.4,
        seconds=time.perf_counter() - started,
        tree_seconds=[0.1, 0.2],
        split_owners={"bank": 2, "tax": 1},
    )
    datasets = [
        PartyDataset(party="bank", table="bank", digest="a1" * 32, n_rows=n),
        PartyDataset(party="tax", table="tax", digest="b2" * 32, n_rows=n),
    ]
    tracking = TrackingConfig.resolve(work / "mlflow")
    run = log_training(
        secureboost_record(
            clf,
            report,
            parties=["bank", "tax"],
            datasets=datasets,
            consent={"tax": {"active": 540, "revoked": 12, "expired": 3}},
            config_text="name: ui\n",
        ),
        tracking=tracking,
    )
    return tracking, run, work


@pytest.fixture(scope="module")
def server(tracked):
    tracking, _, work = tracked
    _browser()
    port = free_ports(1)[0]
    log = open(work / "mlflow-server.log", "wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            tracking.tracking_uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "MLFLOW_TRACKING_URI": tracking.tracking_uri},
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("mlflow server did not start:\n" + (work / "mlflow-server.log").read_text())
        time.sleep(0.5)
    yield base
    proc.terminate()
    proc.wait(timeout=30)


def test_run_page_shows_lineage_tags_and_each_partys_dataset(tracked, server):
    tracking, run, work = tracked
    experiment_id = mlflow_client(tracking).get_run(run.run_id).info.experiment_id
    shot = work / "run-page.png"
    dom = _render(f"{server}/#/experiments/{experiment_id}/runs/{run.run_id}", shot)
    for text in (
        "xinyidai.crypto.key_bits",
        "xinyidai.parties",
        "xinyidai.psi_job",
        "xinyidai.config_sha256",
        "bank-bank",  # the first dataset input, with the digest its party computed
        "a1a1a1a1",
    ):
        assert text in dom, f"{text!r} is not on the rendered run page"
    assert "+1" in dom  # the page folds the holder's dataset input behind "+1"
    inputs = mlflow_client(tracking).get_run(run.run_id).inputs.dataset_inputs
    assert sorted(d.dataset.name for d in inputs) == ["bank-bank", "tax-tax"]
    assert shot.exists() and shot.stat().st_size > 20_000  # a rendered page, not a blank one


def test_registered_version_page_shows_alias_and_part_digests(tracked, server):
    _, run, work = tracked
    shot = work / "model-page.png"
    dom = _render(f"{server}/#/models/{run.model_name}/versions/{run.version}", shot)
    assert "challenger" in dom
    assert "xinyidai.part.bank.sha256" in dom
    assert shot.exists() and shot.stat().st_size > 20_000
