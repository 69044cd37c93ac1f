"""The production stores on a real PostgreSQL server: audit log and consent registry.

A throwaway cluster (initdb into a temporary directory, loopback only, password auth) is started
once for the module; each test gets its own fresh database. Nothing here is mocked: concurrent
appends come from threads and from separate OS processes, and tampering is done with SQL on the
server, the way someone with database access would do it.

Needs the PostgreSQL server binaries (``apt-get install postgresql``; another location can be
given in ``XINYIDAI_PG_BIN``) and the driver (``pip install 'xinyidai[postgres]'``). Without them
the module is skipped, unless ``XINYIDAI_REQUIRE_POSTGRES=1`` turns the skip into a failure (CI).
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing as mp
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from federation.audit import AuditLog, record_hash
from federation.errors import AuditChainError
from federation.pki import init_pki, load_platform_public_key, load_platform_signing_key
from federation.transport.base import PeerRefused, new_meta
from parties.authorisation import (
    Authorisation,
    ConsentError,
    PlatformSigner,
    SignedAuthorisation,
)
from parties.config import load_node_config
from parties.consent import ConsentRegistry
from parties.data import uscc as uscc_codes
from parties.node import Node, connect
from protos import holder_pb2
from xinyidai.demo import build_federation

pytestmark = pytest.mark.e2e

DAY = 86_400.0
HOW_TO_GET = (
    "install the server binaries (apt-get install postgresql, or set XINYIDAI_PG_BIN to their "
    "directory) and the driver (pip install 'xinyidai[postgres]')"
)


# ------------------------------------------------------------------------------------------------
# The throwaway cluster


def _unavailable(why: str) -> None:
    message = f"PostgreSQL tests cannot run: {why}; {HOW_TO_GET}"
    if os.environ.get("XINYIDAI_REQUIRE_POSTGRES") == "1":
        pytest.fail(message)
    pytest.skip(message)


def _pg_bin() -> Path | None:
    candidates = []
    if os.environ.get("XINYIDAI_PG_BIN"):
        candidates.append(Path(os.environ["XINYIDAI_PG_BIN"]))
    candidates += sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).parent)
    for directory in candidates:
        if all((directory / tool).is_file() for tool in ("initdb", "pg_ctl", "pg_isready")):
            return directory
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgCluster:
    """A running throwaway cluster; ``url(db)`` gives the SQLAlchemy URL of one database."""

    bin_dir: Path
    root: Path
    port: int
    password: str
    as_user: list[str]  # prefix that runs a command as the cluster's owner (runuser when root)

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str) -> str:
        return (
            f"postgresql+psycopg://postgres:{self.password}@127.0.0.1:{self.port}/{database}"
            "?connect_timeout=10"
        )

    def run(self, tool: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.as_user, str(self.bin_dir / tool), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=self.root,
        )

    def create_database(self, name: str) -> str:
        import psycopg
        from psycopg import sql

        with psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user="postgres",
            password=self.password,
            dbname="postgres",
            autocommit=True,
            connect_timeout=10,
        ) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def log_tail(self) -> str:
        try:
            return (self.root / "server.log").read_text(errors="replace")[-2000:]
        except OSError:
            return "(no server log)"

    def start(self) -> None:
        options = " ".join(
            [
                "-c listen_addresses=127.0.0.1",
                f"-p {self.port}",
                f"-c unix_socket_directories={self.root}",
                # Throwaway data: no need to survive a crash, so do not wait for the disk.
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=100",
            ]
        )
        done = self.run(
            "pg_ctl",
            "start",
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-t",
            "20",
            "-o",
            options,
            timeout=30,
        )
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {done.stderr.strip()}\n{self.log_tail()}")
        ready = subprocess.run(
            [str(self.bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-t", "10"],
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        )
        if ready.returncode != 0:
            raise RuntimeError(f"server not ready: {ready.stdout.strip()}\n{self.log_tail()}")

    def stop(self) -> None:
        if not (self.data / "postmaster.pid").exists():
            return
        try:
            done = self.run(
                "pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", "10", timeout=15
            )
            if done.returncode == 0:
                return
        except subprocess.TimeoutExpired:
            pass
        # Did not stop in time: kill the postmaster we started (its pid is in postmaster.pid).
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.data / "postmaster.pid").read_text().splitlines()[0])
            os.kill(pid, signal.SIGKILL)


def _start_cluster() -> Iterator[PgCluster]:
    bin_dir = _pg_bin()
    if bin_dir is None:
        _unavailable("no initdb/pg_ctl/pg_isready found")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("the psycopg driver is not installed")
    as_user: list[str] = []
    owner = None
    if os.geteuid() == 0:  # initdb refuses to run as root: the cluster belongs to 'postgres'
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            _unavailable("running as root and there is no 'postgres' user to own the cluster")
        runuser = shutil.which("runuser")
        if runuser is None:
            _unavailable("running as root and runuser is not available")
        as_user = [str(runuser), "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="xinyidai-pg-"))
    cluster = PgCluster(bin_dir, root, 0, secrets.token_hex(16), as_user)
    try:
        root.chmod(0o700)
        pwfile = root / "pwfile"
        pwfile.write_text(cluster.password + "\n")
        if owner is not None:
            os.chown(root, owner.pw_uid, owner.pw_gid)
            os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        done = cluster.run(
            "initdb",
            "-D",
            str(cluster.data),
            "-U",
            "postgres",
            f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256",
            "--auth-local=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
            timeout=60,
        )
        pwfile.unlink()
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr.strip()}")
        for attempt in range(3):  # a free port can be taken between choosing and binding it
            cluster.port = _free_port()
            try:
                cluster.start()
                break
            except RuntimeError:
                cluster.stop()
                if attempt == 2:
                    raise
        yield cluster
    finally:
        try:
            cluster.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def pg() -> Iterator[PgCluster]:
    yield from _start_cluster()


@pytest.fixture
def db_url(pg: PgCluster, request: pytest.FixtureRequest) -> str:
    """A fresh, empty database for one test."""
    name = "t_" + request.node.name.removeprefix("test_")[:40].lower() + "_" + secrets.token_hex(3)
    return pg.create_database(name)


@contextlib.contextmanager
def raw_sql(url: str) -> Iterator:
    """A connection straight to the server, in one committed transaction (for tampering)."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            yield conn
    finally:
        engine.dispose()


