"""A command line that Hydra cannot compose, reported as one line before Hydra starts.

Hydra reports an unknown key, a missing config option or a malformed override itself, over
several lines and with exit status 1. The training entry points compose the command line once
beforehand (``imwm.configs.compose_config``, well under a second) and turn such a failure into the
project's one line, ``imwm: error: <key>: <what>``, with exit status 2. Command lines with Hydra's
own flags (``-m``, ``--cfg``, ``--help``, ...) go to Hydra untouched.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from imwm.errors import ConfigError

__all__ = ["check_command_line"]

_MISSING_OPTION = re.compile(r"Could not find '([^']+)'")


def check_command_line(argv: Sequence[str], *, config_name: str) -> None:
    """Composes ``argv`` as Hydra would; a failure becomes a :class:`~imwm.errors.ConfigError`.

    Args:
        argv: the command-line overrides (``sys.argv[1:]``).
        config_name: ``"config"`` (``imwm-train``) or ``"train_vta"`` (``imwm-train-vta``).

    Raises:
        ConfigError: naming the override's key, with Hydra's explanation joined into one line.

    Example:
        >>> check_command_line(["preset=debug", "seed=3"], config_name="config")
        >>> check_command_line(["agent.nokey=3"], config_name="config")
        Traceback (most recent call last):
        ...
        imwm.errors.ConfigError: agent.nokey: Could not override 'agent.nokey'. To append to your config use +agent.nokey=3
        >>> check_command_line(["preset=nope"], config_name="config")
        Traceback (most recent call last):
        ...
        imwm.errors.ConfigError: preset: no config option 'nope' (available: atari, atari100k, catch, debug, laptop)
    """
    if any(arg.startswith("-") for arg in argv):
        return
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from imwm.configs import compose_config

    try:
        compose_config(list(argv), config_name=config_name, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as err:
        raise _as_config_error(err, argv) from None


def _as_config_error(err: BaseException, argv: Sequence[str]) -> ConfigError:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if "Config search path:" in lines:  # where Hydra looked: the same for every error, not the news
        lines = lines[: lines.index("Config search path:")]
    missing = _MISSING_OPTION.search(lines[0]) if lines else None
    if missing and "/" in missing.group(1):
        group, option = missing.group(1).rsplit("/", 1)
        options = [line for line in lines[1:] if not line.startswith("Available options")]
        return ConfigError(group, f"no config option {option!r} (available: {', '.join(options)})")
    return ConfigError(_key_of(err, argv), " ".join(lines) or type(err).__name__)


def _key_of(err: BaseException, argv: Sequence[str]) -> str:
    """The full key Hydra names, else the first override whose key its message mentions."""
    full_key = getattr(err.__cause__, "full_key", None)
    if full_key:
        return str(full_key)
    for arg in argv:
        key = arg.split("=", 1)[0].lstrip("+~")
        if key and key in str(err):
            return key
    return "command line"
