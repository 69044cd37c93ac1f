"""``xinyidai demo``: a whole federation on this machine, from nothing, in one command.

Makes a development PKI and a synthetic city, writes one node directory per party, records
enterprises' authorisations at the holders, starts the bank, tax and utility nodes as three OS
processes on loopback with mutual TLS, has the bank greet each holder, exercises the consent and
purpose rules, aligns the bank with both holders by PSI, trains vertical SecureBoost across the
three processes (2048-bit Paillier) and compares its test AUC with a bank-only model, stops the
nodes and verifies every node's audit chain. Everything it makes stays under
``--workdir`` (each node's state in ``<workdir>/<node-id>/``) for inspection afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import warnings
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from federation.audit import AuditLog, sqlite_url
from federation.errors import XinyidaiError
from federation.pki import PkiLayout, init_pki
from federation.transport.base import PeerRefused, new_meta
from parties.config import LimitsConfig, NodeConfig, PeerConfig, TableConfig, TlsConfig
from parties.consent import ConsentRegistry, PlatformSigner
from parties.data.synth import DEFAULT_AS_OF, synthesize_city
from xinyidai.launcher import Federation, free_ports, prepare_workdir, running, stop_nodes

HOLDERS = {"tax": ["tax"], "utility": ["electricity", "water", "gas"]}
DAY = 86_400.0


def build_federation(
    workdir: Path,
    *,
    enterprises: int,
    seed: int,
    deadline_s: float = 30.0,
    workers: int = 2,
) -> tuple[Federation, dict[str, object]]:
    """PKI, city, node directories, configs and consent records; no process started yet."""
    prepare_workdir(workdir)
    nodes = ["bank", *HOLDERS]
    pki = init_pki(workdir / "pki", nodes)
    tables = synthesize_city(n_enterprises=enterprises, seed=seed)
    ports = dict(zip(nodes, free_ports(len(nodes)), strict=True))
    configs: dict[str, Path] = {}
    for node_id in nodes:
        node_dir = workdir / node_id
        (node_dir / "data").mkdir(parents=True)
        data_path = node_dir / "data" / f"{node_id}.csv"
        tables[node_id].to_csv(data_path, index=False)
        shutil.copyfile(pki.node_cert(node_id), node_dir / "node.pem")
        shutil.copyfile(pki.ca_cert, node_dir / "ca.pem")
        key_copy = node_dir / "node.key"
        shutil.copyfile(pki.node_key(node_id), key_copy)
        os.chmod(key_copy, 0o600)
        if node_id == "bank":
            peers = [
                PeerConfig(node_id=h, address=f"127.0.0.1:{ports[h]}", role="holder")
                for h in HOLDERS
            ]
            platform_key = None
        else:
            peers = [PeerConfig(node_id="bank", role="bank")]
            shutil.copyfile(pki.platform_signing_pub, node_dir / "platform_signing.pub")
            platform_key = Path("platform_signing.pub")
        config = NodeConfig(
            node_id=node_id,
            role="bank" if node_id == "bank" else "holder",
            address=f"127.0.0.1:{ports[node_id]}",
            node_dir=Path("."),
            tls=TlsConfig(ca=Path("ca.pem"), cert=Path("node.pem"), key=Path("node.key")),
            data=TableConfig(
                path=Path("data") / f"{node_id}.csv",
                schema_role=node_id,  # type: ignore[arg-type]
                as_of=date.fromisoformat(str(tables[node_id].attrs.get("as_of", DEFAULT_AS_OF))),
            ),
            platform_public_key=platform_key,
            peers=peers,
            limits=LimitsConfig(deadline_s=deadline_s, compute_workers=workers),
        )
        configs[node_id] = node_dir / "node.yaml"
        configs[node_id].write_text(config.to_yaml())
    consent = record_consent(workdir, pki, tables, seed=seed)
    return Federation(workdir=workdir, pki=pki, configs=configs), consent


def record_consent(workdir: Path, pki: PkiLayout, tables: dict, *, seed: int) -> dict[str, object]:
    """Most of the bank's applicants authorise it at each holder; a few revoke, a few lapse."""
    rng = np.random.default_rng(seed + 1)
    signer = PlatformSigner.from_file(pki.platform_signing_key)
    applicants = tables["bank"]["uscc"].to_numpy()
    now = time.time()
    examples: dict[str, object] = {}
    for holder, categories in HOLDERS.items():
        held = set(tables[holder]["uscc"])
        codes = [c for c in applicants if c in held]
        granted = [c for c in codes if rng.random() < 0.8]
        registry = ConsentRegistry(
            sqlite_url(workdir / holder / "consent.db"),
            signer.public_key,
            node_id=holder,
        )
        audit = AuditLog(sqlite_url(workdir / holder / "audit.db"), holder)
        revoked, expired = [], []
        for i, code in enumerate(granted):
            lapsed = i % 50 == 7
            signed = signer.issue(
                uscc=code,
                bank_id="bank",
                purpose="financing",
                categories=categories,
                valid_from=now - 400 * DAY if lapsed else now - DAY,
                valid_until=now - 30 * DAY if lapsed else now + 365 * DAY,
            )
            registry.grant(signed)
            if lapsed:
                expired.append(code)
            elif i % 40 == 3:
                registry.revoke(signed.auth.auth_id, reason="enterprise withdrew consent")
                revoked.append(code)
        audit.append(
            direction="local",
            peer="platform",
            operation="consent.import",
            counts={"granted": len(granted), "revoked": len(revoked), "expired": len(expired)},
        )
        audit.close()
        lapsed_or_revoked = set(revoked) | set(expired)
        granted_set = set(granted)
        active = [c for c in granted if c not in lapsed_or_revoked]
        examples[holder] = {
            "authorised": active[0],
            "revoked": revoked[0] if revoked else None,
            "unauthorised": next(c for c in codes if c not in granted_set),
        }
    return examples


