"""``annot``: the platform's command line. The commands live in modules named for what they hold:
``admin`` (settings, migrations, API keys: the store directly), ``processes`` (the local platform's
processes and the demo), ``rest`` (projects, images, videos, export, review through the gateway's REST
API), ``training`` (training jobs and model versions, through the same API) and ``rpc`` (one gRPC call to a
service)."""

from __future__ import annotations

import typer

from services.cli import admin, processes, rest, rpc, training

app = typer.Typer(help="Annotation platform: local processes, API keys, settings.", no_args_is_help=True)
# Registered in the order `annot --help` has always listed them.
app.command()(admin.settings)
app.command("migrate")(admin.migrate_cmd)
app.command()(processes.up)
app.command()(processes.down)
app.command()(processes.status)
app.command()(processes.demo)
app.command("export")(rest.export_cmd)
app.command("review")(rest.review_cmd)
app.command()(rpc.call)
app.add_typer(admin.keys_app, name="keys")
app.add_typer(rest.projects_app, name="projects")
app.add_typer(rest.images_app, name="images")
app.add_typer(rest.videos_app, name="videos")
app.add_typer(training.train_app, name="train")

if __name__ == "__main__":
    app()
