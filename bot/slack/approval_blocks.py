"""How restore (and delete) approvals look: the card, the typed-confirmation modal, the thread's
steps, and the words for every refusal. Built with `slack_sdk.models` (which checks Slack's
limits). A delete's card says what is lost for good (the backup), not a data-loss window."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ContextBlock,
    HeaderBlock,
    InputBlock,
    MarkdownTextObject,
    PlainTextInputElement,
    PlainTextObject,
    SectionBlock,
)
from slack_sdk.models.views import View

from bot.approvals import ApprovalFacts, Step
from bot.db import ApprovalState
from bot.slack.blocks import (
    as_message,
    clip,
    escape,
    human_duration,
    human_size,
    notice,
    slack_date,
)

# action_ids and the modal's callback_id: the routing table in bot/slack/listeners matches on them.
APPROVE = "approval_approve"
REJECT = "approval_reject"
CANCEL = "approval_cancel"
CONFIRM_MODAL = "approval_confirm"
CONFIRM_BLOCK = "confirm_name"
CONFIRM_INPUT = "typed_name"

# Each state in a few words, for the card's status line and for refusals.
STATE_WORDS = {
    ApprovalState.PENDING: "waiting for approval",
    ApprovalState.APPROVED: "approved, starting",
    ApprovalState.SAFETY_BACKUP: "approved, taking a safety backup first",
    ApprovalState.READY: "approved, restoring",
    ApprovalState.RESTORING: "approved, restore requested",
    ApprovalState.DONE: "restore accepted by the provider",
    ApprovalState.FAILED: "stopped, nothing was restored",
    ApprovalState.REJECTED: "rejected",
    ApprovalState.CANCELLED: "cancelled by the requester",
    ApprovalState.EXPIRED: "expired, nobody decided in time",
}
# Where a delete's words differ from a restore's.
DELETE_STATE_WORDS = {
    **STATE_WORDS,
    ApprovalState.READY: "approved, deleting",
    ApprovalState.DELETING: "approved, delete requested",
    ApprovalState.DONE: "deleted",
    ApprovalState.FAILED: "stopped, nothing was deleted",
}
_STATE_ICON = {
    ApprovalState.PENDING: "⏳",
    ApprovalState.APPROVED: "✅",
    ApprovalState.SAFETY_BACKUP: "⏳",
    ApprovalState.READY: "⏳",
    ApprovalState.RESTORING: "⏳",
    ApprovalState.DELETING: "⏳",
    ApprovalState.DONE: "✅",
    ApprovalState.FAILED: "❌",
    ApprovalState.REJECTED: "⛔",
    ApprovalState.CANCELLED: "↩️",
    ApprovalState.EXPIRED: "⌛",
}


def state_words(approval: ApprovalFacts) -> str:
    if approval.is_delete:
        if approval.state is ApprovalState.FAILED and approval.restore_requested:
            return "stopped after the delete was asked for: see why below"
        return DELETE_STATE_WORDS[approval.state]
    if approval.state is ApprovalState.FAILED and approval.restore_requested:
        return "stopped after the restore was asked for: it may have started, check the server"
    return STATE_WORDS[approval.state]


def noun(approval: ApprovalFacts) -> str:
    """What is being approved, in a word: "restore" or "delete"."""
    return "delete" if approval.is_delete else "restore"


def _what(approval: ApprovalFacts) -> str:
    """ "the restore of *web-server-01*" / "the delete of backup *111* of *web-server-01*"."""
    server = f"*{escape(approval.server.name)}*"
    if approval.is_delete:
        return f"the delete of backup *{approval.backup_id}* of {server}"
    return f"the restore of {server}"


def _state_line(approval: ApprovalFacts) -> str:
    words = state_words(approval)
    return f"{_STATE_ICON[approval.state]} {words[0].upper()}{words[1:]}"


def long_duration(seconds: float) -> str:
    """Like `human_duration`, with days: "3 days 4 hours"."""
    days, rest = divmod(max(0, round(seconds)), 86400)
    if not days:
        return human_duration(rest)
    hours = rest // 3600
    day_words = f"{days} day{'s' if days != 1 else ''}"
    return f"{day_words} {hours} hour{'s' if hours != 1 else ''}" if hours else day_words


def approval_card(approval: ApprovalFacts, now: datetime) -> dict[str, Any]:
    """The card approvers decide on; rewritten at every step until the story ends."""
    if approval.is_delete:
        return _delete_card(approval, now)
    server = f"*{escape(approval.server.name)}* (`{approval.server.id}`)"
    window = long_duration(approval.loss_window(now).total_seconds())
    facts = (
        f"Restore {server} from backup *{approval.backup_id}* · {escape(approval.backup_type)} · "
        f"created {slack_date(approval.backup_created_at)} · "
        f"{human_size(approval.backup_size_mb)}\n"
        f"Requested by <@{approval.requester_id}>"
    )
    loss = (
        f"⚠️ Everything written to {server} since {slack_date(approval.backup_created_at)} "
        f"— {window} — will be lost."
    )
    blocks: list[Block] = [
        HeaderBlock(text=PlainTextObject(text=f"Restore {approval.server.name}?"[:150])),
        SectionBlock(text=MarkdownTextObject(text=facts)),
    ]
    if approval.reason:
        blocks.append(
            ContextBlock(elements=[PlainTextObject(text=f"Reason: {clip(approval.reason, 500)}")])
        )
    blocks += [
        SectionBlock(text=MarkdownTextObject(text=loss)),
        SectionBlock(text=MarkdownTextObject(text=_status(approval))),
        *_buttons(approval, now),
    ]
    fallback = (
        f"Restore {escape(approval.server.name)} from backup {approval.backup_id}? "
        f"{_state_line(approval)}"
    )
    return as_message(fallback, blocks)


def _delete_card(approval: ApprovalFacts, now: datetime) -> dict[str, Any]:
    """A delete's card: the backup and what becomes of it (nothing of the server is lost)."""
    server = f"*{escape(approval.server.name)}* (`{approval.server.id}`)"
    facts = (
        f"Delete backup *{approval.backup_id}* of {server} · {escape(approval.backup_type)} · "
        f"{escape(approval.backup_status.replace('_', ' '))} · created "
        f"{slack_date(approval.backup_created_at)} · {human_size(approval.backup_size_mb)}\n"
        f"Requested by <@{approval.requester_id}>"
    )
    gone = (
        f"🗑️ Backup *{approval.backup_id}* will be permanently deleted: it cannot be undone, "
        f"and {escape(approval.server.name)} can no longer be restored from it."
    )
    title = f"Delete backup {approval.backup_id} of {approval.server.name}?"
    blocks: list[Block] = [
        HeaderBlock(text=PlainTextObject(text=title[:150])),
        SectionBlock(text=MarkdownTextObject(text=facts)),
    ]
    if approval.backup_description:
        description = f"Backup: {clip(approval.backup_description, 200)}"
        blocks.append(ContextBlock(elements=[PlainTextObject(text=description)]))
    if approval.reason:
        reason = f"Reason: {clip(approval.reason, 500)}"
        blocks.append(ContextBlock(elements=[PlainTextObject(text=reason)]))
    blocks += [
        SectionBlock(text=MarkdownTextObject(text=gone)),
        SectionBlock(text=MarkdownTextObject(text=_status(approval))),
        *_buttons(approval, now),
    ]
    fallback = f"{escape(title)} {_state_line(approval)}"
    return as_message(fallback, blocks)


