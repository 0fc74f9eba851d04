"""Frozen records at zero import cost: a stand-in for ``@dataclass(frozen=True)`` (``dataclasses``
imports ``inspect``: ~8 ms per ``arca-runtime create`` and per TD start); modules import
``dataclasses`` only under ``TYPE_CHECKING``, for mypy. Supported: fields in order, defaults and
``field(default_factory=...)``, positional/keyword construction, ``==``/``hash``/``repr``, frozen
attributes; not field inheritance, ``__post_init__``, ``ClassVar`` or ``dataclasses.replace``
(the host's :func:`arca._internal.records.replace`). For mypy these names *are*
``dataclasses``' (the ``TYPE_CHECKING`` branch at the end): importers write one import."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class _Factory:
    __slots__ = ("make",)

    def __init__(self, make: Any) -> None:
        self.make = make


def _field(*, default_factory: Any) -> Any:
    return _Factory(default_factory)


def _dataclass(*, frozen: bool = True) -> Any:
    assert frozen, "only frozen records"

    def wrap(cls: Any) -> Any:
        names = tuple(cls.__dict__.get("__annotations__", {}))
        defaults = {n: cls.__dict__[n] for n in names if n in cls.__dict__}
        name = cls.__name__

        def __init__(self: Any, *args: Any, **kw: Any) -> None:
            if len(args) > len(names):
                raise TypeError(f"{name}() takes at most {len(names)} arguments")
            values = dict(zip(names, args, strict=False))
            for k, v in kw.items():
                if k not in names or k in values:
                    raise TypeError(f"{name}() got an unexpected or repeated argument {k!r}")
                values[k] = v
            for n in names:
                if n not in values:
                    if n not in defaults:
                        raise TypeError(f"{name}() missing required argument {n!r}")
                    d = defaults[n]
                    values[n] = d.make() if isinstance(d, _Factory) else d
                object.__setattr__(self, n, values[n])

        def __setattr__(self: Any, key: str, value: Any = None) -> None:
            raise AttributeError(f"cannot assign to field {key!r} of frozen {name}")

        def astuple(self: Any) -> tuple[Any, ...]:
            return tuple(getattr(self, n) for n in names)

        for n, d in defaults.items():
            if isinstance(d, _Factory):
                delattr(cls, n)
        cls.__record_fields__ = names
        cls.__init__ = __init__
        cls.__setattr__ = cls.__delattr__ = __setattr__
        cls.__eq__ = lambda a, b: (astuple(a) == astuple(b) if type(a) is type(b)
                                   else NotImplemented)
        cls.__hash__ = lambda a: hash(astuple(a))
        cls.__repr__ = lambda a: f"{name}({', '.join(f'{n}={getattr(a, n)!r}' for n in names)})"
        return cls

    return wrap


if TYPE_CHECKING:
    from dataclasses import dataclass as dataclass
    from dataclasses import field as field
else:
    dataclass, field = _dataclass, _field
