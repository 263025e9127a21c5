"""Every `voxlm ...` line of every recipe parses with the CLI as it is: a renamed or mistyped
flag fails here, not hours into a run."""
import re
import shlex
from pathlib import Path

import pytest

from voxlm.cli import build_parser

RECIPE_DIR = Path(__file__).parent.parent / "recipes"
RECIPES = sorted(RECIPE_DIR.glob("*.sh"))
ENDS = {"&&", "||", ";", ";;", "|", ")"}


def recipe_commands(path: Path) -> list:
    """The argv after `voxlm` (or `-m voxlm`, or large.sh's `launch NAME`) of each command.
    Shell variables take the value of the file's first `NAME=value` line, else "1"; `${X:-d}`
    is d, arithmetic is "8" and `$(nproc)` "2"."""
    text = re.sub(r"\\\n", " ", path.read_text())  # continuation lines joined
    text = re.sub(r"\$\(\([^)]*\)\)", "8", text.replace("$(nproc)", "2"))
    text = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", text)
    assigned = {}
    for name, value in re.findall(r"^\s*(\w+)=(\S.*)$", text, re.M):
        assigned.setdefault(name, " ".join(shlex.split(value, comments=True)))
    commands = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#"):
            continue
        line = re.sub(r"\$\{(\w+)\}|\$([A-Za-z_]\w*)",
                      lambda m: assigned.get(m.group(1) or m.group(2), "1"), line)
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError:  # inside a here-document or a quoted fragment
            continue
        for i, token in enumerate(tokens):
            launch = token == "launch" and i == 0 and len(tokens) > 2
            if launch or token == "voxlm" and (i == 0 or tokens[i - 1] == "-m"):
                argv = []
                for word in tokens[i + (2 if launch else 1):]:
                    if word in ENDS:
                        break
                    argv.append(word)
                if argv and not any(word.startswith("$") for word in argv):  # `voxlm $*`
                    commands.append(argv)
                break
    return commands


@pytest.mark.parametrize("recipe", [p for p in RECIPES if p.name != "tiny.sh"], ids=lambda p: p.name)
def test_every_voxlm_line_of_a_recipe_parses(recipe, capsys):
    commands = recipe_commands(recipe)
    assert len(commands) >= 3, f"{recipe.name}: found only {commands}"
    parser = build_parser()
    for argv in commands:
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{recipe.name}: `voxlm {' '.join(argv)}` does not parse: "
                        f"{capsys.readouterr().err.strip()}")


def test_the_check_catches_a_mistyped_flag(tmp_path, capsys):
    bad = tmp_path / "bad.sh"
    bad.write_text("voxlm lm train --data d --out r \\\n    --stop-after 5   # typo\n")
    [argv] = recipe_commands(bad)
    assert argv[-1] == "5"
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv)
    assert "--stop-after" in capsys.readouterr().err


def test_tiny_runs_the_three_stage_recipes():
    text = (RECIPE_DIR / "tiny.sh").read_text()
    assert re.search(r"for stage in codec dialogue lm", text)
    assert all((RECIPE_DIR / f"{stage}.sh").exists() for stage in ("codec", "dialogue", "lm"))