def _buttons(approval: ApprovalFacts, now: datetime) -> list[Block]:
    """Approve…, Reject and Cancel while the card is open; none once it is not."""
    if not (approval.pending and now < approval.expires_at):
        return []
    value = str(approval.id)
    return [
        ActionsBlock(
            block_id=f"approval_{approval.id}",
            elements=[
                ButtonElement(text="Approve…", action_id=APPROVE, value=value, style="danger"),
                ButtonElement(text="Reject", action_id=REJECT, value=value),
                ButtonElement(text="Cancel (requester)", action_id=CANCEL, value=value),
            ],
        )
    ]


def _status(approval: ApprovalFacts) -> str:
    lines = [f"*{_state_line(approval)}* · approval #{approval.id}"]
    approvers = ", ".join(
        f"<@{a.user_id}> {slack_date(a.at, '{time}')}" for a in approval.approvers
    )
    lines.append(
        f"Approvals: {len(approval.approvers)} of {approval.required_approvals}"
        + (f" ({approvers})" if approvers else "")
    )
    if approval.pending:
        lines.append(f"Expires {slack_date(approval.expires_at)}")
    if approval.decided_by and approval.decided_at:
        lines.append(f"Decided by <@{approval.decided_by}> {slack_date(approval.decided_at)}")
    safety = "first, a safety backup of the server as it is now" if approval.safety_backup else ""
    if approval.safety_backup_id is not None:
        safety = f"safety backup *{approval.safety_backup_id}*"
    if safety:
        lines.append(f"Safety: {safety}")
    if approval.detail and approval.state in (ApprovalState.DONE, ApprovalState.FAILED):
        label = "The provider says" if approval.state is ApprovalState.DONE else "Why"
        if approval.is_delete and approval.state is ApprovalState.DONE:
            label = "Outcome"
        lines.append(f"{label}: {escape(clip(approval.detail, 500))}")
    return "\n".join(lines)


