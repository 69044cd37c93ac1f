"""The shared skeletons of the models layer: ``HolderModule`` (every holder servicer) and
``HolderDriver`` (every bank half).

What matters here is the contract the protocols rely on, without any cryptography: rows reach a
servicer only through the gate (and a refused request reads nothing), jobs are scoped by
(bank, job id) and swept when idle, model parts are private files read back after a restart,
and the bank's fan-out blames the first failing holder and asks every started holder to abort.
"""

from __future__ import annotations

import stat
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from federation.errors import PeerError, Refused, XinyidaiError
from federation.transport.base import CallFailed, CallInfo
from models.base import HolderJob, HolderModule, RowAccess
from models.driver import HolderDriver, ask_holders
from protos import common_pb2


@dataclass
class Part:
    value: int

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value}


@dataclass(kw_only=True)
class Job(HolderJob):
    closed: list[str] = field(default_factory=list)

    def close(self) -> None:
        self.closed.append("closed")


class Toy(HolderModule[Job, Part]):
    protocol = "toy"
    model_file = "{job}.toy.json"

    def __init__(self, **kwargs: Any):
        self.reads: list[tuple[str, str]] = []
        self.seen: list[RowAccess] = []
        self.refuse = False
        table = np.arange(12.0).reshape(6, 2)

        def features_for(bank: str, alignment_id: str) -> tuple[np.ndarray, list[str]]:
            self.reads.append((bank, alignment_id))
            return table, ["a", "b"]

        super().__init__(features_for=features_for, **kwargs)

    def gate(self, access: RowAccess) -> None:
        self.seen.append(access)
        if self.refuse:
            raise Refused("consent", "no authorisation")

    def _decode_model(self, data: dict[str, Any]) -> Part:
        return Part(int(data["value"]))


def call(job_id: str = "j1", caller: str = "bank", method: str = "Predict") -> CallInfo:
    meta = common_pb2.RequestMeta(purpose="financing", job_id=job_id, request_id="r")
    return CallInfo(caller=caller, method=method, meta=meta)


def test_rows_reach_a_servicer_only_through_the_gate(tmp_path):
    toy = Toy(node_id="tax", banks=["bank"], models_dir=tmp_path)
    rows = toy.rows_for(call(), alignment_id="psi-1", rows=[4, 1], what="Predict")
    assert rows.values.tolist() == [[8.0, 9.0], [2.0, 3.0]] and rows.n_rows == 6
    (access,) = toy.seen
    assert not access.training and access.rows.tolist() == [4, 1]
    assert (access.bank, access.job_id, access.alignment_id) == ("bank", "j1", "psi-1")
    # a refused request is stopped before the holder reads anything
    toy.refuse, toy.reads = True, []
    with pytest.raises(Refused):
        toy.rows_for(call(), alignment_id="psi-1", rows=[0])
    assert toy.reads == []
    toy.refuse = False
    with pytest.raises(CallFailed, match=r"Predict: rows must be in \[0, 6\)"):
        toy.rows_for(call(), alignment_id="psi-1", rows=[6])
    # a training job's rows pass the same gate, marked as training
    mask = np.packbits(np.array([1, 0, 1, 0, 0, 0], dtype=bool)).tobytes()
    start = toy.training_rows(call(method="Start"), alignment_id="psi-1", rows=mask)
    assert start.positions.tolist() == [0, 2] and toy.seen[-1].training


