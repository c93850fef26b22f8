"""GPTRec checkpoints: safetensors weights + a JSON config holding the item vocabulary.

A checkpoint directory holds ``model.safetensors`` (the state dict) and ``config.json``
(format tag, :class:`~mechrec_recsys.model.GPTRecConfig`, vocabulary, free metadata and the
SHA-256 of the weights file). Each file is written atomically (temporary file, ``fsync``,
``os.replace``); the weights go first and the config last, and loading checks the hash, so a
crash between the two writes is detected instead of pairing new weights with an old config.
Nothing is pickled: loading a stranger's checkpoint cannot run code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from transformer_lens import HookedTransformer

from mechrec._io import (
    atomic_write_bytes,
    atomic_write_json,
    read_verified_bytes,
    safetensors_bytes,
    sha256_bytes,
)
from mechrec._io import state_dict_sha256 as weights_sha256
from mechrec_recsys.model import GPTRecConfig, _gptrec_config_of, build_gptrec
from mechrec_recsys.vocab import ItemVocab

__all__ = [
    "CHECKPOINT_FORMAT",
    "Checkpoint",
    "RunState",
    "atomic_write_bytes",
    "atomic_write_json",
    "check_vocab_matches",
    "checkpoint_sha256",
    "load_checkpoint",
    "load_run_state",
    "read_json",
    "read_tensors",
    "save_checkpoint",
    "save_run_state",
    "state_dict_sha256",
    "write_tensors",
]

CHECKPOINT_FORMAT = "mechrec.gptrec/1"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
_WEIGHTS_METADATA = {"format": CHECKPOINT_FORMAT}
RUN_STATE_FORMAT = "mechrec.gptrec_train_state/1"
RUN_STATE_TENSORS = "train_state.safetensors"
RUN_STATE_JSON = "train_state.json"


def read_json(path: str | Path) -> Any:
    """Read a JSON file; errors name the file, line and column."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path}: line {exc.lineno}, column {exc.colno}: invalid JSON ({exc.msg})"
        ) from None


