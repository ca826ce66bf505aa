"""Statement coverage of the Slicer panel by its GUI suite, as the README and docs/slicer.md report it.

    python Testing/slicer_gui/report_coverage.py

Runs Testing/slicer_gui under coverage, then prints the coverage of the Widget class with its sections
(PancreasRSTNPanel), of the whole module file, and every statement that did not run with the reason it cannot
run outside Slicer. Exits 1 when the Widget's coverage is under the 95 % target.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "PancreasRSTN" / "PancreasRSTN.py"
PANEL = ROOT / "PancreasRSTN" / "PancreasRSTNPanel"
TARGET = 0.95
#: Methods that need the Slicer application itself, and why.
NEEDS_SLICER = {
    "edit_in_segment_editor": "the Segment Editor (needs Slicer's main window and module panel)",
    "export_dicom": "the DICOM export dialog (qSlicerDICOMExportDialog, C++ DICOM module)",
    "test_default_model_on_sample_ct": "the self-test on SampleData (downloads a CT at run time)",
    "runTest": "Slicer's --testing entry point (runs the SampleData test)",
    "import_reference": "the success message needs the reference's full-size checkpoints (1 GB per view); the "
                        "refusal of an unsafe checkpoint is tested",
}


def _class_lines(path: Path, name: str) -> range:
    node = next(n for n in ast.parse(path.read_text()).body if isinstance(n, ast.ClassDef) and n.name == name)
    return range(node.lineno, node.end_lineno + 1)


def _owner(path: Path, line: int) -> str:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.lineno <= line <= node.end_lineno:
            return node.name
    return "module level"


def main() -> int:
    data_file = ROOT / ".coverage.slicer_gui"
    include = f"{MODULE},{PANEL}/*"
    subprocess.run([sys.executable, "-m", "coverage", "run", f"--data-file={data_file}", f"--include={include}",
                    "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "Testing" / "slicer_gui")],
                   check=True, cwd=ROOT)
    import coverage

    cov = coverage.Coverage(data_file=str(data_file))
    cov.load()
    files = [MODULE, *sorted(PANEL.glob("*.py"))]
    widget_lines = set(_class_lines(MODULE, "PancreasRSTNWidget"))
    widget_total = widget_run = 0
    print("\nStatement coverage of the panel by Testing/slicer_gui:")
    for path in files:
        _, statements, _, missing, _ = cov.analysis2(str(path))
        in_widget = [s for s in statements if path != MODULE or s in widget_lines]
        widget_total += len(in_widget)
        widget_run += len([s for s in in_widget if s not in missing])
        share = 1 - len(missing) / len(statements) if statements else 1.0
        print(f"  {path.relative_to(ROOT)}: {len(statements) - len(missing)}/{len(statements)} statements "
              f"({share:.0%})")
        groups: dict[str, list[int]] = {}
        for line in missing:
            groups.setdefault(_owner(path, line), []).append(line)
        for owner, lines in groups.items():
            why = NEEDS_SLICER.get(owner) or "NOT RUN"
            print(f"      {len(lines)} statement(s) in {owner} (lines {lines[0]}-{lines[-1]}): {why}")
    share = widget_run / widget_total
    print(f"Widget (PancreasRSTNWidget and PancreasRSTNPanel): {widget_run}/{widget_total} statements = {share:.1%} "
          f"(target {TARGET:.0%})")
    data_file.unlink(missing_ok=True)
    return 0 if share >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
