"""Helpers shared by the ``mechrec`` sub-commands: the application's error funnel
(:class:`ConventionalGroup` turns every :data:`INPUT_ERRORS` error and every bad option value
into one line ``error: ...`` and exit code 2), one-line errors of a command's own checks
(:func:`fail`), interrupts (:func:`interrupted`, exit 130), progress of long steps
(:class:`StepProgress`), conventional help metavars, wide rich consoles and the options that
every command opening a run or a dataset takes.

This module imports nothing heavy: ``mechrec --help`` and argument errors never load torch.

The options (and the arguments naming a run or an SAE) are ``Annotated`` types; a command
declares e.g. ``run_dir: RunDirArgument, data_dir: DataDirOption = None, download:
DownloadOption = True, device: DeviceOption = "cpu"``.
"""

from __future__ import annotations

import errno
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from mechrec_recsys.durations import format_duration

#: ``RUN_DIR``: a run folder written by ``mechrec train`` (a required argument).
RunDirArgument = Annotated[
    Path, typer.Argument(help="run folder written by 'mechrec train'")
]
#: ``SAE_DIR``: an SAE folder, or its name under ``RUN_DIR/saes/`` (a required argument).
SAEDirArgument = Annotated[
    Path, typer.Argument(help="SAE folder (or its name under RUN_DIR/saes/)")
]
#: ``--k``: length of the recommendation lists (default ``10``).
ListLengthOption = Annotated[
    int, typer.Option("--k", help="length of the recommendation lists")
]
#: ``--data-dir``: where the dataset is (default: ``None``, the loaders' lookup order).
DataDirOption = Annotated[
    Path | None, typer.Option("--data-dir", help="folder holding the dataset")
]
#: ``--download/--no-download``: fetch the dataset when no local copy exists (default ``True``).
DownloadOption = Annotated[
    bool,
    typer.Option("--download/--no-download",
                 help="download the dataset when no local copy exists"),
]
#: ``--device``: where the model runs (default ``"cpu"``).
DeviceOption = Annotated[str, typer.Option("--device", help="where the model runs: cpu | cuda")]
#: ``--allow-other-model``: use an SAE whose recorded source is another model or hook.
AllowOtherModelOption = Annotated[
    bool,
    typer.Option("--allow-other-model",
                 help="use the SAE even though it records another model (or hook) as its "
                      "source"),
]
#: ``--max-users``: analyse a seeded random sample of each part's users (large worlds).
MaxUsersOption = Annotated[
    int | None,
    typer.Option("--max-users", metavar="N",
                 help="use at most N users of each part (SAE, validation and test users), "
                      "drawn at random with the command's seed: for data too large to analyse "
                      "whole; the numbers then describe the sample"),
]


def check_max_users(max_users: int | None) -> None:
    """A ``--max-users`` below 1 is a one-line error (checked before the run is opened)."""
    if max_users is not None and max_users < 1:
        fail(f"--max-users must be a positive number of users, got {max_users}")


def sampled(experiment: Any, max_users: int | None, seed: int = 0) -> Any:
    """``experiment.sample_users(max_users, seed=seed)``, or the run itself without
    ``--max-users``."""
    return experiment if max_users is None else experiment.sample_users(max_users, seed=seed)


#: ``--hook``: the hook an SAE reads, for SAEs that do not record one (plain sae-lens,
#: sparsify, dictionary_learning checkpoints).
SAEHookOption = Annotated[
    str | None,
    typer.Option("--hook",
                 help="TransformerLens hook the SAE reads, for SAEs that do not record one "
                      "(plain sae-lens, sparsify or dictionary_learning checkpoints), e.g. "
                      "blocks.0.hook_resid_post"),
]
#: ``--progress/--no-progress``: show progress on stderr (default ``True``); bars are drawn
#: only on a terminal, logs and pipes get plain lines.
ProgressOption = Annotated[
    bool,
    typer.Option("--progress/--no-progress",
                 help="show progress on stderr (bars on a terminal, plain lines otherwise)"),
]


#: The errors that mean bad input rather than a bug in mechrec: a missing or unwritable file, a
#: malformed table, an unknown name or key, a value of the wrong kind or out of range, a
#: training run that diverged. The project's own errors subclass them
#: (:class:`~mechrec_recsys.data.DataError` is a ``ValueError``,
#: :class:`~mechrec_recsys.data.DatasetNotFoundError` a ``FileNotFoundError``,
#: :class:`~mechrec_recsys.vocab.UnknownItemError` a ``KeyError``, ...), each with a message that
#: names the problem and the fix. Commands let them propagate; :class:`ConventionalGroup`
#: catches them once for the whole application.
INPUT_ERRORS: tuple[type[Exception], ...] = (
    ValueError, KeyError, OSError, TypeError, FloatingPointError)


def error_message(exc: BaseException) -> str:
    """The message of an :data:`INPUT_ERRORS` error (a ``KeyError``'s without its quotes)."""
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return str(exc)