def pending_on_home(approvals: list[ApprovalFacts]) -> list[dict[str, Any]]:
    """App Home: the approvals this approver may decide, each with its buttons."""
    if not approvals:
        return []
    blocks: list[Block] = [HeaderBlock(text=PlainTextObject(text="Waiting for your approval"))]
    for approval in approvals[:10]:
        if approval.is_delete:
            what = (
                f"*Delete backup {approval.backup_id}* of {escape(approval.server.name)} "
                f"(`{approval.server.id}`), made {slack_date(approval.backup_created_at)}"
            )
        else:
            what = (
                f"*Restore {escape(approval.server.name)}* (`{approval.server.id}`) from backup "
                f"*{approval.backup_id}* of {slack_date(approval.backup_created_at)}"
            )
        text = (
            f"{what}, asked by <@{approval.requester_id}> · approval #{approval.id} · expires "
            f"{slack_date(approval.expires_at, '{time}')}"
        )
        value = str(approval.id)
        blocks += [
            SectionBlock(text=MarkdownTextObject(text=text)),
            ActionsBlock(
                block_id=f"home_approval_{approval.id}",
                elements=[
                    ButtonElement(text="Approve…", action_id=APPROVE, value=value, style="danger"),
                    ButtonElement(text="Reject", action_id=REJECT, value=value),
                ],
            ),
        ]
    return [block.to_dict() for block in blocks]


def confirm_modal(approval: ApprovalFacts) -> dict[str, Any]:
    """Typed confirmation: the approver types the server's name (GitHub's "type the repo")."""
    if approval.is_delete:
        text = (
            f"This permanently deletes backup *{approval.backup_id}* of "
            f"*{escape(approval.server.name)}* ({slack_date(approval.backup_created_at)}). It "
            "cannot be undone.\nType the server's name to approve."
        )
    else:
        text = (
            f"This overwrites the disk of *{escape(approval.server.name)}* with backup "
            f"*{approval.backup_id}* ({slack_date(approval.backup_created_at)}). What was "
            "written since is lost.\nType the server's name to approve."
        )
    view = View(
        type="modal",
        callback_id=CONFIRM_MODAL,
        private_metadata=str(approval.id),
        title=PlainTextObject(text=f"Approve {noun(approval)}"),
        submit=PlainTextObject(text="Approve"),
        close=PlainTextObject(text="Cancel"),
        blocks=[
            SectionBlock(text=MarkdownTextObject(text=text)),
            InputBlock(
                block_id=CONFIRM_BLOCK,
                label=PlainTextObject(text=f"Type {clip(approval.server.name, 100)}"),
                element=PlainTextInputElement(action_id=CONFIRM_INPUT, max_length=255),
            ),
        ],
    )
    return view.to_dict()


