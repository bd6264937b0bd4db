"""The seed's stack as the peer of benchmarks/scale.py: Django Channels on daphne with channels_redis.

A one-file Django project: the seed's chat consumer (join the room's group on connect, ``group_send``
each message, forward group messages to the socket), nothing stored. ``benchmarks/scale.py`` installs
the pinned versions into a venv of their own and runs ``daphne channels_peer:application`` with
``PEER_REDIS`` set. Not imported by chatkit.
"""

import json
import os

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="benchmark-only",
    ALLOWED_HOSTS=["*"],
    INSTALLED_APPS=["channels"],
    CHANNEL_LAYERS={
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [os.environ.get("PEER_REDIS", "redis://127.0.0.1:6379/0")],
                "capacity": 100_000,
            },
        }
    },
)
django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import re_path  # noqa: E402


class ChatConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        self.group = "chat_" + self.scope["url_route"]["kwargs"]["room"]
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        data = json.loads(text_data)
        await self.channel_layer.group_send(
            self.group, {"type": "chat.message", "message": data.get("message", "")}
        )

    async def chat_message(self, event):
        await self.send(
            text_data=json.dumps({"type": "message", "message": event["message"], "is_user": True})
        )


application = ProtocolTypeRouter(
    {
        "websocket": URLRouter([re_path(r"^ws/chat/(?P<room>[\w-]+)/$", ChatConsumer.as_asgi())]),
    }
)
