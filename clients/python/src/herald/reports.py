"""Building error reports for ``POST /api/v1/errors`` (DESIGN §9) from Python exceptions.

A report is a plain dict::

    {"service", "environment", "level", "message",
     "exception": {"type", "value", "stacktrace": [{"filename", "function", "lineno",
                                                    "in_app", "context_line"}]},
     "request": {"method", "url", "path"}, "user": {"id", "username", "email"},
     "tags", "fingerprint"?, "to"?, "release"?, "server_name"?, "extra"?}

Frames are oldest first (Sentry's order): the last frame is where the exception was raised.
Herald groups reports by ``fingerprint`` or by exception type + the innermost in-app frame.
"""

from __future__ import annotations

import linecache
import os
import sys
import sysconfig
import traceback
from types import TracebackType
from typing import Any, Dict, List, Mapping, Optional, Tuple, Type, Union

#: Frames kept per report (the innermost ones when a traceback is deeper).
MAX_FRAMES = 50
#: Longest ``message`` / exception ``value`` sent, in characters.
MAX_TEXT = 8192

ExcInfo = Tuple[Type[BaseException], BaseException, Optional[TracebackType]]


def _library_dirs() -> Tuple[str, ...]:
    dirs = set()
    for name in ("stdlib", "platstdlib", "purelib", "platlib"):
        try:
            path = sysconfig.get_path(name)
        except KeyError:
            continue
        if path:
            dirs.add(os.path.realpath(path))
    return tuple(sorted(dirs))


_LIBRARY_DIRS = _library_dirs()


def is_in_app(filename: str) -> bool:
    """True for a frame of the application, false for the standard library or an installed package."""
    if not filename or filename.startswith("<"):
        return False
    real = os.path.realpath(filename)
    parts = real.replace("\\", "/").split("/")
    if "site-packages" in parts or "dist-packages" in parts:
        return False
    return not any(real == d or real.startswith(d + os.sep) for d in _LIBRARY_DIRS)


def stack_frames(tb: Optional[TracebackType], limit: int = MAX_FRAMES) -> List[Dict[str, Any]]:
    """The frames of a traceback, oldest first, as report frames (at most ``limit``, innermost kept)."""
    if limit <= 0:
        return []
    walked = list(traceback.walk_tb(tb))[-limit:]
    frames: List[Dict[str, Any]] = []
    for frame, lineno in walked:
        code = frame.f_code
        filename = code.co_filename
        line = linecache.getline(filename, lineno).strip() if filename and lineno else ""
        module = frame.f_globals.get("__name__")
        item: Dict[str, Any] = {
            "filename": filename,
            "function": code.co_name,
            "lineno": lineno,
            "in_app": is_in_app(filename),
            "context_line": line or None,
        }
        if isinstance(module, str) and module:
            item["module"] = module
        frames.append(item)
    return frames


def _clip(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def exception_info(exc: Union[BaseException, ExcInfo, None]) -> Optional[ExcInfo]:
    """Normalises an exception or an ``exc_info`` triple; ``None`` when there is none."""
    if exc is None:
        return None
    if isinstance(exc, BaseException):
        return (type(exc), exc, exc.__traceback__)
    if isinstance(exc, tuple) and len(exc) == 3 and exc[1] is not None:
        return exc
    return None


def exception_payload(exc: Union[BaseException, ExcInfo]) -> Dict[str, Any]:
    """The ``exception`` object of a report: ``{"type", "value", "stacktrace"}``."""
    info = exception_info(exc)
    if info is None:
        raise TypeError("exception_payload needs an exception or an exc_info triple")
    etype, value, tb = info
    module = getattr(etype, "__module__", "") or ""
    qualname = getattr(etype, "__qualname__", etype.__name__)
    try:
        text = str(value)
    except Exception:  # a __str__ that raises must not break reporting
        text = f"<unprintable {qualname}>"
    payload: Dict[str, Any] = {"type": qualname, "value": _clip(text), "stacktrace": stack_frames(tb)}
    if module and module != "builtins":
        payload["module"] = module
    return payload


def build_report(
    exc: Union[BaseException, ExcInfo, None] = None,
    *,
    message: Optional[str] = None,
    service: Optional[str] = None,
    environment: Optional[str] = None,
    level: str = "error",
    request: Optional[Mapping[str, Any]] = None,
    user: Optional[Mapping[str, Any]] = None,
    tags: Optional[Mapping[str, Any]] = None,
    fingerprint: Optional[Union[str, List[str]]] = None,
    to: Optional[Union[str, List[str]]] = None,
    release: Optional[str] = None,
    server_name: Optional[str] = None,
    extra: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    """Assembles a report body; fields that are ``None`` are left out.

    ``message`` defaults to ``"<Type>: <value>"`` of the exception; ``to`` names the
    destinations of the alert (otherwise it is routed by event type ``error.reported``).
    """
    report: Dict[str, Any] = {"level": level}
    info = exception_info(exc)
    if info is not None:
        report["exception"] = exception_payload(info)
        if message is None:
            e = report["exception"]
            message = f"{e['type']}: {e['value']}" if e["value"] else e["type"]
    if message is not None:
        report["message"] = _clip(message)
    if service is not None:
        report["service"] = service
    if environment is not None:
        report["environment"] = environment
    if request:
        report["request"] = {k: v for k, v in request.items() if v is not None}
    if user:
        cleaned = {k: (str(v) if k == "id" else v) for k, v in user.items() if v is not None}
        if cleaned:
            report["user"] = cleaned
    if tags:
        report["tags"] = {str(k): str(v) for k, v in tags.items()}
    if fingerprint is not None:
        report["fingerprint"] = fingerprint
    if to is not None:
        report["to"] = [to] if isinstance(to, str) else list(to)
    if release is not None:
        report["release"] = release
    if server_name is not None:
        report["server_name"] = server_name
    if extra:
        report["extra"] = dict(extra)
    return report


def current_exc_info() -> Optional[ExcInfo]:
    """``sys.exc_info()`` when an exception is being handled, else ``None``."""
    info = sys.exc_info()
    if info[0] is None or info[1] is None:
        return None
    return (info[0], info[1], info[2])