# ------------------------------------------------------------------------------------------------
# The cluster itself


def test_cluster_is_loopback_only_with_password_auth(pg: PgCluster, db_url: str) -> None:
    with raw_sql(db_url) as conn:
        assert conn.execute(text("SHOW listen_addresses")).scalar() == "127.0.0.1"
        assert conn.execute(text("SELECT version()")).scalar().startswith("PostgreSQL")
    bad = db_url.replace(pg.password, "wrong")
    with pytest.raises(OperationalError, match="password authentication failed"), raw_sql(bad):
        pass


# ------------------------------------------------------------------------------------------------
# Audit log


def _append_in_process(url: str, node_id: str, n: int, barrier, results) -> None:
    """Child process body: open its own AuditLog on the shared URL, append n records at once."""
    try:
        log = AuditLog(url, node_id)
        try:
            barrier.wait(timeout=60)
            out = [
                (e.seq, e.hash)
                for e in (
                    log.append(
                        direction="local", peer=node_id, operation="mp.append", counts={"i": i}
                    )
                    for i in range(n)
                )
            ]
        finally:
            log.close()
        results.put((node_id, out, None))
    except BaseException:
        results.put((node_id, [], traceback.format_exc()))
        raise


def test_audit_appends_from_threads_and_processes_form_one_chain(db_url: str) -> None:
    n_procs, n_threads, per_writer = 3, 4, 40
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(n_procs + 1)
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=_append_in_process,
            args=(db_url, f"proc-{i}", per_writer, barrier, results),
            daemon=True,
        )
        for i in range(n_procs)
    ]
    for p in procs:
        p.start()
    # Two threads share one AuditLog (its threading.Lock orders them), two have their own
    # engine each, so only the database row lock stands between them and the processes.
    shared = AuditLog(db_url, "parent")
    logs = [shared, shared, AuditLog(db_url, "parent"), AuditLog(db_url, "parent")]
    returned: dict[str, list[tuple[int, str]]] = {}
    errors: list[str] = []

    def thread_body(j: int, log: AuditLog) -> None:
        try:
            out = []
            for i in range(per_writer):
                e = log.append(direction="local", peer=f"thread-{j}", operation="t.append")
                assert e.counts == {} and e.node_id == "parent"
                out.append((e.seq, e.hash))
            returned[f"thread-{j}"] = out
        except Exception:
            errors.append(traceback.format_exc())

    threads = [threading.Thread(target=thread_body, args=(j, logs[j])) for j in range(n_threads)]
    try:
        barrier.wait(timeout=60)  # every child has opened its log: start everyone together
        for t in threads:
            t.start()
        for _ in procs:
            node_id, out, error = results.get(timeout=60)
            if error:
                errors.append(f"{node_id}:\n{error}")
            returned[node_id] = out
        for t in threads:
            t.join(timeout=60)
        for p in procs:
            p.join(timeout=30)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
    assert not errors, "\n".join(errors)
    assert [p.exitcode for p in procs] == [0] * n_procs
    assert not any(t.is_alive() for t in threads)

    total = (n_procs + n_threads) * per_writer
    result = shared.verify()
    assert result.ok, [str(p) for p in result.problems]
    assert result.n_records == total and result.head_seq == total
    entries = shared.query()
    assert [e.seq for e in entries] == list(range(1, total + 1))  # contiguous, no gap, no dup
    # What each writer was told it appended is exactly what is stored: no seq handed out twice.
    stored = {e.seq: e.hash for e in entries}
    claimed = [item for out in returned.values() for item in out]
    assert len(claimed) == total and dict(claimed) == stored
    for writer, out in returned.items():
        seqs = [s for s, _ in out]
        assert seqs == sorted(seqs), f"{writer} got seqs out of order"
    writers = [e.node_id if e.node_id != "parent" else e.peer for e in entries]
    assert {w: writers.count(w) for w in set(writers)} == dict.fromkeys(returned, per_writer)
    # The writers really ran at the same time: their records interleave in the chain.
    switches = sum(a != b for a, b in itertools.pairwise(writers))
    assert switches >= total // 10, f"writers barely overlapped ({switches} switches)"
    for log in logs[1:]:
        log.close()
    shared.close()


