"""Reading and writing photos (Pillow), finding them on disk, and naming the outputs.

Every photo enters the library through `read_image`, which returns RGB uint8 (H, W, 3) with the EXIF orientation
already applied, whatever the file held (16-bit, CMYK, palette, grayscale, alpha, first frame of an animation).
Every photo leaves through `write_image`, which writes atomically, never clobbers an existing file unless asked,
and by default writes no metadata at all. A JPEG written back as JPEG keeps its source's quantisation tables and
chroma subsampling (`JpegEncoding`): the same look and about the same file size, and the blocks facecloak did not
touch come back within rounding of the original (a fixed quality re-quantises every block).

Metadata policy (privacy first, because facecloak's outputs are meant to be shared):

- Default: nothing from the source is written: no EXIF (so no GPS, camera serial, EXIF thumbnail of the
  unprotected original), no XMP (it may hold GPS and named face regions), no IPTC, no comments, no ICC profile.
  Dropping the ICC profile is privacy-neutral but viewers then assume sRGB, so wide-gamut photos (Display P3,
  Adobe RGB) look slightly less saturated. That is the price of the safe default.
- ``keep_metadata=True``: the source's EXIF is written back with Orientation reset to 1 (the pixels are already
  upright), without the GPS IFD (unless ``keep_gps=True``), without the MakerNote (vendor data that may name
  recognised faces and whose internal offsets break when rewritten) and without the EXIF thumbnail (Pillow never
  writes IFD1; it would show the unprotected face). The ICC profile is kept when it describes RGB data. XMP is
  never written, because it may duplicate GPS and name the people in the photo.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import threading
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageOps, JpegImagePlugin, UnidentifiedImageError

from facecloak.errors import ConfigError, ImageError
from facecloak.files import atomic_path

DEFAULT_MAX_PIXELS = 100_000_000
"""Largest photo (width x height) `read_image` decodes unless told otherwise: 100 MP, about 300 MB as RGB."""

SUPPORTED_SUFFIXES: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".heic", ".heif"}
)
"""File name suffixes (lower case) that `list_images` picks up in folders."""



@dataclass(frozen=True)
class OutputFormat:
    """A format `write_image` produces: the suffix `output_path_for` gives it and its media type (for downloads)."""

    suffix: str
    media_type: str


WRITE_FORMATS: dict[str, OutputFormat] = {
    "JPEG": OutputFormat(".jpg", "image/jpeg"), "PNG": OutputFormat(".png", "image/png"),
    "WEBP": OutputFormat(".webp", "image/webp"), "TIFF": OutputFormat(".tif", "image/tiff"),
    "HEIF": OutputFormat(".heic", "image/heic"),
}  # fmt: skip
"""Output formats `write_image` can produce, keyed by Pillow format name."""
_FORMAT_ALIASES: dict[str, str] = {"JPG": "JPEG", "TIF": "TIFF", "HEIC": "HEIF"}
_SUFFIX_FORMATS: dict[str, str] = {
    ".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".jfif": "JPEG", ".png": "PNG", ".webp": "WEBP",
    ".tif": "TIFF", ".tiff": "TIFF", ".heic": "HEIF", ".heif": "HEIF",
}  # fmt: skip
_FORMATS_WITH_ALPHA = frozenset({"PNG", "WEBP", "TIFF", "HEIF"})
_FORMATS_WITH_EXIF = frozenset({"JPEG", "PNG", "WEBP", "TIFF", "HEIF"})
DEFAULT_JPEG_QUALITY = 95
"""JPEG/WebP/HEIF quality when neither the caller nor a JPEG source says otherwise."""

# ISO-BMFF brands of HEIF/HEIC files (bytes 8..12 after "ftyp"), to say "install pillow-heif" instead of
# "not an image" when the opener is missing.
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"})

_EXIF_ORIENTATION = 0x0112
_EXIF_MAKERNOTE = 0x927C
_HEIF_INSTALL_HINT = "install HEIC support with `pip install 'facecloak[heif]'` (pillow-heif)"

# Pillow's own bomb limit is a module global; raising it for one read must not race another thread's read.
_PIL_LIMIT_LOCK = threading.Lock()


@dataclass(frozen=True)
class JpegEncoding:
    """How a colour JPEG was encoded, as seen upright: its quantisation tables (Pillow's `qtables`: natural order,
    one per colour component Y, Cb, Cr, a shared chroma table listed once) and chroma subsampling (Pillow's code:
    0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0)."""

    qtables: tuple[tuple[int, ...], ...]
    subsampling: int


_TRANSPOSED_BY_ORIENTATION = frozenset({5, 6, 7, 8})  # EXIF orientations whose upright view swaps rows and columns


def _jpeg_encoding(image: Image.Image) -> JpegEncoding | None:
    """The encoding of a three-component (YCbCr) JPEG, in the upright orientation `read_image` returns, else None
    (greyscale or CMYK JPEGs, odd layouts: those are written at the default quality instead). Multi-picture files
    (MPO, as many cameras write) are JPEGs too."""
    if not isinstance(image, JpegImagePlugin.JpegImageFile) or image.mode != "RGB":
        return None
    tables, layer = getattr(image, "quantization", None), getattr(image, "layer", None)
    subsampling = JpegImagePlugin.get_sampling(image)
    if not tables or not layer or len(layer) != 3 or subsampling not in (0, 1, 2):
        return None
    if any(component[3] not in tables for component in layer):
        return None
    # Pillow writes component i with table i (the last one given serves the rest): list them per component.
    per_component = [tuple(tables[component[3]]) for component in layer]
    if image.getexif().get(_EXIF_ORIENTATION, 1) in _TRANSPOSED_BY_ORIENTATION:
        if subsampling == 1:  # upright, 4:2:2 would be 4:4:0, which Pillow cannot write
            return None
        per_component = [tuple(np.array(t).reshape(8, 8).T.ravel().tolist()) for t in per_component]
    while len(per_component) > 1 and per_component[-1] == per_component[-2]:
        per_component.pop()
    return JpegEncoding(tuple(per_component), subsampling)


@dataclass(frozen=True, eq=False)
class Photo:
    """A decoded photo and the metadata `write_image` may carry over.

    `rgb` is uint8 RGB (H, W, 3), EXIF orientation applied; `alpha` is uint8 (H, W), in the same orientation, or
    None when the file had no transparency. Treat both arrays as read-only. `format` is Pillow's name of the file
    format ('JPEG', 'PNG', ...); `mode` is the Pillow mode the file decoded to before conversion ('I;16', 'CMYK',
    'P', ...); `n_frames` counts frames/pages (only the first is read). `exif` holds the raw EXIF block as found
    (orientation not yet reset), `icc_profile` the raw ICC profile only when it describes RGB data, `xmp` the raw
    XMP packet (kept for inspection; `write_image` never writes it). `jpeg_encoding` is how a colour JPEG was
    encoded (None for anything else); `write_image` reuses it when it writes the photo back as JPEG.
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    format: str
    mode: str
    source_path: Path
    n_frames: int = 1
    exif: bytes | None = None
    icc_profile: bytes | None = None
    xmp: bytes | None = None
    jpeg_encoding: JpegEncoding | None = None

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])


