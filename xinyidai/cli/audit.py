"""`xinyidai audit ...`: verify, browse and summarise a node's hash-chained audit log."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from federation.audit import AuditLog, ChainHead, sqlite_url
from federation.errors import ConfigError

app = typer.Typer(help="Verify and read a node's hash-chained audit log.", no_args_is_help=True)

NodeDir = Annotated[Path, typer.Argument(help="Node directory holding audit.db.")]
UrlOption = Annotated[
    str | None,
    typer.Option("--url", help="Database URL instead of NODE_DIR/audit.db (e.g. PostgreSQL)."),
]


def open_log(node_dir: Path, url: str | None) -> AuditLog:
    """Open an existing log read-only: never create one by mistake from a mistyped directory,
    and never recreate tables someone dropped (that is an error naming the file)."""
    node_id = node_dir.resolve().name or "node"
    if url is None:
        path = node_dir / "audit.db"
        if not path.is_file():
            raise ConfigError(f"{path}: no audit log here - is {node_dir} a node directory?")
        url = sqlite_url(path)
    return AuditLog(url, node_id, create=False)


def _parse_time(value: str | None, option: str) -> float | None:
    """ISO date or date-time; without a zone it is taken as UTC, like the log itself."""
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an ISO date or time (e.g. 2025-03-01 or 2025-03-01T08:00+08:00)",
            param_hint=option,
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def _iso(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


@app.command("verify")
def verify(
    node_dir: NodeDir,
    url: UrlOption = None,
    witness: Annotated[
        list[Path] | None,
        typer.Option(
            "--witness",
            help="A peer's node directory: every head of this log the peer recorded must still "
            "be in the chain (repeatable).",
        ),
    ] = None,
    anchor: Annotated[
        list[str] | None,
        typer.Option(
            "--anchor",
            help="A head SEQ:HASH published earlier (e.g. from `audit verify`'s output); the "
            "record at SEQ must still have HASH (repeatable).",
        ),
    ] = None,
) -> None:
    """Check every hash, link and the head, and every witnessed or anchored head; exit 1 and
    name each tampered record if broken.

    Without ``--witness``/``--anchor`` a consistent rewrite of the tail (hashes recomputed, head
    moved) cannot be seen: the chain has no key. Peers' logs can see it - each recorded this
    node's head in every call they had with it."""
    console = Console(highlight=False, soft_wrap=True)
    anchors = []
    for text in anchor or []:
        try:
            anchors.append(ChainHead.parse(text))
        except ValueError as exc:
            raise typer.BadParameter(str(exc)[:200], param_hint="--anchor") from None
    witnesses = [open_log(peer_dir, None) for peer_dir in witness or []]
    try:
        with open_log(node_dir, url) as log:
            result = log.verify(anchors=anchors, witnesses=witnesses)
            n_witnessed = {w.node_id: len(w.heads_of(log.node_id)) for w in witnesses}
    finally:
        for w in witnesses:
            w.close()
    if result.ok:
        console.print(
            f"audit chain intact: {result.n_records} records, head {result.head_hash}"
            f" (as anchor: {result.head_seq}:{result.head_hash})"
        )
        for name, count in n_witnessed.items():
            console.print(f"  {count} head(s) witnessed by {escape(name)}: all present")
        if anchors:
            console.print(f"  {len(anchors)} anchor(s): all present")
        return
    console.print(
        f"[bold red]audit chain BROKEN[/]: {len(result.problems)} problem(s) in "
        f"{result.n_records} records"
    )
    for problem in result.problems:
        console.print(f"  {escape(str(problem))}")
    raise typer.Exit(1)


@app.command("show")
def show(
    node_dir: NodeDir,
    since: Annotated[str | None, typer.Option("--since", help="ISO time, inclusive.")] = None,
    until: Annotated[str | None, typer.Option("--until", help="ISO time, exclusive.")] = None,
    caller: Annotated[str | None, typer.Option("--caller", help="Peer node id.")] = None,
    operation: Annotated[str | None, typer.Option("--operation", help="e.g. psi.intersect")] = None,
    decision: Annotated[str | None, typer.Option("--decision", help="allow, deny...")] = None,
    job: Annotated[str | None, typer.Option("--job", help="Job id.")] = None,
    subject: Annotated[
        str | None, typer.Option("--subject", help="Enterprise (USCC) the request was about.")
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=0, help="Only the N most recent matches.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    url: UrlOption = None,
) -> None:
    """List audit records, oldest first, as a table or JSON lines."""
    start, end = _parse_time(since, "--since"), _parse_time(until, "--until")
    with open_log(node_dir, url) as log:
        entries = log.query(
            since=start,
            until=end,
            peer=caller,
            operation=operation,
            decision=decision,
            job_id=job,
            subject=subject,
            limit=limit,
        )
    if as_json:
        for entry in entries:
            typer.echo(json.dumps(entry.as_dict(), ensure_ascii=False, sort_keys=True))
        return
    table = Table(title=f"audit log of {node_dir.resolve().name} ({len(entries)} records)")
    for column in (
        "seq",
        "time (UTC)",
        "dir",
        "peer",
        "operation",
        "purpose",
        "job",
        "subject",
        "counts",
        "decision",
        "reason",
    ):
        table.add_column(column, overflow="fold")
    for e in entries:
        # Field values come from peers: escape them so they cannot inject rich markup.
        table.add_row(
            str(e.seq),
            _iso(e.ts),
            e.direction,
            escape(e.peer),
            escape(e.operation),
            escape(e.purpose),
            escape(e.job_id),
            escape(e.subject),
            escape(", ".join(f"{k}={v}" for k, v in sorted(e.counts.items()))),
            escape(e.decision) if e.decision == "allow" else f"[red]{escape(e.decision)}[/]",
            escape(e.reason),
        )
    Console(width=200).print(table)


@app.command("summary")
def summary(
    node_dir: NodeDir,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    url: UrlOption = None,
) -> None:
    """Counts by operation, peer, decision and direction."""
    with open_log(node_dir, url) as log:
        data = log.summary()
    if as_json:
        typer.echo(json.dumps(data, ensure_ascii=False, sort_keys=True))
        return
    console = Console(highlight=False, soft_wrap=True)
    console.print(
        f"{data['records']} records from {_iso(data['first_ts'])} to {_iso(data['last_ts'])}"
    )
    for name in ("operation", "peer", "decision", "direction"):
        counts = data[f"by_{name}"]
        if counts:
            shown = ", ".join(f"{k or '-'}: {v}" for k, v in counts.items())
            console.print(f"  by {name}: {shown}")
