"""``KEY=VALUE`` command-line options (``-A``, ``-M``, ``-D``, ``-T``, ...): one parser for every command."""

from __future__ import annotations


def parse_key_values(items: list[str], what: str) -> dict:
    """``["a=1", "b.c=x"]`` -> ``{"a": 1, "b.c": "x"}``, each value read as YAML (numbers such as
    ``1e-4`` as floats); a ConfigError naming ``what`` for an item without ``=`` or a bad value."""
    import yaml

    from ..errors import ConfigError

    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"{what} {item!r} must look like KEY=VALUE")
        k, v = item.split("=", 1)
        try:
            value = yaml.safe_load(v)
            if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string; users mean a number
                try:
                    value = float(value)
                except ValueError:
                    pass
            out[k.strip()] = value
        except yaml.YAMLError as exc:
            raise ConfigError(f"{what} {item!r}: cannot parse value ({exc})") from None
    return out
