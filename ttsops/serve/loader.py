"""Where a served model comes from: a checkpoint path or the MLflow Model Registry.

Sources:
  * a file: ``best_model.pt`` or any train.py checkpoint (``checkpoint_00001000.pt``);
  * an export directory of ``ttsops export`` (``OUT/onnx``, ``OUT/torchscript``: its ``ttsops_export.json``);
  * a directory: the ``best_model.pt`` somewhere below it;
  * ``models:/NAME@ALIAS`` (follows the alias: the service reloads when it moves) or
    ``models:/NAME/VERSION`` (pinned).

A registry version is downloaded (``get_model_version_download_uri`` on our own MlflowClient,
then ``mlflow.artifacts.download_artifacts``) into a cache directory; its tree holds a
``best_model.pt`` somewhere (the contract with ``registry.py``).
MLflow is imported lazily: a path-only service never pays its import time.
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ttsops.errors import ServeError, TtsopsError

logger = logging.getLogger(__name__)

BEST_MODEL = "best_model.pt"
RETRY_FAILED_S = 300.0  # a registry version that failed to load is retried after this long
_REGISTRY_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))/?")


class Synthesizer(Protocol):
    """What the service needs of a model (``ttsops.model.inference.Synthesizer`` fits)."""

    sample_rate: int

    def synthesize(self, text: str) -> tuple[np.ndarray, int]: ...


SynthesizerLoader = Callable[[Path], Synthesizer]


def default_synthesizer_loader(device: str = "cpu") -> SynthesizerLoader:
    """Checkpoint path or export directory -> ``ttsops.model.inference.Synthesizer`` on ``device``."""

    def load(path: Path) -> Synthesizer:
        from ttsops.model.inference import Synthesizer as TacotronSynthesizer

        return TacotronSynthesizer.from_path(path, device=device)

    return load


@dataclass(frozen=True)
class ModelSource:
    """A parsed ``--model`` value."""

    raw: str
    path: Path | None = None
    registry_name: str | None = None
    alias: str | None = None
    version: str | None = None

    @classmethod
    def parse(cls, raw: str) -> ModelSource:
        if raw.startswith("models:"):
            m = _REGISTRY_URI.fullmatch(raw)
            if not m:
                raise ServeError(f"model source {raw!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
            return cls(raw, registry_name=m["name"], alias=m["alias"], version=m["version"])
        if "://" in raw:
            raise ServeError(f"model source {raw!r}: expected a checkpoint path or models:/NAME@ALIAS")
        path = Path(raw).expanduser()
        if not path.exists():
            raise ServeError(f"model source {raw}: no such file or directory")
        return cls(raw, path=path)

    @property
    def follows_alias(self) -> bool:
        return self.alias is not None

    @property
    def default_name(self) -> str:
        """The public model id when none is given: the registry name, else the file's stem."""
        if self.registry_name:
            return self.registry_name
        assert self.path is not None
        return self.path.name if self.path.is_dir() else self.path.stem


def find_best_model(root: Path, origin: str) -> Path:
    """The ``best_model.pt`` below ``root`` (shallowest first); ServeError listing what is there."""
    found = sorted(root.rglob(BEST_MODEL), key=lambda p: (len(p.parts), str(p)))
    if not found:
        present = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())[:10]
        raise ServeError(f"{origin}: no {BEST_MODEL} in its files (found: {', '.join(present) or 'nothing'})")
    if len(found) > 1:
        logger.warning("%s: several %s files, using %s", origin, BEST_MODEL, found[0].relative_to(root))
    return found[0]


def _local_dir(path: Path, origin: str) -> Path:
    """A directory given as ``--model``: an export of ``ttsops export`` (served as it is), or the
    ``best_model.pt`` below it."""
    from ttsops.model.export import MANIFEST

    if (path / MANIFEST).is_file():
        return path
    exports = sorted(p.parent.name for p in path.glob(f"*/{MANIFEST}"))
    if exports and not any(path.rglob(BEST_MODEL)):
        raise ServeError(f"{origin}: holds the exports {', '.join(exports)}: give one of them ({path / exports[0]})")
    return find_best_model(path, origin)


