"""tools/fill_results.py: the READMEs' AP figures come from the comparison CSV."""

import csv
import os

import pytest

from instseg_d2.benchmark.comparison import CSV_COLUMNS
from instseg_d2.benchmark.readme_results import fill_files

ROWS = [
    {"model": "Base", "seed": "0", "iterations": "2800", "segm_AP": "60.0", "box_AP": "50.0"},
    {"model": "Base", "seed": "1", "iterations": "2800", "segm_AP": "62.0", "box_AP": "52.0"},
    {"model": "Det", "seed": "0", "iterations": "2800", "segm_AP": "", "box_AP": "41.26"},
    {"model": "Seg", "seed": "0", "iterations": "8400", "segm_AP": "30.04", "box_AP": "nan",
     "segm_AP50": "70.0", "boundary_AP": "12.0"},  # fmt: skip
    {"model": "Base [2x]", "seed": "0", "iterations": "4000", "segm_AP": "99.0"},
]


def _write(tmp_path, readme: str):
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    with open(bench / "comparison.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for r in ROWS:
            w.writerow(r)
    (tmp_path / "m").mkdir()
    path = tmp_path / "m" / "README.md"
    path.write_text(readme)
    return str(path), str(bench / "comparison.csv")


def test_table_cells_get_mean_segm_ap_or_box_ap(tmp_path):
    path, csv_path = _write(
        tmp_path, "| a | 1.0 <!-- AP: Base --> |\n| b | old <!-- AP: Det Seg --> |\n"
    )
    assert fill_files([path], csv_path, "Base") == [path]
    # Base: mean of 60 and 62; the variant row 'Base [2x]' is not averaged in. Det: box AP.
    assert open(path).read() == (
        "| a | 61.0 <!-- AP: Base --> |\n| b | 41.3 / 30.0 <!-- AP: Det Seg --> |\n"
    )
    assert fill_files([path], csv_path, "Base") == []  # filled files stay as they are


def test_results_block_is_rewritten_between_its_markers(tmp_path):
    path, csv_path = _write(
        tmp_path, "# R\n<!-- results: Seg Base -->\nstale\n<!-- /results -->\nend\n"
    )
    fill_files([path], csv_path, "Base")
    lines = open(path).read().split("\n")
    assert lines[1] == "<!-- results: Seg Base -->" and lines[-3:] == [
        "<!-- /results -->",
        "end",
        "",
    ]
    assert "(../benchmarks/comparison.md)" in lines[2] and "segm AP 61.0" in lines[2]
    assert "stale" not in lines
    assert lines[6] == "| Seg | 0 | 8400 | 30.0 | 70.0 | - | - | 12.0 |"
    assert lines[7] == "| Base | 0, 1 | 2800 | 61.0 (60.0-62.0) | - | - | 51.0 | - |"


@pytest.mark.parametrize(
    "readme, message",
    [
        ("x\n| a | 1 <!-- AP: Base Nope --> |\n", "README.md:2: Nope not in the comparison CSV"),
        ("<!-- results: Base -->\n| a |\n", "README.md:1: results block without"),
    ],
)
def test_unknown_model_or_open_block_names_file_and_line(tmp_path, readme, message):
    path, csv_path = _write(tmp_path, readme)
    with pytest.raises((KeyError, ValueError), match=message):
        fill_files([path], csv_path, "Base")
    assert open(path).read() == readme  # nothing written


def test_the_committed_readmes_are_filled_from_the_committed_csv():
    """Every figure the READMEs quote is the committed report's: filling changes nothing."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = [os.path.join(root, "README.md")] + [
        os.path.join(root, "projects", d, "README.md")
        for d in sorted(os.listdir(os.path.join(root, "projects")))
        if os.path.isfile(os.path.join(root, "projects", d, "README.md"))
    ]
    csv_path = os.path.join(root, "projects", "benchmarks", "comparison.csv")
    stale = fill_files(paths, csv_path, "MaskRCNN_R_18", write=False)
    assert not stale, f"run tools/fill_results.py: {stale}"
