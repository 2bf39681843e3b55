"""`vlc report` over hand-written records of three machines (tests/report/fixtures: test data,
not measurements): tables, speed-ups, published rows, plots, and the HTML as a browser shows it."""

from __future__ import annotations

import base64
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from vlc.cli.app import main
from vlc.errors import InputError
from vlc.records import load_records
from vlc.report import make_report
from vlc.report.build import build

FIXTURES = Path(__file__).parent / "fixtures"
MACHINES = [FIXTURES / "a10-box", FIXTURES / "h100-box", FIXTURES / "cpu-box"]
CHROMIUM = Path("/usr/bin/chromium")


class Tables(HTMLParser):
    """Every <table> as its caption and rows of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict] = []
        self._cell: list[str] | None = None
        self._in_caption = False
        self.images: list[str] = []
        self.classes: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.tables.append({"caption": "", "rows": [], "class": attrs.get("class") or ""})
        elif tag == "caption":
            self._in_caption = True
        elif tag == "tr":
            self.tables[-1]["rows"].append([])
            self.classes.append(attrs.get("class") or "")
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(attrs.get("src", ""))

    def handle_endtag(self, tag):
        if tag == "caption":
            self._in_caption = False
        elif tag in ("td", "th") and self._cell is not None:
            self.tables[-1]["rows"][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        elif self._in_caption:
            self.tables[-1]["caption"] += data

    def table(self, caption_part: str) -> dict:
        found = [t for t in self.tables if caption_part in t["caption"]]
        assert found, f"no table whose caption has {caption_part!r}: {[t['caption'] for t in self.tables]}"
        return found[0]


def parse(html: str) -> Tables:
    parser = Tables()
    parser.feed(html)
    return parser


def column(table: dict, header_part: str) -> dict[str, str]:
    header = table["rows"][0]
    index = next(i for i, h in enumerate(header) if header_part in h)
    return {row[0]: row[index] for row in table["rows"][1:]}


@pytest.fixture(scope="module")
def html_report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report.html"
    assert main(["report", *map(str, MACHINES), "-o", str(out), "--published"]) == 0
    return out


def test_html_report_merges_three_machines_into_tables(html_report):
    html = html_report.read_text()
    doc = parse(html)
    latency = doc.table("clip_vit_b32_image: latency and throughput — a10-box")
    assert latency["rows"][0][0] == "batch"
    assert column(latency, "trt / fp16 / A10") == {"1": "1.30 ms · 769/s", "8": "4.81 ms · 1,663/s"}
    cpu = doc.table("clip_vit_b32_image: latency and throughput — cpu-box")
    assert column(cpu, "onnxruntime / fp16")["8"].startswith("n/a [")
    assert column(cpu, "ascend / fp16")["1"].startswith("bundle [")
    assert "does not support precision fp16" in html
    doc.table("clip_vit_b32_image: latency and throughput — h100-box")
    # default baseline: torch fp32 on the CPU; ratios are baseline latency / latency
    speedup = doc.table("speed-up against torch / fp32 / Intel Xeon Gold 6338 — h100-box")
    assert column(speedup, "trt / fp16 / H100")["8"] == f"{417.6 / 1.35:.2f}x ?"  # the fixtures keep no raw samples
    util = doc.table("clip_vit_b32_image: achieved TFLOP/s and share of peak — a10-box")
    assert column(util, "trt / fp16 / A10")["8"] == f"{8.74e9 * 8000 / 4.81 / 1e12:.4g} TFLOP/s · " \
                                                    f"{8.74e9 * 8000 / 4.81 / 1e12 / 125 * 100:.3g} %"
    accuracy = doc.table("Accuracy against the reference model")
    failing = [r for r in accuracy["rows"] if r[0] == "mobilevit_s" and "trt / fp16" in r[1]]
    assert failing and failing[0][7] == "FAIL" and "cosine" in failing[0][8]
    machines = doc.table("Machines")
    assert {r[0] for r in machines["rows"][1:]} == {"a10-box", "h100-box", "cpu-box"}
    assert any("NVIDIA H100 80GB HBM3 (driver 560.35.03)" in c for r in machines["rows"] for c in r)
    not_measured = doc.table("Cells not measured")
    assert any(r[2] == "emitted" and "bundles/clip_vit_b32_image/ascend-fp16" in r[4] for r in not_measured["rows"])


def test_published_figures_are_marked_as_not_measured(html_report):
    doc = parse(html_report.read_text())
    clip = doc.table("Published reference rows: CLIP ViT-B/32")
    assert clip["class"] == "published" and "published, not measured by vlc" in clip["caption"]
    assert all("published, not measured by vlc" in row[0] for row in clip["rows"][1:])
    assert column(clip, "trt / fp16 / NVIDIA A10")["64 (published, not measured by vlc)"].startswith("15.75 ms")
    vilbert = doc.table("Published reference rows: ViLBERT, VQA head")  # no measured ViLBERT: own section
    assert column(vilbert, "Ascend 310P3")["32 (published, not measured by vlc)"].endswith("493/s")
    accuracy = doc.table("Accuracy against the reference model")
    published_rows = [r for r in accuracy["rows"] if "published, not measured by vlc" in r[0]]
    assert any(r[1] == "trt / fp16 / NVIDIA A10" and r[4] == "0.01" for r in published_rows)


def test_html_is_self_contained_with_inline_plots(html_report):
    html = html_report.read_text()
    doc = parse(html)
    assert len(doc.images) == 6  # speed-up against the baseline, throughput and latency for two models
    for src in doc.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing fetched from elsewhere


def test_markdown_report_writes_png_files_beside_it(tmp_path):
    written = make_report(MACHINES, tmp_path / "out" / "report.md", baseline="trt/fp32/a10")
    text = written[0].read_text()
    pngs = written[1:]
    assert len(pngs) == 6 and all(p.parent == written[0].parent and p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
    for png in pngs:
        assert f"]({png.name})" in text
    assert "| batch | torch / fp32 / A10 |" in text
    assert "speed-up against trt / fp32 / A10" in text
    # torch fp32 on the A10 against trt fp32 on the A10 ('?': the fixtures keep no raw samples)
    assert f"| 8 | {8.70 / 25.30:.2f}x ? |" in text
    assert "Published reference rows" not in text  # only with --published
    # utilisation is recomputed against today's peak table, not the peaks stored in the records
    assert "Peak: NVIDIA A10 fp16 (dense): NVIDIA A10 Tensor Core GPU datasheet" in text
    assert "(dense): fixture" not in text


def test_baseline_errors_are_one_clear_line(tmp_path):
    records = load_records(MACHINES).records
    with pytest.raises(InputError, match="matches no measured column") as info:
        build(records, baseline="tvm/fp32")
    assert "torch / fp32 / A10" in info.value.line()
    with pytest.raises(InputError, match="matches 2 columns"):
        build(records, baseline="trt/fp16")
    with pytest.raises(InputError, match="cannot read --baseline"):
        build(records, baseline="a/b/c/d")
    assert main(["report", str(FIXTURES), "-o", str(tmp_path / "r.pdf")]) == 2


def test_no_records_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty"), "-o", str(tmp_path / "r.html")]) == 2


def _chromium(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         f"--user-data-dir={tmp_path / 'chromium-profile'}", *args],
        capture_output=True, text=True, timeout=120, check=False)


def test_html_report_renders_in_headless_chromium(html_report, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is absent: install it with `apt-get install -y chromium` "
                    "to check the HTML report in a real browser")
    from PIL import Image, ImageStat

    shot = tmp_path / "report.png"
    done = _chromium(f"--screenshot={shot}", "--window-size=1280,2000", html_report.as_uri(), tmp_path=tmp_path)
    assert shot.is_file(), done.stderr[-2000:]
    image = Image.open(shot).convert("L")
    assert image.size == (1280, 2000)
    assert ImageStat.Stat(image).stddev[0] > 20, "the screenshot is blank"  # text and tables have contrast
    dom = _chromium("--dump-dom", html_report.as_uri(), tmp_path=tmp_path).stdout
    doc = parse(dom)
    assert len(doc.tables) >= 10
    assert doc.table("clip_vit_b32_image: latency and throughput — a10-box")["rows"][2][0] == "8"
    assert doc.table("Published reference rows: CLIP ViT-B/32")["class"] == "published"
    assert len(doc.images) == 6  # speed-up, throughput and latency for two models


def test_different_graphs_of_one_model_are_pointed_out():
    records = load_records(MACHINES).records
    for r in records:
        if r.machine == "h100-box":
            r.source_hash = "0ther" + r.source_hash
            r.flops_per_sample = 9.1e9 if r.flops_per_sample else None
    from vlc.report.render import to_markdown

    text, _ = to_markdown(build(records, plots=False), "x-")
    assert "The normalized ONNX graph differs between records" in text
    assert "on h100-box" in text and "9.1 GFLOP (h100-box)" in text


def test_unsteady_timings_are_marked():
    records = load_records(MACHINES).records
    noisy = next(r for r in records if r.machine == "a10-box" and r.target == "trt" and r.precision == "fp16"
                 and r.batch == 8 and r.model == "clip_vit_b32_image")
    noisy.latency_ms = {**noisy.latency_ms, "cv": 0.12}
    from vlc.report.render import to_markdown

    text, _ = to_markdown(build(records, plots=False), "x-")
    assert "4.81 ms · 1,663/s ±" in text and "1.30 ms · 769/s |" in text
    assert "varied by more than 2.5%" in text


def _sized(records, model: str, model_ref: str):
    from dataclasses import replace

    return [replace(r, model=model, model_ref=model_ref) for r in records]


def test_test_size_and_full_size_are_never_one_table():
    """Both sizes measured at batch 1 on one machine: two sections, and no published A10 rows
    beside the test size (they are figures of the full-size model)."""
    from vlc.report.render import to_markdown

    mobile = [r for r in load_records([FIXTURES / "a10-box"]).records if r.model == "mobilevit_s"]
    full = _sized(mobile, "mobilevit-s", "mobilevit-s")
    small = _sized(mobile, "mobilevit-s@test", "mobilevit-s@test")
    text, _ = to_markdown(build(full + small, plots=False, published=True), "x-")
    assert "## Model: mobilevit-s\n" in text and "## Model: mobilevit-s@test\n" in text
    small_section = text.split("## Model: mobilevit-s@test\n")[1].split("\n## ")[0]
    full_section = text.split("## Model: mobilevit-s\n")[1].split("\n## ")[0]
    assert "Published" not in small_section and "Published" in full_section


def test_records_from_before_the_size_was_in_the_name_are_kept_apart(tmp_path):
    """Older records named a test-size example by its bare name; their model_ref still says @test."""
    from vlc.records import write_record
    from vlc.report.render import to_markdown

    mobile = [r for r in load_records([FIXTURES / "a10-box"]).records if r.model == "mobilevit_s"]
    full = _sized(mobile, "mobilevit-s", "mobilevit-s")
    old_small = _sized(mobile, "mobilevit-s", "mobilevit-s@test")
    write_record(tmp_path / "full", full[0])
    write_record(tmp_path / "small", old_small[0])
    loaded = load_records([tmp_path / "full", tmp_path / "small"])
    assert len(loaded.records) == 2 and not loaded.replaced  # one cell each, neither replaces the other
    assert {r.model_id for r in loaded.records} == {"mobilevit-s", "mobilevit-s@test"}
    text, _ = to_markdown(build(full + old_small, plots=False), "x-")
    assert "## Model: mobilevit-s\n" in text and "## Model: mobilevit-s@test\n" in text
