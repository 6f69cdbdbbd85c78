"""State shared by the dock widgets of one viewer: the current Problem and the trained fields.

Keyed by the viewer's hash, which napari defines as id(viewer) and which its PublicOnlyProxy
forwards, so every dock widget of one viewer (proxied or not) sees the same session.
"""

from __future__ import annotations

import weakref
from typing import Any

from psygnal import Signal


class Session:
    problem_changed = Signal()
    fields_changed = Signal()

    def __init__(self):
        self.problem: Any = None          # napari_nirmpi.Problem
        self.problem_info: dict = {}      # JSON-able parameters that built it
        self.fields: dict[str, Any] = {}  # name -> nir Field, newest last

    def set_problem(self, problem, info: dict) -> None:
        self.problem, self.problem_info = problem, dict(info)
        self.problem_changed.emit()

    def add_field(self, name: str, fld) -> str:
        base, i = name, 2
        while name in self.fields:
            name, i = f"{base} [{i}]", i + 1
        self.fields[name] = fld
        self.fields_changed.emit()
        return name


_SESSIONS: dict[int, Session] = {}


def _unproxied(viewer):
    """The real viewer behind napari's PublicOnlyProxy (a wrapt proxy), for weak references."""
    try:
        return object.__getattribute__(viewer, "__wrapped__")
    except AttributeError:
        return viewer


def get_session(viewer) -> Session:
    key = hash(viewer)
    if key not in _SESSIONS:
        _SESSIONS[key] = Session()
        # drop it with its viewer: ids are reused, so a later viewer must not inherit it
        try:
            weakref.finalize(_unproxied(viewer), _SESSIONS.pop, key, None)
        except TypeError:  # not weak-referenceable: keep until drop_session
            pass
    return _SESSIONS[key]


def drop_session(viewer) -> None:
    _SESSIONS.pop(hash(viewer), None)
