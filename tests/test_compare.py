"""tools/compare.py: a resumable sweep over configs and seeds, curves, report and pictures."""

import csv
import json
import os
import shutil

import pytest

from detectron2.data import MetadataCatalog

from instseg_d2.benchmark.comparison import markdown, summarize
from instseg_d2.benchmark.sweep import Run, ap_summary, eval_curve, run_result
from instseg_d2.testing import TINY_OPTS

MASK_RCNN = "configs/MaskRCNN/shapes_MaskRCNN_R_18.yaml"


def _metrics(folder, records):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "metrics.json"), "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
        f.write('{"iteration": 12, "total_l')  # a line cut by a kill


def test_curve_final_metrics_and_plateau_from_metrics_json(tmp_path):
    run = Run("M/x", "c.yaml", 3, str(tmp_path / "run"))
    _metrics(run.out_dir, [
        {"iteration": 4, "total_loss": 2.0, "time": 0.5},
        {"iteration": 4, "segm/AP": 10.0, "bbox/AP": 8.0},
        {"iteration": 9, "total_loss": 1.0, "time": 0.7},
        {"iteration": 9, "segm/AP": 20.0, "segm/AP50": 40.0, "bbox/AP": 15.0, "boundary/AP": 5.0},
        {"iteration": 9, "segm/AP": 20.5},  # evaluated again after a resume: the last one wins
    ])  # fmt: skip
    assert eval_curve([{"iteration": 1, "total_loss": 1.0}]) == []
    res = run_result(run)
    assert [c["iteration"] for c in res["curve"]] == [5, 10]
    assert res["iterations"] == 10 and res["seed"] == 3
    assert res["segm_AP"] == 20.5 and res["segm_AP50"] == 40.0
    assert res["box_AP"] == 15.0 and res["boundary_AP"] == 5.0
    assert res["plateau_delta"] == 10.5 and res["run_min"] is None  # no log.txt


def test_markdown_gives_mean_and_range_over_seeds_and_the_plateau():
    results = [
        {"model": "A", "seed": 0, "iterations": 10, "segm_AP": 50.0, "plateau_delta": 0.5},
        {"model": "A", "seed": 1, "iterations": 10, "segm_AP": 54.0, "plateau_delta": 0.8},
        {"model": "B", "seed": 0, "iterations": 10, "segm_AP": 30.0, "plateau_delta": 2.0},
    ]
    assert summarize([50.0, 54.0, None]) == (52.0, 50.0, 54.0)
    table = markdown(results, {"A": {"cpu_ms": 12.0}}, {"A": "SGD 0.02"})
    row_a = next(line for line in table.splitlines() if line.startswith("| A |"))
    row_b = next(line for line in table.splitlines() if line.startswith("| B |"))
    assert "52.00 (50.00-54.00)" in row_a and "| yes (0.80) |" in row_a and "12.00" in row_a
    assert "SGD 0.02" in row_a
    assert "| 30.00 |" in row_b and "| no (2.00) |" in row_b


