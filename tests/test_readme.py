"""The README documents every setting and gives the two commands first."""

from pathlib import Path

from serving.settings import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_setting_is_documented():
    missing = [n for n in Settings.model_fields if f"EMBEDSERVE_{n.upper()}" not in README]
    assert not missing, f"README lacks {missing}"


def test_quick_start_gives_serve_then_test():
    quick = README.split("## Quick start", 1)[1].split("##", 1)[0]
    commands = [line.split()[0:2] for line in quick.splitlines() if line.startswith("make ")]
    assert commands[:2] == [["make", "serve"], ["make", "test"]]
