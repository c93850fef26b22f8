"""`NormalizedSAE`: an sae-lens SAE together with the normaliser it was trained behind.

The SAE sees normalised activations; everything outside it (the model, steering,
reconstruction metrics in raw space) sees raw ones. ``NormalizedSAE`` does the translation
in both directions so callers never handle the normaliser by hand:

- ``encode(x_raw) = sae.encode(normalize(x_raw))``
- ``decode(f) = denormalize(sae.decode(f))``
- ``reconstruct(x_raw) = decode(encode(x_raw))``

Feature activations are in "unit-decoder" units: SAEs trained by :mod:`mechrec.saes.training`
have their decoder-row norms folded into the encoder before they are returned, so every
decoder row has norm 1 (in normalised space) and a feature activation of ``a`` moves the
normalised activation by ``a`` along its direction.

Transcoders (sae-lens' ``Transcoder``, ``SkipTranscoder``, ``JumpReLUTranscoder``,
``JumpReLUSkipTranscoder``) read one hook and write another: ``hook_name`` is their input
hook (``cfg.metadata.hook_name``) and ``hook_name_out`` their output hook
(``cfg.metadata.hook_name_out``, as sae-lens' ``HookedSAETransformer`` reads it; for an
SAE both are the same hook). A transcoder has two normalisers: ``normalizer`` for its input
and ``output_normalizer`` for its output (both the identity for a plain sae-lens transcoder,
which reads and writes raw activations), and

- ``encode(x_in) = sae.encode(normalize_in(x_in))``
- ``decode(f) = denormalize_out(sae.decode(f))``
- ``reconstruct(x_in) = denormalize_out(sae.decode(f) + normalize_in(x_in) @ W_skip.T)``
  with ``f = encode(x_in)`` (the skip term only for skip transcoders): the transcoder's
  prediction of the activation at ``hook_name_out``.

Both normalisers are affine, so this is exactly sae-lens' ``forward`` seen through them.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from sae_lens import SAE
from sae_lens.saes.transcoder import SkipTranscoder, Transcoder
from safetensors import SafetensorError

from mechrec._io import atomic_write_json, state_dict_sha256
from mechrec.normalization import NORMALIZER_FILENAME, Normalizer
from mechrec.saes.folding import (
    FOLD_METADATA_KEY,
    can_fold,
    fold_normalizer,
    is_folded,
    unfold_normalizer,
)
from mechrec.saes.io import (
    PROVENANCE_FILENAME,
    SAE_CFG_FILENAME,
    SAE_WEIGHTS_FILENAME,
    check_sae_directory,
    is_mechrec_directory,
    read_provenance,
    verify_manifest,
    write_directory_atomically,
    write_manifest,
)

_LOG = logging.getLogger(__name__)


class MissingHookNameError(ValueError):
    """The SAE does not record the TransformerLens hook it reads, and none was given."""


def is_transcoder(sae: SAE) -> bool:
    """Whether ``sae`` is one of sae-lens' transcoders (it reads one hook, writes another)."""
    return isinstance(sae, Transcoder)


#: What a damaged ``cfg.json``/weights file can raise inside sae-lens' loader.
_LOAD_ERRORS = (SafetensorError, ValueError, TypeError, KeyError, RuntimeError, AttributeError,
                OSError, json.JSONDecodeError)

#: sae-lens input normalisations computed per input row inside ``encode`` and undone by
#: ``decode`` with the statistics that encode stored on the SAE (their attribute names).
PER_ROW_NORMALIZATIONS: dict[str, str] = {"constant_norm_rescale": "x_norm_coeff",
                                          "layer_norm": "ln_std"}


#: What :meth:`NormalizedSAE.from_sae_lens` records (and logs) about a plain sae-lens folder.
PLAIN_SAE_LENS_NOTE = (
    "plain sae-lens SAE (no normalizer.safetensors): read as it is, with the identity "
    "normaliser; sae-lens applies its own normalize_activations inside encode/decode"
)


