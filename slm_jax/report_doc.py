"""The report's content written once and rendered twice: markdown (report.md) and HTML
(index.html). A document is a list of blocks; text may use `code` spans and nothing else, so
the HTML never shows raw markdown."""

from __future__ import annotations

import dataclasses
import html
import re


@dataclasses.dataclass
class Heading:
  text: str
  level: int = 2


@dataclasses.dataclass
class Para:
  text: str


@dataclasses.dataclass
class Items:
  """A bullet list of (label, text); the label is bold in HTML and "Label:" in both."""
  items: list[tuple[str, str]]


@dataclasses.dataclass
class Table:
  headers: list[str]
  rows: list[list[str]]
  summary: str = ""  # HTML: folded under this line (long tables)


@dataclasses.dataclass
class Image:
  src: str
  alt: str


Block = Heading | Para | Items | Table | Image


def _inline_html(text: str) -> str:
  return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text, quote=False))


def _cell_md(text: str) -> str:
  return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(blocks: list[Block]) -> str:
  out = []
  for b in blocks:
    if isinstance(b, Heading):
      out.append(f"{'#' * b.level} {b.text}\n")
    elif isinstance(b, Para):
      out.append(b.text + "\n")
    elif isinstance(b, Items):
      out.append("\n".join(f"- {label}: {text}" for label, text in b.items) + "\n")
    elif isinstance(b, Table):
      lines = ["| " + " | ".join(map(_cell_md, b.headers)) + " |",
               "|" + "---|" * len(b.headers)]
      lines += ["| " + " | ".join(map(_cell_md, row)) + " |" for row in b.rows]
      out.append("\n".join(lines) + "\n")
    elif isinstance(b, Image):
      out.append(f"![{b.alt}]({b.src})\n")
  return "\n".join(out)


STYLE = ("body{font-family:sans-serif;font-size:16px;line-height:1.4;max-width:1200px;"
         "margin:auto;padding:0 8px}img{max-width:100%}"
         ".scroll{overflow-x:auto}table{border-collapse:collapse;font-size:14px;margin:8px 0}"
         "td,th{padding:3px 8px;border:1px solid #ccc;text-align:left;vertical-align:top}"
         "th{background:#f2f2f2}tr:nth-child(even) td{background:#fafafa}"
         "code{background:#f2f2f2;padding:0 3px}")


def html_page(title: str, blocks: list[Block]) -> str:
  out = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
         f"<style>{STYLE}</style>"]
  for b in blocks:
    if isinstance(b, Heading):
      out.append(f"<h{b.level}>{_inline_html(b.text)}</h{b.level}>")
    elif isinstance(b, Para):
      out.append(f"<p>{_inline_html(b.text)}</p>")
    elif isinstance(b, Items):
      out.append("<ul>" + "".join(f"<li><b>{_inline_html(label)}:</b> {_inline_html(text)}</li>"
                                  for label, text in b.items) + "</ul>")
    elif isinstance(b, Table):
      head = "".join(f"<th>{_inline_html(h)}</th>" for h in b.headers)
      body = "".join("<tr>" + "".join(f"<td>{_inline_html(str(c))}</td>" for c in row) + "</tr>"
                     for row in b.rows)
      table = f"<div class='scroll'><table><tr>{head}</tr>{body}</table></div>"
      out.append(f"<details><summary>{_inline_html(b.summary)}</summary>{table}</details>"
                 if b.summary else table)
    elif isinstance(b, Image):
      out.append(f"<img src='{html.escape(b.src)}' alt='{html.escape(b.alt)}'>")
  return "\n".join(out) + "\n"
