"""Render a Document: one self-contained HTML file (PNG plots inlined as base64), or Markdown
with the PNG files written beside it."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from vlc.errors import InputError
from vlc.report.document import Document, Table

CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 2rem auto;
       max-width: 1200px; padding: 0 1rem; color: #1d232a; background: #fff; }
h1 { border-bottom: 3px solid #2f6fb0; padding-bottom: .3rem; }
h2 { margin-top: 2.4rem; border-bottom: 1px solid #c9d3dd; padding-bottom: .2rem; }
table { border-collapse: collapse; margin: .8rem 0 .3rem; font-size: .9rem; }
caption { text-align: left; font-weight: 600; padding: .3rem 0; }
th, td { border: 1px solid #c9d3dd; padding: .3rem .6rem; text-align: right; vertical-align: top; }
td.r { white-space: nowrap; }
th { background: #e8eef5; }
td.l, th.l { text-align: left; }
td.na { color: #7a8591; background: #f4f5f7; }
td.failed, td.fail { color: #a4161a; background: #fde8e8; }
td.pass { color: #1b6e20; }
td.baseline { font-weight: 600; background: #eef6ee; }
table.published { border: 2px dashed #b7791f; }
table.published th { background: #fbeed5; }
table.published td { background: #fffaf0; font-style: italic; }
tr.published td { background: #fffaf0; font-style: italic; }
.pubmark { display: inline-block; font-size: .75rem; font-style: normal; font-weight: 700; color: #7b4a00;
           background: #fbd38d; border-radius: 3px; padding: 0 .35rem; margin-left: .4rem; }
.notes { font-size: .8rem; color: #4a5561; margin: 0 0 1rem; padding-left: 1rem; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; border: 1px solid #e1e6eb; }
figcaption { font-size: .85rem; color: #4a5561; }
p.meta { color: #4a5561; font-size: .9rem; }
"""

PUBLISHED_MARK = "published, not measured by vlc"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def _table_html(table: Table) -> str:
    esc = html.escape
    cls = f' class="{table.css}"' if table.css else ""
    mark = f'<span class="pubmark">{PUBLISHED_MARK}</span>' if table.css == "published" else ""
    align = table.alignment()
    parts = [f"<table{cls}>", f"<caption>{esc(table.title)}{mark}</caption>", "<thead><tr>"]
    parts += [f'<th class="{a}">{esc(h)}</th>' for h, a in zip(table.header, align)]
    parts.append("</tr></thead><tbody>")
    for i, row in enumerate(table.rows):
        row_cls = table.row_css[i] if i < len(table.row_css) else ""
        parts.append(f'<tr class="{row_cls}">' if row_cls else "<tr>")
        for cell, a in zip(row, align):
            attrs = f' class="{" ".join(filter(None, (a, cell.css)))}"' + (
                f' title="{esc(cell.title)}"' if cell.title else "")
            parts.append(f"<td{attrs}>{esc(cell.text)}</td>")
        parts.append("</tr>")
    parts.append("</tbody></table>")
    if table.notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{esc(n)}</li>" for n in table.notes) + "</ul>")
    return "\n".join(parts)


def to_html(doc: Document) -> str:
    esc = html.escape
    body = [f"<h1>{esc(doc.title)}</h1>"]
    body += [f'<p class="meta">{esc(p)}</p>' for p in doc.intro]
    for section in doc.sections:
        level = max(2, min(section.level, 4))
        body.append(f'<h{level} id="{_slug(section.title)}">{esc(section.title)}</h{level}>')
        body += [f"<p>{esc(p)}</p>" for p in section.paragraphs]
        body += [_table_html(t) for t in section.tables]
        for fig in section.figures:
            data = base64.b64encode(fig.png).decode("ascii")
            body.append(f'<figure><img alt="{esc(fig.caption)}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{esc(fig.caption)}</figcaption></figure>")
        for item in section.attachments:  # inlined: the report stays one file
            data = base64.b64encode(item.data).decode("ascii")
            body.append(f'<p class="attachment"><a download="{esc(item.name)}" href="data:{item.mime};base64,{data}">'
                        f"{esc(item.name)}</a> ({len(item.data):,} bytes): {esc(item.caption)}</p>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(doc.title)}</title><style>{CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def _md_text(text: str) -> str:
    """Markdown passes raw HTML through; record fields (machine names) must stay text."""
    return html.escape(text, quote=False)


def _md_escape(text: str) -> str:
    """One table cell: text, with no column breaks or line breaks."""
    return _md_text(text).replace("|", "\\|").replace("\n", " ")


def _table_md(table: Table) -> list[str]:
    title = f"**{_md_escape(table.title)}**"
    if table.css == "published":
        title = f"**{_md_escape(table.title)}** — *{PUBLISHED_MARK}*"
    lines = [title, "", "| " + " | ".join(_md_escape(h) for h in table.header) + " |",
             "|" + "|".join("---" if a == "l" else "---:" for a in table.alignment()) + "|"]
    for row in table.rows:
        lines.append("| " + " | ".join(_md_escape(c.text) for c in row) + " |")
    if table.notes:
        lines.append("")
        lines += [f"- {_md_escape(n)}" for n in table.notes]
    lines.append("")
    return lines


def to_markdown(doc: Document, image_prefix: str) -> tuple[str, dict[str, bytes]]:
    """Markdown text and the files it links to, PNG plots and attachments (relative names
    starting with image_prefix)."""
    lines = [f"# {_md_text(doc.title)}", ""]
    for p in doc.intro:
        lines += [_md_text(p), ""]
    images: dict[str, bytes] = {}
    for section in doc.sections:
        lines += ["#" * max(2, min(section.level, 4)) + f" {_md_escape(section.title)}", ""]
        for p in section.paragraphs:
            lines += [_md_text(p), ""]
        for t in section.tables:
            lines += _table_md(t)
        for fig in section.figures:
            name = f"{image_prefix}{fig.name}.png"
            images[name] = fig.png
            lines += [f"![{_md_escape(fig.caption)}]({name})", "", f"*{_md_escape(fig.caption)}*", ""]
        for item in section.attachments:
            name = f"{image_prefix}{item.name}"
            images[name] = item.data
            lines += [f"[{_md_escape(name)}]({name}) ({len(item.data):,} bytes): {_md_text(item.caption)}", ""]
    return "\n".join(lines).rstrip() + "\n", images


def check_output(out: Path) -> str:
    """'html' or 'md' from the file name; anything else is a user error."""
    suffix = Path(out).suffix.lower()
    if suffix in (".html", ".htm"):
        return "html"
    if suffix in (".md", ".markdown"):
        return "md"
    raise InputError(f"cannot tell the report format from '{Path(out).name}'",
                     fix="name the output report.html (one self-contained file) or report.md")


def write(doc: Document, out: Path) -> list[Path]:
    """Write the report; return every file written (the report first)."""
    out = Path(out)
    kind = check_output(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if kind == "html":
        out.write_text(to_html(doc), encoding="utf-8")
        return [out]
    text, images = to_markdown(doc, image_prefix=f"{out.stem}-")
    written = [out]
    for name, data in images.items():
        path = out.parent / name
        path.write_bytes(data)
        written.append(path)
    out.write_text(text, encoding="utf-8")
    return written
