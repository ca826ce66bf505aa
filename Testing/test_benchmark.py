"""The benchmark command runs every part the performance issue names, end to end, at a tiny size.

It asserts what the numbers mean (engine and loop agree, every stage is timed, both training backbones
measured), never how fast anything is: speed targets live in docs/benchmarks.md, measured by this command."""

from __future__ import annotations

import json

from PancreasRSTNLib.app.cli import main


def test_benchmark_command_measures_every_part(tmp_path, capsys) -> None:
    report_path = tmp_path / "report.json"
    rc = main(["benchmark", "--device", "cpu", "--backbone", "light", "--widths", "4,8", "--shape", "24x24x8",
               "--repeats", "2", "--max-iter", "3", "--reference", "full", "--scaling", "4,8",
               "--training-size", "32", "--training-steps", "1", "--json", str(report_path)])
    assert rc == 0
    report = json.loads(report_path.read_text())
    engine, reference = report["engine"], report["reference"]

    # the engine: every stage timed, the read / write of a real file included
    stages = engine["stages_s"]
    for stage in ("read", "canonicalise", "coarse X", "coarse Y", "coarse Z", "fusion", "write back"):
        assert stages[stage] >= 0.0, stage
    assert engine["fine_rounds"] >= 1 and "round 1 fine Z" in stages
    assert engine["end_to_end_s"] >= engine["engine_s"] > 0
    assert engine["coarse_tflop"] > 0 and engine["coarse_tflops_per_s"] > 0
    assert engine["precision"] == "float32" and engine["peak_host_gb_so_far"] > 0

    # the reference-style loop on the same weights and volume: same rounds, same mask
    assert reference["mode"] == "full"
    assert reference["fine_rounds"] == engine["fine_rounds"]
    assert reference["mask_dsc_vs_engine"] >= 0.99
    assert report["speedup"] == reference["seconds"] / engine["engine_s"]

    # scaling with volume length and training throughput of both backbones
    assert [s["length"] for s in report["scaling"]] == [4, 8]
    assert all(s["seconds"] > 0 for s in report["scaling"])
    assert {t["backbone"] for t in report["training"]} == {"fcn8s", "light"}
    assert all(t["samples_per_s"] > 0 and t["size"] == 32 for t in report["training"])

    printed = capsys.readouterr().out
    assert "engine end to end" in printed and "speed-up" in printed and "training fcn8s 32x32" in printed


def test_benchmark_cohort_reports_cases_per_hour_with_and_without_prefetch(tmp_path, capsys) -> None:
    report_path = tmp_path / "cohort.json"
    rc = main(["benchmark", "--cohort", "2", "--shape", "64x64x24", "--repeats", "1", "--max-iter", "1",
               "--device", "cpu", "--json", str(report_path)])
    assert rc == 0
    report = json.loads(report_path.read_text())
    assert set(report["cases_per_hour"]) == {"on", "off"} and all(v > 0 for v in report["cases_per_hour"].values())
    assert report["cases"] == 2 and report["model"] == "PancreasRSTN-demo-phantom-light"
    assert "cases/hour with prefetch" in capsys.readouterr().out