def test_audit_head_row_lock_serialises_appends(db_url: str) -> None:
    """Another writer holds the head row mid-append: our append must wait for it, then chain
    onto the record it committed (reading the head without the lock would reuse its seq)."""
    log = AuditLog(db_url, "bank")
    first = log.append(direction="local", peer="bank", operation="before")
    done = threading.Event()
    outcome: list = []

    def append() -> None:
        try:
            outcome.append(log.append(direction="local", peer="bank", operation="while-locked"))
        except Exception as exc:
            outcome.append(exc)
        done.set()

    other = {
        "seq": first.seq + 1,
        "ts": time.time(),
        "node_id": "bank",
        "direction": "local",
        "peer": "cli",
        "operation": "other-writer",
        "purpose": "",
        "job_id": "",
        "model_id": "",
        "subject": "",
        "request_id": "",
        "counts": {},
        "decision": "allow",
        "reason": "",
    }
    other_hash = record_hash(first.hash, other)
    engine = create_engine(db_url, poolclass=NullPool)
    try:
        with engine.connect() as writer:
            writer.begin()
            head = writer.execute(
                text("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE")
            ).one()
            assert tuple(head) == (first.seq, first.hash)
            worker = threading.Thread(target=append, daemon=True)
            worker.start()
            # The append must be waiting on our row lock, visibly, on the server.
            deadline = time.monotonic() + 10
            with engine.connect() as observer:
                while True:
                    waiting = observer.execute(
                        text(
                            "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                            "current_database() AND wait_event_type = 'Lock'"
                        )
                    ).scalar()
                    if waiting or time.monotonic() > deadline:
                        break
                    time.sleep(0.02)
            assert waiting == 1, "the append is not blocked on the head row lock"
            # Finish the other writer's append (what AuditLog.append does) while ours waits.
            writer.execute(
                text(
                    "INSERT INTO audit_log VALUES (:seq, :ts, :node_id, :direction, :peer, "
                    ":operation, :purpose, :job_id, :model_id, :subject, :request_id, "
                    ":counts, :decision, :reason, :prev_hash, :hash)"
                ),
                {**other, "counts": "{}", "prev_hash": first.hash, "hash": other_hash},
            )
            writer.execute(
                text("UPDATE audit_head SET seq = :seq, hash = :hash WHERE id = 1"),
                {"seq": other["seq"], "hash": other_hash},
            )
            assert not done.wait(0.3), "the append went through while the head row was locked"
            writer.commit()
        assert done.wait(10), "the append did not proceed once the lock was released"
        worker.join(timeout=5)
    finally:
        engine.dispose()
    appended = outcome[0]
    assert not isinstance(appended, Exception), appended
    assert appended.seq == first.seq + 2 and appended.prev_hash == other_hash
    result = log.verify()
    assert result.ok, [str(p) for p in result.problems]
    assert result.n_records == 3 and log.head() == (appended.seq, appended.hash)
    assert [e.operation for e in log.query()] == ["before", "other-writer", "while-locked"]
    log.close()