class ModelResolver:
    """Turns a ModelSource into a local checkpoint path, asking the registry when needed.

    ``client_factory`` builds the ``MlflowClient`` (injected so a test can count calls); the
    registry URI is the tracking URI unless ``registry_uri`` is given.
    """

    def __init__(
        self,
        tracking_uri: str | None,
        cache_dir: Path,
        registry_uri: str | None = None,
        client_factory: Callable[..., Any] | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.registry_uri = registry_uri or tracking_uri
        self.cache_dir = Path(cache_dir)
        self._client_factory = client_factory
        self._client: Any = None

    def _mlflow_client(self) -> Any:
        if self._client is None:
            factory = self._client_factory
            if factory is None:
                from mlflow import MlflowClient

                factory = MlflowClient
            self._client = factory(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)
        return self._client

    def current_version(self, src: ModelSource) -> str | None:
        """The registry version ``src`` points at now (None for a path)."""
        if src.registry_name is None:
            return None
        if src.version is not None:
            return src.version
        try:
            mv = self._mlflow_client().get_model_version_by_alias(src.registry_name, src.alias)
        except Exception as e:  # MlflowException, or connection errors of a remote registry
            raise ServeError(
                f"{src.raw}: cannot resolve alias {src.alias!r} in registry {self.registry_uri}: "
                f"{_first_line(e)}"
            ) from None
        return str(mv.version)

    def fetch(self, src: ModelSource, version: str | None) -> Path:
        """A local checkpoint for ``src`` (at ``version`` for a registry model)."""
        if src.path is not None:
            if src.path.is_dir():
                return _local_dir(src.path, src.raw)
            return src.path
        assert src.registry_name is not None and version is not None
        uri = f"models:/{src.registry_name}/{version}"
        dst = self.cache_dir / _safe(src.registry_name) / version
        if not dst.exists() or not any(dst.rglob(BEST_MODEL)):
            dst.mkdir(parents=True, exist_ok=True)
            from mlflow.artifacts import download_artifacts

            try:
                # models:/ URIs are resolved by MLflow 3.17 against the *global* registry URI
                # (ModelsArtifactRepository._get_model_uri_infos ignores registry_uri; mlflow PR
                # #18313), so resolve the version's artifact location with our own client.
                where = self._mlflow_client().get_model_version_download_uri(src.registry_name, version)
                download_artifacts(artifact_uri=where, dst_path=str(dst), tracking_uri=self.tracking_uri)
            except Exception as e:
                raise ServeError(
                    f"{uri}: download from {self.registry_uri} failed: {_first_line(e)}"
                ) from None
        return find_best_model(dst, uri)

    def discard(self, src: ModelSource, version: str | None) -> None:
        """Delete a replaced version's download (requests still using it hold it in memory)."""
        if src.registry_name is not None and version is not None:
            shutil.rmtree(self.cache_dir / _safe(src.registry_name) / version, ignore_errors=True)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


@dataclass(frozen=True)
class LoadedModel:
    name: str
    source: ModelSource
    version: str | None
    checkpoint: Path
    synthesizer: Synthesizer
    loaded_at: float

    @property
    def sample_rate(self) -> int | None:
        sr = getattr(self.synthesizer, "sample_rate", None)
        return int(sr) if sr is not None else None


class ModelStore:
    """The served models by public name. Each swap replaces the whole dict (one reference
    assignment), so a request that took a model keeps it until it is done, with no lock.

    ``poll_once`` reloads every alias-following model whose alias moved; ``start_polling`` runs it
    every ``interval_s`` in a thread that waits on an Event (``stop`` returns at once).
    """

    def __init__(
        self,
        sources: dict[str, ModelSource],
        resolver: ModelResolver,
        loader: SynthesizerLoader,
        on_reload: Callable[[str, str], None] = lambda name, outcome: None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.sources, self._resolver, self._loader = dict(sources), resolver, loader
        self._on_reload, self._clock = on_reload, clock or time.time
        self.models: dict[str, LoadedModel] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed: dict[str, tuple[str | None, float]] = {}  # name -> (version, when)

    def _load(self, name: str, src: ModelSource, version: str | None) -> LoadedModel:
        path = self._resolver.fetch(src, version)
        try:
            synth = self._loader(path)
        except TtsopsError as e:  # CheckpointError names the file already
            raise ServeError(str(e)) from e
        except Exception as e:
            raise ServeError(f"{src.raw}: cannot load {path}: {_first_line(e)}") from e
        logger.info("model %s loaded from %s (version %s)", name, path, version or "-")
        return LoadedModel(name, src, version, path, synth, self._clock())

    def load_all(self) -> None:
        self.models = {
            name: self._load(name, src, self._resolver.current_version(src))
            for name, src in self.sources.items()
        }

    def poll_once(self) -> list[str]:
        """Reload the models whose alias moved; returns their names. A failure keeps the old model
        and that version is not tried again for ``RETRY_FAILED_S`` (the alias moving again is)."""
        reloaded = []
        for name, current in list(self.models.items()):
            if not current.source.follows_alias:
                continue
            try:
                version = self._resolver.current_version(current.source)
                if version == current.version or self._recently_failed(name, version):
                    continue
                logger.info("%s moved: version %s -> %s", current.source.raw, current.version, version)
                new = self._load(name, current.source, version)
            except ServeError as e:
                logger.warning("reload of %s failed, still serving version %s: %s", name, current.version, e)
                self._failed[name] = (version, self._clock())
                self._on_reload(name, "failed")
                continue
            self.models = {**self.models, name: new}
            self._failed.pop(name, None)
            self._resolver.discard(current.source, current.version)
            self._on_reload(name, "ok")
            reloaded.append(name)
        return reloaded

    def _recently_failed(self, name: str, version: str | None) -> bool:
        failed = self._failed.get(name)
        return failed is not None and failed[0] == version and self._clock() - failed[1] < RETRY_FAILED_S

    def start_polling(self, interval_s: float) -> None:
        if not any(s.follows_alias for s in self.sources.values()):
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._poll_loop, args=(interval_s,), name="model-reload", daemon=True
        )
        self._thread.start()

    def _poll_loop(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                self.poll_once()
            except Exception:  # never let the poller die silently
                logger.exception("model reload poll failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
