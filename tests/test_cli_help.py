"""Both CLIs read well at 80 and 120 columns: no help line runs past the width, every option shows
its whole name, and defaults are shown one way ([default: ...]) in both."""

from __future__ import annotations

import click
import pytest
import typer
from typer.testing import CliRunner

from epam_data.cli import app as data_app
from epam_model.cli import app as train_app

runner = CliRunner()


def _commands(app: typer.Typer) -> list[tuple[str, click.Command]]:
    group = typer.main.get_command(app)
    return sorted(group.commands.items())


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("app", [data_app, train_app], ids=["epam-data", "epam-train"])
def test_help_fits_the_terminal(app: typer.Typer, width: int) -> None:
    for name, command in _commands(app):
        result = runner.invoke(app, [name, "--help"], env={"COLUMNS": str(width)})
        assert result.exit_code == 0, result.output
        too_long = [line for line in result.output.splitlines() if len(line) > width]
        assert not too_long, (name, too_long)
        for parameter in command.params:
            for option in [*parameter.opts, *parameter.secondary_opts]:
                if option.startswith("-"):
                    assert option in result.output, (name, option)
        assert "(default:" not in result.output, name  # one style: [default: ...]


def test_train_options_are_the_config_fields() -> None:
    """`epam-train train` has one option per TrainConfig field, so a field cannot be missing from
    the CLI."""
    import dataclasses

    from epam_model.config import TrainConfig

    command = dict(_commands(train_app))["train"]
    names = {parameter.name for parameter in command.params}
    assert {field.name for field in dataclasses.fields(TrainConfig)} <= names


@pytest.mark.parametrize("app", [data_app, train_app], ids=["epam-data", "epam-train"])
def test_version(app: typer.Typer) -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("epam ") and "torch" in result.output