# --------------------------------------------------------------------------------------------------- reading


def read_image(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Photo:
    """Decode the first frame of the photo at `path` into a `Photo` (RGB uint8, upright).

    The declared size is checked against `max_pixels` from the header, before any pixel is decoded, so a
    decompression bomb costs nothing. Raises `ImageError` with a one-line message for anything unreadable.
    """
    path = Path(path)
    if max_pixels < 1:
        raise ConfigError(f"max_pixels must be positive, got {max_pixels}")
    _check_readable_file(path)
    with _pil_pixel_limit(max_pixels), warnings.catch_warnings():
        # We enforce our own limit below; Pillow's warning between its soft and hard limit is noise. A damaged
        # EXIF block is dropped on writing anyway (see `clean_exif`), so Pillow's "Corrupt EXIF data" is noise too.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        warnings.filterwarnings("ignore", message="(?i).*corrupt exif", category=UserWarning)
        try:
            with _open(path) as image:
                _check_declared_size(path, image.size, max_pixels)
                return _decode(path, image)
        except ImageError:
            raise
        except Image.DecompressionBombError as exc:
            raise ImageError(
                f"{path}: refused as a possible decompression bomb ({exc}); {_raise_limit_hint(max_pixels)}"
            ) from None
        except MemoryError:
            raise ImageError(f"{path}: not enough memory to decode this photo") from None
        except ValueError as exc:
            if "decompressed data too large" in str(exc).lower():  # Pillow's guard on PNG text/ICC chunks
                raise ImageError(
                    f"{path}: refused, a metadata chunk inflates past Pillow's safety limit (a possible "
                    "decompression bomb in the PNG text or colour-profile data), not damaged pixels"
                ) from None
            raise ImageError(f"{path}: cannot decode, file damaged or truncated ({_one_line(exc)})") from None
        except Exception as exc:
            # Decoders (libjpeg, zlib, libtiff, ...) raise OSError, SyntaxError, ValueError, EOFError, struct.error
            # and more on damaged files; the user only needs to know the file is damaged, in one line.
            raise ImageError(f"{path}: cannot decode, file damaged or truncated ({_one_line(exc)})") from None


def _check_readable_file(path: Path) -> None:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except OSError as exc:  # a symlink loop (ELOOP), a permission problem on the way, ...
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise ImageError(f"{path}: is a folder, not a photo")
    size = info.st_size
    if size == 0:
        raise ImageError(f"{path}: empty file (0 bytes), not a photo")


def _open(path: Path) -> Image.Image:
    """Image.open with one-line errors; registers the HEIF opener only when a HEIF file shows up."""
    heif = _looks_like_heif(path)
    if heif:
        _register_heif_opener()
    try:
        return Image.open(path)
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not a photo format facecloak can read (is it really an image?)") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None


def _looks_like_heif(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            head = handle.read(12)
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror})") from None
    return len(head) == 12 and head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS


def _register_heif_opener() -> None:
    try:
        import pillow_heif  # type: ignore[import-not-found]
    except ImportError:
        raise ImageError(f"this photo is HEIC/HEIF; {_HEIF_INSTALL_HINT}") from None
    pillow_heif.register_heif_opener()  # idempotent


@contextlib.contextmanager
def _pil_pixel_limit(max_pixels: int) -> Iterator[None]:
    """Let Pillow decode up to `max_pixels` when that is above its own hard limit (2 x MAX_IMAGE_PIXELS).

    Pillow re-checks its global limit while seeking and loading tiles, so raising our limit alone would not let
    a user decode a 300 MP panorama. The global is only touched in that rare case, under a lock.
    """
    pil_limit = Image.MAX_IMAGE_PIXELS
    if pil_limit is None or max_pixels <= 2 * pil_limit:
        yield
        return
    with _PIL_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _check_declared_size(path: Path, size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise ImageError(f"{path}: declares an empty image ({width}x{height} pixels)")
    if width * height > max_pixels:
        raise ImageError(
            f"{path}: refused, declares {width}x{height} = {width * height:,} pixels, more than the limit of "
            f"{max_pixels:,}; {_raise_limit_hint(max_pixels)}"
        )


def _raise_limit_hint(max_pixels: int) -> str:
    return f"if the photo is genuine, raise max_pixels above {max_pixels:,}"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _decode(path: Path, image: Image.Image) -> Photo:
    n_frames = int(getattr(image, "n_frames", 1))
    if n_frames > 1:
        image.seek(0)
    # LOAD_TRUNCATED_IMAGES is a global another library may have switched on; a truncated photo must fail here,
    # not come out half grey.
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise ImageError(
            f"{path}: PIL.ImageFile.LOAD_TRUNCATED_IMAGES is switched on; facecloak refuses to read photos "
            "that way because truncated files would decode half grey"
        )
    image.load()
    file_format = image.format or "UNKNOWN"
    exif = image.info.get("exif")
    xmp = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp")
    icc = image.info.get("icc_profile")
    mode = image.mode

    upright = ImageOps.exif_transpose(image)
    rgb, alpha, icc_is_applied = _to_rgb_alpha(upright, icc)
    # A grey or CMYK profile would be wrong for the RGB pixels we return; an applied CMYK profile is spent.
    keep_icc = isinstance(icc, bytes) and _icc_colour_space(icc) == b"RGB " and not icc_is_applied
    return Photo(
        rgb=rgb,
        alpha=alpha,
        format=file_format,
        mode=mode,
        source_path=path,
        n_frames=n_frames,
        exif=exif if isinstance(exif, bytes) and exif else None,
        icc_profile=icc if keep_icc else None,
        xmp=xmp.encode("utf-8") if isinstance(xmp, str) else (xmp if isinstance(xmp, bytes) else None),
        jpeg_encoding=_jpeg_encoding(image),
    )


def _icc_colour_space(icc: bytes) -> bytes:
    """The data colour space signature of an ICC profile (header bytes 16..20): b'RGB ', b'GRAY', b'CMYK', ..."""
    return icc[16:20] if len(icc) >= 20 else b""


def _to_rgb_alpha(image: Image.Image, icc: bytes | None) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """Convert any Pillow mode to (rgb uint8 HxWx3, alpha uint8 HxW or None, whether `icc` was applied)."""
    mode = image.mode
    if mode.startswith("I") or mode == "F":
        grey = _high_depth_to_uint8(np.asarray(image), mode)
        return np.repeat(grey[:, :, None], 3, axis=2), None, False
    if mode == "CMYK":
        return _cmyk_to_rgb(image, icc)
    has_alpha = mode in {"RGBA", "LA", "PA", "RGBa", "La"} or "transparency" in image.info
    converted = image.convert("RGBA" if has_alpha else "RGB")
    array = np.asarray(converted, dtype=np.uint8)
    if has_alpha:
        return np.ascontiguousarray(array[:, :, :3]), np.ascontiguousarray(array[:, :, 3]), False
    return np.ascontiguousarray(array), None, False


def _high_depth_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """16-bit ('I;16*'), 32-bit int ('I', read as 16-bit range) or float ('F') grey levels to uint8, rounded.

    Pillow gives 16-bit grey PNG/TIFF as 'I;16'; 32-bit 'I' comes from TIFF and is clipped to the 16-bit range
    (what 16-bit data widened to 'I' holds). Float data in [0, 1] is scaled by 255, other floats are clipped to
    0..255, as float TIFFs carry no declared range.
    """
    if mode == "F":
        floats = values.astype(np.float64)
        finite = floats[np.isfinite(floats)]
        scale = 255.0 if finite.size and finite.min() >= 0.0 and finite.max() <= 1.0 else 1.0
        return np.clip(np.nan_to_num(floats * scale), 0, 255).round().astype(np.uint8)
    wide = np.clip(values.astype(np.int64), 0, 65535)
    # Round-to-nearest x * 255 / 65535, so 0 -> 0, 65535 -> 255 and 257 * k -> k exactly.
    return ((wide * 255 + 32767) // 65535).astype(np.uint8)


def _cmyk_to_rgb(image: Image.Image, icc: bytes | None) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """CMYK -> sRGB through the embedded CMYK profile when there is one (print files), else Pillow's naive formula."""
    if icc is not None and _icc_colour_space(icc) == b"CMYK":
        try:
            from io import BytesIO

            from PIL import ImageCms

            source = ImageCms.ImageCmsProfile(BytesIO(icc))
            srgb = ImageCms.createProfile("sRGB")
            converted = ImageCms.profileToProfile(image, source, srgb, outputMode="RGB")
            if converted is not None:
                return np.ascontiguousarray(np.asarray(converted, dtype=np.uint8)), None, True
        except Exception:
            # A damaged or unsupported profile only costs colour accuracy; fall through to the naive conversion.
            pass
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8)), None, False