DEMO_PARAMS = {"n_trees": 5, "max_depth": 3, "learning_rate": 0.3, "random_state": 0}
PSI_SALT = b"xinyidai-demo-federation"


def run_demo(
    workdir: Path,
    *,
    enterprises: int = 2000,
    seed: int = 7,
    console: Console | None = None,
    trees: int = 5,
    workers: int = 2,
) -> int:
    from parties.config import load_node_config
    from parties.node import connect, operator_client
    from protos import bank_pb2, holder_pb2

    console = console or Console(width=None if sys.stdout.isatty() else 120)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    console.rule("[bold]xinyidai demo")
    fed, examples = build_federation(workdir, enterprises=enterprises, seed=seed, workers=workers)
    timings["prepare (PKI, city, consent)"] = time.perf_counter() - t0
    console.print(f"workdir: {workdir}  ({enterprises} enterprises, seed {seed})")

    t1 = time.perf_counter()
    # The bank node's scoring service resolves models in the demo's own MLflow store.
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir / 'mlflow' / 'mlflow.db'}"
    with running(fed):
        timings["start 3 node processes until healthy"] = time.perf_counter() - t1
        bank_cfg = load_node_config(fed.configs["bank"])
        with operator_client(bank_cfg) as ops:
            t2 = time.perf_counter()
            reply = ops.call("Greet", bank_pb2.GreetRequest(meta=new_meta(job_id="demo-greet")))
            timings["bank greets both holders"] = time.perf_counter() - t2
        show_greetings(console, reply)

        console.print(
            "\n[bold]Consent and purpose at the holders[/] (the bank asks about one enterprise)"
        )
        bank_audit = AuditLog(bank_cfg.resolved_audit_url, "bank")
        for holder in HOLDERS:
            peer_cfg = next(p for p in bank_cfg.peers if p.node_id == holder)
            cases = examples[holder]
            with connect(bank_cfg, peer_cfg, audit=bank_audit) as peer:
                for label, code, purpose in [
                    ("authorised", cases["authorised"], "financing"),  # type: ignore[index]
                    ("revoked", cases["revoked"], "financing"),  # type: ignore[index]
                    ("never authorised", cases["unauthorised"], "financing"),  # type: ignore[index]
                    ("authorised, wrong purpose", cases["authorised"], "marketing"),  # type: ignore[index]
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
        trained = train_in_federation(
            console, bank_cfg, bank_audit, timings, trees=trees, workers=workers
        )
        served = None
        if trained is not None:
            served = register_and_score(console, fed, bank_cfg, bank_audit, trained, timings)
        bank_audit.close()
    codes = stop_nodes(fed)

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
    lineage_paths = None
    if served is not None:
        from xinyidai.lineage import lineage_report
        from xinyidai.tracking import TrackingConfig

        logs = {n: AuditLog(sqlite_url(fed.node_dir(n) / "audit.db"), n) for n in fed.configs}
        try:
            lineage_paths = lineage_report(
                *served,
                audit_logs=logs,
                out_dir=workdir / "lineage",
                tracking=TrackingConfig.resolve(workdir / "mlflow"),
            )
        finally:
            for log in logs.values():
                log.close()
    timings["total"] = time.perf_counter() - t0
    console.print("\n[bold]Timings[/]")
    for name, seconds in timings.items():
        console.print(f"  {name:40} {seconds:6.2f} s")
    console.print(f"\nInspect: {workdir}/<node-id>/ (node.yaml, node.log, audit.db, consent.db)")
    if lineage_paths is not None:
        console.print(f"Lineage report (auditor): {lineage_paths[0]}  and  {lineage_paths[1]}")
        console.print(
            f"MLflow UI: mlflow ui --backend-store-uri sqlite:///{workdir / 'mlflow' / 'mlflow.db'}"
        )
    ok = (
        all_ok
        and lineage_paths is not None
        and all(g.ok for g in reply.peers)
        and all(c == 0 for c in codes.values())
    )
    return 0 if ok else 1


def train_in_federation(
    console: Console,
    bank_cfg: NodeConfig,
    audit: AuditLog,
    timings: dict[str, float],
    *,
    trees: int,
    workers: int,
) -> tuple[Any, Any] | None:
    """Align (PSI) → train (SecureBoost) → evaluate, as the bank's operator; (model, report)."""
    from parties.bank.federation import align, holder_peers, train_secureboost

    console.print("\n[bold]Alignment[/] (private set intersection on USCCs, bank ∩ tax ∩ utility)")
    t0 = time.perf_counter()
    try:
        with holder_peers(bank_cfg, audit=audit) as peers:
            alignment = align(
                bank_cfg,
                peers,
                job_id="demo-align",
                salt=PSI_SALT,
                min_overlap=0.2,
                audit=audit,
                progress=lambda m: console.print(f"  {m}", highlight=False),
            )
    except XinyidaiError as exc:
        console.print(f"  [red]alignment failed:[/] {exc}")
        return None
    timings["align bank ∩ tax ∩ utility (PSI)"] = time.perf_counter() - t0
    console.print(
        f"  bank {alignment.bank_size} applicants; common set {alignment.size} enterprises "
        f"(same rows, same order at all three nodes)",
        highlight=False,
    )

    params = {**DEMO_PARAMS, "n_trees": trees}
    console.print(
        f"\n[bold]Vertical SecureBoost[/] ({trees} trees, depth {params['max_depth']}, "
        "2048-bit Paillier; the first tree is bank-only)"
    )
    t1 = time.perf_counter()
    last = [t1]

    def tick(message: str) -> None:
        now = time.perf_counter()
        console.print(f"  {message:14} {now - last[0]:6.2f} s", highlight=False)
        last[0] = now

    try:
        with holder_peers(bank_cfg, audit=audit, service="SecureBoostHolder") as peers:
            clf, report = train_secureboost(
                bank_cfg,
                alignment,
                holders=peers,
                params={**params, "key_bits": 2048, "workers": workers},
                audit=audit,
                progress=tick,
            )
    except XinyidaiError as exc:
        console.print(f"  [red]training failed:[/] {exc}")
        return None
    timings["train + evaluate SecureBoost"] = time.perf_counter() - t1
    owners = ", ".join(f"{k} {v}" for k, v in sorted(report.split_owners.items()))
    console.print(
        f"  {report.n_train} training / {report.n_test} test rows (stratified 70/30); "
        f"splits won: {owners}",
        highlight=False,
    )
    console.print(
        f"  test AUC  federated [bold green]{report.auc:.4f}[/] (KS {report.ks:.3f})   "
        f"bank-only LightGBM {report.baseline_auc:.4f} (KS {report.baseline_ks:.3f})",
        highlight=False,
    )
    train_scorecard_in_federation(console, bank_cfg, audit, alignment, timings)
    return clf, report


def train_scorecard_in_federation(
    console: Console, bank_cfg: NodeConfig, audit: AuditLog, alignment: Any, timings: dict
) -> bool:
    """Federated WOE/IV → vertical LR on WOE (2048-bit Paillier) → points, on the same rows."""
    from parties.bank.scorecard import comparison_lines, scorecard_over_nodes

    console.print(
        "\n[bold]Scorecard[/] (federated WOE binning → vertical logistic regression → points; "
        "each holder keeps its own points table)"
    )
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _, card = scorecard_over_nodes(
                bank_cfg,
                alignment,
                params={"key_bits": 2048, "workers": 2},
                audit=audit,
                job_id="demo-scorecard",
            )
    except XinyidaiError as exc:
        console.print(f"  [red]scorecard failed:[/] {exc}")
        return False
    for note in caught:
        console.print(f"  note: {note.message}", highlight=False)
    timings["train + evaluate scorecard"] = time.perf_counter() - t0
    for line in comparison_lines(card):
        console.print(f"  {line}", highlight=False)
    return True


def register_and_score(
    console: Console,
    fed: Federation,
    bank_cfg: NodeConfig,
    audit: AuditLog,
    trained: tuple[Any, Any],
    timings: dict[str, float],
) -> tuple[str, str] | None:
    """Register the model (MLflow), promote it to champion, then serve scores through the
    bank's scoring service: a whitelist for a region, and one enterprise under its
    authorisation. Returns (model name, version) for the lineage report."""
    from parties.bank.federation import holder_peers
    from parties.node import operator_client
    from protos import bank_pb2
    from xinyidai.registration import party_evidence, register_secureboost
    from xinyidai.tracking import TrackingConfig, promote

    clf, report = trained
    tracking = TrackingConfig.resolve(fed.workdir / "mlflow")
    console.print("\n[bold]Registry[/] (MLflow: run, each party's own data digest, model version)")
    t0 = time.perf_counter()
    try:
        with holder_peers(bank_cfg, audit=audit) as peers:
            datasets, consent = party_evidence(bank_cfg, peers, job_id=report.job_id)
        run = register_secureboost(
            bank_cfg,
            clf,
            report,
            datasets=datasets,
            consent=consent,
            config_text=json.dumps({**DEMO_PARAMS, "n_trees": len(clf.trees_)}, indent=1),
            config_name="demo-params.json",
            tracking=tracking,
            audit=audit,
        )
        promote(
            run.model_name,
            str(run.version),
            by="demo-operator",
            reason="demo",
            audit=audit,
            tracking=tracking,
        )
    except XinyidaiError as exc:
        console.print(f"  [red]registration failed:[/] {exc}")
        return None
    timings["register + promote (MLflow)"] = time.perf_counter() - t0
    console.print(
        f"  models:/{run.model_name}/{run.version} registered and promoted to [bold]champion[/] "
        f"(store {tracking.describe()})",
        highlight=False,
    )
    console.print("\n[bold]Scoring service[/] (usable but invisible: each holder checks consent)")
    t1 = time.perf_counter()
    try:
        with operator_client(bank_cfg, deadline_s=60) as ops:
            batch = ops.call(
                "ScoreBatch",
                bank_pb2.ScoreBatchRequest(
                    meta=new_meta(job_id="demo-score"),
                    model_name=run.model_name,
                    model_ref="champion",
                    region="51",
                    threshold=0.0,
                    limit=3,
                ),
            )
            excluded = ", ".join(f"{k} {v}" for k, v in sorted(batch.excluded.items()))
            console.print(
                f"  whitelist for region 51…: {batch.scored} of {batch.candidates} applicants "
                f"scored ({excluded or 'none excluded'}); top 3:",
                highlight=False,
            )
            for e in batch.enterprises:
                console.print(
                    f"    {e.uscc}  {e.points:6.1f} points  PD {e.probability_default:.3f}",
                    highlight=False,
                )
            if batch.enterprises:
                one = ops.call(
                    "Score",
                    bank_pb2.ScoreRequest(
                        meta=new_meta(job_id="demo-score"),
                        uscc=batch.enterprises[0].uscc,
                        model_name=run.model_name,
                        model_ref="champion",
                    ),
                )
                console.print(
                    f"  Score {one.uscc}: PD {one.probability_default:.3f}, "
                    f"{one.points:.0f} points, {one.model_name} v{one.model_version}, "
                    f"reasons: {', '.join(one.reason_categories) or '-'}",
                    highlight=False,
                )
    except XinyidaiError as exc:
        console.print(f"  [red]scoring failed:[/] {exc}")
        return None
    timings["score a region + one enterprise"] = time.perf_counter() - t1
    return run.model_name, str(run.version)


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