def test_compare_trains_every_seed_resumably_then_reports(
    tiny_shapes, tmp_path, repo_root, load_tool
):
    tool = load_tool("compare")
    assert tool.default_configs()[0] == MASK_RCNN  # the baseline heads the table
    assert tool.model_name(MASK_RCNN) == "MaskRCNN_R_18"
    datasets = []
    for name in tiny_shapes:  # train, then test
        meta = MetadataCatalog.get(name)
        datasets += ["--dataset", f"{name}={meta.json_file}:{meta.image_root}"]
    root, report = tmp_path / "sweep", tmp_path / "report"
    opts = list(TINY_OPTS[4:]) + ["SOLVER.MAX_ITER", "4", "TEST.EVAL_PERIOD", "2"]
    argv = [
        "--configs",
        MASK_RCNN,
        "--seeds",
        "0",
        "1",
        "--jobs",
        "2",
        "--threads",
        "1",
        "--output-root",
        str(root),
        "--report-dir",
        str(report),
        "--grid-images",
        "2",
    ]
    assert tool.main(argv + datasets + ["--opts"] + opts) == 0
    for seed in (0, 1):
        res = json.loads((root / "runs" / f"MaskRCNN_R_18_seed{seed}" / "result.json").read_text())
        assert res["iterations"] == 4 and [c["iteration"] for c in res["curve"]] == [2, 4]
        assert "segm_AP" in res and "boundary_AP" in res
    before = (report / "comparison.csv").read_text()
    with open(report / "comparison.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["model"], r["seed"]) for r in rows] == [
        ("MaskRCNN_R_18", "0"),
        ("MaskRCNN_R_18", "1"),
    ]
    assert float(rows[0]["cpu_ms"]) > 0 and float(rows[0]["params_M"]) > 0
    md = (report / "comparison.md").read_text()
    assert md.startswith("Machine: ") and "| MaskRCNN_R_18 | 0,1 | 4 |" in md
    for png in ("curves.png", "ap_vs_latency.png", "predictions.png"):
        assert (report / png).stat().st_size > 1000, png
    # a second call trains nothing: the runs are done
    stamp = (root / "runs" / "MaskRCNN_R_18_seed0" / "result.json").stat().st_mtime
    assert tool.main(argv + datasets + ["--no-bench", "--opts"] + opts) == 0
    assert (root / "runs" / "MaskRCNN_R_18_seed0" / "result.json").stat().st_mtime == stamp
    # a report of runs that are not all finished says which are missing, and fails
    partial = argv[:5] + ["2"] + argv[5:] + ["--report-only", "--no-bench"]
    assert tool.main(partial + datasets + ["--opts"] + opts) == 1
    md = (report / "comparison.md").read_text()
    assert "Not finished (not in the table): MaskRCNN_R_18 seed 2." in md
    assert "| MaskRCNN_R_18 | 0,1 | 4 |" in md
    # another machine, that has only the report folder: nothing is trained again and the
    # report is the same, made from its records (runs/), its bench cache and stored predictions
    records = sorted(os.listdir(report / "runs"))
    assert records == ["MaskRCNN_R_18_seed0.json", "MaskRCNN_R_18_seed1.json"]
    record = json.loads((report / "runs" / records[0]).read_text())
    assert len(record["grid"]["predictions"]) == 2 and record["run_min"] > 0
    shutil.rmtree(root)
    os.remove(report / "predictions.png")
    assert tool.main(argv + datasets + ["--opts"] + opts) == 0
    assert not (root / "runs" / "MaskRCNN_R_18_seed0" / "metrics.json").exists()
    assert (report / "comparison.csv").read_text() == before
    assert (report / "predictions.png").stat().st_size > 1000
    # a record of other options is not taken for this sweep's
    msg = r"seed0.json: made with the options \[\('SOLVER.MAX_ITER', '4'\)\], this sweep trains"
    with pytest.raises(ValueError, match=msg):
        tool.main(argv + datasets + ["--opts"] + opts[:-3] + ["6"] + opts[-2:])


def test_finished_runs_of_every_sweep_in_the_root_are_reported(tmp_path):
    from instseg_d2.benchmark.compare import _dir_name
    from instseg_d2.benchmark.sweep import finished_runs

    assert _dir_name("DVIS/R_18 [detach]") == "DVIS_R_18-detach"
    root = tmp_path / "root"
    for name, model, config, seed in [
        ("A_x_seed0", "A/x", "configs/A/shapes_x.yaml", 0),
        ("A_x-v_seed1", "A/x [v]", "configs/A/shapes_x.yaml", 1),  # a variant (--tag v)
        ("B_y_seed0", "B/y", "configs/B/shapes_y.yaml", 0),
        ("A_x_seed5", "A/x", "configs/A/shapes_x.yaml", 5),  # another seed: not asked for
    ]:
        (root / "runs" / name).mkdir(parents=True)
        result = {"model": model, "config": config, "seed": seed, "opts": ["K", "V"]}
        (root / "runs" / name / "result.json").write_text(json.dumps(result))
    (root / "runs" / "C_unfinished_seed0").mkdir()
    runs = finished_runs(str(root), ["configs/B/shapes_y.yaml", "configs/A/shapes_x.yaml"], [0, 1])
    assert [(r.model, r.seed) for r in runs] == [("B/y", 0), ("A/x", 0), ("A/x [v]", 1)]
    assert runs[0].opts == ["K", "V"] and runs[0].out_dir.endswith("B_y_seed0")


