"""Rendering that is shared between people: the same listing renders once, a changed one anew."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from bot.service import Listing
from bot.slack import blocks
from bot.vps.models import Backup, ServerRef

WEB = ServerRef(12345, "web-server-01")


def _backup(backup_id: int, status: str = "completed") -> Backup:
    created = datetime(2026, 11, 30, 10, 30, tzinfo=UTC)
    return Backup(backup_id, WEB, "manual", status, 4200.0, created, None, "nightly")


def test_an_equal_listing_is_rendered_once_and_each_caller_gets_its_own_message() -> None:
    blocks._backup_list.cache_clear()
    first = blocks.backup_list(Listing((_backup(1), _backup(2)), WEB))
    second = blocks.backup_list(Listing((_backup(1), _backup(2)), WEB))  # equal, not the same
    assert first == second
    assert blocks._backup_list.cache_info().hits == 1
    first["blocks"].append({"type": "divider"})  # one caller's change stays its own
    assert len(second["blocks"]) == len(first["blocks"]) - 1


def test_a_changed_backup_is_never_shown_from_an_earlier_rendering() -> None:
    running = blocks.backup_list(Listing((_backup(1, "in_progress"),), WEB))
    done = blocks.backup_list(Listing((_backup(1, "completed"),), WEB))
    assert "in_progress" in str(running["blocks"]) and "in_progress" not in str(done["blocks"])
    renamed = dataclasses.replace(_backup(1), description="before deploy")
    assert "before deploy" in str(blocks.backup_list(Listing((renamed,), WEB))["blocks"])
