"""The browser page of an export directory: a static folder that translates with no server
beyond static files, through ONNX Runtime Web and SentencePiece's own C++ in WebAssembly.

The two runtimes come from the npm registry at pinned versions, each tarball checked against
its pinned sha512 and kept in a cache, so that a folder is written offline once they are there.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .manifest import MANIFEST, PRECISIONS, ExportError, read_manifest

PAGE = Path(__file__).with_name("web")  # index.html and translate.js
PAGE_FILES = ("index.html", "translate.js")
RUNTIME = "runtime.json"  # the npm packages and versions in a folder, shown by the page


@dataclass(frozen=True)
class NpmPackage:
    """One pinned npm package and the files of it that a page folder needs."""

    name: str
    version: str
    integrity: str  # the registry's dist.integrity: sha512 of the tarball, base64
    files: dict[str, str]  # path in the tarball -> path in the page folder

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def tarball(self) -> str:
        return f"{self.name.lstrip('@').replace('/', '-')}-{self.version}.tgz"


ONNXRUNTIME_WEB = NpmPackage(
    "onnxruntime-web",
    "1.31.1",
    "sha512-5GeH+bWQ+HxM10z7erGlsWqryrwMbSvm/1tkIsKTT48g0fI19VXVVC435t4t7VsPdSQeS7NmuZPXrQ73k82URw==",
    {  # the CPU (WebAssembly) build only: its module with the loader bundled in (as .js, a
        # type every static server sends as JavaScript, as modules need), and the binary
        "package/dist/ort.wasm.bundle.min.mjs": "ort/ort.wasm.bundle.min.js",
        "package/dist/ort-wasm-simd-threaded.wasm": "ort/ort-wasm-simd-threaded.wasm",
    },
)
# SentencePiece's C++ compiled by Emscripten (embind), the model parsed and applied by
# SentencePiece itself: its pieces are SentencePiece's, normalisation included
SENTENCEPIECE_WASM = NpmPackage(
    "@agnai/sentencepiece-js",
    "1.1.1",
    "sha512-h2+XPrJVLuVLl+2+3iZPWcTw6Fs2NNulnxyh7LoI1hzHHib1wDC6KTmTrDJlLq7/lr5QFYpeMz2rlTFQrS0C0g==",
    {
        "package/dist/index.js": "sentencepiece/sentencepiece.js",
        "package/LICENSE": "sentencepiece/LICENSE",
    },
)
NPM_PACKAGES = (ONNXRUNTIME_WEB, SENTENCEPIECE_WASM)


class WebError(ExportError):
    """A page folder that cannot be written: no npm, no registry, a tarball that fails its
    check, a folder in the way."""


def npm_cache() -> Path:
    """Where the checked tarballs are kept: $TRANSLATE_NPM_CACHE, else the user's cache."""
    if os.environ.get("TRANSLATE_NPM_CACHE"):
        return Path(os.environ["TRANSLATE_NPM_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "translate" / "npm"


def _integrity(path: Path) -> str:
    digest = hashlib.sha512(path.read_bytes()).digest()
    return "sha512-" + base64.b64encode(digest).decode("ascii")


def npm_tarball(package: NpmPackage, cache: Path | None = None) -> Path:
    """The package's tarball, from the cache or else fetched with ``npm pack``; refused in one
    line when npm is missing, the registry cannot be reached, or the sha512 differs."""
    cache = cache or npm_cache()
    path = cache / package.tarball
    if path.is_file() and _integrity(path) == package.integrity:
        return path
    npm = shutil.which("npm")
    if npm is None:
        raise WebError(
            f"writing the page needs npm to fetch {package.spec} from the npm registry "
            "(apt-get install npm), or the tarball in " + str(cache)
        )
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        done = subprocess.run(
            [npm, "pack", package.spec, "--pack-destination", tmp, "--silent"],
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=600,
        )
        fetched = Path(tmp) / package.tarball
        if done.returncode != 0 or not fetched.is_file():
            why = (done.stderr.strip().splitlines() or ["no tarball written"])[-1]
            raise WebError(f"npm could not fetch {package.spec}: {why}")
        if _integrity(fetched) != package.integrity:
            raise WebError(f"{package.spec} from the registry is not the pinned tarball (sha512)")
        os.replace(fetched, path)  # whole or not at all: a cached tarball is a checked one
    return path


def _unpack(package: NpmPackage, tarball: Path, out_dir: Path) -> None:
    with tarfile.open(tarball, "r:gz") as archive:
        for member, target in package.files.items():
            source = archive.extractfile(member)
            if source is None:
                raise WebError(f"{package.spec} has no {member}")
            destination = out_dir / target
            destination.parent.mkdir(parents=True, exist_ok=True)
            with source, open(destination, "wb") as sink:
                shutil.copyfileobj(source, sink)


def write_runtime(out_dir: Path, cache: Path | None = None) -> None:
    """The page's own files and the two runtimes, into ``out_dir`` (which must exist): all a
    folder needs besides a model."""
    for name in PAGE_FILES:
        shutil.copyfile(PAGE / name, out_dir / name)
    for package in NPM_PACKAGES:
        _unpack(package, npm_tarball(package, cache), out_dir)
    versions = {package.name: package.version for package in NPM_PACKAGES}
    (out_dir / RUNTIME).write_text(json.dumps(versions, indent=2) + "\n", encoding="utf-8")


def prepare_web(out_dir: str | Path, cache: Path | None = None) -> None:
    """Refuse, before any work (such as an export), what would stop :func:`write_web`: an
    output folder that is not new or empty, no npm, a runtime that cannot be fetched."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise WebError(f"{out_dir} exists and is not an empty folder; name a new one")
    for package in NPM_PACKAGES:
        npm_tarball(package, cache)


def write_web(
    export_dir: str | Path,
    out_dir: str | Path,
    precision: str = "int8",
    cache: Path | None = None,
) -> Path:
    """A static folder that translates in the browser: the page, the export's graphs of one
    ``precision`` (int8: the smallest download) and SentencePiece model(s), its manifest
    (naming those graphs only) and the runtimes.

    ``out_dir`` must not exist or be empty; the folder is written beside it and renamed into
    place, so that no half-written folder is left."""
    if precision not in PRECISIONS:
        raise WebError(f"precision {precision!r}: one of {', '.join(PRECISIONS)}")
    prepare_web(out_dir, cache)
    manifest = read_manifest(export_dir)
    graphs = {name: manifest.graph_path(precision, name) for name in ("encoder", "step")}
    spm = sorted(set(manifest.spm_paths()))
    for path in [*graphs.values(), *spm]:
        if not path.is_file():
            raise ExportError(f"{manifest.folder} is incomplete: {path.name} is missing")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        write_runtime(tmp, cache)
        for path in [*graphs.values(), *spm]:
            shutil.copyfile(path, tmp / path.name)
        data = dict(manifest.data)
        data["graphs"] = {precision: {name: path.name for name, path in graphs.items()}}
        text = json.dumps(data, indent=2) + "\n"
        (tmp / MANIFEST).write_text(text, encoding="utf-8")
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide the folder from a web server's user
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def folder_size(folder: str | Path) -> tuple[int, int]:
    """Bytes of a folder's files as stored, and as sent by a server that gzips them."""
    raw = zipped = 0
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            raw += len(data)
            zipped += len(gzip.compress(data, compresslevel=6))
    return raw, zipped