def test_a_variant_row_names_the_options_it_changes():
    from instseg_d2.benchmark.compare import variant_opts

    base = ["MODEL.DEVICE", "cpu"]
    run = ["MODEL.DEVICE", "cpu", "SOLVER.MAX_ITER", 4000, "SOLVER.STEPS", "(2800,3600)"]
    assert variant_opts(run, base) == ["SOLVER.MAX_ITER", "4000", "SOLVER.STEPS", "(2800,3600)"]
    assert variant_opts(["MODEL.DEVICE", "cuda"], base) == ["MODEL.DEVICE", "cuda"]
    assert variant_opts(base, base) == []


def test_the_prediction_grid_shows_variants_only_of_configs_without_a_default_run(tmp_path):
    from instseg_d2.benchmark.compare import grid_runs
    from instseg_d2.benchmark.sweep import Run

    runs = []
    for model, config in [("A", "a.yaml"), ("A [v]", "a.yaml"), ("B [w]", "b.yaml")]:
        out = tmp_path / model.replace(" ", "_")
        out.mkdir()
        (out / "result.json").write_text("{}")
        runs.append(Run(model, config, 0, str(out)))
    runs.append(Run("C", "c.yaml", 0, str(tmp_path / "unfinished")))
    assert list(grid_runs(runs)) == ["A", "B [w]"]
    assert [r.model for r in grid_runs(runs)["A"]] == ["A"]


def test_predictions_survive_their_record():
    import torch
    from detectron2.structures import Boxes, Instances

    from instseg_d2.benchmark.records import decode_predictions, encode_predictions

    inst = Instances((6, 8))
    inst.pred_boxes = Boxes(torch.tensor([[1.0, 1.0, 4.0, 3.0], [0.0, 0.0, 8.0, 6.0]]))
    inst.scores = torch.tensor([0.9, 0.3])
    inst.pred_classes = torch.tensor([2, 0])
    inst.pred_masks = torch.zeros(2, 6, 8, dtype=torch.bool)
    inst.pred_masks[0, 1:3, 1:4] = True
    preds = json.loads(json.dumps(encode_predictions(inst, 0.5)))  # through a JSON file
    assert len(preds) == 1 and preds[0]["class"] == 2 and preds[0]["score"] == 0.9
    back = decode_predictions(preds, 6, 8)
    assert torch.equal(back.pred_masks, inst.pred_masks[:1])
    assert back.pred_boxes.tensor.tolist() == [[1.0, 1.0, 4.0, 3.0]]
    boxes_only = Instances(
        (6, 8), **{k: v for k, v in inst.get_fields().items() if k != "pred_masks"}
    )
    assert not decode_predictions(encode_predictions(boxes_only, 0.0), 6, 8).has("pred_masks")


def test_a_record_of_other_options_is_an_error_naming_it(tmp_path):
    from instseg_d2.benchmark.records import restore_records

    (tmp_path / "report" / "runs").mkdir(parents=True)
    rec = {"model": "A", "config": "a.yaml", "seed": 0, "iterations": 10, "opts": ["K", "1"]}
    (tmp_path / "report" / "runs" / "A_seed0.json").write_text(json.dumps(rec))
    run = Run("A", "a.yaml", 0, str(tmp_path / "root" / "runs" / "A_seed0"), ["K", "1"])
    report, root = str(tmp_path / "report"), str(tmp_path / "root")
    assert [r.out_dir for r in restore_records(report, root, [run], {"a.yaml": 10})] == [
        run.out_dir
    ]
    assert run.done() and restore_records(report, root, [run], {"a.yaml": 10}) == []
    with pytest.raises(ValueError, match="A_seed0.json: trained 10 iterations, a.yaml now sets"):
        restore_records(report, root, [run], {"a.yaml": 20})  # its config's schedule changed
    run.opts = ["K", "2"]
    with pytest.raises(ValueError, match=r"A_seed0.json: made with the options \[\('K', '1'\)\]"):
        restore_records(report, root, [run], {"a.yaml": 10})
    (tmp_path / "report" / "runs" / "A_seed0.json").write_text("{}")
    with pytest.raises(ValueError, match="A_seed0.json: not a comparison record"):
        restore_records(report, root, [run], {"a.yaml": 10})


