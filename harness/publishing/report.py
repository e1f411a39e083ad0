"""Result tables rendered from the published results, so no number in README.md or paper_repro.md is typed by hand.

A Markdown file marks each generated block with `<!-- report:NAME -->` ... `<!-- /report:NAME -->`; the block's
text is figures/tables/NAME.md rendered: every `{{table:row:field|format}}` is looked up in the published tables
(results/published/) and formatted. `row` may hold shell patterns (`*`, `auto_ratio_?`; every matching row:
range and mean formats). A table line of a template may not type a decimal number or a percentage itself (the renderer
refuses): a setting or a paper's number meant to be typed is written `{{= 10 %}}`, which renders as `10 %`.

    python -m harness report            # rewrite the blocks of README.md, paper_repro.md and docs/*.md
    python -m harness report --check    # exit 1 and name the blocks whose committed text differs
"""
from __future__ import annotations

import csv
import fnmatch
import json
import math
import os
import re

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from harness.publishing.repo import checkout

TOP_DOCUMENTS = ("README.md", "paper_repro.md")
TEMPLATES = os.path.join("figures", "tables")
PUBLISHED = os.path.join("results", "published")
BLOCK = re.compile(r"(<!-- report:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /report:(?P=name) -->)", re.S)
PLACEHOLDER = re.compile(r"\{\{\s*(?P<table>\w+):(?P<row>[^:{}|]+):(?P<field>[\w.\-]+)\s*\|\s*(?P<fmt>\w+)\s*\}\}")
LITERAL = re.compile(r"\{\{=\s*(?P<text>[^{}]*?)\s*\}\}")   # {{= 10 %}}: a number typed on purpose (a setting)
TYPED_NUMBER = re.compile(r"(?<![\w.{])(\d+\.\d+|\d+\s?%)")

TABLE_INDEX = os.path.join(TEMPLATES, "tables.toml")   # table name -> published file and key columns


def table_index(repo: str) -> dict:
    """{table: (published file, key columns)} from the checkout's figures/tables/tables.toml: the benchmarks' tables
    are data beside their templates, so the report knows no benchmark by name."""
    path = os.path.join(repo, TABLE_INDEX)
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    bad = [name for name, entry in raw.items() if not isinstance(entry, dict) or set(entry) != {"file", "keys"}]
    if bad:
        raise ValueError(f"{path}: tables {bad} need exactly a file and a list of keys")
    return {name: (entry["file"], tuple(entry["keys"])) for name, entry in raw.items()}


def documents(root: str) -> tuple:
    """The Markdown files that may hold report blocks, relative to root: README.md, paper_repro.md and every page
    of docs/ (a new page is covered without being listed)."""
    docs = os.path.join(root, "docs")
    pages = sorted(f"docs/{name}" for name in os.listdir(docs) if name.endswith(".md")) if os.path.isdir(docs) else []
    return (*TOP_DOCUMENTS, *pages)


def _json_rows(doc) -> list:
    """A benchmark's JSON "rows", or a single document (one run's metrics) as one row of dotted keys
    (sets.synthetic.accuracy, sets.synthetic.ci.accuracy.0), all values as text like a CSV's."""
    if isinstance(doc, dict) and "rows" in doc:
        return [{k: "" if v is None else str(v) for k, v in r.items()} for r in doc["rows"]]
    flat = {}

    def walk(value, prefix):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{prefix}{k}.")
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{prefix}{i}.")
        else:
            flat[prefix[:-1]] = "" if value is None else str(value)
    walk(doc, "")
    return [flat]


def is_pattern(row: str) -> bool:
    """A row address with shell wildcards (several rows: the range and mean formats)."""
    return any(c in row for c in "*?[")


def _key(value: str) -> str:
    """One spelling per key value: a number as its shortest exact form (0.40 and 0.4 -> 0.4, 3.0 -> 3), text as is."""
    try:
        number = float(value)
    except ValueError:
        return value
    if not math.isfinite(number):
        return value
    return str(int(number)) if number == int(number) else f"{number:.12g}"


