"""A stateful Slack double: its Web API, response_urls and file uploads on loopback HTTP, and the
signed requests Slack sends to an app.

`SlackDouble` keeps what Slack would show (state.py), answers the Web API over it (webapi.py) and
serves both on 127.0.0.1 (wsgi.py); `SlackSender` is the other direction (sender.py). It needs
only the project's own dependencies, so the terminal console (`backupbot demo`) imports it too.
"""

from bot.sandbox.slack.sender import Response, SlackSender
from bot.sandbox.slack.state import Event, Message, RecordedCall, RecordedResponse
from bot.sandbox.slack.wsgi import SlackDouble

__all__ = [
    "Event",
    "Message",
    "RecordedCall",
    "RecordedResponse",
    "Response",
    "SlackDouble",
    "SlackSender",
]
