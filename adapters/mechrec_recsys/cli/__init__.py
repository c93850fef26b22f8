"""The ``mechrec`` command line: one module per sub-command group.

Each module in this package that defines ``register(app: typer.Typer) -> None`` adds its
commands to the application; :mod:`mechrec_recsys.cli.main` calls them in name order.
"""
