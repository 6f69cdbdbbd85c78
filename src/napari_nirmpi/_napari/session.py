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
        # name -> {"misfit": held-out misfit of the kept checkpoint or None, "problem": version}
        self.field_info: dict[str, dict] = {}
        self.problem_version = 0

    def set_problem(self, problem, info: dict) -> None:
        self.problem, self.problem_info = problem, dict(info)
        self.problem_version += 1
        self.problem_changed.emit()

    def add_field(self, name: str, fld, misfit: float | None = None) -> str:
        base, i = name, 2
        while name in self.fields:
            name, i = f"{base} [{i}]", i + 1
        self.fields[name] = fld
        self.field_info[name] = {"misfit": None if misfit is None else float(misfit),
                                 "problem": self.problem_version}
        self.fields_changed.emit()
        return name

    def better_field(self, name: str) -> str | None:
        """The field trained on the same problem with the lowest held-out misfit, if it is lower
        than `name`'s; else None. Misfits of different problems (rows, SNR threshold) are not
        comparable, and fields without one (loaded checkpoints) are never ranked."""
        me = self.field_info.get(name, {})
        if me.get("misfit") is None:
            return None
        rivals = [(info["misfit"], n) for n, info in self.field_info.items()
                  if n != name and n in self.fields and info.get("misfit") is not None
                  and info.get("problem") == me.get("problem")]
        if not rivals:
            return None
        best_misfit, best = min(rivals)
        return best if best_misfit < me["misfit"] else None

    def preferred_field(self) -> str | None:
        """The field a new Sample should use: the newest one, unless an earlier run on the same
        problem has a lower held-out misfit (a second, worse run must not replace it silently)."""
        if not self.fields:
            return None
        newest = list(self.fields)[-1]
        return self.better_field(newest) or newest


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
