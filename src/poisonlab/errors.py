"""Exceptions that mean *the user asked for something wrong* (bad name, bad value, bad file).

The CLI turns every :class:`PoisonlabError` into a one-paragraph message and exit code 2;
anything else is a bug and keeps its traceback.
"""


class PoisonlabError(Exception):
    """Base class of errors caused by user input (never by a bug)."""


class ConfigError(PoisonlabError, ValueError):
    """An invalid configuration value or an unknown configuration key."""


class UnknownNameError(ConfigError, KeyError):
    """A name (dataset, model, attack, defense) that no registry knows."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class PluginError(PoisonlabError):
    """A plugin (a package registering a component through a ``poisonlab.*`` entry point) failed to
    load or to register; the message names the entry point and its distribution."""


class DataError(PoisonlabError):
    """A missing, corrupt, truncated or malformed data file."""


class UnsupportedError(PoisonlabError, TypeError):
    """A component cannot work on this model or data (its mathematics or architecture does not
    allow it, e.g. the box gauge on a non-linear model); raised before any work starts."""


class ContractError(PoisonlabError, RuntimeError):
    """An attack or defense returned something that breaks its published contract."""


class DivergenceError(PoisonlabError, RuntimeError):
    """An iterative attack or solver left the finite range (non-finite parameters or objective)
    even after its safeguards; the message names the setting to change. Checkpoints written before
    it stay on disk, so a run can resume with the changed setting."""
