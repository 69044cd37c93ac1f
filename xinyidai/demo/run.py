"""``xinyidai demo`` as a story: start the nodes, greet, show consent and purpose at work, train,
register and score, stop, verify every audit chain, write the lineage report, print timings.

Why the audit chains are verified after the nodes stopped: a chain is only final once its
writer has exited, and the lineage report reads those same logs.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from federation.audit import AuditLog, sqlite_url
from federation.transport.base import PeerRefused, new_meta
from parties.config import NodeConfig
from xinyidai.demo.build import (
    HOLDERS,
    add_platform,
    build_federation,
    enrol_enterprise,
)
from xinyidai.demo.jobs import register_and_score, train_in_federation
from xinyidai.demo.portal import pick_enterprise, walk_portal
from xinyidai.launcher import Federation, running, stop_nodes


def run_demo(
    workdir: Path,
    *,
    enterprises: int = 2000,
    seed: int = 7,
    console: Console | None = None,
    trees: int = 5,
    workers: int = 2,
) -> int:
    """The whole demo; 0 if every step, every audit chain and every node exit was good."""
    console = console or Console(width=None if sys.stdout.isatty() else 120)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    console.rule("[bold]xinyidai demo")
    fed, examples = build_federation(workdir, enterprises=enterprises, seed=seed, workers=workers)
    # the platform node (signed feed, web portal); one enterprise enrolled at the portal
    add_platform(fed)
    examples["portal_uscc"] = pick_enterprise(workdir)
    examples["portal_password"] = secrets.token_urlsafe(12)  # a fresh one each run, printed
    enrol_enterprise(
        workdir / "platform", str(examples["portal_uscc"]), str(examples["portal_password"])
    )
    timings["prepare (PKI, city, consent)"] = time.perf_counter() - t0
    console.print(f"workdir: {workdir}  ({enterprises} enterprises, seed {seed})")

    t1 = time.perf_counter()
    # The bank node's scoring service resolves models in the demo's own MLflow store.
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir / 'mlflow' / 'mlflow.db'}"
    with running(fed):
        timings["start 4 node processes until healthy"] = time.perf_counter() - t1
        portal = (workdir / "platform" / "portal.url").read_text().strip()
        console.print(
            f"portal: [bold]{portal}[/] (sign in as {examples['portal_uscc']}, password "
            f"{examples['portal_password']}; open while the demo runs)",
            highlight=False,
        )
        reply, served, portal_ok = _with_nodes(
            console, fed, examples, timings, trees=trees, workers=workers
        )
    codes = stop_nodes(fed)

    all_ok = _verify_audit_logs(console, fed, codes)
    lineage_paths = None if served is None else _lineage_report(fed, workdir, served)
    timings["total"] = time.perf_counter() - t0
    _summary(console, workdir, timings, lineage_paths)
    ok = (
        all_ok
        and portal_ok
        and lineage_paths is not None
        and all(g.ok for g in reply.peers)
        and all(c == 0 for c in codes.values())
    )
    return 0 if ok else 1


def _with_nodes(
    console: Console,
    fed: Federation,
    examples: dict[str, Any],
    timings: dict[str, float],
    *,
    trees: int,
    workers: int,
) -> tuple[Any, tuple[str, str] | None, bool]:
    """Everything done while the nodes serve: (the greeting reply, (model, version) served,
    whether the portal walk did what it should)."""
    from parties.config import load_node_config
    from parties.node import operator_client
    from protos import bank_pb2

    bank_cfg = load_node_config(fed.configs["bank"])
    with operator_client(bank_cfg) as ops:
        t2 = time.perf_counter()
        reply = ops.call("Greet", bank_pb2.GreetRequest(meta=new_meta(job_id="demo-greet")))
        timings["bank greets both holders"] = time.perf_counter() - t2
    show_greetings(console, reply)
    bank_audit = AuditLog(bank_cfg.resolved_audit_url, "bank")
    _consent_and_purpose(console, bank_cfg, bank_audit, examples)
    trained = train_in_federation(
        console, bank_cfg, bank_audit, timings, trees=trees, workers=workers
    )
    served = None
    if trained is not None:
        served = register_and_score(console, fed, bank_cfg, bank_audit, trained, timings)
    bank_audit.close()
    portal_ok = served is not None and walk_portal(
        console,
        fed,
        bank_cfg,
        uscc=str(examples["portal_uscc"]),
        password=str(examples["portal_password"]),
        model=served[0],
        timings=timings,
    )
    return reply, served, portal_ok


def _consent_and_purpose(
    console: Console, bank_cfg: NodeConfig, bank_audit: AuditLog, examples: dict[str, Any]
) -> None:
    """The bank asks each holder about one enterprise per case: authorised, revoked, never
    authorised, and authorised but for another purpose; the holder serves or refuses."""
    from parties.node import connect
    from protos import holder_pb2

    console.print(
        "\n[bold]Consent and purpose at the holders[/] (the bank asks about one enterprise)"
    )
    for holder in HOLDERS:
        peer_cfg = next(p for p in bank_cfg.peers if p.node_id == holder)
        cases = examples[holder]
        with connect(bank_cfg, peer_cfg, audit=bank_audit) as peer:
            for label, code, purpose in [
                ("authorised", cases["authorised"], "financing"),
                ("revoked", cases["revoked"], "financing"),
                ("never authorised", cases["unauthorised"], "financing"),
                ("authorised, wrong purpose", cases["authorised"], "marketing"),
            ]:
                if code is None:
                    continue
                query = holder_pb2.AuthorisationQuery(meta=new_meta(purpose), uscc=code)
                try:
                    answer = peer.call("CheckAuthorisation", query)
                    verdict = f"[green]served[/] (authorisation {answer.auth_id[:8]}…)"
                except PeerRefused as exc:
                    verdict = f"[yellow]refused[/] ({exc.refusal}): {exc.detail}"
                console.print(f"  {holder:8} {label:27} {code}  {verdict}", highlight=False)


def _verify_audit_logs(console: Console, fed: Federation, codes: dict[str, int]) -> bool:
    """Verify each node's hash chain; True if every one is intact."""
    console.print("\n[bold]Audit logs[/] (hash-chained, verified after the nodes stopped)")
    all_ok = True
    for node_id in fed.configs:
        audit = AuditLog(sqlite_url(fed.node_dir(node_id) / "audit.db"), node_id)
        result = audit.verify()
        audit.close()
        all_ok &= result.ok
        state = "[green]intact[/]" if result.ok else "[red]BROKEN[/]"
        console.print(
            f"  {node_id:8} {result.n_records:5d} records  chain {state}  "
            f"exit code {codes.get(node_id)}  head {str(result.head_hash)[:12]}…",
            highlight=False,
        )
        for problem in result.problems:
            console.print(f"    [red]{problem}[/]")
    return all_ok


