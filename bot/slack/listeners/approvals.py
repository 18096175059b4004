"""An approval card's buttons and the typed-confirmation modal.

Approve first checks, off Bolt's threads, that the clicker may approve (an approver, not the
requester, the card still open), then opens the modal with the click's `trigger_id` (which lives
3 s). The modal's submission is answered within Slack's 3 s: a wrong name keeps the modal open
with an error on the input (`response_action: errors`) and changes nothing; a right one closes
it, and the approval is recorded after the ack.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any

from slack_bolt import Ack, App, Respond
from slack_sdk.errors import SlackApiError

from bot.approvals import ApprovalFacts, NoSuchApproval
from bot.audit import Actor
from bot.metrics import ACTIONS
from bot.policy import Action
from bot.slack import approval_blocks
from bot.slack.edge import Responder, SlackEdge, guarded
from bot.slack.listeners import observe
from bot.slack.parser import positive_id

log = logging.getLogger(__name__)


def register(app: App, edge: SlackEdge) -> None:
    app.action(approval_blocks.APPROVE)(guarded(_approve_clicked(edge)))
    app.action(approval_blocks.REJECT)(guarded(_decision_clicked(edge, Action.REJECT)))
    app.action(approval_blocks.CANCEL)(guarded(_decision_clicked(edge, Action.RESTORE)))
    app.view(approval_blocks.CONFIRM_MODAL)(guarded(_confirmation_submitted(edge)))


def _approve_clicked(edge: SlackEdge) -> Any:
    def handle_approve(
        ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond
    ) -> None:
        ack()
        approval_id = _approval_id(action, "approve")
        if approval_id is None:
            return
        form = functools.partial(_open_form, edge, str(body.get("trigger_id", "")), approval_id)
        who = lambda: edge.actor_of(body)  # noqa: E731
        what = "open the approval form"
        observe.later(
            edge, ACTIONS, "approve", form, respond=respond, who=who, what=what, urgent=True
        )

    return handle_approve


def _open_form(
    edge: SlackEdge, trigger_id: str, approval_id: int, actor: Actor, reply: Responder
) -> str | None:
    """The typed confirmation, for an approver who may decide (else refused and audited)."""
    approval = edge.approvals.check_decider(actor, approval_id, Action.APPROVE)
    try:
        edge.client.views_open(trigger_id=trigger_id, view=approval_blocks.confirm_modal(approval))
    except SlackApiError as exc:
        log.warning("approval form not opened: %s", exc.response.get("error"))
        edge.reply_private(reply, actor, approval_blocks.form_not_opened())
        return "error"
    return None


def _decision_clicked(edge: SlackEdge, action_taken: Action) -> Any:
    """Reject (an approver) or Cancel (the requester): the card and its thread say the rest."""

    def handle_decision(
        ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond
    ) -> None:
        ack()
        name = "reject" if action_taken is Action.REJECT else "cancel"
        approval_id = _approval_id(action, name)
        if approval_id is None:
            return

        def job(actor: Actor, _: Responder) -> None:
            if action_taken is Action.REJECT:
                edge.approvals.reject(actor, approval_id)
            else:
                edge.approvals.cancel(actor, approval_id)

        who = lambda: edge.actor_of(body)  # noqa: E731
        what = f"{action_taken.value} an approval"
        observe.later(edge, ACTIONS, name, job, respond=respond, who=who, what=what)

    return handle_decision


def _confirmation_submitted(edge: SlackEdge) -> Any:
    def handle_confirmation(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        typed = _typed_name(view)
        approval = _confirmed(edge, ack, view, typed)
        if approval is None:
            return
        ack()
        # Refusals after the modal closed go to the card's channel, privately.
        who = lambda: dataclasses.replace(  # noqa: E731
            edge.actor_of(body), channel_id=approval.card_channel_id
        )
        approve = lambda actor, _: edge.approvals.approve(actor, approval.id, typed)  # noqa: E731
        what = f"approve a {approval.kind.value}"
        observe.later(edge, ACTIONS, _FORM, approve, respond=_NO_RESPONSE_URL, who=who, what=what)

    return handle_confirmation


def _confirmed(edge: SlackEdge, ack: Ack, view: dict[str, Any], typed: str) -> ApprovalFacts | None:
    """The approval a submission confirms, if the name typed is its server's; else the modal is
    answered here (an error on the input, or closed for an approval that does not exist)."""
    approval_id = positive_id(str(view.get("private_metadata", "")))
    try:
        approval = edge.approvals.get(approval_id) if approval_id else None
    except NoSuchApproval:
        approval = None
    except Exception:
        # The form stays open and says so, rather than closing as if it had worked.
        log.exception("could not read the approval a confirmation is for")
        ack(**approval_blocks.not_checked())
        observe.count(ACTIONS, _FORM, "error")
        return None
    if approval is None:
        log.warning("ignoring a confirmation for an approval that does not exist")
        ack()
        observe.count(ACTIONS, _FORM, "invalid")
        return None
    if typed.strip() != approval.server.name:
        ack(**approval_blocks.wrong_name(approval))
        observe.count(ACTIONS, _FORM, "invalid")
        return None
    return approval


def _approval_id(action: dict[str, Any], name: str) -> int | None:
    """A card button's value: the approval's id, and nothing else (what runs is what was
    stored). Anything the bot never writes there is logged and ignored."""
    approval_id = positive_id(str(action.get("value", "")))
    if approval_id is None:
        log.warning("ignoring an approval button with a malformed value")
        observe.count(ACTIONS, name, "invalid")
    return approval_id


_FORM = "approve_form"  # the typed confirmation's submission


def _typed_name(view: dict[str, Any]) -> str:
    values = ((view.get("state") or {}).get("values") or {}).get(approval_blocks.CONFIRM_BLOCK)
    typed = ((values or {}).get(approval_blocks.CONFIRM_INPUT) or {}).get("value")
    return typed if isinstance(typed, str) else ""


# A modal's submission comes with no response_url: answers go by chat.postEphemeral, else DM.
_NO_RESPONSE_URL = Respond(response_url=None)