# --------------------------------------------------------------------------------------------------- writing


def write_image(
    path: str | os.PathLike[str],
    rgb: np.ndarray,
    *,
    alpha: np.ndarray | None = None,
    format: str | None = None,
    jpeg_quality: int | None = None,
    keep_metadata: bool = False,
    keep_gps: bool = False,
    source: Photo | None = None,
    overwrite: bool = False,
) -> Path:
    """Write `rgb` (uint8 RGB, H x W x 3) to `path` atomically and return the path.

    `format` is a Pillow format name ('JPEG', 'PNG', 'WEBP', 'TIFF', 'HEIF'; 'JPG'/'TIF'/'HEIC' accepted), taken
    from the suffix when None. `alpha` (uint8 H x W) is written by PNG/WebP/TIFF/HEIF; JPEG has no alpha channel,
    so there it is dropped and the RGB values are written as they are (no compositing onto a background).
    `jpeg_quality` (1..100) is used by JPEG, WebP and HEIF. When it is None, a JPEG `source` written as JPEG keeps
    its quantisation tables and chroma subsampling (see the module docstring); otherwise the quality is
    `DEFAULT_JPEG_QUALITY` and JPEG is written with 4:4:4 chroma, so small coloured fills survive. Metadata (see
    the module docstring) comes from `source` only when `keep_metadata`.

    The file appears complete or not at all: it is written to a temporary file in the same folder, fsynced, and
    then linked into place, which fails if `path` exists (so two concurrent runs cannot clobber each other);
    with `overwrite=True` it replaces `path`. The temporary file is removed on any error, Ctrl-C included.
    Missing parent folders are created.
    """
    path = Path(path)
    file_format = _resolve_format(path, format)
    rgb, alpha = _check_pixels(rgb, alpha)
    if keep_gps and not keep_metadata:
        raise ConfigError("keep_gps only applies together with keep_metadata (the default writes no metadata)")
    _check_quality(jpeg_quality)
    if not overwrite and os.path.lexists(path):
        raise ImageError(f"{path}: already exists; choose another output or allow overwriting")
    if file_format == "HEIF":
        _register_heif_opener()

    image = _to_pil(rgb, alpha if file_format in _FORMATS_WITH_ALPHA else None)
    params = _save_params(file_format, jpeg_quality, source)
    if keep_metadata and source is not None:
        params.update(_metadata_params(source, file_format, keep_gps=keep_gps))

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ImageError(f"{path.parent}: cannot create the output folder ({exc.strerror})") from None
    _atomic_save(path, image, file_format, params, overwrite=overwrite)
    return path


