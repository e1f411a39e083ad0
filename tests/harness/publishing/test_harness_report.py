"""harness.publishing.report: the result tables of README.md and paper_repro.md are what the published results give,
and the template language (lookups, formats, ranges) and its refusals."""
import os
import re
import shutil
from pathlib import Path

import pytest
from support import ROOT as SUPPORT_ROOT

from harness.publishing.report import BLOCK, Published, documents, render_document, render_template, report, table_index

ROOT = Path(SUPPORT_ROOT)
INDEX = table_index(str(ROOT))

# Tables typed by hand, by their header lines: settings, not results. A new typed table with decimals or percentages
# fails the test below until it is generated or listed here with a reason.
TYPED_TABLES = {
    "docs/heads.md": {
        "| name | target logit (others: s·cos θ_j unless said) | defaults | explicit choices |",   # settings
    },
}
# Pages whose tables are the paper's own numbers, each with its source: facts compared against, not results.
PAPER_PAGES = {"docs/paper.md"}
DECIMAL_OR_PERCENT = re.compile(r"(?<![\w.])(\d+\.\d+|\d+\s?%)")


def test_committed_tables_are_what_the_published_results_give():
    stale = report(str(ROOT), check=True)
    assert not any(stale.values()), f"stale generated tables {stale}: run python -m harness report"


def test_no_result_table_is_typed_by_hand():
    for name in sorted(set(documents(str(ROOT))) - PAPER_PAGES):
        text = BLOCK.sub("", (ROOT / name).read_text(encoding="utf-8"))
        lines = text.splitlines()
        typed_headers = set()
        for i, line in enumerate(lines):
            if line.startswith("|") and i + 1 < len(lines) and re.match(r"\|[\s\-|:]+\|?$", lines[i + 1]):
                body = []
                for row in lines[i + 2:]:
                    if not row.startswith("|"):
                        break
                    body.append(row)
                if DECIMAL_OR_PERCENT.search("\n".join(body)):
                    typed_headers.add(line.strip())
        unexpected = typed_headers - TYPED_TABLES.get(name, set())
        assert not unexpected, f"{name}: tables with typed numbers outside report blocks: {sorted(unexpected)}"


@pytest.fixture
def published(tmp_path):
    root = tmp_path / "published" / "quality_vs_magnitude"
    root.mkdir(parents=True)
    (root / "magnitude_vs_quality.csv").write_text(
        "head,accuracy,accuracy_ci_low,accuracy_ci_high,spearman_rho,rho_diff_vs_magface,rho_diff_ci_low,"
        "rho_diff_ci_high,rho_verdict\n"
        "magface,0.92,0.90,0.93,0.147,,,,\n"
        "arcface,0.913,0.893,0.928,-0.245,0.098,0.052,0.146,tracks quality better than MagFace (same images)\n")
    return Published(str(tmp_path / "published"), tables=INDEX)


def test_lookups_and_formats(published):
    text = ("| a | b |\n|---|---|\n| {{qvm:magface:accuracy|pct_ci}} | {{qvm:arcface:spearman_rho|rho}} |\n"
            "| {{qvm:arcface:rho_diff_vs_magface|diff3_ci}} | {{qvm:arcface:rho_verdict|verdict}} |\n"
            "| {{qvm:*:accuracy|pct_range}} | {{qvm:*:accuracy|pct_mean}} {{= 10 %}} |\n")
    out = render_template(text, published)
    assert "| 92.00 [90.0, 93.0] | −0.245 |" in out
    assert "| +0.098 [+0.052, +0.146] | tracks quality better than MagFace |" in out
    assert "| 91.3–92.0 | 91.65 10 % |" in out


def test_refusals_name_the_problem(published):
    with pytest.raises(ValueError, match=r"typed numbers \['91.2'\]"):
        render_template("| a |\n|---|\n| 91.2 |\n", published, "t.md")
    with pytest.raises(ValueError, match="unknown table 'nope'"):
        render_template("{{nope:x:y|pct}}", published)
    with pytest.raises(ValueError, match="qvm: no row 'softmax'"):
        render_template("{{qvm:softmax:accuracy|pct}}", published)
    with pytest.raises(ValueError, match="no column 'tar'"):
        render_template("{{qvm:magface:tar|pct}}", published)
    with pytest.raises(ValueError, match="unknown format 'percent'"):
        render_template("{{qvm:magface:accuracy|percent}}", published)
    with pytest.raises(ValueError, match="is missing: publish the benchmark"):
        render_template("{{compare:clean,magface:accuracy_mean|pct}}", published)


def test_a_changed_number_is_found_and_rewritten(tmp_path):
    for name in documents(str(ROOT)):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "figures" / "tables", tmp_path / "figures" / "tables")
    shutil.copytree(ROOT / "results" / "published", tmp_path / "results" / "published")
    readme = tmp_path / "README.md"
    text = readme.read_text(encoding="utf-8")
    block = next(BLOCK.finditer(text))
    readme.write_text(text.replace(block["body"], block["body"].replace("9", "8", 1)), encoding="utf-8")
    assert report(str(tmp_path), check=True)["README.md"] == [block["name"]]
    report(str(tmp_path))
    assert readme.read_text(encoding="utf-8") == text
    assert not os.path.exists(f"{readme}.tmp-{os.getpid()}")


def test_a_block_without_a_template_is_an_error(tmp_path, published):
    with pytest.raises(ValueError, match="block report:nothing has no template"):
        render_document("<!-- report:nothing -->\n<!-- /report:nothing -->\n", published, str(tmp_path), "x.md")


def test_patterns_and_key_spellings(tmp_path):
    root = tmp_path / "published" / "ablation"
    root.mkdir(parents=True)
    (root / "ablation.csv").write_text("l_m,u_m,accuracy\n0.4,0.8,0.91\n0.45,0.8,0.87\n0.4,3.0,0.5\n")
    pub = Published(str(tmp_path / "published"), tables=INDEX)
    assert render_template("{{ablation:0.40,0.80:accuracy|pct}}", pub) == "91.00"    # 0.40 is 0.4
    assert render_template("{{ablation:0.4,3:accuracy|pct}}", pub) == "50.00"        # 3 is 3.0
    assert render_template("{{ablation:0.4?,0.8:accuracy|pct_range}}", pub) == "87.0"   # ? is a pattern too
    assert render_template("{{ablation:0.4*,0.8:accuracy|pct_range}}", pub) == "87.0–91.0"
    with pytest.raises(ValueError, match="unknown format 'pct' for several rows"):
        render_template("{{ablation:*,0.8:accuracy|pct}}", pub)
    other = tmp_path / "new_ablation"
    other.mkdir()
    (other / "ablation.csv").write_text("l_m,u_m,accuracy\n0.4,0.8,0.95\n")
    assert render_template("{{ablation:0.4,0.8:accuracy|pct}}",
                           Published(str(tmp_path / "published"), {"ablation": str(other)}, INDEX)) == "95.00"


def test_the_checkout_is_found_by_git_or_named(tmp_path, monkeypatch):
    """From a folder inside the checkout the report finds it; outside one it is an error that says what to do,
    and --repo (root) names it from anywhere."""
    monkeypatch.chdir(ROOT / "docs")
    assert not any(report(check=True).values())
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="not inside a git checkout of magface-bench.*--repo DIR"):
        report(check=True)
    assert not any(report(str(ROOT), check=True).values())
    with pytest.raises(ValueError, match="is not a checkout of magface-bench"):
        report(str(tmp_path), check=True)
