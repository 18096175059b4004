"""Audit review from Slack, end to end: filters, pages, and the export sent as a file."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable

import pytest

from bot.slack import blocks
from tests.test_slack_app import AppRig, text_of
from tests.test_slack_app import make_rig as make_rig  # a fixture, used by `rig`


@pytest.fixture
def rig(make_rig: Callable[..., AppRig]) -> AppRig:
    return make_rig(BACKUP_AUDITORS="U_BOB")


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.05)
    return check()


def _rows(body: dict[str, object]) -> list[str]:
    return [
        b["text"]["text"]  # type: ignore[index]
        for b in body["blocks"]  # type: ignore[attr-defined]
        if b["type"] == "section"  # type: ignore[index]
    ]


def test_outcome_filter_and_one_line_a_row(rig: AppRig) -> None:
    rig.run("list web-server-01")
    rig.run("create web-server-01", user_id="U_CAROL")  # denied
    body = rig.run("audit outcome:denied", user_id="U_BOB")
    [row] = _rows(body)
    assert "*create*" in row and "<@U_CAROL>" in row and "denied" in row
    assert "\n" not in row and "<!date^" in row  # one line, in the reader's time


def test_pages_go_older_and_back_newer(rig: AppRig) -> None:
    for _ in range(25):
        rig.command("help")  # each one a row of its own, answered in the ack
    assert wait_until(lambda: len(rig.audit("help")) == 25)
    first = rig.run("audit <@U_ALICE|alice>", user_id="U_BOB")
    assert len(_rows(first)) == 20 and "20 newest rows" in text_of(first)
    second = rig.click(first, f"{blocks.AUDIT_PAGE}_next", user_id="U_BOB")
    assert second["replace_original"] is True
    assert len(_rows(second)) == 5  # the 25 rows: 20, then the 5 oldest
    assert "◀ Newer" in text_of(second) and "Older ▶" not in text_of(second)
    back = rig.click(second, f"{blocks.AUDIT_PAGE}_prev", user_id="U_BOB")
    assert _rows(back) == _rows(first)


def test_a_forged_page_value_is_ignored(rig: AppRig) -> None:
    first = rig.run("audit", user_id="U_BOB")
    action = {
        "action_id": f"{blocks.AUDIT_PAGE}_next",
        "block_id": "audit_pager",
        "type": "button",
        "value": json.dumps([None, "x" * 5000, None, None, None, None, 1, None]),
        "action_ts": "1.2",
    }
    before = len(rig.slack.responses)
    answer = rig.sender.block_actions(action, user_id="U_BOB", channel_id="C_OPS")
    assert answer.status == 200
    time.sleep(0.3)
    assert len(rig.slack.responses) == before  # nothing answered, nothing read
    assert first  # the first page itself was fine


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_export_from_slack_sends_a_file_to_the_auditor(rig: AppRig, fmt: str) -> None:
    rig.run("list web-server-01")
    rig.run("list db-server-01", user_id="U_CAROL")
    body = rig.run(f"audit export <@U_CAROL|carol> format:{fmt}", user_id="U_BOB")
    assert "sent to our DM" in text_of(body)
    [upload] = rig.slack.files
    assert upload.completed and upload.channel == rig.slack.dm_channel_id("U_BOB")
    content = upload.content.decode() if isinstance(upload.content, bytes) else upload.content
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(content)))
    else:
        rows = [json.loads(line) for line in content.splitlines()]
    assert rows and {r["actor_user_id"] for r in rows} == {"U_CAROL"}
    [row] = rig.audit("audit.export", "ok")
    assert row.parameters["format"] == fmt and "sent as" in row.detail


def test_export_is_for_auditors(rig: AppRig) -> None:
    assert "auditor" in text_of(rig.run("audit export"))  # alice is not one
    assert rig.slack.files == []
    assert rig.audit("audit", "denied")


def test_an_upload_slack_refuses_is_said_and_audited(rig: AppRig) -> None:
    rig.slack.fail("files.getUploadURLExternal", "missing_scope")
    body = rig.run("audit export", user_id="U_BOB")
    assert "could not send you the file" in text_of(body) and "files:write" in text_of(body)
    assert rig.audit("audit.export", "error")


def test_checkpoints_go_to_the_audit_channel_and_auditors_see_them_at_home(
    make_rig: Callable[..., AppRig],
) -> None:
    rig = make_rig(BACKUP_AUDITORS="U_BOB", AUDIT_SIGNING_KEY="k" * 32, AUDIT_CHANNEL="C_OPS")
    rig.run("list web-server-01")
    assert rig.bot.checkpoints is not None
    checkpoint = rig.bot.checkpoints.run_once()
    assert checkpoint is not None
    [posted] = [m for m in rig.slack.messages_in("C_OPS") if "Audit checkpoint" in m.text]
    texts = [block["text"]["text"] for block in posted.blocks]
    assert any(checkpoint.to_json() in text for text in texts)  # the whole signed line, to keep
    assert "k" * 32 not in json.dumps(posted.blocks)

    bobs = json.dumps(rig.home_of("U_BOB"))
    assert "Newest checkpoint" in bobs and "*list*" in bobs
    assert "Newest checkpoint" not in json.dumps(rig.home_of("U_ALICE"))  # not an auditor