def round_trip(
    rgb: np.ndarray,
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    jpeg_quality: int | None = None,
    source: Photo | None = None,
) -> np.ndarray:
    """`rgb` encoded exactly as `write_image` would write it to `path` (format, quality or the source's JPEG
    encoding, chroma) and decoded again, in memory: the pixels a recogniser would get from that file."""
    file_format = _resolve_format(Path(path), format)
    rgb, _ = _check_pixels(rgb, None)
    _check_quality(jpeg_quality)
    buffer = io.BytesIO()
    _to_pil(rgb, None).save(buffer, format=file_format, **_save_params(file_format, jpeg_quality, source))
    with Image.open(io.BytesIO(buffer.getvalue())) as image:
        return np.asarray(image.convert("RGB"))


def _resolve_format(path: Path, format: str | None) -> str:
    if format is None:
        found = _SUFFIX_FORMATS.get(path.suffix.lower())
        if found is None:
            raise ImageError(
                f"{path}: cannot tell the output format from the suffix {path.suffix!r}; "
                f"use one of {', '.join(sorted(_SUFFIX_FORMATS))} or pass a format"
            )
        return found
    name = format.upper().lstrip(".")
    name = _FORMAT_ALIASES.get(name, name)
    if name not in WRITE_FORMATS:
        raise ConfigError(f"unsupported output format {format!r}; choose one of {', '.join(WRITE_FORMATS)}")
    return name


def written_format(read_format: str) -> str:
    """The format a protected copy of a photo decoded as `read_format` (`Photo.format`) is written in by default:
    its own; a camera's multi-picture JPEG (MPO) as a plain JPEG; PNG for what facecloak reads but does not write
    (GIF, BMP, ...)."""
    name = "JPEG" if read_format == "MPO" else read_format
    return name if name in WRITE_FORMATS else "PNG"


