"""The docs agree with the code: the defaults they state are the code's defaults, the SAE
names they use are the ones they train, and every ``mechrec`` command they show exists with
the options it is given."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer
from mechrec_recsys.cli.main import app
from mechrec_recsys.model import GPTRecConfig
from mechrec_recsys.report.settings import ReproduceSettings
from mechrec_recsys.steering import DEFAULT_GENRES
from mechrec_recsys.training import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PAPER = ReproduceSettings.paper()
QUICK = ReproduceSettings.quick_preset()


def _text(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


def _number(text: str) -> float:
    return float(text.replace(",", "").replace("−", "-"))


def _row(markdown: str, first_cell: str) -> str:
    """The settings cell of the table row that starts with ``| first_cell |``."""
    match = re.search(rf"^\| {re.escape(first_cell)} \| (.+) \|$", markdown, re.M)
    assert match, f"no table row {first_cell!r}"
    return match.group(1)


def _find(pattern: str, text: str) -> tuple[str, ...]:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in {text!r}"
    return match.groups()


def _commands(markdown: str) -> list[list[str]]:
    """Every ``mechrec ...`` line of the doc's bash blocks, continuation lines joined and the
    trailing comment dropped."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", markdown, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.startswith("mechrec "):
                found.append(shlex.split(re.sub(r"\s+#\s.*$", "", line))[1:])
    return found


def test_report_settings_table_states_the_paper_presets_values():
    report = _text("docs/report.md")
    gptrec = _row(report, "GPTRec")
    layers, heads, d_model, d_mlp, history = _find(
        r"(\d+) layers, (\d+) heads, d_model (\d+), d_mlp (\d+), (\d+) items of history", gptrec)
    assert (int(layers), int(heads), int(d_model), int(d_mlp), int(history)) == (
        PAPER.n_layers, PAPER.n_heads, PAPER.d_model, PAPER.d_mlp, PAPER.max_len)
    epochs, k, patience, batch, lr, dropout = _find(
        r"up to (\d+) epochs, early stopping on validation NDCG@(\d+) \(patience (\d+)\), "
        r"batch (\d+), lr ([\d.e-]+), dropout ([\d.]+)", gptrec)
    assert (int(epochs), int(k), int(patience), int(batch), float(lr), float(dropout)) == (
        PAPER.epochs, PAPER.k, PAPER.patience, PAPER.batch_size, PAPER.lr, PAPER.dropout)

    table1 = _row(report, "Table 1")
    assert f"`{PAPER.hook}`" in table1
    low, high, at, d_low, d_high, at_l1 = _find(
        r"L1 weights ([\d.]+)–([\d.]+) at dictionary (\d+), dictionary sizes (\d+)–(\d+) at "
        r"L1 ([\d.]+)", table1)
    assert (float(low), float(high), int(at)) == (min(PAPER.table1_l1), max(PAPER.table1_l1),
                                                  PAPER.table1_l1_d_sae)
    assert (int(d_low), int(d_high), float(at_l1)) == (
        min(PAPER.table1_d_sae), max(PAPER.table1_d_sae), PAPER.table1_d_sae_l1)
    seeds, steps, rows = _find(r"seeds ([\d, and]+), ([\d,]+) steps of ([\d,]+) rows", table1)
    assert tuple(int(s) for s in re.findall(r"\d+", seeds)) == PAPER.table1_seeds
    assert (_number(steps), _number(rows)) == (PAPER.table1_steps, PAPER.table1_batch_size)

    sae = _row(report, "analysis SAE")
    features, l1, steps, rows, name = _find(
        r"(\d+) features, L1 ([\d.]+), ([\d,]+) steps of ([\d,]+) rows \(saved as `saes/(\w+)`",
        sae)
    assert (int(features), float(l1), _number(steps), _number(rows), name) == (
        PAPER.sae_d_sae, PAPER.sae_l1, PAPER.sae_steps, PAPER.sae_batch_size, PAPER.sae_name)

    (bootstrap,) = _find(r"(\d+) bootstrap resamples", _row(report, "alignment"))
    assert int(bootstrap) == PAPER.align_bootstrap

    steering = _row(report, "steering")
    genres = steering.split(";")[0].split(", ")
    assert tuple(genres) == PAPER.steer_genres == DEFAULT_GENRES
    start, stop, step = _find(r"values ([−\d-]+)…([\d]+) step (\d+)", steering)
    assert (_number(start), _number(stop), _number(step)) == (
        PAPER.steer_values[0], PAPER.steer_values[-1],
        PAPER.steer_values[1] - PAPER.steer_values[0])


