"""`embedserve --help` and each subcommand's `--help` print their flags and exit 0: every setting's
description reaches argparse as text (a "%" in one once made `serve --help` a traceback)."""

from __future__ import annotations

import pytest

from serving.cli import main
from serving.settings import Settings


def help_of(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", ["export", "serve", "batch", "eval"])
def test_each_subcommand_help_exits_0(capsys, command):
    out = help_of(capsys, [command, "--help"])
    assert out.startswith(f"usage: embedserve {command}"), out[:200]


def test_serve_help_names_every_setting_with_its_env_var(capsys):
    out = " ".join(help_of(capsys, ["serve", "--help"]).split())
    for name in Settings.model_fields:
        assert "--" + name.replace("_", "-") in out, name
        assert f"[env EMBEDSERVE_{name.upper()}]" in out, name
    for field in Settings.model_fields.values():  # a literal "%" in a description, printed as one
        text = " ".join((field.description or "").split())
        if "%" in text:
            i = text.index("%")
            assert text[max(0, i - 12): i + 12] in out, text


def test_top_level_help_lists_the_subcommands(capsys):
    out = help_of(capsys, ["--help"])
    assert all(c in out for c in ("export", "serve", "batch", "eval")), out
