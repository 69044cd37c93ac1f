"""Rendering a lineage: Markdown (GitHub tables) and one standalone HTML file, written privately.

Why every value is escaped in both formats (HTML entities, and table pipes in Markdown): the
values come from MLflow and audit logs, so a crafted parameter or audit reason must not inject
markup into an auditor's report. The HTML has inline style only: no scripts, no external assets.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from federation.files import write_atomic
from xinyidai.lineage.gather import build_lineage
from xinyidai.lineage.model import Lineage, iso
from xinyidai.lineage.sections import headline, sections

if TYPE_CHECKING:
    from federation.audit import AuditLog
    from xinyidai.tracking import TrackingConfig


def lineage_report(
    name: str,
    version: str | int,
    *,
    audit_logs: Mapping[str, AuditLog],
    out_dir: Path | str,
    tracking: TrackingConfig | None = None,
) -> tuple[Path, Path]:
    """Write ``<name>-v<version>-lineage.md`` and ``.html`` (standalone) into ``out_dir``."""
    lineage = build_lineage(name, version, audit_logs=audit_logs, tracking=tracking)
    return write_report(lineage, out_dir)


def write_report(lineage: Lineage, out_dir: Path | str) -> tuple[Path, Path]:
    """Render ``lineage`` to ``out_dir``. The files name enterprises (score-request
    subjects), so they are written private (0600, directory 0700)."""
    out = Path(out_dir)
    stem = f"{lineage.name}-v{lineage.version}-lineage"
    md_path, html_path = out / f"{stem}.md", out / f"{stem}.html"
    write_atomic(md_path, render_markdown(lineage).encode("utf-8"))
    write_atomic(html_path, render_html(lineage).encode("utf-8"))
    return md_path, html_path


# ---------------------------------------------------------------------------------------------
# Markdown


def _md(text: str) -> str:
    """Inline-safe Markdown: HTML entities (renderers pass raw HTML through), no table breaks."""
    escaped = html.escape(str(text), quote=False)
    escaped = escaped.replace("\\", "\\\\").replace("|", "\\|").replace("`", "\\`")
    return re.sub(r"[\r\n]+", " ", escaped)


def _fence(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def render_markdown(lin: Lineage) -> str:
    """The report as Markdown (GitHub-flavoured tables)."""
    summary, alarms = headline(lin)
    out = [f"# Lineage of {_md(lin.name)} version {_md(lin.version)}", ""]
    for alarm in alarms:
        out += [f"> **⚠ {_md(alarm)}**", ">"]
    if alarms:
        out.append("")
    out += [_md(s) + "  " for s in summary]
    out.append("")
    for section in sections(lin):
        out += [f"## {_md(section.title)}", ""]
        for alarm in section.alarms:
            out += [f"> **⚠ {_md(alarm)}**", ""]
        for line in section.lines:
            out.append(f"- {_md(line)}" if section.bullets else _md(line) + "  ")
        if section.lines:
            out.append("")
        table = section.table
        if table is not None and table.rows:
            out.append("| " + " | ".join(_md(h) for h in table.headers) + " |")
            out.append("|" + "---|" * len(table.headers))
            for i, row in enumerate(table.rows):
                cells = [_md(c) for c in row]
                if i in table.alarm_rows:
                    cells = [f"**{c}**" if c else c for c in cells]
                out.append("| " + " | ".join(cells) + " |")
            out.append("")
        elif table is not None:
            out += ["(none)", ""]
        if section.code is not None:
            label, text = section.code
            fence = _fence(text)
            out += [f"`{_md(label)}`:", "", fence, text.rstrip("\n"), fence, ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# HTML (standalone: inline style, no scripts, no external assets)

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:72em;
color:#1d232a;line-height:1.45;padding:0 1em}
h1{font-size:1.6em;border-bottom:2px solid #1d232a;padding-bottom:.2em}
h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #c7ccd1}
table{border-collapse:collapse;width:100%;font-size:.9em;margin:.5em 0}
th,td{border:1px solid #c7ccd1;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#eef1f4;word-break:normal;hyphens:auto}
td{overflow-wrap:anywhere;word-break:normal}
tr.alarm td{background:#fde2e1;color:#8a1c14;font-weight:600}
.alarm-box{background:#b3261e;color:#fff;padding:.7em 1em;margin:.6em 0;font-weight:700;
border-radius:4px}
.finding{color:#8a1c14}
pre{background:#f6f8fa;border:1px solid #c7ccd1;padding:.8em;overflow-x:auto;font-size:.85em}
.summary p{margin:.2em 0}
footer{margin-top:2em;font-size:.8em;color:#5c6670}
"""


def _h(text: Any) -> str:
    return html.escape(str(text), quote=True)


def render_html(lin: Lineage) -> str:
    """The report as one standalone HTML file."""
    summary, alarms = headline(lin)
    title = f"Lineage of {lin.name} version {lin.version}"
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_h(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head><body>",
        f"<h1>{_h(title)}</h1>",
    ]
    out += [f'<div class="alarm-box" role="alert">⚠ {_h(a)}</div>' for a in alarms]
    out.append('<div class="summary">' + "".join(f"<p>{_h(s)}</p>" for s in summary) + "</div>")
    for section in sections(lin):
        out.append(f"<h2>{_h(section.title)}</h2>")
        out += [f'<div class="alarm-box" role="alert">⚠ {_h(a)}</div>' for a in section.alarms]
        if section.bullets:
            css = ' class="finding"' if lin.findings else ""
            out.append("<ul>" + "".join(f"<li{css}>{_h(x)}</li>" for x in section.lines) + "</ul>")
        else:
            out += [f"<p>{_h(line)}</p>" for line in section.lines]
        table = section.table
        if table is not None and table.rows:
            out.append("<table><thead><tr>")
            out.append("".join(f"<th>{_h(h)}</th>" for h in table.headers))
            out.append("</tr></thead><tbody>")
            for i, row in enumerate(table.rows):
                css = ' class="alarm"' if i in table.alarm_rows else ""
                out.append(f"<tr{css}>" + "".join(f"<td>{_h(c)}</td>" for c in row) + "</tr>")
            out.append("</tbody></table>")
        elif table is not None:
            out.append("<p>(none)</p>")
        if section.code is not None:
            label, text = section.code
            out.append(f"<p><code>{_h(label)}</code></p><pre>{_h(text)}</pre>")
    out.append(
        f"<footer>xinyidai lineage report · {_h(lin.model_id)} · generated "
        f"{_h(iso(lin.generated_at))} UTC</footer>"
    )
    out.append("</body></html>")
    return "\n".join(out) + "\n"
