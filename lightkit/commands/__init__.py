"""lightkit's own subcommands next to LightningCLI's fit/validate/test/predict.

Each command is a module with ``run(argv: list[str]) -> int`` (the exit code) and, when it reads
options from the same YAML a user fits with, ``add_arguments(parser)``: that adds a section (e.g.
``plot_schedule:``) to every LightkitCLI parser, so one config file serves ``fit`` and the command.
Commands that need the model, data and trainer build them with :func:`lightkit.commands.build`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["COMMANDS", "command_module", "config_commands"]

# name -> module; listed explicitly so that importing lightkit.cli imports nothing else.
COMMANDS: dict[str, str] = {
    "plot_schedule": "lightkit.commands.plot_schedule",
    "show_augmentations": "lightkit.commands.show_augmentations",
    "search": "lightkit.commands.search",
    "lr_find": "lightkit.commands.lr_find",
    "sanity": "lightkit.commands.sanity",
    "export": "lightkit.commands.export",
    "prepare": "lightkit.commands.prepare",
}
# Commands whose options live in a config section (their module has add_arguments).
_CONFIG_SECTIONS: tuple[str, ...] = ("plot_schedule", "show_augmentations", "lr_find", "sanity")


def command_module(name: str) -> ModuleType:
    return importlib.import_module(COMMANDS[name])


def config_commands() -> list[ModuleType]:
    return [command_module(name) for name in _CONFIG_SECTIONS]