def fail(message: str) -> NoReturn:
    """Print a one-line error to stderr and exit with code 2 (bad input, never a traceback)."""
    typer.echo("error: " + " ".join(str(message).split()), err=True)
    raise typer.Exit(code=2)


#: Exit code of a command stopped by Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED_EXIT_CODE = 130


def rerun_command(drop: Sequence[str] = ()) -> str:
    """The command line being run (``mechrec`` and its arguments, shell-quoted), without the
    flags in ``drop`` (e.g. ``--no-resume``, ``--overwrite``, which would undo a resume)."""
    return shlex.join(["mechrec", *(a for a in sys.argv[1:] if a not in drop)])


def interrupted(kept: str, resume: str | None) -> NoReturn:
    """After Ctrl-C: print one line saying what was kept and the command that resumes (or
    reruns) the work, and exit with code 130."""
    action = "rerun with" if kept.startswith(NOTHING_KEPT) else "resume with"
    typer.echo(f"interrupted: {kept}" + (f"; {action}: {resume}" if resume else ""), err=True)
    raise typer.Exit(code=INTERRUPTED_EXIT_CODE)


#: What :func:`interrupted` says when nothing was saved yet.
NOTHING_KEPT = "nothing kept yet"
#: What commands that write their files only at the end keep when interrupted.
NOTHING_KEPT_UNTIL_DONE = f"{NOTHING_KEPT} (the tables are written only when the run finishes)"


@contextmanager
def on_interrupt(kept: str | Callable[[], str], resume: str | None) -> Iterator[None]:
    """Turn Ctrl-C inside the block into :func:`interrupted`'s one line and exit code 130:
    every long command wraps its work in this block.

    Args:
        kept: what was kept, or a function that says it when Ctrl-C comes (e.g. the last
            saved epoch, read from the run folder).
        resume: the command that resumes or reruns the work (:func:`rerun_command`).
    """
    try:
        yield
    except KeyboardInterrupt:
        interrupted(kept() if callable(kept) else kept, resume)


class StepProgress:
    """Progress of one long step on stderr: what it does, how far it is, what is left.

    On a terminal it is a rich bar (done/total, elapsed, estimated time left); in logs, pipes
    and tests it prints plain lines: one when the step starts, one per :meth:`update` that
    carries ``text``, and one when it ends. ``enabled=False`` prints nothing.
    """

    def __init__(self, description: str, total: int, *, enabled: bool = True,
                 unit: str = "", initial: int = 0) -> None:
        self.description, self.total, self.enabled, self.unit = description, total, enabled, unit
        self.initial = initial
        self._console = Console(stderr=True)
        self._bar: object | None = None
        self._task: int | None = None
        self._started = time.perf_counter()
        self.done = initial

    def __enter__(self) -> StepProgress:
        self._started = time.perf_counter()
        if not self.enabled:
            return self
        if self._console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn(self.unit),
                                 TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
                                 TextColumn("{task.fields[text]}"), console=self._console,
                                 transient=False)
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total, text="",
                                            completed=self.initial)
        else:
            typer.echo(f"{self.description}: {self.initial}/{self.total} {self.unit}".rstrip(),
                       err=True)
        return self

    def eta(self) -> float | None:
        """Seconds left at the mean pace of this session (``None`` before its first update)."""
        if self.done <= self.initial:
            return None
        elapsed = time.perf_counter() - self._started
        return elapsed / (self.done - self.initial) * max(self.total - self.done, 0)

    def update(self, done: int, text: str = "") -> None:
        """``done`` of ``total`` are finished; ``text`` says how it goes (e.g. the loss)."""
        self.done = done
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, completed=done, text=text)
        elif text:
            left = self.eta()
            typer.echo(f"{self.description}: {done}/{self.total} {self.unit}".rstrip()
                       + f", {text}" + (f" ({format_duration(left)} left)" if left is not None
                                        else ""), err=True)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
        elif self.enabled and exc[0] is None:
            typer.echo(f"{self.description}: done in "
                       f"{format_duration(time.perf_counter() - self._started)}", err=True)


def wide_console(min_width: int = 160) -> Console:
    """A rich console that, when output is not a terminal (logs, pipes), is at least
    ``min_width`` columns wide so table rows stay on one line."""
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, min_width)
    return console


class _ConventionalArgument(TyperArgument):
    """A positional argument shown in the usage line as ``RUN_DIR`` (``[NAME]`` when
    optional), the usual convention, instead of typer's ``{run_dir}``."""

    def get_usage_pieces(self, ctx: typer.Context) -> list[str]:
        """The argument's piece of the usage line."""
        name = self.metavar or self.name.upper()
        name = name if self.required else f"[{name}]"
        return [name + ("..." if self.nargs != 1 else "")]

    def display_type_rich(self, ctx: typer.Context) -> str | None:
        """The type shown in the help panel, the click way (``PATH``, ``TEXT``, ...)."""
        return _type_metavar(self, ctx)