class Published:
    """The published tables, loaded on first use; `overrides` maps a benchmark name to another folder (a publish
    about to replace it renders the tables from its new folder first)."""

    def __init__(self, root: str, overrides: dict | None = None, tables: dict | None = None):
        self.root, self.overrides, self._tables = root, dict(overrides or {}), {}
        self.index = tables if tables is not None else table_index(os.path.dirname(os.path.dirname(root)))

    def rows(self, table: str, row: str) -> list:
        if table not in self.index:
            raise KeyError(f"unknown table {table!r}; expected one of {sorted(self.index)}")
        if table not in self._tables:
            path, keys = self.index[table]
            benchmark, rest = path.split("/", 1)
            full = os.path.join(self.overrides.get(benchmark, os.path.join(self.root, benchmark)), rest)
            if not os.path.isfile(full):
                raise FileNotFoundError(f"{full} is missing: publish the benchmark (python benchmarks/... --publish)")
            with open(full, newline="") as f:
                rows = _json_rows(json.load(f)) if full.endswith(".json") else list(csv.DictReader(f))
            self._tables[table] = [(",".join(_key(r[k]) for k in keys) if keys else "doc", r) for r in rows]
        wanted = [p.strip() if is_pattern(p) else _key(p.strip()) for p in row.split(",")]
        found = [r for k, r in self._tables[table] if len(k.split(",")) == len(wanted)
                 and all(fnmatch.fnmatchcase(v, w) for w, v in zip(wanted, k.split(","), strict=True))]
        if not found:
            raise KeyError(f"{table}: no row {row!r}")
        if not is_pattern(row) and len(found) > 1:
            raise KeyError(f"{table}: row {row!r} is not unique ({len(found)} rows)")
        return found

    def provenance(self, benchmark: str) -> dict:
        with open(os.path.join(self.root, benchmark, "provenance.json")) as f:
            return json.load(f)


def _number(row: dict, field: str) -> float:
    if field not in row:
        raise KeyError(f"no column {field!r}")
    text = row[field]
    return float("nan") if text in ("", None) else float(text)


# where a difference keeps its interval, if not at <prefix>_vs_<reference>
CI_PREFIX = {"drop_minus_magface": "did", "tuned_minus_untuned": "diff"}


def _ci(row, field, scale, spec, signed=False) -> str:
    prefix = CI_PREFIX.get(field, re.sub(r"(_vs_\w+|_mean)$", "", field))
    lo, hi = _number(row, f"{prefix}_ci_low"), _number(row, f"{prefix}_ci_high")
    sign = "+" if signed else ""
    return f"[{scale * lo:{sign}.{spec}f}, {scale * hi:{sign}.{spec}f}]"


def _range(values, scale, spec, unit="") -> str:
    lo, hi = min(values), max(values)
    same = round(scale * lo, spec) == round(scale * hi, spec)
    dash = " to " if lo < 0 else "–"   # "−20.7 to −13.1" reads better than "−20.7–−13.1"
    return (f"{scale * lo:.{spec}f}" if same else f"{scale * lo:.{spec}f}{dash}{scale * hi:.{spec}f}") + unit


def fmt_one(row: dict, field: str, fmt: str) -> str:
    """One row's field in a named format (the vocabulary of the templates)."""
    if fmt == "text":
        return row[field]
    if fmt == "mark":      # a significant difference to the reference, as in the heatmaps
        return {"better": " ▲", "worse": " ▼"}.get(row[field].split(" (")[0], "")
    if fmt == "verdict":   # without its parenthesis ("(evaluation noise)", "(|diff| < ... would go unseen)")
        return row[field].split(" (")[0]
    value = _number(row, field)
    if math.isnan(value):
        return "n/a"
    formats = {
        "pct": lambda: f"{100 * value:.2f}", "pct1": lambda: f"{100 * value:.1f}",
        "pct_ci": lambda: f"{100 * value:.2f} {_ci(row, field, 100, '1')}",
        "pct1_ci": lambda: f"{100 * value:.1f} {_ci(row, field, 100, '1')}",
        "pct_ci2": lambda: f"{100 * value:.2f} {_ci(row, field, 100, '2')}",
        "share": lambda: f"{100 * value:.0f} %",
        "rho": lambda: f"{value:+.3f}", "rho_ci": lambda: f"{value:+.3f} {_ci(row, field, 1, '3', True)}",
        "f1": lambda: f"{value:.1f}", "f2": lambda: f"{value:.2f}", "f3": lambda: f"{value:.3f}",
        "f4": lambda: f"{value:.4f}",
        "f4_ci": lambda: f"{value:.4f} {_ci(row, field, 1, '4')}",
        "diff_pts_ci": lambda: f"{100 * value:+.2f} {_ci(row, field, 100, '2', True)}",
        "diff_pts": lambda: f"{100 * value:+.2f}",
        "thousands": lambda: f"{value:,.0f}", "mib": lambda: f"{value / 2**20:.1f} MiB",
        "gib": lambda: f"{value / 2**30:.2f} GiB", "seconds": lambda: f"{value:.1f} s",
        "ms": lambda: f"{1e3 * value:.0f}",
        "equal_or_gap": lambda: "equal" if value == 0 else f"{value:.1e}", "sci": lambda: f"{value:.1e}",
        "diff3_ci": lambda: f"{value:+.3f} {_ci(row, field, 1, '3', True)}",
        "diff4_ci": lambda: f"{value:+.4f} {_ci(row, field, 1, '4', True)}",
    }
    if fmt not in formats:
        raise KeyError(f"unknown format {fmt!r}; expected text, verdict or one of {sorted(formats)}")
    return formats[fmt]().replace("-", "−")


