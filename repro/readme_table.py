"""Shared by the repro tables (repro/<pillar>/table.py): put a generated table into a README between
its `<!-- table:begin -->` and `<!-- table:end -->` markers, and write files atomically."""
import os

BEGIN, END = "<!-- table:begin -->", "<!-- table:end -->"


def write_atomic(path, text):
    """Writes `text` to `path` through a temporary file and a rename."""
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def replace_between_markers(readme, text):
    """Replaces what lies between the markers of `readme` with `text` (SystemExit without them)."""
    body = open(readme).read()
    i, j = body.find(BEGIN), body.find(END)
    if i < 0 or j < i:
        raise SystemExit(f"{readme}: no {BEGIN} … {END} markers")
    write_atomic(readme, body[: i + len(BEGIN)] + "\n" + text + "\n" + body[j:])


def replace_named_table(body, name, lines, page="docs/benchmarks.md"):
    """`body` with what lies between its `<!-- NAME table: begin -->` and `<!-- NAME table: end -->`
    markers replaced by `lines` (SystemExit naming the page without them): the pages that hold
    several generated tables, such as docs/benchmarks.md."""
    begin, end = f"<!-- {name} table: begin -->", f"<!-- {name} table: end -->"
    i, j = body.find(begin), body.find(end)
    if i < 0 or j < i:
        raise SystemExit(f"{page}: no {begin} … {end} markers")
    return body[: i + len(begin)] + "\n" + "\n".join(lines) + "\n" + body[j:]


def write_named_tables(path, tables):
    """Replaces each (name, lines) of `tables` between its markers in the page at `path`, and writes
    the page once, atomically."""
    body = open(path).read()
    for name, lines in tables:
        body = replace_named_table(body, name, lines, page=path)
    write_atomic(path, body)