def conventional_metavars(command: TyperCommand | TyperGroup) -> None:
    """Give every parameter of ``command`` and its sub-commands a conventional metavar.

    Flags (``--quick``, ``--progress/--no-progress``, ``--help``) show none (typer 0.29 shows
    ``<bool>``); valued options show their type the click way (``INTEGER``, ``FLOAT``,
    ``PATH``, ``TEXT``); positional arguments their upper-case name (``RUN_DIR``).
    """
    ctx = typer.Context(command)
    for param in command.params:
        _tidy_param(param, ctx)
    help_option = command.get_help_option(ctx)
    if help_option is not None:
        _tidy_param(help_option, ctx)
    for sub in getattr(command, "commands", {}).values():
        conventional_metavars(sub)


_TYPE_METAVARS = {"int": "INTEGER", "float": "FLOAT", "str": "TEXT", "path": "PATH"}


def _tidy_param(param: TyperArgument | TyperOption, ctx: typer.Context) -> None:
    if isinstance(param, TyperArgument):
        param.__class__ = _ConventionalArgument
        param.metavar = param.metavar or (param.name or "").upper()
    elif param.is_flag:
        param.metavar = ""
    elif param.metavar is None:
        param.metavar = _type_metavar(param, ctx)


def _type_metavar(param: TyperArgument | TyperOption, ctx: typer.Context) -> str:
    label = param.display_type(ctx).strip("<>")
    return _TYPE_METAVARS.get(label.lower(), label.upper())


class ConventionalGroup(TyperGroup):
    """The ``mechrec`` root group: on creation it applies :func:`conventional_metavars` to
    every command, so ``--help`` pages read the usual way, and it is the application's one
    error funnel (:meth:`invoke`)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        conventional_metavars(self)

    def get_params(self, ctx: typer.Context) -> list:
        """The group's own options (shell completion, help), with conventional metavars."""
        params = super().get_params(ctx)
        for param in params:
            _tidy_param(param, ctx)
        return params

    def invoke(self, ctx: typer.Context) -> object:
        """Run the chosen command; bad input ends it with one line ``error: ...`` and exit
        code 2, never a traceback.

        Bad input is an option value that its parameter type rejects (the sub-command's
        arguments are parsed in here) or any :data:`INPUT_ERRORS` error that a command lets
        propagate. A broken pipe (``mechrec data list | head``) is left to click, which ends
        quietly.
        """
        try:
            return super().invoke(ctx)
        except typer.BadParameter as exc:
            fail(exc.format_message())
        except INPUT_ERRORS as exc:
            if isinstance(exc, OSError) and exc.errno == errno.EPIPE:
                raise
            fail(error_message(exc))


#: ``--log-to``: where SAE trainings log their metrics (default ``None``: nowhere).
LogToOption = Annotated[
    str | None,
    typer.Option("--log-to", help="log each SAE training's metrics to: wandb (sae-lens' own "
                 "logging; WANDB_MODE=offline logs without an account) | mlflow (needs pip "
                 "install mlflow)"),
]
#: ``--wandb-project``: the wandb project of tracked SAE trainings.
WandbProjectOption = Annotated[
    str, typer.Option("--wandb-project", help="wandb project of the runs (--log-to wandb)")
]
#: ``--run-name``: the tracked run's name (a sweep's SAEs get ``NAME/<grid point>``).
RunNameOption = Annotated[
    str | None,
    typer.Option("--run-name", help="name of the tracked run (default: the SAE's folder "
                 "name; a sweep's SAEs: NAME/<grid point>)"),
]
#: ``--mlflow-experiment``: the MLflow experiment of tracked SAE trainings.
MlflowExperimentOption = Annotated[
    str, typer.Option("--mlflow-experiment", help="MLflow experiment of the runs (--log-to "
                      "mlflow; server: $MLFLOW_TRACKING_URI)"),
]
#: ``--wandb-log-frequency``: train-step metrics every N steps.
WandbLogFrequencyOption = Annotated[
    int, typer.Option("--wandb-log-frequency", help="log the train-step metrics every N "
                      "steps (--log-to wandb)"),
]


def tracking_fields(log_to: str | None, wandb_project: str, run_name: str | None,
                    mlflow_experiment: str, wandb_log_frequency: int) -> dict[str, Any]:
    """The ``SAETrainingConfig`` tracking fields of the tracking options; ``--log-to mlflow``
    without the mlflow package is a one-line error at once, before any work starts."""
    if log_to == "mlflow":
        import importlib.util

        if importlib.util.find_spec("mlflow") is None:
            fail("--log-to mlflow needs the mlflow package, which is not installed: pip "
                 "install mlflow (or --log-to wandb)")
    return {"log_to": log_to, "wandb_project": wandb_project, "run_name": run_name,
            "mlflow_experiment": mlflow_experiment, "wandb_log_frequency": wandb_log_frequency}
