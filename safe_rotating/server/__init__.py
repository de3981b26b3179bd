"""``safe-rotating-server``: receive log records over the network, write them with rotation."""

from .app import Server
from .cli import main
from .config import ConfigError, ServerConfig, build

__all__ = ["ConfigError", "Server", "ServerConfig", "build", "main"]
