"""The connector plugins a worker can run, found by Connect's names for them.

Connect accepts a connector class by its full name, its simple name, or its simple name
without the ``Connector`` suffix (``org.apache.kafka.connect.file.FileStreamSourceConnector``,
``FileStreamSourceConnector``, ``FileStreamSource``); an unknown name is Connect's error,
"Failed to find any class that implements Connector and which name matches ...".
"""
from __future__ import annotations

import logging
from typing import Callable, Iterable

from streamsql.runtime.connect.api import ConnectException, Plugin
from streamsql.runtime.connect.file import VERSION as FILE_VERSION
from streamsql.runtime.connect.file import FileStreamSinkConnector, FileStreamSourceConnector

log = logging.getLogger(__name__)


def plugin(class_name: str, connector: type, version: str) -> Plugin:
    """A plugin with Connect's aliases: the simple name, and without "Connector"."""
    simple = class_name.rsplit(".", 1)[-1]
    aliases = (simple,) + ((simple[:-len("Connector")],) if simple.endswith("Connector") else ())
    return Plugin(class_name, connector, version, aliases)


def builtin_plugins() -> list[Plugin]:
    """The connectors built into streamsql."""
    return [
        plugin("org.apache.kafka.connect.file.FileStreamSinkConnector", FileStreamSinkConnector, FILE_VERSION),
        plugin("org.apache.kafka.connect.file.FileStreamSourceConnector", FileStreamSourceConnector, FILE_VERSION),
    ]


class PluginRegistry:
    """Plugins by class name and alias. ``add`` registers more (the JDBC connectors);
    ``more``, if given, is called once, when the plugins are first looked at, for plugins
    whose modules are worth importing only then."""

    def __init__(self, plugins: Iterable[Plugin] | None = None,
                 more: Callable[[], Iterable[Plugin]] | None = None) -> None:
        self._plugins: list[Plugin] = []
        self._more = more
        for p in builtin_plugins() if plugins is None else plugins:
            self.add(p)

    def add(self, p: Plugin) -> None:
        self._plugins = [q for q in self._plugins if q.class_name != p.class_name] + [p]
        self._plugins.sort(key=lambda q: q.class_name)

    def _load(self) -> None:
        more, self._more = self._more, None
        if more is not None:
            for p in more():
                self.add(p)

    def plugins(self) -> list[Plugin]:
        self._load()
        return list(self._plugins)

    def find(self, name: str) -> Plugin:
        self._load()
        name = (name or "").strip()
        for p in self._plugins:
            if p.class_name == name:
                return p
        matches = [p for p in self._plugins if name in p.aliases]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise ConnectException(
                f"More than one connector matches alias {name}. Please use full package and class "
                f"name instead. Classes found: {', '.join(p.class_name for p in matches)}")
        available = ", ".join(
            f"PluginDesc{{klass=class {p.class_name}, name='{p.class_name}', version='{p.version}', "
            f"encodedVersion={p.version}, type={p.type}, typeName='{p.type}', location='classpath'}}"
            for p in self._plugins)
        raise ConnectException(f"Failed to find any class that implements Connector and which name "
                               f"matches {name}, available connectors are: {available}")


def _jdbc_plugins() -> Iterable[Plugin]:
    """The JDBC connectors (``streamsql.runtime.connect.jdbc.PLUGINS``): imported when first
    needed (their database drivers are not light), and left out, logged, if they cannot be."""
    try:
        from streamsql.runtime.connect import jdbc
    except Exception:  # noqa: BLE001 - a broken optional plugin must not take the others down
        log.exception("the JDBC connectors could not be loaded")
        return ()
    return tuple(getattr(jdbc, "PLUGINS", ()))


def default_registry() -> PluginRegistry:
    """The built-in plugins, the JDBC connectors among them."""
    return PluginRegistry(more=_jdbc_plugins)