def test_ap_summary_names_what_a_run_scored():
    assert ap_summary({"segm_AP": 63.256, "box_AP": 58.2}) == "segm AP 63.26, box AP 58.20"
    assert ap_summary({"segm_AP": None, "box_AP": 41.52}) == "box AP 41.52"
    assert ap_summary({"segm_AP": float("nan")}).startswith("WARNING: no AP")


def test_machine_time_sums_every_sitting_of_a_run_from_its_log(tmp_path):
    from instseg_d2.benchmark.comparison import machine_time
    from instseg_d2.benchmark.sweep import load_results, logged_seconds

    log = [
        "[12/31 23:50:00] detectron2 INFO: Rank of current process: 0. World size: 1",
        "  an untimed line of the environment table",
        "[12/31 23:59:00] d2.utils.events INFO:  eta: 0:10:00  iter: 19",  # killed after this
        "[12/31 23:59:30] detectron2 INFO: Rank of current process: 0. World size: 1",
        "[01/01 00:20:30] d2.engine.hooks INFO: Total training time: 0:21:00",  # a new year
    ]  # fmt: skip
    run = Run("A", "a.yaml", 0, str(tmp_path / "a"))
    os.makedirs(run.out_dir)
    (tmp_path / "a" / "log.txt").write_text("\n".join(log) + "\n")
    (tmp_path / "a" / "result.json").write_text('{"model": "A", "seed": 0}')
    assert logged_seconds(run.out_dir) == 9 * 60 + 21 * 60  # the 30 s between sittings: idle
    assert logged_seconds(str(tmp_path / "no_log")) is None
    assert load_results([run])[0]["run_min"] == 30.0
    results = [{"model": "A", "run_min": 30.0}, {"model": "B", "run_min": 90.0},
               {"model": "A [v]", "run_min": 60.0}, {"model": "C", "run_min": None}]  # fmt: skip
    assert machine_time(results) == (
        "Machine time (training and evaluations, every sitting, from the runs' logs): 2.0 h "
        "for the 3 default runs, one core each (1.0 h at 2 runs at a time); 1.0 h for the 1 "
        "variant runs; 1 runs without a log not counted."
    )


def test_the_sweep_starts_unmeasured_configs_first_then_the_longest(tmp_path):
    from instseg_d2.benchmark.sweep import next_run

    def run(config, seed, minutes=None):
        r = Run(config, config, seed, str(tmp_path / f"{config}{seed}"))
        if minutes is not None:  # finished, its log spanning that many minutes
            os.makedirs(r.out_dir)
            stamps = ["[12/07 10:00:00] detectron2 INFO: Rank of current process: 0.",
                      f"[12/07 1{minutes // 60}:{minutes % 60:02d}:00] done"]  # fmt: skip
            (tmp_path / f"{config}{seed}" / "log.txt").write_text("\n".join(stamps) + "\n")
            (tmp_path / f"{config}{seed}" / "result.json").write_text("{}")
        return r

    done = [run("a", 0, 20), run("b", 0, 90), run("c", 0, 45)]
    todo = [run("a", 1), run("b", 1), run("c", 1)]
    assert next_run(todo, done + todo) == 1  # b took longest
    assert next_run([todo[0], todo[2]], done + todo) == 1  # then c
    assert next_run(todo + [run("d", 0)], done + todo) == 3  # d: never measured, first


def test_a_stop_file_ends_the_sitting_before_the_next_run_starts(tmp_path, capsys):
    from instseg_d2.benchmark.sweep import run_sweep

    stop = tmp_path / "STOP"
    stop.write_text("")
    runs = [Run("A", "a.yaml", s, str(tmp_path / f"A_seed{s}")) for s in (0, 1)]
    assert run_sweep(runs, str(tmp_path), jobs=2, stop_file=str(stop), poll_s=0.01) == {}
    assert not any(os.path.exists(r.out_dir) for r in runs)
    assert "not starting A seed 0, A seed 1" in capsys.readouterr().out
