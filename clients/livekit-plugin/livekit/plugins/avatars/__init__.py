"""LiveKit Agents plugin for this avatar platform: ``avatars.AvatarSession(...).start(agent_session, room)``."""
from .avatar import AvatarSession, AvatarsException
from .version import __version__

__all__ = ["AvatarSession", "AvatarsException", "__version__"]