def _foreign_format(directory: str | os.PathLike) -> str | None:
    """``"sparsify"`` or ``"dictionary_learning"`` when ``directory`` is such a checkpoint
    (a sparsify folder, an ``ae.pt`` or its folder) rather than a sae-lens folder."""
    path = Path(directory)
    if path.is_file() and path.suffix == ".pt":
        return "dictionary_learning"
    if not path.is_dir() or (path / SAE_WEIGHTS_FILENAME).is_file():
        return None
    if (path / "sae.safetensors").is_file() and (path / SAE_CFG_FILENAME).is_file():
        return "sparsify"
    if (path / "ae.pt").is_file():
        return "dictionary_learning"
    return None


#: sae-lens' file of the activation scaling its training estimated (saved in training
#: checkpoints, folded into the weights of a finished SAE).
ACTIVATION_SCALER_FILENAME = "activation_scaler.json"
#: sae-lens input normalisations estimated during training and kept outside the SAE.
TRAINING_NORMALIZATIONS = ("expected_average_only_in", "covariance_whitening")


def _fold_activation_scaler(sae: SAE, root: Path) -> dict[str, Any]:
    """Fold the activation scaling of a sae-lens training checkpoint into ``sae``, as sae-lens
    does at the end of training, so that it reads raw activations; what was done, for the
    provenance.

    ``"expected_average_only_in"`` and ``"covariance_whitening"`` are estimated by sae-lens'
    trainer and applied outside the SAE: a finished SAE has them folded in (its cfg says
    ``"none"``), a training checkpoint keeps them in ``activation_scaler.json`` (and
    ``activation_whitening.safetensors``). Without that file sae-lens' ``encode`` reads its
    input as it is, and so does mechrec (with a warning).
    """
    import warnings

    mode = str(sae.cfg.normalize_activations)
    if mode not in TRAINING_NORMALIZATIONS:
        return {}
    path = root / ACTIVATION_SCALER_FILENAME
    if not path.is_file():
        warnings.warn(
            f"the SAE in {root} says normalize_activations={mode!r} but has no "
            f"{ACTIVATION_SCALER_FILENAME}: sae-lens applies that scaling outside the SAE, "
            "so its encode (and mechrec's) reads activations as given; scale them as it was "
            "trained, or fold the statistics in (SAE.fold_activation_norm_scaling_factor)",
            UserWarning, stacklevel=3)
        return {"activation_scaler": "missing"}
    from sae_lens.training.activation_scaler import ActivationScaler

    scaler = ActivationScaler()
    try:
        scaler.load(path)
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
        raise ValueError(f"cannot read {path} ({type(exc).__name__}: {exc}); restore it from "
                         "the training checkpoint") from None
    folded: dict[str, Any] = {}
    with torch.no_grad():
        if scaler.scaling_factor is not None:
            sae.fold_activation_norm_scaling_factor(float(scaler.scaling_factor))
            folded["scaling_factor"] = float(scaler.scaling_factor)
        if scaler.whitening is not None:
            w = scaler.whitening
            sae.fold_activation_whitening(mean=w.mean, whitening_matrix=w.matrix,
                                          unwhitening_matrix=w.inverse_matrix)
            folded["whitening"] = True
    sae.cfg.normalize_activations = "none"
    return {"activation_scaler": f"folded from {ACTIVATION_SCALER_FILENAME}", **folded}


def _load_sae_lens(root: Path, device: str) -> SAE:
    try:
        return SAE.load_from_disk(root, device=device)
    except _LOAD_ERRORS as exc:
        raise ValueError(
            f"cannot load the SAE in {root}: {SAE_CFG_FILENAME} or {SAE_WEIGHTS_FILENAME} "
            f"is damaged or they do not fit each other ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:300]}); train it again or restore the folder "
            "from a good copy"
        ) from None