def _fill(log: AuditLog, n: int) -> None:
    for i in range(1, n + 1):
        log.append(
            direction=("served", "made", "local")[i % 3],
            peer="tax" if i % 2 else "utility",
            operation="Hello" if i % 4 == 0 else "CheckAuthorisation",
            purpose="financing",
            job_id=f"job-{i % 3}",
            subject=f"subject-{i % 5}",
            counts={"rows": i},
            decision="deny" if i % 5 == 0 else "allow",
            reason="no consent" if i % 5 == 0 else "",
            ts=1_000.0 + i,
        )


def test_audit_verify_names_edited_and_deleted_records(db_url: str) -> None:
    log = AuditLog(db_url, "tax")
    _fill(log, 20)
    assert log.verify().ok
    with raw_sql(db_url) as conn:
        conn.execute(text("UPDATE audit_log SET decision = 'allow', reason = '' WHERE seq = 10"))
        conn.execute(text("DELETE FROM audit_log WHERE seq = 14"))
    result = log.verify()
    assert not result.ok
    found = {(p.seq, p.kind) for p in result.problems}
    assert (10, "edited") in found and (14, "deleted") in found, [str(p) for p in result.problems]
    assert not {(s, k) for s, k in found if s not in (10, 14)}, [str(p) for p in result.problems]
    text_of = "\n".join(str(p) for p in result.problems)
    assert "record 10" in text_of and "record 14" in text_of
    with pytest.raises(AuditChainError, match="record 10"):
        result.raise_if_broken()
    log.close()


def test_audit_verify_catches_truncation_and_a_rewritten_head(db_url: str) -> None:
    log = AuditLog(db_url, "tax")
    _fill(log, 12)
    anchor = log.head()
    with raw_sql(db_url) as conn:
        conn.execute(text("DELETE FROM audit_log WHERE seq > 9"))
    result = log.verify()
    assert not result.ok and result.n_records == 9
    assert [(p.seq, p.kind) for p in result.problems] == [(10, "truncated")]
    # Also rewinding the head (a consistent truncation) is caught by a published anchor.
    with raw_sql(db_url) as conn:
        conn.execute(
            text("UPDATE audit_head SET seq = 9, hash = (SELECT hash FROM audit_log WHERE seq = 9)")
        )
    assert log.verify().ok  # the database alone can no longer tell...
    anchored = log.verify(anchor=anchor)
    assert not anchored.ok and [(p.seq, p.kind) for p in anchored.problems] == [(12, "truncated")]
    log.close()


def test_audit_query_filters_and_summary(db_url: str) -> None:
    log = AuditLog(db_url, "tax")
    _fill(log, 30)
    assert [e.seq for e in log.query(since=1_010.0, until=1_013.0)] == [10, 11, 12]
    assert {e.peer for e in log.query(peer="utility")} == {"utility"}
    assert len(log.query(peer="utility")) == 15
    assert [e.seq for e in log.query(operation="Hello")] == [4, 8, 12, 16, 20, 24, 28]
    denied = log.query(decision="deny")
    assert [e.seq for e in denied] == [5, 10, 15, 20, 25, 30]
    assert all(e.reason == "no consent" for e in denied)
    assert [e.seq for e in log.query(job_id="job-0", subject="subject-0")] == [15, 30]
    assert [e.seq for e in log.query(limit=3)] == [28, 29, 30]  # most recent, oldest first
    assert [e.seq for e in log.query(peer="tax", decision="deny", limit=2)] == [15, 25]
    assert log.query(operation="no-such-thing") == []
    e = log.query(since=1_007.0, limit=1)[0]
    assert e.counts == {"rows": 30} and e.ts == 1_030.0 and e.purpose == "financing"
    summary = log.summary()
    assert summary["records"] == 30
    assert summary["first_ts"] == 1_001.0 and summary["last_ts"] == 1_030.0
    assert summary["by_decision"] == {"allow": 24, "deny": 6}
    assert summary["by_operation"] == {"CheckAuthorisation": 23, "Hello": 7}
    log.close()


