"""The world the console runs in: the real bot (`build_app`, the same waitress server, signed
requests to `/slack/events`) between the Slack double and the provider simulator, on loopback,
with a fresh SQLite database in a temporary directory that is removed on close."""

from __future__ import annotations

import logging
import secrets
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import NamedTuple

from bot.app import BackupBot, build_app
from bot.config import Settings, load_settings
from bot.console.options import WorkspaceOptions
from bot.sandbox.slack import SlackDouble, SlackSender
from bot.sandbox.vps import Simulator
from bot.slack.serving import HttpServer
from bot.watch import WatchSettings

log = logging.getLogger(__name__)


class Person(NamedTuple):
    user_id: str
    name: str
    real_name: str


class Room(NamedTuple):
    channel_id: str
    name: str
    bot_member: bool


# Who plays what in the demo: one person can be each of them in turn with `/as`.
PEOPLE = (
    Person("U_ALICE", "alice", "Alice Archer"),  # operator: lists, creates, deletes
    Person("U_BOB", "bob", "Bob Baker"),  # approver and auditor
    Person("U_CAROL", "carol", "Carol Cole"),  # viewer only
)
ROOMS = (
    Room("C_OPS", "ops", True),
    Room("C_RANDOM", "random", False),  # the bot was never invited here
)
FAILING_SERVER = 12347  # cache-01: its last automatic backup failed (WorkspaceOptions)
ROLES = {
    "BACKUP_VIEWERS": "*",
    "BACKUP_OPERATORS": "U_ALICE",
    "BACKUP_APPROVERS": "U_BOB",
    "BACKUP_AUDITORS": "U_BOB",
}


class Workspace:
    """Simulator + Slack double + the bot on loopback; `close()` stops every thread and port."""

    def __init__(self, options: WorkspaceOptions | None = None) -> None:
        self.options = options or WorkspaceOptions()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.simulator: Simulator | None = None
        self.slack: SlackDouble | None = None
        self.bot: BackupBot | None = None
        self.server: HttpServer | None = None
        self.sender: SlackSender | None = None
        self.settings: Settings | None = None
        self.directory: Path | None = None  # the temporary directory, while it exists
        self._log_handler: logging.Handler | None = None
        self._log_level = logging.NOTSET
        self.log_path: Path | None = None  # where the bot's log (and the console's) goes

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Workspace:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        options = self.options
        self._tmp = tempfile.TemporaryDirectory(prefix="backupbot-console-")
        directory = self.directory = Path(self._tmp.name)
        self._route_logs(options.log_file or directory / "backupbot.log")
        vps_token = secrets.token_urlsafe(16)
        signing_secret = secrets.token_hex(16)
        self.simulator = Simulator(
            vps_token, complete_after=options.complete_after, history_days=options.history_days
        )
        self.simulator.start()
        if options.failed_backup:
            self._fail_newest_automatic(FAILING_SERVER)
        self.slack = SlackDouble(seed=False, bot_name="backupbot")
        for person in PEOPLE:
            self.slack.add_user(person.user_id, person.name, real_name=person.real_name)
        for room in ROOMS:
            self.slack.add_channel(room.channel_id, room.name, member=room.bot_member)
        self.slack.start()
        environ = {
            "SLACK_BOT_TOKEN": self.slack.bot_token,
            "SLACK_SIGNING_SECRET": signing_secret,
            "SLACK_API_URL": self.slack.api_url,
            "VPS_API_URL": self.simulator.base_url,
            "VPS_API_TOKEN": vps_token,
            "VPS_TIMEOUT_SECONDS": "15",
            "DATABASE_URL": f"sqlite:///{directory / 'backupbot.db'}",
            **ROLES,
            # Health alerts in #ops; the sweep runs when someone types /sweep (none in the
            # background, so nothing appears by itself while you type).
            "ALERTS_CHANNEL": "C_OPS",
            "HEALTH_SWEEP_MINUTES": "0",
            **options.extra_env,
        }
        # env_file=None: the console never reads the person's .env (their real tokens).
        self.settings = load_settings(environ=environ, env_file=None)
        watch = WatchSettings(
            first_poll=options.first_poll,
            max_poll=options.max_poll,
            tick=options.tick,
            thread_grace=timedelta(seconds=30),
        )
        self.bot = build_app(self.settings, watch_settings=watch)
        self.server = self.bot.http_server(host="127.0.0.1", port=0).start()
        self.sender = SlackSender(f"{self.server.url}/slack/events", signing_secret, self.slack)
        self.bot.start_workers()

    def _fail_newest_automatic(self, server_id: int) -> None:
        """The server's newest automatic backup becomes a failed one, as on a bad night."""
        assert self.simulator is not None
        rows = self.simulator.list_backups(
            {"server_id": str(server_id), "backup_type": "automatic"}
        )
        if not rows:
            return
        newest = max(rows, key=lambda row: str(row["created_at"]))
        self.simulator.delete_backup(int(newest["id"]))
        created = datetime.fromisoformat(str(newest["created_at"]).replace("Z", "+00:00"))
        self.simulator.add_backup(
            server_id,
            backup_type="automatic",
            status="failed",
            created_at=created,
            description=str(newest["description"]),
        )

    def close(self) -> None:
        """Stop in dependency order; safe to call twice and after a failed start."""
        steps = [
            ("HTTP server", self.server.stop if self.server else None),
            ("bot", self.bot.close if self.bot else None),
            ("Slack double", self.slack.stop if self.slack else None),
            ("simulator", self.simulator.stop if self.simulator else None),
        ]
        self.server = None
        for name, step in steps:
            if step is None:
                continue
            try:
                step()
            except Exception:
                log.exception("stopping the %s failed", name)
        self.bot = None
        self.slack = None
        self.simulator = None
        if self._log_handler is not None:
            root = logging.getLogger()
            root.removeHandler(self._log_handler)
            root.setLevel(self._log_level)
            self._log_handler.close()
            self._log_handler = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
            self.directory = None
            if self.options.log_file is None:
                self.log_path = None

    # -- logging ---------------------------------------------------------------------------

    def _route_logs(self, path: Path) -> None:
        """The bot's log goes to a file, not the terminal the chat is drawn on."""
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        self._log_level = root.level
        root.addHandler(handler)
        if root.level == logging.NOTSET or root.level > logging.INFO:
            root.setLevel(logging.INFO)
        self._log_handler = handler
        self.log_path = path
