"""Issue 37, the report: the page goes into the run folder it reads, wide tables scroll inside a 1200 px window, and the
cosine histogram counts in whole numbers."""
import re

from lit_featinv.analysis import build, load_run
from lit_featinv.analysis.page import figure_uri, histogram_figure
from lit_featinv.app.console import main as cli_main
from test_report import chromium, console_messages, make_run

WIDTH = """<script>addEventListener("load", () => console.log("scrollWidth " + document.documentElement.scrollWidth))
</script></body>"""


def test_the_page_goes_into_the_run_folder_it_reads(tmp_path, monkeypatch, capsys):
    run, other = make_run(tmp_path / "runs" / "a", seed=1), make_run(tmp_path / "runs" / "b", seed=2)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    cli_main(["report", str(run)])
    assert (run / "report.html").is_file() and not (cwd / "report.html").exists()
    assert f"wrote {run.resolve() / 'report.html'}" in capsys.readouterr().out
    cli_main(["report", str(run), str(other)])  # several: the current folder, as before
    assert (cwd / "report.html").is_file() and f"wrote {cwd.resolve() / 'report.html'}" in capsys.readouterr().out
    cli_main(["report", str(run), "--out", "mine/r.html"])  # as given
    assert (cwd / "mine" / "r.html").is_file()


def test_wide_tables_scroll_inside_a_1200_px_window(tmp_path, capsys):
    runs = [make_run(tmp_path / f"a_run_folder_with_a_rather_long_name_{i}", samples=3, seed=i) for i in range(3)]
    cli_main(["report", *map(str, runs), "--out", str(tmp_path / "r.html")])
    probe = tmp_path / "probe.html"
    probe.write_text((tmp_path / "r.html").read_text().replace("</body>", WIDTH), encoding="utf-8")
    widths = [int(w) for m in console_messages(chromium(probe, tmp_path / "shot.png"))
              for w in re.findall(r"scrollWidth (\d+)", m)]
    assert len(widths) == 1 and widths[0] <= 1200


def test_the_histogram_counts_in_whole_numbers(tmp_path):
    fig = histogram_figure(build([load_run(make_run(tmp_path / "run", ids=("a",)), "run")], None, {}))
    figure_uri(fig)  # drawn: the tick labels are set
    labels = [t.get_text().replace("\N{MINUS SIGN}", "-") for t in fig.axes[0].get_yticklabels()]
    assert len(labels) > 1 and all(re.fullmatch(r"-?\d+", label) for label in labels), labels
