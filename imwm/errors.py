"""User errors: what a person typed or pointed at is wrong, so the answer is one line, not a traceback.

- :class:`UserError` is the base of every error caused by the user's input (config, command line,
  files); modules subclass it (or raise :class:`ConfigError`) for errors a user can fix.
- :class:`ConfigError` (also a ``ValueError``) names the full dotted config key and the value:
  ``str(ConfigError("replay.curious.beta", "must be in (0, 1]", 2.0))`` is
  ``"replay.curious.beta: must be in (0, 1] (got 2.0)"``.
- :func:`user_errors` / :func:`run_main` wrap a script's main: a user error prints exactly one
  line ``imwm: error: <message>`` to stderr and exits with status 2. With ``IMWM_DEBUG=1`` (or
  ``HYDRA_FULL_ERROR=1``) the error is re-raised with its full traceback.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np

__all__ = [
    "NOTHING",
    "ConfigError",
    "UserError",
    "config_keys",
    "debug_requested",
    "format_user_error",
    "check_integer",
    "is_integer",
    "run_main",
    "unknown_keys",
    "user_errors",
]

EXIT_STATUS = 2  # argparse's status for usage errors
DEBUG_VARS = ("IMWM_DEBUG", "HYDRA_FULL_ERROR")


class _Nothing:
    """Marks "no value given" (``None`` is a value a config can hold)."""

    def __repr__(self) -> str:
        return "NOTHING"

    def __reduce__(self):
        return "NOTHING"


NOTHING: Any = _Nothing()


class UserError(Exception):
    """An error in the user's input (config, command line, files): reported as one line by scripts.

    Example:
        >>> class RunNotFound(UserError):  # a module's own error that the user can fix
        ...     pass
        >>> format_user_error(RunNotFound("no checkpoint in runs/x")), issubclass(ConfigError, UserError)
        ('imwm: error: no checkpoint in runs/x', True)
    """


class ConfigError(UserError, ValueError):
    """A bad config value, named by its full dotted key: ``"<key>: <what> (got <value>)"``.

    Attributes:
        key: the full dotted config key (``"replay.curious.beta"``; several joined by ``", "``).
        what: what is wrong, phrased to follow the key (``"must be in (0, 1]"``).
        got: the offending value, or :data:`NOTHING` when none applies.

    Example:
        >>> err = ConfigError("beta", "must be in (0, 1]", 2.0)
        >>> str(err), str(err.under("replay.curious"))
        ('beta: must be in (0, 1] (got 2.0)', 'replay.curious.beta: must be in (0, 1] (got 2.0)')
        >>> str(ConfigError("replay.capacity", "is required")), isinstance(err, ValueError)
        ('replay.capacity: is required', True)
    """

    def __init__(self, key: str, what: str, got: Any = NOTHING):
        self.key, self.what, self.got = str(key), str(what), got
        text = f"{self.key}: {self.what}"
        if got is not NOTHING:
            text += f" (got {got!r})"
        super().__init__(text)

    def __reduce__(self):  # picklable although __init__ takes more than the message
        args = (self.key, self.what) if self.got is NOTHING else (self.key, self.what, self.got)
        return (type(self), args)

    def under(self, prefix: str) -> "ConfigError":
        """The same error with ``prefix.`` put in front of the key (``max_seg_len`` -> ``vta.max_seg_len``)."""
        keys = ", ".join(f"{prefix}.{k}" for k in self.key.split(", "))
        return ConfigError(keys, self.what, self.got)


def unknown_keys(prefix: str, unknown: list[str], valid: Any, *, where: str | None = None) -> ConfigError:
    """The error for config keys nothing reads: each named ``<prefix>.<key>``, the valid ones listed.

    Args:
        prefix: the section's dotted key (``""`` for keys named in full already).
        unknown: the unknown keys, as they should be listed.
        valid: what to list as valid (shown as given, e.g. a sorted list).
        where: the words between "valid" and the list; default ``" keys of <prefix>"``.

    Example:
        >>> str(unknown_keys("replay", ["fracz"], ["batch_size", "fracs"]))
        "replay.fracz: unknown config key; valid keys of replay: ['batch_size', 'fracs']"
    """
    keys = [f"{prefix}.{k}" if prefix else str(k) for k in unknown]
    what = "unknown config key" + ("s" if len(keys) > 1 else "")
    where = f" keys of {prefix}" if where is None else where
    return ConfigError(", ".join(keys), f"{what}; valid{where}: {valid}")


_BARE = re.compile(r"^(?P<name>[A-Za-z_][\w.]*) (?P<what>(?:must|should|cannot|needs?) .*?)(?:, got (?P<got>.*))?$",
                   re.DOTALL)


@contextmanager
def config_keys(prefix: str, given: Mapping[str, Any] | None = None) -> Iterator[None]:
    """Gives errors raised inside the block the full config key ``prefix.<name>``.

    A :class:`ConfigError` with a bare key (no dot: raised by a class that does not know where its
    options sit in the config) gets ``prefix.`` in front. A plain ``ValueError`` whose message
    starts with one of the ``given`` keyword names (``"beta must be in (0, 1], got 2.0"``) becomes
    ``ConfigError("<prefix>.beta", "must be in (0, 1]", 2.0)``; any other error passes unchanged.

    Example:
        >>> with config_keys("replay.curious", given={"beta": 2.0}):
        ...     raise ValueError("beta must be in (0, 1], got 2.0")
        Traceback (most recent call last):
        ...
        imwm.errors.ConfigError: replay.curious.beta: must be in (0, 1] (got 2.0)
    """
    try:
        yield
    except ConfigError as err:
        if "." in err.key:  # already a full key
            raise
        raise err.under(prefix) from err
    except ValueError as err:
        match = _BARE.match(str(err))
        name = match["name"] if match else None
        if name and name.startswith(f"{prefix}."):
            name = name[len(prefix) + 1:]
        if name is None or given is None or name not in given:
            raise
        raise ConfigError(f"{prefix}.{name}", match["what"], given[name]) from err


def is_integer(value: Any, minimum: int | None = None) -> bool:
    """True for an ``int`` or NumPy integer that is ``>= minimum`` (any, when ``minimum`` is None).

    Bools, floats (``4.0`` too), strings and None are not integers: a count or a size written as
    one of them is a typo more often than an intent, and passing it on would fail later, further
    from the key that holds it.

    Example:
        >>> [is_integer(v, 1) for v in (3, np.int64(3), 0, True, 3.0, "3", None)]
        [True, True, False, False, False, False, False]
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        return False
    return minimum is None or bool(value >= minimum)


