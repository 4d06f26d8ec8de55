"""One report, two renderings: ``report.md`` (figures linked) and ``report.html`` (self-contained).

The report is built once as a list of blocks (heading, paragraph, table, figure, preformatted text)
and rendered twice, so the Markdown and the HTML can never say different things. The HTML embeds
every figure as a base64 data URI and carries its own small stylesheet: it can be mailed, attached to
an MLflow run or opened from an object store without the PNG files next to it.
"""
from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple


@dataclass(frozen=True)
class Table:
    header: tuple
    rows: tuple            # tuples of cell strings


@dataclass(frozen=True)
class Figure:
    path: Path
    caption: str


@dataclass(frozen=True)
class Preformatted:
    text: str


Block = Union[Heading, Paragraph, Bullets, Table, Figure, Preformatted]


# ------------------------------------------------------------------------------------------ markdown

def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(block: Table) -> str:
    lines = ["| " + " | ".join(_md_cell(c) for c in block.header) + " |",
             "|" + "|".join("---" for _ in block.header) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
    return "\n".join(lines)


# one renderer per block type: a new block is one entry in each table, never a branch
_MARKDOWN = {
    Heading: lambda block, _base: f"{'#' * block.level} {block.text}",
    Paragraph: lambda block, _base: block.text,
    Bullets: lambda block, _base: "\n".join(f"- {item}" for item in block.items),
    Table: lambda block, _base: _md_table(block),
    Figure: lambda block, base: f"![{block.caption}]({_relative(block.path, base)})\n\n*{block.caption}*",
    Preformatted: lambda block, _base: "```\n" + block.text + "\n```",
}


def _relative(path: Path, base: Path) -> str:
    try:
        return Path(path).resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return Path(path).resolve().as_uri()


def to_markdown(title: str, blocks: Sequence[Block], base: Path) -> str:
    return "\n\n".join([f"# {title}"] + [_MARKDOWN[type(b)](b, base) for b in blocks]) + "\n"


# ------------------------------------------------------------------------------------------ html

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1150px; margin: 2em auto;
       padding: 0 1em; color: #111; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .92em; }
th, td { border: 1px solid #bbb; padding: .25em .6em; text-align: left; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #eee; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: .9em; color: #333; }
pre { background: #f6f6f6; padding: .8em; overflow-x: auto; font-size: .85em; }
"""


def _html_table(block: Table) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in block.header)
    body = "".join("<tr>" + "".join(_td(c) for c in row) + "</tr>" for row in block.rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_figure(block: Figure) -> str:
    data = base64.b64encode(Path(block.path).read_bytes()).decode("ascii")
    caption = html.escape(block.caption)
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{caption}">'
            f"<figcaption>{caption}</figcaption></figure>")


_HTML = {
    Heading: lambda block: f"<h{block.level}>{html.escape(block.text)}</h{block.level}>",
    Paragraph: lambda block: f"<p>{html.escape(block.text)}</p>",
    Bullets: lambda block: "<ul>" + "".join(f"<li>{html.escape(str(i))}</li>" for i in block.items) + "</ul>",
    Table: _html_table,
    Figure: _html_figure,
    Preformatted: lambda block: f"<pre>{html.escape(block.text)}</pre>",
}


NUMERIC = re.compile(r"^[-+]?\d+(\.\d+)?(±\d+(\.\d+)?)?%?( [✓✗≈])?$")


def _td(cell) -> str:
    """Numbers right-aligned (they line up), words left."""
    text = str(cell)
    return f'<td class="num">{html.escape(text)}</td>' if NUMERIC.match(text) else f"<td>{html.escape(text)}</td>"


def to_html(title: str, blocks: Sequence[Block]) -> str:
    body = "\n".join(_HTML[type(b)](b) for b in blocks)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n"
            f"<body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n")