def test_audit_url_never_shows_the_password(pg: PgCluster, db_url: str) -> None:
    log = AuditLog(db_url, "bank")
    assert pg.password not in log.url and pg.password not in repr(log)
    assert "127.0.0.1" in log.url
    log.close()


# ------------------------------------------------------------------------------------------------
# Consent registry


@pytest.fixture(scope="module")
def signing_key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_pki(tmp_path_factory.mktemp("pki"), ["bank"]).platform_signing_key


@pytest.fixture(scope="module")
def signer(signing_key_file: Path) -> PlatformSigner:
    return PlatformSigner.from_file(signing_key_file)


@pytest.fixture(scope="module")
def codes() -> list[str]:
    return list(uscc_codes.generate(np.random.default_rng(1), 6, ["510104"]))


def _issue(signer: PlatformSigner, code: str, *, categories=("tax",), days=(-1.0, 365.0)):
    now = time.time()
    return signer.issue(
        uscc=code,
        bank_id="bank",
        purpose="financing",
        categories=list(categories),
        valid_from=now + days[0] * DAY,
        valid_until=now + days[1] * DAY,
    )


def test_consent_round_trip(
    db_url: str, signer: PlatformSigner, signing_key_file: Path, codes: list[str]
) -> None:
    # Several registries opening a fresh database at once: the schema is created exactly once.
    opened: list[ConsentRegistry] = []
    failures: list[BaseException] = []

    def open_one() -> None:
        try:
            opened.append(ConsentRegistry(db_url, signer.public_key, node_id="tax"))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not failures, failures
    reg = opened[0]
    for other in opened[1:]:
        other.close()

    active = _issue(signer, codes[0], categories=("electricity", "tax"))
    to_revoke = _issue(signer, codes[1])
    expired = _issue(signer, codes[2], days=(-400.0, -30.0))
    future = _issue(signer, codes[3], days=(10.0, 20.0))
    for s in (active, to_revoke, expired, future):
        reg.grant(s)
    reg.grant(active)  # idempotent
    stored = reg.get(active.auth.auth_id)
    assert stored.signed == active and stored.status == "active"  # BYTEA and floats round-trip

    ok = reg.check(uscc=codes[0], bank_id="bank", purpose="financing", categories=["tax"])
    assert ok.allowed and ok.auth_id == active.auth.auth_id
    assert ok.valid_until == active.auth.valid_until
    both = ["tax", "electricity"]
    assert reg.check(uscc=codes[0], bank_id="bank", purpose="financing", categories=both).allowed
    water = reg.check(uscc=codes[0], bank_id="bank", purpose="financing", categories=["water"])
    assert not water.allowed and "does not cover category 'water'" in water.reason
    other_bank = reg.check(uscc=codes[0], bank_id="bank2", purpose="financing", categories=["tax"])
    assert not other_bank.allowed and "no authorisation" in other_bank.reason
    purpose = reg.check(uscc=codes[0], bank_id="bank", purpose="marketing", categories=["tax"])
    assert not purpose.allowed and "purpose 'marketing' not authorised" in purpose.reason
    lapsed = reg.check(uscc=codes[2], bank_id="bank", purpose="financing", categories=["tax"])
    assert not lapsed.allowed and "expired" in lapsed.reason
    early = reg.check(uscc=codes[3], bank_id="bank", purpose="financing", categories=["tax"])
    assert not early.allowed and "not valid until" in early.reason
    never = reg.check(uscc=codes[5], bank_id="bank", purpose="financing", categories=["tax"])
    assert not never.allowed and f"no authorisation from enterprise {codes[5]}" in never.reason

    assert reg.check(uscc=codes[1], bank_id="bank", purpose="financing", categories="tax").allowed
    reg.revoke(to_revoke.auth.auth_id, reason="enterprise withdrew consent")
    reg.revoke(to_revoke.auth.auth_id, reason="second time")  # keeps the first revocation
    revoked = reg.check(uscc=codes[1], bank_id="bank", purpose="financing", categories=["tax"])
    assert not revoked.allowed and "revoked" in revoked.reason
    assert "enterprise withdrew consent" in revoked.reason
    with pytest.raises(ConsentError, match="nothing revoked"):
        reg.revoke("0" * 32, reason="typo")

    # A different record under an existing auth_id is refused, even if properly signed.
    key = load_platform_signing_key(signing_key_file)
    changed = Authorisation(**{**active.auth.__dict__, "categories": ("gas", "tax")})
    with pytest.raises(ConsentError, match="already stored with different content"):
        reg.grant(SignedAuthorisation(changed, key.sign(changed.canonical_bytes())))

    statuses = {r.auth.auth_id: r.status for r in reg.list()}
    assert statuses == {
        active.auth.auth_id: "active",
        to_revoke.auth.auth_id: "revoked",
        expired.auth.auth_id: "expired",
        future.auth.auth_id: "not-yet-valid",
    }
    assert [r.auth.auth_id for r in reg.list(include_inactive=False)] == [active.auth.auth_id]
    assert [r.auth.uscc for r in reg.list(uscc=codes[1])] == [codes[1]]
    assert reg.list(bank_id="bank2") == []
    assert reg.get(to_revoke.auth.auth_id).revoke_reason == "enterprise withdrew consent"
    stats = reg.stats()
    assert (stats.active, stats.revoked, stats.expired, stats.not_yet_valid) == (1, 1, 1, 1)
    assert stats.enterprises == 1
    assert reg.stats(bank_id="bank2").active == 0

    # A second registry (another process, say) sees the same state.
    with ConsentRegistry(db_url, signer.public_key, node_id="tax") as again:
        assert again.check(
            uscc=codes[0], bank_id="bank", purpose="financing", categories=["tax"]
        ).allowed
        assert again.stats() == stats
    reg.close()