def wrong_name(approval: ApprovalFacts) -> dict[str, Any]:
    """`response_action: errors`: the modal stays open, the input says what is wrong."""
    return {
        "response_action": "errors",
        "errors": {
            CONFIRM_BLOCK: f"That is not the server's name: type {approval.server.name[:100]}"
        },
    }


def form_not_opened() -> dict[str, Any]:
    return notice(
        "⚠️ The confirmation form could not be opened in time (Slack allows 3 seconds): "
        "click Approve… again."
    )


def not_checked() -> dict[str, Any]:
    """`response_action: errors` when the approval could not even be read (the database)."""
    return {
        "response_action": "errors",
        "errors": {
            CONFIRM_BLOCK: "Could not check this just now; nothing was approved. Try again."
        },
    }


def request_posted(approval: ApprovalFacts) -> dict[str, Any]:
    where = f"<#{approval.card_channel_id}>" if approval.card_channel_id else "the approvals card"
    server = f"*{escape(approval.server.name)}*"
    if approval.is_delete:
        return notice(
            f"🔐 Asked for approval to delete backup *{approval.backup_id}* of {server} "
            f"(approval #{approval.id}): deletes need an approval here. The card is in {where}; "
            "nothing is deleted until an approver other than you approves."
        )
    return notice(
        f"🔐 Asked for approval to restore {server} from backup *{approval.backup_id}* "
        f"(approval #{approval.id}): the card is in {where}. Nothing happens until an approver "
        "other than you approves."
    )


def request_note(approval: ApprovalFacts, link: str | None) -> dict[str, Any]:
    """The short note left where the restore was asked when the card went elsewhere."""
    where = f"<{link}|the approvals channel>" if link else f"<#{approval.card_channel_id}>"
    server, backup = f"*{escape(approval.server.name)}*", f"*{approval.backup_id}*"
    if approval.is_delete:
        asked = f"delete backup {backup} of {server}"
    else:
        asked = f"restore {server} from backup {backup}"
    return notice(
        f"🔐 <@{approval.requester_id}> asked to {asked}: waiting for approval in {where}."
    )


def step_message(approval: ApprovalFacts, step: Step) -> dict[str, Any]:
    """A reply in the card's thread; the outcome mentions the requester."""
    requester = f"<@{approval.requester_id}>"
    server = f"*{escape(approval.server.name)}*"
    what = _what(approval)
    if step is Step.APPROVED:
        last = approval.approvers[-1] if approval.approvers else None
        who = f"<@{last.user_id}>" if last else "Someone"
        so_far = f"{len(approval.approvers)} of {approval.required_approvals}"
        text = f"✅ {who} approved ({so_far})."
    elif step is Step.SAFETY_STARTED:
        text = (
            f"💾 Safety backup *{approval.safety_backup_id}* of {server} started; the restore "
            "waits for it to complete."
        )
    elif step is Step.SAFETY_DONE:
        text = f"💾 Safety backup *{approval.safety_backup_id}* completed. Restoring now."
    elif step is Step.RESTORE_ACCEPTED:
        text = (
            f"✅ {requester}, the provider accepted the restore of {server} from backup "
            f"*{approval.backup_id}*."
        )
    elif step is Step.DELETED:
        text = (
            f"🗑️ {requester}, backup *{approval.backup_id}* of {server} is gone for good: "
            f"{escape(approval.detail)}."
        )
    elif step is Step.FAILED:
        text = f"❌ {requester}, {what} stopped: {escape(approval.detail)}."
    elif step is Step.REJECTED:
        text = f"⛔ {requester}, <@{approval.decided_by}> rejected {what}."
    elif step is Step.CANCELLED:
        text = f"↩️ {requester} cancelled {what}."
    else:
        text = f"⌛ {requester}, nobody approved {what} in time: it expired."
    return notice(text)
