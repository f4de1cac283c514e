"""Units shared by every layer: image sizes (width x height), dtypes, bytes.

One parser per unit, so the same text means the same thing wherever it is typed:

* **Sizes** are written and read ``WxH`` -- width first, as image tools print them -- on the command
  line, in recipes, in JSON output, in variant ids and in reports, and stored as separate ``width``
  and ``height`` fields. In Python a size is a :class:`Size` (a named tuple ``(width, height)``); a
  bare ``(a, b)`` tuple is refused where a size is expected, because it cannot say which side is which.
* **Dtypes** have one canonical short name each (``fp32``, ``bf16``, ``fp16``) and accept the usual
  aliases (``float32``, ``bfloat16``, ``half``, ...); :func:`parse_dtype` is the only dtype parser
  (also of ``auto`` and, for GPU peaks, ``tf32``, where the caller allows them).
* **Byte sizes** accept SI and IEC suffixes (``24GiB``, ``80GB``, ``512MiB``).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from uhd_profile.errors import UhdProfileError

if TYPE_CHECKING:  # torch is imported on first use of a torch dtype: parsing names needs none (a light command line)
    import torch

# --------------------------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------------------------

NATIVE = "native"
"""The word that stands for a tower's native input size wherever a resolution is accepted."""

_SIZE_TEXT = re.compile(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*")


class Size(NamedTuple):
    """An image or view size in pixels: ``Size(width, height)``; ``str(size)`` is ``"WxH"``."""

    width: int
    height: int

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def area(self) -> int:
        """Pixels (width * height)."""
        return self.width * self.height

    @classmethod
    def square(cls, side: int) -> Size:
        return cls(side, side)


def _positive(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def parse_size(value: Any, what: str = "size") -> Size:
    """A :class:`Size` from ``"WxH"`` text, a ``Size``, or a ``{"width": W, "height": H}`` mapping.

    Anything else -- notably a bare two-element tuple or list, which cannot say which side is the
    width -- is a one-line ``UhdProfileError`` naming ``what``, the value and the valid forms.
    """
    if isinstance(value, Size):
        w, h = value
    elif isinstance(value, str) and _SIZE_TEXT.fullmatch(value):
        m = _SIZE_TEXT.fullmatch(value)
        assert m is not None
        w, h = int(m.group(1)), int(m.group(2))
    elif isinstance(value, dict) and set(value) == {"width", "height"}:
        w, h = value["width"], value["height"]
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        raise UhdProfileError(
            f"{what} {list(value)!r} is ambiguous (width x height or height x width?); write it as "
            f'"WxH" (width first, e.g. "{value[0]}x{value[1]}" is {value[0]} wide) or {{width = ..., height = ...}}'
        )
    else:
        raise UhdProfileError(f'{what} {value!r} is not valid; give "WxH" in pixels, width first (e.g. "1344x756")')
    if not (_positive(w) and _positive(h)):
        raise UhdProfileError(f"{what} {w!r}x{h!r} (width x height) is not valid; both sides must be positive integers (pixels)")
    return Size(int(w), int(h))


def parse_resolution(value: Any, what: str = "resolution") -> Size | None:
    """A resolution as users type it: ``"native"`` (None: the tower's native size), a side ``R``
    (int or digits: a square), or a size in any form :func:`parse_size` accepts."""
    if value is None or value == NATIVE:
        return None
    if isinstance(value, bool):
        pass
    elif isinstance(value, int):
        if value > 0:
            return Size.square(value)
    elif isinstance(value, str) and value.strip().isdigit():
        side = int(value)
        if side > 0:
            return Size.square(side)
    elif isinstance(value, (str, Size, dict, tuple, list)):
        return parse_size(value, what)
    raise UhdProfileError(
        f'{what} {value!r} is not valid; give a positive side R (square), "WxH" (width first, e.g. 1344x756) or "native"'
    )


# --------------------------------------------------------------------------------------------
# Dtypes
# --------------------------------------------------------------------------------------------


class _TorchDtypes(Mapping[str, "torch.dtype"]):
    """Canonical dtype name -> torch dtype; the names are known without importing torch, which is
    imported when a torch dtype is first looked up."""

    _ATTRS = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}

    def __getitem__(self, name: str) -> torch.dtype:
        import torch

        return getattr(torch, self._ATTRS[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self._ATTRS)

    def __len__(self) -> int:
        return len(self._ATTRS)

    def __contains__(self, name: object) -> bool:
        return name in self._ATTRS

    def __repr__(self) -> str:
        return f"DTYPES({', '.join(self._ATTRS)})"


DTYPES: Mapping[str, torch.dtype] = _TorchDtypes()
"""Canonical dtype name -> torch dtype (fp32, bf16, fp16)."""
DTYPE_ALIASES: dict[str, str] = {
    "fp32": "fp32",
    "float32": "fp32",
    "float": "fp32",
    "f32": "fp32",
    "bf16": "bf16",
    "bfloat16": "bf16",
    "fp16": "fp16",
    "float16": "fp16",
    "half": "fp16",
    "f16": "fp16",
}
"""Every accepted spelling -> its canonical name."""


AUTO_DTYPE = "auto"
"""The dtype word that lets the device decide (a recipe's ``dtypes``, ``bench --dtype auto``):
resolved by ``uhd_profile.measure.dtypes.choose_dtype``."""
TF32 = "tf32"
"""Not a storage dtype: fp32 matmuls on TF32 tensor cores (only a GPU peak has it)."""
_TF32_ALIASES = ("tf32", "tensorfloat32")


def parse_dtype(value: Any, what: str = "dtype", *, auto: bool = False, tf32: bool = False) -> str:
    """The canonical name (``fp32``/``bf16``/``fp16``) of a dtype given by name, alias or ``torch.dtype``.

    The one dtype parser of uhd-profile. ``auto=True`` also accepts ``"auto"`` (returned as is: the
    caller resolves it, see ``uhd_profile.measure.dtypes``); ``tf32=True`` also accepts ``"tf32"``
    (GPU peaks). Anything else is a one-line ``UhdProfileError`` naming ``what``, the value and the
    valid names.
    """
    loaded = sys.modules.get("torch")  # a torch.dtype exists only once torch is imported
    if loaded is not None and isinstance(value, loaded.dtype):
        for name, dt in DTYPES.items():
            if dt == value:
                return name
    elif isinstance(value, str):
        text = value.strip().lower()
        if text in DTYPE_ALIASES:
            return DTYPE_ALIASES[text]
        if tf32 and text in _TF32_ALIASES:
            return TF32
        if auto and text == AUTO_DTYPE:
            return AUTO_DTYPE
    valid = [*DTYPES, *([TF32] if tf32 else []), *([AUTO_DTYPE] if auto else [])]
    raise UhdProfileError(f"{what} {value!r} is not valid; valid: {', '.join(valid)} (or float32, bfloat16, float16, half)")


def torch_dtype(value: Any) -> torch.dtype:
    """The ``torch.dtype`` of a dtype name or alias."""
    return DTYPES[parse_dtype(value)]


def dtype_bytes(value: Any) -> int:
    """Bytes per element of a dtype given by name or alias."""
    import torch

    return torch.empty((), dtype=torch_dtype(value)).element_size()


# --------------------------------------------------------------------------------------------
# Byte sizes
# --------------------------------------------------------------------------------------------

_BYTE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_BYTES_TEXT = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")


def parse_bytes(value: Any, what: str = "size") -> int:
    """Bytes from ``24GiB``, ``80GB``, ``512MiB``, ``1e9``-style integers or plain numbers."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str):
        m = _BYTES_TEXT.fullmatch(value)
        if m and m.group(2).lower() in _BYTE_UNITS:
            n = float(m.group(1)) * _BYTE_UNITS[m.group(2).lower()]
            if n >= 1:
                return int(n)
    raise UhdProfileError(f"{what} {value!r} is not valid; give a positive byte size such as 24GiB, 80GB or 512MiB")


def format_bytes(n: int | float | None) -> str:
    """``1.5 GiB``-style rendering (IEC units); ``n/a`` for None."""
    if n is None:
        return "n/a"
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:,.2f} {unit}"
    return f"{int(n)} B"
