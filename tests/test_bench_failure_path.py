"""`make bench` reports what it measured when the raw engine cannot be measured (a missing
extra, a broken export): the rows it has, the targets "not measured", no NameError. The child
runs and the service are replaced here: a unit test of that one error path."""

from __future__ import annotations

from loadtest import bench
from tests.support.service import artifact_dir


def test_a_failed_raw_run_still_writes_the_report(monkeypatch, tmp_path):
    def no_child(kind, spec, workdir):
        raise RuntimeError("the export extra is not installed")

    monkeypatch.setattr(bench, "run_child", no_child)
    monkeypatch.setattr(bench, "measure_service", lambda a, corpus, progress: ({"_stats": None}, {}))
    out, js = tmp_path / "BENCH.md", tmp_path / "bench.json"
    assert bench.main(["--texts", "16", "--runs", "1", "--skip-st", "--skip-ingress", "--skip-tasks", "--no-progress",
                       "--artifact-dir", str(artifact_dir()), "--output", str(out), "--json", str(js)]) == 0
    md = out.read_text()
    assert "raw engine (auto) >= 3x raw ONNX Runtime fp32 | -x | not measured" in md
    assert "(1) excludes tokenization (- s for these" in md
    assert js.is_file()
