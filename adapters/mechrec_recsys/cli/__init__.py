"""The ``mechrec`` command line: one module per sub-command group.

Each module in this package that defines ``register(app: typer.Typer) -> None`` adds its
commands to the application; :mod:`mechrec_recsys.cli.main` calls them in name order.

The modules import only light modules at their top (option types from :mod:`.params`, names
and defaults from :mod:`mechrec_recsys.configs`); torch, TransformerLens, sae-lens and pandas
are imported inside the commands that use them, so ``--help`` and argument errors answer at
once. Commands let bad-input errors propagate: the root group in :mod:`._common` turns them
into one ``error:`` line and exit code 2.
"""
