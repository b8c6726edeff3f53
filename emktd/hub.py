"""Model folders in the Hugging Face layout: ``config.json`` + ``model.safetensors`` (+ ``README.md``).

``load_pretrained`` takes a local folder or a Hub repo id (downloaded and
cached by huggingface_hub; ``hf://owner/name`` says so explicitly) and loads the
weights strictly: every tensor the model has must be in the file with the same
shape, the file may hold nothing else, and no value may be NaN or infinite.
PyTorchModelHubMixin does not check this, so the check lives here.
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

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "HUB_PREFIX", "ModelLoadError", "save_pretrained", "load_pretrained", "resolve_folder"]

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


HUB_PREFIX = "hf://"  # names a Hub repo explicitly, whatever the local folders are


def _path_like(name: str) -> bool:
    """Whether ``name`` can only be meant as a local path: not of the form owner/name, or its first
    part is a folder here (``weights/techer`` is a typo in ``weights/``, not a repo of user 'weights')."""
    if name.count("/") != 1 or name.startswith((".", "/", "~")) or name.endswith("/") or "\\" in name:
        return True
    return Path(name.split("/")[0]).is_dir()


def _missing_folder(path: Path) -> str:
    parent = path.parent if str(path.parent) else Path(".")
    if parent.is_dir():
        near = sorted(p.name for p in parent.iterdir() if p.is_dir() and not p.name.startswith("."))[:8]
        return f"no such folder ({parent}/ holds {', '.join(near) if near else 'no folders'})"
    return f"no such folder ({parent} does not exist either)"


def resolve_folder(name_or_path: str | Path, revision: str | None = None, cache_dir: str | Path | None = None) -> Path:
    """A local folder as it is; ``hf://owner/name``, or ``owner/name`` where no local folder ``owner``
    exists, is a Hub repo id, fetched into huggingface_hub's cache.  Anything else that does not exist
    is a missing local folder, and the error says so (it is never looked up on the Hub)."""
    name = str(name_or_path)
    explicit = name.startswith(HUB_PREFIX)
    if not explicit:
        path = Path(name).expanduser()
        if path.is_dir():
            return path
        if path.exists():
            raise ModelLoadError(f"{path}: is a file; expected a model folder with {CONFIG_NAME} and {WEIGHTS_NAME}")
        if isinstance(name_or_path, Path) or _path_like(name):
            raise ModelLoadError(f"{name}: {_missing_folder(path)}; expected a model folder with {CONFIG_NAME} and "
                                 f"{WEIGHTS_NAME} (a Hub repo is written {HUB_PREFIX}owner/name)")
    repo = name[len(HUB_PREFIX):] if explicit else name
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise ModelLoadError(f"{name}: not a Hub repo id of the form {HUB_PREFIX}owner/name")
    tried = f"{repo}: tried as a Hub repo id" + ("" if explicit else " (there is no local folder of that name)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError, \
        RepositoryNotFoundError

    try:
        return Path(snapshot_download(repo, revision=revision, cache_dir=cache_dir,
                                      allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, "README.md"]))
    except LocalEntryNotFoundError:
        offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")
        why = "HF_HUB_OFFLINE is set" if offline else "the Hub could not be reached"
        raise ModelLoadError(f"{tried}; it is not in the Hugging Face cache, and {why}; "
                             "download it once while online or pass a local folder") from None
    except RepositoryNotFoundError:
        raise ModelLoadError(f"{tried}; no such model repo on the Hub (or it is private and no token was "
                             "given)") from None
    except HFValidationError as exc:
        raise ModelLoadError(f"{tried}; not a valid repo id ({exc})") from None
    except HfHubHTTPError as exc:
        raise ModelLoadError(f"{tried}; the Hub refused the download ({exc})") from None


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
    damaged = sorted(k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all()))
    if damaged:
        raise ModelLoadError(f"{weights_path}: {len(damaged)} tensor(s) hold NaN or infinite values "
                             f"({', '.join(damaged[:4])}{' ...' if len(damaged) > 4 else ''}); the weights are "
                             "damaged: save or download them again")
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