def test_consent_row_edited_in_the_database_no_longer_authorises(
    db_url: str, signer: PlatformSigner, codes: list[str]
) -> None:
    reg = ConsentRegistry(db_url, signer.public_key, node_id="tax")
    lapsed = _issue(signer, codes[0], days=(-400.0, -30.0))
    narrow = _issue(signer, codes[1], categories=("electricity",))
    reg.grant(lapsed)
    reg.grant(narrow)
    ask = {"bank_id": "bank", "purpose": "financing"}
    assert "expired" in reg.check(uscc=codes[0], categories=["tax"], **ask).reason

    # Revive the lapsed authorisation: extend it in the signed record and in the columns.
    new_until = time.time() + 365 * DAY
    old = f'"valid_until":{lapsed.auth.valid_until!r}'
    assert old in lapsed.auth.canonical_bytes().decode()
    with raw_sql(db_url) as conn:
        n = conn.execute(
            text(
                "UPDATE consent SET valid_until = :until, record = replace(record, :old, :new) "
                "WHERE auth_id = :id"
            ),
            {
                "until": new_until,
                "old": old,
                "new": f'"valid_until":{new_until!r}',
                "id": lapsed.auth.auth_id,
            },
        ).rowcount
        assert n == 1
        # Widen the other one in the indexed column only.
        conn.execute(
            text("UPDATE consent SET categories = 'electricity,tax' WHERE auth_id = :id"),
            {"id": narrow.auth.auth_id},
        )
    revived = reg.check(uscc=codes[0], categories=["tax"], **ask)
    assert not revived.allowed
    assert "signature invalid" in revived.reason and lapsed.auth.auth_id in revived.reason
    assert "altered" in revived.reason
    widened = reg.check(uscc=codes[1], categories=["tax"], **ask)
    assert not widened.allowed and "signature invalid" in widened.reason
    assert "categories differ from the signed record" in widened.reason
    # Even the category it did authorise is refused now: the row cannot be trusted at all.
    assert not reg.check(uscc=codes[1], categories=["electricity"], **ask).allowed
    assert {r.status for r in reg.list()} == {"invalid"}
    # A fresh registry (nothing cached) reaches the same verdict from the server's bytes.
    with ConsentRegistry(db_url, signer.public_key, node_id="tax") as fresh:
        again = fresh.check(uscc=codes[0], categories=["tax"], **ask)
        assert not again.allowed and "signature invalid" in again.reason
    reg.close()