class NormalizedSAE:
    """An sae-lens ``SAE`` plus the :class:`Normalizer` of its training activations.

    Args:
        sae: an inference sae-lens SAE (any architecture).
        normalizer: the normaliser its training activations went through.
        hook_name: the hook point it reads; overrides ``sae.cfg.metadata.hook_name`` (which
            is then set to it). Required if the SAE's metadata has none.
        provenance: optional JSON-able description (training config, metrics) saved with it.
        source: optional JSON-able identity of the activations it was trained on (e.g.
            ``{"model_sha256": ..., "hook_name": ...}``), recorded in its manifest so that
            users of the SAE can refuse one made for another model.
        hook_name_out: a transcoder's output hook; overrides ``sae.cfg.metadata.hook_name_out``
            (which is then set to it). Required for a transcoder whose metadata has none;
            refused for an SAE (which writes the hook it reads).
        output_normalizer: a transcoder's output normaliser (default: the identity, i.e.
            the transcoder's decoder writes raw activations). An SAE's output normaliser is
            ``normalizer`` itself.

    The SAE is put in eval mode with gradients off: a ``NormalizedSAE`` is for inference.
    """

    def __init__(
        self,
        sae: SAE,
        normalizer: Normalizer,
        hook_name: str | None = None,
        provenance: dict[str, Any] | None = None,
        source: dict[str, Any] | None = None,
        *,
        hook_name_out: str | None = None,
        output_normalizer: Normalizer | None = None,
    ) -> None:
        if hook_name is not None:
            sae.cfg.metadata.hook_name = hook_name
        if not sae.cfg.metadata.hook_name:
            raise MissingHookNameError(
                "the SAE has no hook name (cfg.metadata.hook_name is unset): pass "
                "hook_name='blocks.0.hook_resid_post' (or whichever hook it was trained on)"
            )
        if normalizer.d != sae.cfg.d_in:
            raise ValueError(
                f"the normaliser has {normalizer.d} dimensions but the SAE's d_in is "
                f"{sae.cfg.d_in}: they must come from the same hook point"
            )
        if is_transcoder(sae):
            if hook_name_out is not None:
                sae.cfg.metadata.hook_name_out = hook_name_out
            if not sae.cfg.metadata.hook_name_out:
                raise MissingHookNameError(
                    f"the {sae.cfg.architecture()} has no output hook "
                    "(cfg.metadata.hook_name_out is unset): pass "
                    "hook_name_out='blocks.0.hook_mlp_out' (whichever hook it was trained to "
                    "predict)"
                )
            d_out = int(sae.cfg.d_out)
            output_normalizer = output_normalizer or Normalizer.identity(d_out)
            if output_normalizer.d != d_out:
                raise ValueError(
                    f"the output normaliser has {output_normalizer.d} dimensions but the "
                    f"transcoder's d_out is {d_out}: it must come from its output hook "
                    f"{sae.cfg.metadata.hook_name_out!r}"
                )
        else:
            out = hook_name_out or sae.cfg.metadata.hook_name_out
            if out and out != sae.cfg.metadata.hook_name:
                raise ValueError(
                    f"a {sae.cfg.architecture()!r} SAE writes the hook it reads "
                    f"({sae.cfg.metadata.hook_name!r}), not {out!r}: only transcoders have "
                    "an output hook of their own (drop hook_name_out)"
                )
            if output_normalizer is not None and output_normalizer is not normalizer:
                raise ValueError("an SAE has one normaliser (its output is de-normalised with "
                                 "its input's): drop output_normalizer")
            output_normalizer = normalizer
        self.sae = sae
        self.normalizer = normalizer
        self.output_normalizer = output_normalizer
        self.provenance = provenance
        self.source = source
        self.sae.eval()
        self.sae.requires_grad_(False)

    @property
    def hook_name(self) -> str:
        """TransformerLens hook name the SAE reads (and, unless a transcoder, writes)."""
        return str(self.sae.cfg.metadata.hook_name)

    @property
    def hook_name_out(self) -> str:
        """The hook the SAE writes (its reconstruction replaces that activation): a
        transcoder's output hook, else :attr:`hook_name`."""
        if self.is_transcoder:
            return str(self.sae.cfg.metadata.hook_name_out)
        return self.hook_name

    @property
    def is_transcoder(self) -> bool:
        """Whether this is a transcoder (:attr:`hook_name_out` differs from the input hook)."""
        return is_transcoder(self.sae)

    @property
    def has_skip(self) -> bool:
        """Whether the transcoder has a skip connection ``W_skip`` (input to output)."""
        return isinstance(self.sae, SkipTranscoder)

    @property
    def d_in(self) -> int:
        """Width of the activations at the (input) hook."""
        return int(self.sae.cfg.d_in)

    @property
    def d_out(self) -> int:
        """Width of what the SAE writes at :attr:`hook_name_out` (``d_in`` for an SAE)."""
        return int(self.sae.cfg.d_out) if self.is_transcoder else self.d_in

    @property
    def d_sae(self) -> int:
        """Number of features (dictionary size)."""
        return int(self.sae.cfg.d_sae)

    @property
    def architecture(self) -> str:
        """sae-lens inference architecture name (e.g. ``"standard"``, ``"jumprelu"``)."""
        return str(self.sae.cfg.architecture())

    @property
    def device(self) -> torch.device:
        """Device of the SAE parameters."""
        return self.sae.W_dec.device

    def to(self, device: str | torch.device) -> NormalizedSAE:
        """Move the SAE to ``device`` (the normaliser follows the inputs' device)."""
        self.sae.to(device)
        return self

    def _check_width(self, x: torch.Tensor, what: str, width: int) -> None:
        if x.shape[-1] != width:
            raise ValueError(
                f"{what} have last dimension {x.shape[-1]} but this SAE expects {width} "
                f"(hook {self.hook_name}, d_in={self.d_in}, d_sae={self.d_sae}): use an SAE "
                "trained on this hook point"
            )

    def encode(self, x_raw: torch.Tensor) -> torch.Tensor:
        """Raw activations ``(..., d_in)`` -> feature activations ``(..., d_sae)``."""
        self._check_width(x_raw, "activations", self.d_in)
        return self.sae.encode(self.normalizer.normalize(x_raw))

    def decode(self, features: torch.Tensor, skip_input: torch.Tensor | None = None
               ) -> torch.Tensor:
        """Feature activations ``(..., d_sae)`` -> raw (de-normalised) activations at
        :attr:`hook_name_out`.

        Args:
            features: feature activations.
            skip_input: a skip transcoder's raw input activations ``(..., d_in)``, whose skip
                term ``normalize_in(x) @ W_skip.T`` is added before de-normalising (ignored
                by other SAEs). Without it the skip term is left out (a difference of two
                decodes, e.g. a feature's direction, does not depend on it).
        """
        self._check_width(features, "feature activations", self.d_sae)
        self._check_per_row_statistics(features)
        out = self.sae.decode(features)
        if skip_input is not None and self.has_skip:
            self._check_width(skip_input, "skip inputs", self.d_in)
            out = out + self._skip(self.normalizer.normalize(skip_input))
        return self.output_normalizer.denormalize(out)

    def _skip(self, x: torch.Tensor) -> torch.Tensor:
        """The skip term of normalised inputs, as sae-lens' ``SkipTranscoder.forward``."""
        return x.to(self.sae.dtype) @ self.sae.W_skip.T.to(x.device)

    def forward_normalized(self, x_raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features, output)`` of raw input activations, the output in the output
        normaliser's space (what the SAE computes before de-normalising; skip term
        included): what reconstruction metrics in ``"normalized"`` space compare."""
        self._check_width(x_raw, "activations", self.d_in)
        x = self.normalizer.normalize(x_raw)
        features = self.sae.encode(x)
        out = self.sae.decode(features)
        if self.has_skip:
            out = out + self._skip(x)
        return features, out

    def _check_per_row_statistics(self, features: torch.Tensor) -> None:
        if self.is_transcoder:  # a transcoder's decode does not undo its input scaling
            return
        mode = str(self.sae.cfg.normalize_activations)
        name = PER_ROW_NORMALIZATIONS.get(mode)
        if name is None:
            return
        stats = getattr(self.sae, name, None)
        if not isinstance(stats, torch.Tensor) or stats.shape[:-1] != features.shape[:-1]:
            raise ValueError(
                f"this sae-lens SAE normalises each input row itself "
                f"(normalize_activations={mode!r}), so its decode needs the statistics of "
                "the encode of the same rows, just before (as in sae-lens): call "
                "reconstruct(x), or decode(encode(x)) once"
            )

    def reconstruct(self, x_raw: torch.Tensor) -> torch.Tensor:
        """``decode(encode(x_raw))``: the SAE's reconstruction in raw space (a transcoder's
        prediction of the activation at :attr:`hook_name_out`, skip term included)."""
        return self.output_normalizer.denormalize(self.forward_normalized(x_raw)[1])

    def decoder_directions(self) -> torch.Tensor:
        """``(d_sae, d_out)``: raw-space change at :attr:`hook_name_out` caused by raising
        each feature by 1 (for an SAE that normalises each row itself, the change before its
        per-row rescaling)."""
        return self.sae.W_dec.detach() * self.output_normalizer.std.to(self.sae.W_dec.device)

    def weights_sha256(self) -> str:
        """The SHA-256 of what this SAE computes: its weights, its normaliser(s) and hooks.

        Two SAEs with equal hashes encode and decode alike, so a result saved with one (an
        alignment, an ablation row) can be reused for the other. Cheap: no file is written.
        A saved and reloaded SAE hashes alike every time it is loaded, but may differ from
        the in-memory SAE it was saved from: folding the normaliser into the weights on save
        rounds them (by ~1e-8).
        """
        tensors = {f"sae.{name}": tensor for name, tensor in self.sae.state_dict().items()}
        tensors.update({"normalizer.mean": self.normalizer.mean,
                        "normalizer.std": self.normalizer.std,
                        "output_normalizer.mean": self.output_normalizer.mean,
                        "output_normalizer.std": self.output_normalizer.std})
        settings = {"architecture": self.architecture, "hook_name": self.hook_name,
                    "hook_name_out": self.hook_name_out, "normalizer": self.normalizer.mode,
                    "output_normalizer": self.output_normalizer.mode}
        # one header key: safetensors writes several in no fixed order
        return state_dict_sha256(tensors, {"mechrec": json.dumps(settings, sort_keys=True)})

    def save(self, directory: str | os.PathLike, *, overwrite: bool = True) -> Path:
        """Write the SAE (sae-lens format, normaliser folded in), its normaliser, provenance
        and manifest (file hashes and :attr:`source`) to ``directory``, atomically.

        ``sae_lens.SAE.load_from_disk(directory)`` gives an SAE that reads *raw* activations
        and equals this one (see :mod:`mechrec.saes.io`); :meth:`load` gives this one back.

        Raises:
            FileExistsError: ``directory`` exists (or appears while writing) and not
                ``overwrite``.
            ValueError: the normaliser is not the identity and cannot be folded into this
                architecture (one mechrec does not train).
        """

        if can_fold(self.sae):
            exported = fold_normalizer(self.sae, self.normalizer)
        elif self.normalizer.mode == "none" and self.output_normalizer.mode == "none":
            exported = self.sae  # raw == normalised: the weights are exact as they are
        elif self.is_transcoder:
            raise ValueError(
                f"cannot save this {self.architecture!r} with its {self.normalizer.mode!r} / "
                f"{self.output_normalizer.mode!r} normalisers: mechrec folds no normaliser "
                "into a transcoder's weights, so it saves only transcoders that read and "
                "write raw activations (identity normalisers, as sae-lens reads them)"
            )
        else:
            raise ValueError(
                f"cannot save this {self.architecture!r} SAE with its {self.normalizer.mode!r} "
                "normaliser: the normaliser can be folded into the weights (so that plain "
                "sae-lens users get the same features) only for the architectures mechrec "
                "saves (standard, topk, jumprelu, gated, without sae-lens input "
                "normalisation); wrap it with Normalizer.identity(d_in) if it reads raw "
                "activations, or train it with normalization='none'"
            )

        def write(tmp: Path) -> None:
            exported.save_model(tmp)
            self.normalizer.save(tmp / NORMALIZER_FILENAME)
            if self.provenance is not None:
                atomic_write_json(tmp / PROVENANCE_FILENAME, self.provenance)
            write_manifest(tmp, self.source)

        return write_directory_atomically(directory, write, overwrite=overwrite)

    @classmethod
    def from_sae_lens(
        cls,
        sae_or_directory: SAE | str | os.PathLike,
        *,
        hook_name: str | None = None,
        device: str = "cpu",
        hook_name_out: str | None = None,
    ) -> NormalizedSAE:
        """Wrap a plain sae-lens SAE (an object, or a folder ``SAE.load_from_disk`` reads).

        Any architecture sae-lens loads. The normaliser is the identity: the SAE reads raw
        activations, and whatever input normalisation its ``normalize_activations`` asks for
        is applied by sae-lens itself inside ``encode``/``decode``, so :meth:`encode`,
        :meth:`decode` and :meth:`reconstruct` equal sae-lens' own on raw activations.
        ``"expected_average_only_in"`` and ``"covariance_whitening"`` are applied by
        sae-lens' trainer, outside the SAE: a folder holding the trainer's
        ``activation_scaler.json`` (a training checkpoint) has it folded into the weights, as
        sae-lens does at the end of training, so that the SAE reads raw activations; without
        one a warning says the input is read as given, as sae-lens' ``encode`` does. (For
        ``"constant_norm_rescale"`` and ``"layer_norm"``, which rescale each row, ``decode``
        needs the encode of the same rows just before, as in sae-lens: use
        :meth:`reconstruct`.) An SAE that plain sae-lens loaded from a folder
        :meth:`save` wrote reads raw activations too and is wrapped as it is. A sae-lens
        transcoder (any of its four classes) is wrapped the same way, with identity input
        and output normalisers, reading ``metadata.hook_name`` and writing
        ``metadata.hook_name_out``.

        Args:
            sae_or_directory: an sae-lens ``SAE``, or its folder (``cfg.json`` and
                ``sae_weights.safetensors``; a folder written by :meth:`save` is loaded by
                :meth:`load`, with its normaliser, instead).
            hook_name: the hook the SAE reads, if ``cfg.json`` has no ``metadata.hook_name``
                (or to override it).
            device: where to put an SAE loaded from a folder.
            hook_name_out: a transcoder's output hook, if ``cfg.json`` has no
                ``metadata.hook_name_out`` (or to override it).

        Raises:
            FileNotFoundError: the folder or one of its two files is missing.
            ValueError: the files cannot be read, or no hook name is known.
        """
        provenance = None
        if isinstance(sae_or_directory, SAE):
            sae, where = sae_or_directory, "the SAE"
        else:
            root = check_sae_directory(sae_or_directory, need_normalizer=False)
            if is_mechrec_directory(root):  # mechrec's own folder: with its normaliser
                return cls.load(root, hook_name=hook_name, device=device,
                                hook_name_out=hook_name_out)
            sae, where = _load_sae_lens(root, device), f"the SAE in {root}"
            note = {"format": "sae_lens", "path": str(root), "note": PLAIN_SAE_LENS_NOTE,
                    **_fold_activation_scaler(sae, root)}
            provenance = {"converted_from": note}
            _LOG.info("%s: %s", root, PLAIN_SAE_LENS_NOTE)
        # a folded mechrec SAE loaded by plain sae-lens already reads raw activations
        sae.cfg.metadata.__dict__.pop(FOLD_METADATA_KEY, None)
        if hook_name is None and not sae.cfg.metadata.hook_name:
            raise MissingHookNameError(
                f"{where} has no hook name ({SAE_CFG_FILENAME} has no metadata.hook_name): "
                "pass hook_name='blocks.0.hook_resid_post' (whichever hook it was trained "
                f"on), or add it to {SAE_CFG_FILENAME} as \"metadata\": {{\"hook_name\": ...}}"
            )
        return cls(sae, Normalizer.identity(int(sae.cfg.d_in)), hook_name=hook_name,
                   provenance=provenance, hook_name_out=hook_name_out)

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike,
        *,
        device: str = "cpu",
        normalizer: Normalizer | None = None,
        hook_name: str | None = None,
        hook_name_out: str | None = None,
    ) -> NormalizedSAE:
        """Load an SAE saved by :meth:`save` (or by plain sae-lens), ready to encode raw
        activations.

        Args:
            directory: folder with ``cfg.json``, ``sae_weights.safetensors`` and
                ``normalizer.safetensors``. A plain sae-lens folder (no
                ``normalizer.safetensors`` and none of mechrec's files) is loaded by
                :meth:`from_sae_lens`, with the identity normaliser (its ``provenance``
                says so). A checkpoint of another library (a sparsify folder, a
                dictionary_learning ``ae.pt`` or its folder) is converted by
                :func:`mechrec.saes.foreign.load_foreign_sae`.
            device: where to put the SAE.
            normalizer: use this normaliser instead of the saved one (needed for plain
                sae-lens SAEs, which have none; ``Normalizer.identity(d_in)`` for raw training).
                The saved weights of a directory written by :meth:`save` read raw
                activations (the normaliser is folded in); they are unfolded with this
                normaliser, so the loaded SAE computes the same raw-space function whichever
                normaliser is given.
            hook_name: override the hook name stored in ``cfg.json``.
            hook_name_out: a transcoder's output hook, overriding ``metadata.hook_name_out``
                in ``cfg.json`` (a transcoder's ``normalizer`` is its input normaliser; its
                output normaliser is the identity, as for every transcoder mechrec saves).

        Raises:
            FileNotFoundError: the folder or one of its files is missing (a folder mechrec
                wrote must still have its ``normalizer.safetensors``).
            MissingHookNameError: the SAE records no hook and ``hook_name`` is not given.
            ValueError: a file does not match the hash recorded in ``mechrec.sae.json``, or
                cannot be read (truncated, not safetensors, ``cfg.json`` disagreeing with the
                weights...). Files are never unpickled.
        """
        foreign = _foreign_format(directory)
        if foreign is not None:
            from mechrec.saes.foreign import load_foreign_sae  # imports this module

            if normalizer is not None:
                raise ValueError(f"{directory} is a {foreign} checkpoint, which reads raw "
                                 "activations: load it without a normalizer")
            return load_foreign_sae(directory, hook_name=hook_name, format=foreign,
                                    device=device, hook_name_out=hook_name_out)
        root = check_sae_directory(directory, need_normalizer=False)
        if (normalizer is None and not (root / NORMALIZER_FILENAME).is_file()
                and not is_mechrec_directory(root)):
            return cls.from_sae_lens(root, hook_name=hook_name, device=device,
                                     hook_name_out=hook_name_out)
        root = check_sae_directory(directory, need_normalizer=normalizer is None)
        manifest = verify_manifest(root)
        sae = _load_sae_lens(root, device)
        if normalizer is None:
            normalizer = Normalizer.load(root / NORMALIZER_FILENAME)
        if is_folded(sae):
            try:
                unfold_normalizer(sae, normalizer)
            except ValueError as exc:
                raise ValueError(f"cannot load the SAE in {root}: {exc}") from None
        source = manifest.get("source") if manifest is not None else None
        return cls(sae, normalizer, hook_name=hook_name, provenance=read_provenance(root),
                   source=source if isinstance(source, dict) else None,
                   hook_name_out=hook_name_out)

    def __repr__(self) -> str:
        out = (f", hook_name_out={self.hook_name_out!r}, d_out={self.d_out}"
               if self.is_transcoder else "")
        return (
            f"NormalizedSAE(architecture={self.architecture!r}, hook_name={self.hook_name!r}, "
            f"d_in={self.d_in}, d_sae={self.d_sae}{out}, normalizer={self.normalizer.mode!r})"
        )
