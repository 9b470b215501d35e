"""Config system: YAML files with ``_base_`` inheritance, ``KEY=VALUE`` overrides and a typed schema."""

from .loader import config_from_dict, load_config, parse_override
from .schema import Config, ConfigError, Section

__all__ = ["Config", "ConfigError", "Section", "config_from_dict", "load_config", "parse_override"]