# ------------------------------------------------------------------------------------------------
# A node on PostgreSQL, by configuration only


def test_holder_node_serves_from_postgres_stores(pg: PgCluster, tmp_path: Path) -> None:
    """A holder whose node.yaml points audit_url and consent_url at the server answers a bank
    over mutual TLS from those stores, and leaves its audit trail there (no SQLite file)."""
    fed, examples = build_federation(tmp_path / "fed", enterprises=200, seed=11, deadline_s=10.0)
    tax_dir = fed.node_dir("tax")
    audit_url, consent_url = pg.create_database("node_audit"), pg.create_database("node_consent")
    # Move the consent records the demo stored in SQLite to PostgreSQL, revocations included.
    platform_key = load_node_config(fed.configs["tax"]).platform_public_key
    assert platform_key is not None
    public_key = load_platform_public_key(platform_key)
    with (
        ConsentRegistry.for_node_dir(tax_dir, public_key) as sqlite_reg,
        ConsentRegistry(consent_url, public_key, node_id="tax") as pg_reg,
    ):
        records = sqlite_reg.list()
        for r in records:
            pg_reg.grant(r.signed)
            if r.revoked_at is not None:
                pg_reg.revoke(r.auth.auth_id, reason=r.revoke_reason or "revoked")
        assert pg_reg.stats() == sqlite_reg.stats()
    for stale in tax_dir.glob("*.db*"):  # from here on, nothing of the tax node is in SQLite
        stale.unlink()
    raw = yaml.safe_load(fed.configs["tax"].read_text())
    raw.update(audit_url=audit_url, consent_url=consent_url)
    fed.configs["tax"].write_text(yaml.safe_dump(raw, sort_keys=False))

    tax_cfg = load_node_config(fed.configs["tax"])
    assert tax_cfg.resolved_audit_url == audit_url
    node = Node(tax_cfg)
    try:
        node.start()
        bank_cfg = load_node_config(fed.configs["bank"])
        peer_cfg = next(p for p in bank_cfg.peers if p.node_id == "tax")
        with connect(bank_cfg, peer_cfg, audit=None) as tax:
            ok = tax.call(
                "CheckAuthorisation",
                holder_pb2.AuthorisationQuery(meta=new_meta(), uscc=examples["tax"]["authorised"]),
            )
            assert ok.auth_id and ok.has_data
            for code, expected in [
                (examples["tax"]["revoked"], "revoked"),
                (examples["tax"]["unauthorised"], "no authorisation"),
            ]:
                with pytest.raises(PeerRefused) as refused:
                    tax.call(
                        "CheckAuthorisation",
                        holder_pb2.AuthorisationQuery(meta=new_meta(), uscc=code),
                    )
                assert refused.value.refusal == "consent" and expected in refused.value.detail
    finally:
        node.stop(grace=1.0)
        node.audit.close()
        node.consent.close()

    assert not (tax_dir / "audit.db").exists() and not (tax_dir / "consent.db").exists()
    with AuditLog(audit_url, "tax") as log:
        result = log.verify()
        assert result.ok, [str(p) for p in result.problems]
        ops = [e.operation for e in log.query()]
        assert ops[0] == "node.start" and ops[-1] == "node.stop"
        checks = log.query(operation="CheckAuthorisation")
        assert [e.peer for e in checks] == ["bank"] * 3
        asked = [examples["tax"][k] for k in ("authorised", "revoked", "unauthorised")]
        assert [(e.subject, e.decision, e.purpose) for e in checks] == [
            (asked[0], "allow", "financing"),
            (asked[1], "deny", "financing"),
            (asked[2], "deny", "financing"),
        ]
        assert "revoked" in checks[1].reason and "no authorisation" in checks[2].reason