def _lineage_report(fed: Federation, workdir: Path, served: tuple[str, str]) -> tuple[Path, Path]:
    """The auditor's report of the served version, from every node's audit log."""
    from xinyidai.lineage import lineage_report
    from xinyidai.tracking import TrackingConfig

    logs = {n: AuditLog(sqlite_url(fed.node_dir(n) / "audit.db"), n) for n in fed.configs}
    try:
        return lineage_report(
            *served,
            audit_logs=logs,
            out_dir=workdir / "lineage",
            tracking=TrackingConfig.resolve(workdir / "mlflow"),
        )
    finally:
        for log in logs.values():
            log.close()


def _summary(
    console: Console,
    workdir: Path,
    timings: dict[str, float],
    lineage_paths: tuple[Path, Path] | None,
) -> None:
    console.print("\n[bold]Timings[/]")
    for name, seconds in timings.items():
        console.print(f"  {name:40} {seconds:6.2f} s")
    console.print(f"\nInspect: {workdir}/<node-id>/ (node.yaml, node.log, audit.db, consent.db)")
    if lineage_paths is not None:
        console.print(f"Lineage report (auditor): {lineage_paths[0]}  and  {lineage_paths[1]}")
        console.print(
            f"MLflow UI: mlflow ui --backend-store-uri sqlite:///{workdir / 'mlflow' / 'mlflow.db'}"
        )


def show_greetings(console: Console, reply: object) -> None:
    table = Table(title="The bank greets each holder (mutual TLS)")
    for col in [
        "holder",
        "ok",
        "caller seen",
        "rows",
        "columns",
        "schema digest",
        "categories",
        "consents (active/revoked/expired)",
        "rtt ms",
    ]:
        table.add_column(col)
    for g in reply.peers:  # type: ignore[attr-defined]
        if not g.ok:
            table.add_row(
                g.node_id, "[red]no[/]", g.error, "", "", "", "", "", f"{g.round_trip_ms:.1f}"
            )
            continue
        h = g.hello
        t = h.tables[0]
        c = h.consent
        table.add_row(
            h.node_id,
            "[green]yes[/]",
            h.caller_id,
            str(t.n_rows),
            f"{len(t.columns)} (e.g. {t.columns[0].name_hash})",
            t.schema_digest,
            ",".join(h.categories),
            f"{c.active}/{c.revoked}/{c.expired}",
            f"{g.round_trip_ms:.1f}",
        )
    console.print(table)