def test_report_quick_preset_list_states_the_quick_presets_values():
    report = _text("docs/report.md")
    layers, d_model, epochs = _find(r"GPTRec: (\d+) layers, d_model (\d+), (\d+) epochs", report)
    assert (int(layers), int(d_model), int(epochs)) == (QUICK.n_layers, QUICK.d_model,
                                                        QUICK.epochs)
    n_saes = len(QUICK.table1_l1) + len(QUICK.table1_d_sae)
    words, steps = _find(r"Table 1: (\w+) SAEs of (\d+) steps", report)
    assert (words, int(steps)) == ({3: "three"}.get(n_saes, str(n_saes)), QUICK.table1_steps)
    features, steps = _find(r"the analysis SAE: (\d+) features, (\d+) steps", report)
    assert (int(features), int(steps)) == (QUICK.sae_d_sae, QUICK.sae_steps)
    (bootstrap,) = _find(r"alignment: (\d+) bootstrap resamples", report)
    assert int(bootstrap) == QUICK.align_bootstrap
    first, second, values = _find(r"steering: ([\w-]+) and ([\w-]+) at ([−\d, and]+)\.", report)
    assert (first, second) == QUICK.steer_genres
    assert tuple(_number(v) for v in re.findall(r"−?\d+", values)) == QUICK.steer_values
    (rows,) = _find(r"- ablations: the rows ([`\w, and-]+)\.", report)
    assert tuple(re.findall(r"`([\w-]+)`", rows)) == QUICK.ablations


def test_stated_training_defaults_are_the_codes():
    reproducing = _text("docs/reproducing-the-paper.md")
    lr, batch, dropout = _find(r"`mechrec train`'s defaults \(lr ([\d.e-]+), batch (\d+), "
                               r"dropout ([\d.]+)\)", reproducing)
    assert (float(lr), int(batch), float(dropout)) == (TrainConfig.lr, TrainConfig.batch_size,
                                                       GPTRecConfig.dropout)
    layers, heads, d_model = _find(r"(\d+) layers, (\d+) heads and d_model (\d+)", reproducing)
    assert (int(layers), int(heads), int(d_model)) == (
        GPTRecConfig.n_layers, GPTRecConfig.n_heads, GPTRecConfig.d_model)
    readme = " ".join(_text("README.md").split())
    epochs, patience = _find(r"`train` runs up to (\d+) epochs and stops early once more than "
                             r"(\d+) epochs in a row bring no better validation NDCG@10", readme)
    assert (int(epochs), int(patience)) == (TrainConfig.epochs, TrainConfig.patience)
    assert "Horror" in DEFAULT_GENRES and "plus\nHorror" in reproducing


@pytest.mark.parametrize("doc", ["README.md", "docs/quickstart.md",
                                 "docs/reproducing-the-paper.md"])
def test_sae_names_used_are_the_ones_trained(doc: str):
    commands = _commands(_text(doc))
    trained = {words[words.index("--name") + 1] for words in commands
               if words[:2] == ["sae", "train"] and "--name" in words}
    assert trained == {PAPER.sae_name}, doc
    for words in commands:
        if words[0] in ("align", "steer") and words[1] in ("tables", "examples", "sweep",
                                                             "user"):
            assert words[3] in trained, (doc, words)
        if words[0] == "serve":
            assert words[words.index("--sae") + 1] in trained, (doc, words)


def _leaf(words: list[str]) -> tuple[typer.core.TyperCommand, list[str]]:
    command = typer.main.get_command(app)
    rest = list(words)
    while hasattr(command, "commands"):
        name = rest.pop(0)
        assert name in command.commands, f"no command {name!r} in: mechrec {' '.join(words)}"
        command = command.commands[name]
    return command, rest


@pytest.mark.parametrize("doc", DOCS, ids=[p.name for p in DOCS])
def test_every_documented_command_and_option_exists(doc: Path):
    for words in _commands(doc.read_text(encoding="utf-8")):
        command, rest = _leaf(words)
        options = {opt for param in command.params for opt in (*param.opts,
                                                             *param.secondary_opts)}
        for word in rest:
            if word.startswith("--"):
                assert word.split("=")[0] in options, (doc.name, words, word)
