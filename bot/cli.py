"""The `backupbot` command line: one entry point for every way of running the bot."""

from __future__ import annotations

import argparse
import logging
import sys

from bot.config import ConfigError, load_settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="backupbot", description="Backup Bot for Slack")
    commands = parser.add_subparsers(dest="command", required=True)
    db = commands.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    db_commands.add_parser("upgrade", help="run the database migrations up to the newest")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        logging.basicConfig(level=settings.log_level)
        if args.command == "db" and args.db_command == "upgrade":
            from bot.db import upgrade

            upgrade(settings.database_url)
            print("database is up to date")
            return 0
    except ConfigError as exc:
        print(f"backupbot: error: {exc}", file=sys.stderr)
        return 2
    return 2
