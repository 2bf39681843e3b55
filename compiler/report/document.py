"""A report as plain data — sections of paragraphs, tables and figures — rendered to HTML or Markdown.

Building (build.py) decides what is said; rendering (render.py) only decides how it looks,
so the Markdown and the HTML report can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Cell:
    text: str
    css: str = ""  # html class: "na", "failed", "baseline", "fail", "pass"
    title: str = ""  # hover text in html (the full reason behind "n/a")


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[Cell]]
    notes: list[str] = field(default_factory=list)  # footnotes printed under the table
    css: str = ""  # "published" marks reference rows that vlc did not measure
    row_css: list[str] = field(default_factory=list)  # per-row class, parallel to rows
    align: str = ""  # one letter per column, "l" or "r"; default: first left, the rest right

    def alignment(self) -> str:
        return (self.align or "l" + "r" * (len(self.header) - 1)).ljust(len(self.header), "r")


@dataclass
class Figure:
    name: str  # file-name stem, unique within a report
    png: bytes
    caption: str


@dataclass
class Attachment:
    """A file that comes with the report (the raw samples as CSV): a download link in HTML,
    a file beside the Markdown."""

    name: str  # file name, unique within a report
    data: bytes
    mime: str
    caption: str


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    level: int = 2
    attachments: list[Attachment] = field(default_factory=list)


@dataclass
class Document:
    title: str
    intro: list[str]
    sections: list[Section]


class Footnotes:
    """Numbered notes for cells that need an explanation ("n/a [1]")."""

    def __init__(self) -> None:
        self.notes: list[str] = []

    def ref(self, text: str) -> str:
        if text not in self.notes:
            self.notes.append(text)
        return f"[{self.notes.index(text) + 1}]"

    def lines(self) -> list[str]:
        return [f"[{i}] {text}" for i, text in enumerate(self.notes, 1)]