def fmt_many(rows: list, field: str, fmt: str) -> str:
    """A field over several rows: range (min–max) or mean formats."""
    values = [v for v in (_number(r, field) for r in rows) if not math.isnan(v)]
    if not values:
        return "n/a"
    mean = sum(values) / len(values)
    formats = {"share_range": lambda: _range(values, 100, 0, " %"), "share_mean": lambda: f"{100 * mean:.0f} %",
               "pct_range": lambda: _range(values, 100, 1), "f2_range": lambda: _range(values, 1, 2),
               "f0_range": lambda: _range(values, 1, 0), "f1_range": lambda: _range(values, 1, 1),
               "pct_mean": lambda: f"{100 * mean:.2f}", "f2_mean": lambda: f"{mean:.2f}"}
    if fmt not in formats:
        raise KeyError(f"unknown format {fmt!r} for several rows; expected one of {sorted(formats)}")
    return formats[fmt]().replace("-", "−")


def _body_rows(text: str) -> list:
    """The lines of a template's tables that hold cells (not a header row, not a separator)."""
    lines = text.splitlines()
    separator = lambda line: re.fullmatch(r"\s*\|[\s|:\-]+\|?\s*", line) is not None  # noqa: E731
    return [line for i, line in enumerate(lines) if line.lstrip().startswith("|") and not separator(line)
            and not (i + 1 < len(lines) and separator(lines[i + 1]))]


def render_template(text: str, published: Published, where: str = "") -> str:
    """The template with every placeholder replaced; an error names the placeholder and what is wrong."""
    typed = TYPED_NUMBER.findall(LITERAL.sub("", PLACEHOLDER.sub("", "\n".join(_body_rows(text)))))
    if typed:
        raise ValueError(f"{where}: typed numbers {typed[:5]} in a table of a template; take them from the published "
                         "results with a {{table:row:field|format}} placeholder")

    def replace(m):
        try:
            rows = published.rows(m["table"], m["row"])
            if is_pattern(m["row"]):
                return fmt_many(rows, m["field"], m["fmt"])
            return fmt_one(rows[0], m["field"], m["fmt"])
        except (KeyError, ValueError, OSError) as exc:
            raise ValueError(f"{where}: {m.group(0)}: {exc.args[0] if exc.args else exc}") from None
    return LITERAL.sub(lambda m: m["text"], PLACEHOLDER.sub(replace, text))


def render_document(text: str, published: Published, templates: str = TEMPLATES, where: str = "") -> str:
    """The document with each report block's body replaced by its rendered template."""
    def replace(m):
        path = os.path.join(templates, f"{m['name']}.md")
        if not os.path.isfile(path):
            raise ValueError(f"{where}: block report:{m['name']} has no template {path}")
        with open(path, encoding="utf-8") as f:
            body = render_template(f.read(), published, f"{path}")
        return f"{m.group(1)}{body.rstrip()}\n{m.group(4)}"
    return BLOCK.sub(replace, text)


def stale_blocks(before: str, after: str) -> list:
    """Names of the blocks whose text differs between two versions of a document."""
    old = {m["name"]: m["body"] for m in BLOCK.finditer(before)}
    new = {m["name"]: m["body"] for m in BLOCK.finditer(after)}
    return sorted(name for name in new if old.get(name) != new[name])


def report(root: str | None = None, check: bool = False, names=None, overrides: dict | None = None) -> dict:
    """Render every document's blocks in the checkout `root` (default: the one around the current folder,
    harness.publishing.repo); with check, change nothing. Returns {document: [stale block names]}.
    A template that cannot be rendered is a ValueError naming it and the placeholder."""
    root = checkout(root)
    published = Published(os.path.join(root, PUBLISHED), overrides, table_index(root))
    stale = {}
    for name in documents(root) if names is None else names:
        path = os.path.join(root, name)
        with open(path, encoding="utf-8") as f:
            before = f.read()
        after = render_document(before, published, os.path.join(root, TEMPLATES), name)
        stale[name] = stale_blocks(before, after)
        if stale[name] and not check:
            tmp = f"{path}.tmp-{os.getpid()}"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(after)
            os.replace(tmp, path)
    return stale
