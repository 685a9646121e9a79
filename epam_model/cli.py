"""`epam-train`: train, evaluate, inspect and export EPAM-Net. Commands arrive with their issues."""

import typer

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, help="Train and evaluate EPAM-Net from prepared shards.",
                  pretty_exceptions_enable=False, add_completion=False)


@app.callback()
def main() -> None:
    """Train and evaluate EPAM-Net (and each single stream) from prepared shards."""
