"""Model folders in the Hugging Face layout: ``config.json`` + ``model.safetensors`` (+ ``README.md``).

``load_pretrained`` takes a local folder or a Hub repo id (downloaded and
cached by huggingface_hub) and loads the weights strictly: every tensor the
model has must be in the file with the same shape, and the file may hold
nothing else.  PyTorchModelHubMixin does not check this, so the check lives here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import __version__
from .files import atomic_path
from .models import AVConfig, AVTransformer

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "ModelLoadError", "save_pretrained", "load_pretrained", "resolve_folder"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_TYPE = "emktd-av-transformer"


class ModelLoadError(ValueError):
    """A model folder or repo could not be loaded; the message names it and says what was expected."""


def save_pretrained(model: AVTransformer, folder: str | Path, dtype: torch.dtype | None = None,
                    card: str | None = None) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (optionally cast, e.g. to float16) and a model card."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_type": MODEL_TYPE, "emktd_version": __version__, **model.config.to_dict()}
    state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in model.state_dict().items()}
    with atomic_path(folder / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    if card is not None:
        (folder / "README.md").write_text(card)
    return folder


def resolve_folder(name_or_path: str | Path, revision: str | None = None, cache_dir: str | Path | None = None) -> Path:
    """A local folder as it is; anything else is a Hub repo id, fetched into huggingface_hub's cache."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if path.exists():
        raise ModelLoadError(f"{path}: is a file; expected a model folder with {CONFIG_NAME} and {WEIGHTS_NAME}")
    name = str(name_or_path)
    if name.count("/") != 1 or name.startswith((".", "/")):
        raise ModelLoadError(f"{name}: no such folder, and not a Hub repo id of the form 'owner/name'")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(name, revision=revision, cache_dir=cache_dir,
                                      allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, "README.md"]))
    except LocalEntryNotFoundError:
        offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")
        why = "HF_HUB_OFFLINE is set" if offline else "the Hub could not be reached"
        raise ModelLoadError(f"{name}: not a local folder and not in the Hugging Face cache, and {why}; "
                             "download it once while online or pass a local folder") from None
    except RepositoryNotFoundError:
        raise ModelLoadError(f"{name}: no such model repo on the Hub (or it is private and no token was given)") from None
    except HfHubHTTPError as exc:
        raise ModelLoadError(f"{name}: the Hub refused the download ({exc})") from None


def load_pretrained(name_or_path: str | Path, revision: str | None = None, cache_dir: str | Path | None = None,
                    device: str | torch.device = "cpu") -> AVTransformer:
    folder = resolve_folder(name_or_path, revision, cache_dir)
    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    for needed in (config_path, weights_path):
        if not needed.is_file():
            raise ModelLoadError(f"{folder}: missing {needed.name}; expected {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        data = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{config_path}: not valid JSON ({exc})") from None
    if data.get("model_type") != MODEL_TYPE:
        raise ModelLoadError(f"{config_path}: model_type is {data.get('model_type')!r}, expected {MODEL_TYPE!r}")
    try:
        config = AVConfig.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"{config_path}: {exc}") from None
    try:
        state = load_file(str(weights_path), device=str(device))
    except (SafetensorError, OSError) as exc:
        raise ModelLoadError(f"{weights_path}: not a readable safetensors file ({exc})") from None
    model = AVTransformer(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
                  for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or mismatched:
        parts = [f"{label} {items[:6]}{' ...' if len(items) > 6 else ''}"
                 for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched))
                 if items]
        raise ModelLoadError(f"{weights_path}: weights do not match {CONFIG_NAME}: " + "; ".join(parts))
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)
    return model.to(device).eval()