def test_jobs_are_scoped_by_bank_and_job_and_swept_when_idle(tmp_path):
    toy = Toy(node_id="tax", banks=["bank", "bank2"])
    with pytest.raises(Refused, match="not a bank this holder trains with"):
        toy.authorise_caller("stranger", "Start")
    with pytest.raises(CallFailed, match=r"meta\.job_id"):
        toy.check_job_id(call(job_id="../etc"))
    first, second = Job(), Job()
    toy.open_job(call("j1"), first)
    toy.open_job(call("j1", caller="bank2"), second)
    assert toy.open_jobs() == [("bank", "j1"), ("bank2", "j1")]
    assert toy.job(call("j1")) is first
    with pytest.raises(CallFailed, match="no open toy job 'j2' from bank"):
        toy.job(call("j2"))
    toy.drop_job(call("j1"), first)
    assert first.closed == ["closed"] and toy.open_jobs() == [("bank2", "j1")]
    assert toy.sweep(idle_s=3600) == {"jobs": 0, "checkpoints": 0}
    assert toy.sweep(idle_s=0) == {"jobs": 1, "checkpoints": 0}
    assert second.closed == ["closed"] and toy.open_jobs() == []


def test_model_parts_are_private_files_read_back_after_a_restart(tmp_path):
    toy = Toy(node_id="tax", banks=["bank"], models_dir=tmp_path)
    toy.keep_model(call("j1"), Part(7))
    path = tmp_path / "bank" / "j1.toy.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    restarted = Toy(node_id="tax", banks=["bank"], models_dir=tmp_path)
    assert restarted.has_model(("bank", "j1")) and not restarted.has_model(
        ("bank", "j1"), stored=False
    )
    assert restarted.model("bank", "j1") == Part(7)
    with pytest.raises(CallFailed, match="no finished toy model 'j2' for bank"):
        restarted.model("bank", "j2")


class FakePeer:
    def __init__(self, name: str, fail: set[str] | None = None):
        self.name = name
        self.fail = fail or set()
        self.calls: list[tuple[str, Any]] = []
        self.lock = threading.Lock()

    def call(self, method: str, request: Any) -> str:
        with self.lock:
            self.calls.append((method, request))
        if method in self.fail:
            raise PeerError(self.name, method, "down")
        return f"{self.name}:{method}"


class JobStopped(XinyidaiError):
    def __init__(self, message: str, *, holder: str | None, stage: str):
        self.holder, self.stage = holder, stage
        super().__init__(message)


def test_the_driver_blames_the_first_failing_holder_and_aborts_the_started_ones():
    peers = {"tax": FakePeer("tax"), "power": FakePeer("power", {"Step"}), "gas": FakePeer("gas")}
    driver = HolderDriver(peers, purpose="financing", job_id="j1")  # type: ignore[arg-type]
    with (
        pytest.raises(JobStopped, match=r"toy job j1 failed at step 2 \(holder 'power'\)") as err,
        driver.running(
            abort=lambda: common_pb2.RequestMeta(job_id="abort"),
            error=JobStopped,
            attributable=(PeerError,),
            what="toy job j1",
            dropped="Every holder was asked to drop it.",
        ),
    ):
        driver.started = list(peers)
        assert driver.each_call("Start", common_pb2.RequestMeta()) == {
            n: f"{n}:Start" for n in peers
        }
        driver.stage = "step 2"
        driver.each_call("Step", common_pb2.RequestMeta())
    assert err.value.holder == "power" and err.value.stage == "step 2"
    # every holder was called (the failure is raised after all returned), then asked to abort
    assert all([m for m, _ in p.calls] == ["Start", "Step", "Finish"] for p in peers.values())


def test_finished_holders_are_not_aborted_and_scoring_names_its_holder():
    peers = {"tax": FakePeer("tax"), "power": FakePeer("power", {"Finish"})}
    driver = HolderDriver(peers, purpose="financing", job_id="j1")  # type: ignore[arg-type]
    driver.started = list(peers)
    with pytest.raises(PeerError):
        driver.finish(common_pb2.RequestMeta())
    assert driver.started == ["power"] and driver.holder == "power"
    with pytest.raises(LookupError, match="power"):
        ask_holders(
            peers,  # type: ignore[arg-type]
            ["tax", "power"],
            "Finish",
            common_pb2.RequestMeta(),
            failure=lambda name, exc: LookupError(name),
        )