def _check_pixels(rgb: np.ndarray, alpha: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ImageError(f"write_image needs uint8 RGB of shape (H, W, 3), got {rgb.dtype} {rgb.shape}")
    if alpha is not None and (alpha.dtype != np.uint8 or alpha.shape != rgb.shape[:2]):
        raise ImageError(f"alpha must be uint8 of shape {rgb.shape[:2]}, got {alpha.dtype} {alpha.shape}")
    return np.ascontiguousarray(rgb), None if alpha is None else np.ascontiguousarray(alpha)


def _to_pil(rgb: np.ndarray, alpha: np.ndarray | None) -> Image.Image:
    # uint8 (H, W, 3) becomes RGB and (H, W, 4) RGBA; Pillow >= 11.3 deprecates passing `mode`.
    return Image.fromarray(rgb if alpha is None else np.dstack([rgb, alpha]))


def _check_quality(quality: int | None) -> None:
    if quality is not None and not 1 <= quality <= 100:
        raise ConfigError(f"jpeg_quality must be in 1..100, got {quality}")


def _save_params(file_format: str, quality: int | None, source: Photo | None = None) -> dict[str, object]:
    encoding = source.jpeg_encoding if source is not None and quality is None else None
    quality = DEFAULT_JPEG_QUALITY if quality is None else quality
    if file_format == "JPEG":
        if encoding is not None:  # the source's own tables: its look and size, untouched blocks nearly unchanged
            return {"qtables": [list(t) for t in encoding.qtables], "subsampling": encoding.subsampling,
                    "optimize": True}
        # subsampling=0 is 4:4:4: the default 4:2:0 halves chroma resolution and smears one-pixel fills.
        return {"quality": quality, "subsampling": 0, "optimize": True}
    if file_format in {"WEBP", "HEIF"}:
        return {"quality": quality}
    if file_format == "TIFF":
        return {"compression": "tiff_deflate"}
    return {}


def _metadata_params(source: Photo, file_format: str, *, keep_gps: bool) -> dict[str, object]:
    params: dict[str, object] = {}
    if source.exif is not None and file_format in _FORMATS_WITH_EXIF:
        exif_bytes = clean_exif(source.exif, keep_gps=keep_gps)
        if exif_bytes is not None:
            params["exif"] = exif_bytes
    if source.icc_profile is not None:
        params["icc_profile"] = source.icc_profile
    return params


def clean_exif(raw: bytes, *, keep_gps: bool) -> bytes | None:
    """The EXIF block to write back: Orientation=1, no GPS IFD unless `keep_gps`, no MakerNote, no thumbnail.

    Returns None when the block cannot be parsed (a damaged block is dropped rather than copied blindly).
    """
    exif = Image.Exif()
    try:
        exif.load(raw)
    except Exception:
        return None
    if not keep_gps:
        # Delete before anything calls get_ifd(GPS): a cached GPS dict would be written back by Exif.tobytes.
        exif.pop(ExifTags.IFD.GPSInfo, None)
    if _EXIF_ORIENTATION in exif:
        exif[_EXIF_ORIENTATION] = 1
    if ExifTags.IFD.Exif in exif:
        exif.get_ifd(ExifTags.IFD.Exif).pop(_EXIF_MAKERNOTE, None)
    try:
        return exif.tobytes()
    except Exception:
        return None


def _atomic_save(
    path: Path, image: Image.Image, file_format: str, params: dict[str, object], *, overwrite: bool
) -> None:
    """Encode `image` through `facecloak.files.atomic_path` (linked into place unless `overwrite`); every failure
    becomes one `ImageError` line."""
    try:
        with atomic_path(path, overwrite=overwrite) as tmp, tmp.open("wb") as handle:
            image.save(handle, format=file_format, **params)
    except FileExistsError:
        raise ImageError(f"{path}: already exists (written by another run meanwhile); not overwritten") from None
    except (OSError, ValueError) as exc:  # disk full, permissions, encoder refusing the data
        raise ImageError(f"{path}: cannot write ({_one_line(exc)})") from None


# --------------------------------------------------------------------------------------------------- finding


@dataclass(frozen=True)
class InputImage:
    """A photo found by `find_images` and the root its output path is mirrored from."""

    path: Path
    root: Path


def find_images(
    paths: Iterable[str | os.PathLike[str]], *, recursive: bool = False, follow_symlinks: bool = False
) -> list[InputImage]:
    """Photos named by `paths` (files or folders), each with its root, sorted by path, without duplicates.

    A named file is always taken (its root is its folder) and must have a supported suffix, otherwise
    `ImageError` (a photo is never dropped silently). In a named folder, files with a suffix in
    `SUPPORTED_SUFFIXES` (any case) are taken, hidden files and folders (name starting with '.') are not;
    sub-folders only when `recursive`. Without `follow_symlinks`, symlinked files whose target lies outside the
    named folder are skipped and symlinked folders are not entered (which also rules out loops).
    """
    found: dict[Path, InputImage] = {}
    for raw in paths:
        given = Path(raw)
        if given.is_dir():
            for file in _walk_folder(given, recursive=recursive, follow_symlinks=follow_symlinks):
                found.setdefault(file, InputImage(file, given))
        elif given.is_file():
            if given.suffix.lower() not in SUPPORTED_SUFFIXES:
                raise ImageError(
                    f"{given}: unsupported file type {given.suffix!r}; "
                    f"supported: {', '.join(sorted(SUPPORTED_SUFFIXES))}"
                )
            found.setdefault(given, InputImage(given, given.parent))
        else:
            raise ImageError(f"{given}: no such file or folder")
    return [found[key] for key in sorted(found)]


def list_images(
    paths: Iterable[str | os.PathLike[str]], recursive: bool = False, follow_symlinks: bool = False
) -> list[Path]:
    """The paths of `find_images` (same rules), sorted."""
    return [item.path for item in find_images(paths, recursive=recursive, follow_symlinks=follow_symlinks)]


def _walk_folder(root: Path, *, recursive: bool, follow_symlinks: bool) -> Iterator[Path]:
    real_root = root.resolve()
    seen_folders: set[Path] = set()
    pending = [root]
    while pending:
        folder = pending.pop()
        real_folder = folder.resolve()
        if real_folder in seen_folders:  # a symlink loop or two links to one folder
            continue
        seen_folders.add(real_folder)
        try:
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError as exc:
            raise ImageError(f"{folder}: cannot list ({exc.strerror})") from None
        for entry in entries:
            if entry.name.startswith("."):
                continue
            entry_path = Path(entry.path)
            is_link = entry.is_symlink()
            try:
                entry.stat(follow_symlinks=True)
            except FileNotFoundError:
                continue  # a dangling link, or removed while we walk: nothing to protect
            except OSError:
                # A symlink loop or an entry we may not look at: hand it on, so it is reported as failed with its
                # reason while the rest of the batch goes on.
                yield entry_path
                continue
            if entry.is_dir(follow_symlinks=True):
                if recursive and (not is_link or follow_symlinks):
                    pending.append(entry_path)
                continue
            if not entry.is_file(follow_symlinks=True) or entry_path.suffix.lower() not in SUPPORTED_SUFFIXES:
                continue
            if is_link and not follow_symlinks and not entry_path.resolve().is_relative_to(real_root):
                continue
            yield entry_path


def output_path_for(
    input: str | os.PathLike[str],
    root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    suffix: str = "_protected",
    format: str | None = None,
) -> Path:
    """Where the output of `input` goes: `out_dir` / (input's path relative to `root`), stem + `suffix`.

    The suffix of the name follows `format` when given ('JPEG' -> '.jpg', ...) and is kept otherwise. Raises
    `ImageError` when `input` is not under `root`, when the result would land outside `out_dir` (through '..'
    or a symlinked folder inside `out_dir`), or when it would be the input itself.
    """
    input_path = Path(os.path.abspath(input))
    root_path = Path(os.path.abspath(root))
    out_path = Path(os.path.abspath(out_dir))
    if root_path.is_file():
        root_path = root_path.parent
    try:
        relative = input_path.relative_to(root_path)
    except ValueError:
        raise ImageError(f"{input}: not inside the input folder {root}") from None
    if any(part == ".." for part in relative.parts) or not relative.parts:
        raise ImageError(f"{input}: not inside the input folder {root}")
    if "/" in suffix or "\\" in suffix or suffix in {".", ".."}:
        raise ConfigError(f"output suffix {suffix!r} must not contain path separators")
    extension = input_path.suffix if format is None else WRITE_FORMATS[_resolve_format(input_path, format)].suffix
    name = f"{input_path.stem}{suffix}{extension}"
    result = out_path / relative.parent / name
    # Lexically inside (no '..') and physically inside (no symlinked folder under out_dir pointing elsewhere).
    if not Path(os.path.abspath(result)).is_relative_to(out_path) or not result.resolve().is_relative_to(
        out_path.resolve()
    ):
        raise ImageError(f"{input}: its output {result} would land outside the output folder {out_dir}")
    if result.resolve() == input_path.resolve():
        raise ImageError(f"{input}: the output path is the input itself; use another output folder or suffix")
    return result