def write_tensors(
    path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> str:
    """Save tensors as safetensors atomically; returns the SHA-256 of the written bytes.

    Tensors that share memory with an earlier one (safetensors refuses those) are copied.
    """
    data = safetensors_bytes(tensors, metadata)
    atomic_write_bytes(path, data)
    return sha256_bytes(data)


def read_tensors(path: str | Path, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Load a safetensors file (optionally verifying its SHA-256)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    data = read_verified_bytes(path, expected_sha256, fix="re-create the checkpoint")
    try:
        return load_safetensors_bytes(data)
    except SafetensorError as exc:
        raise ValueError(f"{path}: not a valid safetensors file ({exc})") from None


@dataclass
class Checkpoint:
    """A loaded GPTRec checkpoint.

    Attributes:
        model: the ``HookedTransformer`` in eval mode.
        vocab: the item vocabulary it was trained on.
        config: its architecture.
        metadata: free JSON metadata stored with it (training config, metrics, ...).
    """

    model: HookedTransformer
    vocab: ItemVocab
    config: GPTRecConfig
    metadata: dict[str, Any]


def save_checkpoint(
    directory: str | Path,
    model: HookedTransformer,
    vocab: ItemVocab,
    *,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Save a GPTRec model with its vocabulary into ``directory`` (created if needed).

    Raises:
        ValueError: the model is not a GPTRec model or its size disagrees with the vocabulary.
    """
    config = _gptrec_config_of(model)
    if model.cfg.d_vocab != vocab.size:
        raise ValueError(
            f"model has {model.cfg.d_vocab} tokens but the vocabulary has {vocab.size} "
            "(items + padding): save the model with the vocabulary it was trained on"
        )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    digest = write_tensors(directory / WEIGHTS_FILE, model.state_dict(),
                           metadata=_WEIGHTS_METADATA)
    atomic_write_json(
        directory / CONFIG_FILE,
        {
            "format": CHECKPOINT_FORMAT,
            "model_config": config.to_json(),
            "vocab_size": vocab.size,
            "vocab": vocab.to_json(),
            "weights_sha256": digest,
            "metadata": metadata or {},
        },
    )
    return directory


def state_dict_sha256(model: torch.nn.Module) -> str:
    """The SHA-256 of ``model``'s weights as :func:`save_checkpoint` would write them.

    It equals the ``weights_sha256`` recorded in the ``config.json`` of a checkpoint saved from
    (or loaded into) this model, so it identifies a trained model whether it is in memory or on
    disk (see :func:`checkpoint_sha256`).
    """
    return weights_sha256(model, _WEIGHTS_METADATA)


def checkpoint_sha256(directory: str | Path) -> str:
    """The SHA-256 of a saved checkpoint's weights, as recorded in its ``config.json``.

    Cheap (the weights are not read); :func:`load_checkpoint` verifies the recorded hash
    against the weights file.

    Raises:
        FileNotFoundError: no checkpoint in ``directory``.
        ValueError: the config is not a GPTRec checkpoint config or has no valid hash.
    """
    config_path = Path(directory) / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(
            f"no checkpoint config at {config_path}: {directory} holds no trained GPTRec "
            "(train one with 'mechrec train')"
        )
    raw = read_json(config_path)
    if not isinstance(raw, dict) or raw.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{config_path}: not a GPTRec checkpoint config (expected \"format\": "
            f"\"{CHECKPOINT_FORMAT}\")"
        )
    digest = raw.get("weights_sha256")
    if not isinstance(digest, str) or len(digest) != 64:
        raise ValueError(f"{config_path}: missing or malformed key 'weights_sha256'")
    return digest


def load_checkpoint(
    directory: str | Path, *, device: str = "cpu", expected_vocab: ItemVocab | None = None
) -> Checkpoint:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Args:
        directory: the checkpoint folder.
        device: where to put the model.
        expected_vocab: if given, the vocabulary of the data the model will be used on; a
            mismatch raises ``ValueError``.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory not found: {directory}")
    config_path = directory / CONFIG_FILE
    raw = read_json(config_path)
    if not isinstance(raw, dict) or raw.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{config_path}: not a GPTRec checkpoint config (expected \"format\": "
            f"\"{CHECKPOINT_FORMAT}\")"
        )
    for key in ("model_config", "vocab", "vocab_size", "weights_sha256"):
        if key not in raw:
            raise ValueError(f"{config_path}: missing key {key!r}")
    config = GPTRecConfig.from_json(raw["model_config"])
    vocab = ItemVocab.from_json(raw["vocab"])
    if vocab.size != raw["vocab_size"]:
        raise ValueError(
            f"{config_path}: vocab_size {raw['vocab_size']} disagrees with the stored "
            f"vocabulary ({vocab.size} tokens)"
        )
    if expected_vocab is not None:
        check_vocab_matches(vocab, expected_vocab, source=str(directory))
    state = read_tensors(directory / WEIGHTS_FILE, raw["weights_sha256"])
    model = build_gptrec(vocab.size, config, device=device)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{directory / WEIGHTS_FILE} does not fit the config: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise ValueError(
                f"{directory / WEIGHTS_FILE}: {name} has shape {tuple(tensor.shape)}, the config "
                f"implies {tuple(expected[name].shape)}"
            )
    model.load_state_dict(state, strict=True)
    model.eval()
    return Checkpoint(model=model, vocab=vocab, config=config, metadata=raw.get("metadata", {}))


def check_vocab_matches(
    model_vocab: ItemVocab, data_vocab: ItemVocab, source: str = "model"
) -> None:
    """Raise ``ValueError`` unless two vocabularies map the same items to the same tokens."""
    if model_vocab.num_items != data_vocab.num_items or not (
        model_vocab.item_ids == data_vocab.item_ids
    ).all():
        only_model = len(set(model_vocab.item_ids.tolist()) - set(data_vocab.item_ids.tolist()))
        only_data = len(set(data_vocab.item_ids.tolist()) - set(model_vocab.item_ids.tolist()))
        raise ValueError(
            f"the item vocabulary of {source} ({model_vocab.num_items} items) does not match the "
            f"data ({data_vocab.num_items} items; {only_model} only in the model, {only_data} "
            "only in the data): use the dataset and split the model was trained on"
        )


# --------------------------------------------------------------------------------------------
# Training run state (resume)
# --------------------------------------------------------------------------------------------


@dataclass
class RunState:
    """What a training run needs to continue: weights, best weights, optimiser, progress.

    Attributes:
        info: the JSON part (the run's identity, epoch, history, early-stopping counters, ...).
        model: the current model state dict.
        best: the best model state dict so far.
        optimizer_tensors: the optimiser's per-parameter tensors (see :meth:`restore_optimizer`).
    """

    info: dict[str, Any]
    model: dict[str, torch.Tensor]
    best: dict[str, torch.Tensor]
    optimizer_tensors: dict[str, torch.Tensor]

    def restore_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Load the saved optimiser state (tensors here, scalars and groups in ``info``)."""
        meta = self.info["optimizer"]
        state: dict[int, dict[str, Any]] = {}
        for name, value in self.optimizer_tensors.items():
            pid, key = name.split(".", 1)
            state.setdefault(int(pid), {})[key] = value
        for name, value in meta["scalars"].items():
            pid, key = name.split(".", 1)
            state.setdefault(int(pid), {})[key] = value
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_run_state(
    directory: str | Path,
    *,
    model_state: dict[str, torch.Tensor],
    best_state: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    info: dict[str, Any],
) -> None:
    """Write a training run's state: tensors first, then the JSON (with their hash) as commit.

    A crash between the two writes leaves the previous JSON, whose hash no longer matches, so
    :func:`load_run_state` refuses the pair instead of mixing epochs.
    """
    tensors = {f"model.{k}": v for k, v in model_state.items()}
    tensors.update({f"best.{k}": v for k, v in best_state.items()})
    scalars: dict[str, Any] = {}
    opt = optimizer.state_dict()
    for pid, pstate in opt["state"].items():
        for key, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"opt.{pid}.{key}"] = value
            else:
                scalars[f"{pid}.{key}"] = value
    directory = Path(directory)
    digest = write_tensors(directory / RUN_STATE_TENSORS, tensors)
    atomic_write_json(directory / RUN_STATE_JSON, {
        **info,
        "format": RUN_STATE_FORMAT,
        "tensors_sha256": digest,
        "optimizer": {"param_groups": opt["param_groups"], "scalars": scalars},
    })


def load_run_state(directory: str | Path) -> RunState | None:
    """Read the state written by :func:`save_run_state`; ``None`` if the folder has none."""
    directory = Path(directory)
    path = directory / RUN_STATE_JSON
    if not path.is_file():
        return None
    info = read_json(path)
    if not isinstance(info, dict) or info.get("format") != RUN_STATE_FORMAT:
        raise ValueError(f"{path}: not a GPTRec training state (format {RUN_STATE_FORMAT})")
    tensors = read_tensors(directory / RUN_STATE_TENSORS, info.get("tensors_sha256"))

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}

    return RunState(info=info, model=part("model"), best=part("best"),
                    optimizer_tensors=part("opt"))