def check_integer(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an ``int``, or a one-line ``ValueError`` naming ``name`` (see :func:`is_integer`).

    Inside :func:`config_keys` the error names the full config key.

    Example:
        >>> check_integer("horizon", 15)
        15
        >>> check_integer("horizon", 1.5)
        Traceback (most recent call last):
        ...
        ValueError: horizon must be an integer >= 1, got 1.5
    """
    if not is_integer(value, minimum):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is a ``bool``, or a one-line ``ValueError`` naming ``name``.

    A switch given as a string or a number (``"no"``, ``1``) would otherwise read as true or false
    by Python's rules, not by what was meant.

    Example:
        >>> check_bool("obs_reset", False)
        False
        >>> check_bool("obs_reset", "no")
        Traceback (most recent call last):
        ...
        ValueError: obs_reset must be true or false, got 'no'
    """
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def debug_requested() -> bool:
    """Whether ``IMWM_DEBUG`` or ``HYDRA_FULL_ERROR`` asks for full tracebacks.

    Example:
        >>> from unittest import mock
        >>> with mock.patch.dict(os.environ, {"IMWM_DEBUG": "0", "HYDRA_FULL_ERROR": "false"}):
        ...     debug_requested()
        False
        >>> with mock.patch.dict(os.environ, {"IMWM_DEBUG": "1"}):
        ...     debug_requested()
        True
    """
    return any(os.environ.get(var, "").strip().lower() not in ("", "0", "false", "no") for var in DEBUG_VARS)


def format_user_error(err: BaseException) -> str:
    """``imwm: error: <message>`` on one line (a multi-line message is joined with ``"; "``).

    Example:
        >>> format_user_error(ValueError("bad config\\n  see docs/config.md"))
        'imwm: error: bad config; see docs/config.md'
        >>> format_user_error(RuntimeError())  # no message: the type's name
        'imwm: error: RuntimeError'
    """
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return "imwm: error: " + ("; ".join(lines) or type(err).__name__)


@contextmanager
def user_errors(*also: type[BaseException]) -> Iterator[None]:
    """Turns a :class:`UserError` (and any of the exception types in ``also``) raised in the block
    into one line on stderr and exit status 2, unless a debug variable asks for the traceback.

    Example (a Hydra entry point: Hydra would otherwise print its own traceback)::

        @hydra.main(config_path="pkg://imwm.configs", config_name="config", version_base="1.3")
        def main(cfg):
            with user_errors():
                run(cfg)

    Example:
        >>> import contextlib, io, unittest.mock
        >>> no_debug = unittest.mock.patch.dict(os.environ, {"IMWM_DEBUG": "", "HYDRA_FULL_ERROR": ""})
        >>> with contextlib.redirect_stderr(io.StringIO()) as stderr, no_debug, user_errors():
        ...     raise ConfigError("env.task", "must be a string such as 'pong'", 3)
        Traceback (most recent call last):
        ...
        SystemExit: 2
        >>> stderr.getvalue()
        "imwm: error: env.task: must be a string such as 'pong' (got 3)\\n"
    """
    try:
        yield
    except (UserError, *also) as err:
        if debug_requested():
            os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # inside a Hydra task: the complete stack, too
            raise
        sys.stdout.flush()
        print(format_user_error(err), file=sys.stderr, flush=True)
        sys.exit(EXIT_STATUS)


def run_main(main: Callable[..., Any], *args: Any, also: tuple[type[BaseException], ...] = (), **kwargs: Any) -> Any:
    """``main(*args, **kwargs)`` inside :func:`user_errors` (``also``: more exception types to report).

    Example:
        >>> import contextlib, io, unittest.mock
        >>> run_main(max, 3, 5)
        5
        >>> no_debug = unittest.mock.patch.dict(os.environ, {"IMWM_DEBUG": "", "HYDRA_FULL_ERROR": ""})
        >>> with contextlib.redirect_stderr(io.StringIO()) as stderr, no_debug:
        ...     run_main(int, "x", also=(ValueError,))
        Traceback (most recent call last):
        ...
        SystemExit: 2
        >>> stderr.getvalue()
        "imwm: error: invalid literal for int() with base 10: 'x'\\n"
    """
    with user_errors(*also):
        return main(*args, **kwargs)
