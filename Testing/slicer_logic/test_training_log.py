"""The training section's pure parts: the trainer command line, the CSV log and the live loss chart."""

from __future__ import annotations

import pytest

from PancreasRSTNSlicerLib.training import PRESETS, read_loss_log, train_command, update_loss_nodes


def test_train_command_matches_trainer_options():
    from PancreasRSTNLib.app.cli import build_parser

    preset = next(iter(PRESETS))
    command = train_command("/data", "/out", "pancreas", 1, ["X", "Z"], preset, python="python")
    assert command[:4] == ["python", "-m", "PancreasRSTNLib", "train"]
    args = build_parser().parse_args(command[3:])  # the trainer accepts every option we pass
    assert str(args.out) == "/out" and args.views == "XZ" and args.label_value == 1
    with pytest.raises(ValueError):
        train_command("/d", "/o", "pancreas", 1, ["X"], "no such preset")


def test_loss_log_to_table_and_chart(ctx, tmp_path):
    log = tmp_path / "train_log.csv"
    log.write_text("view,step,mode,loss,coarse_loss,fine_loss,lr,slices_per_s,elapsed_s\n"
                   "Z,10,S,0.9,0.95,0.85,1e-4,10,1\nZ,20,S,0.8,0.9,0.7,1e-4,10,2\nZ,30,I,0.7,0.8,0.6,1e-4,10,3\nZ,4")
    columns = read_loss_log(log)
    assert columns["row"] == [1.0, 2.0, 3.0] and columns["loss"] == [0.9, 0.8, 0.7]
    assert "view" not in columns and "mode" not in columns
    table, chart = update_loss_nodes(ctx.scene, columns)
    assert table.GetTable().GetNumberOfRows() == 3
    names = sorted(chart.GetNthPlotSeriesNode(i).GetYColumnName() for i in range(chart.GetNumberOfPlotSeriesNodes()))
    assert names == ["coarse_loss", "fine_loss", "loss"]
    columns["loss"].append(0.6)
    columns["row"].append(4.0)
    for k in ("step", "coarse_loss", "fine_loss", "lr", "slices_per_s", "elapsed_s"):
        columns[k].append(0.0)
    table2, chart2 = update_loss_nodes(ctx.scene, columns, table, chart)
    assert (table2, chart2) == (table, chart) and table.GetTable().GetNumberOfRows() == 4
