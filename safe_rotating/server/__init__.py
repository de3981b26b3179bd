"""``safe-rotating-server``: receive log records over the network, write them with rotation."""

from safe_rotating.server.app import Server
from safe_rotating.server.cli import main
from safe_rotating.server.config import ConfigError, ServerConfig
from safe_rotating.server.settings import build

__all__ = ["ConfigError", "Server", "ServerConfig", "build", "main"]
