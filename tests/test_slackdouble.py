"""The Slack double, driven by the real slack_sdk clients and a real Bolt app over loopback HTTP."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from slack_bolt import Ack, App, Respond, Say
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.webhook import WebhookClient

from bot.sandbox.slack import Event, RecordedCall, RecordedResponse, SlackDouble, SlackSender
from bot.wsgi_server import WsgiServer

SECRET = "double-signing-secret-8c1f"
BUTTON_BLOCKS: list[dict[str, Any]] = [
    {"type": "section", "block_id": "ask", "text": {"type": "mrkdwn", "text": "Restore 12345?"}},
    {
        "type": "actions",
        "block_id": "decide",
        "elements": [
            {
                "type": "button",
                "action_id": "approve",
                "text": {"type": "plain_text", "text": "Approve"},
                "value": "restore:12345",
                "style": "primary",
            },
            {
                "type": "overflow",
                "action_id": "more",
                "options": [
                    {"text": {"type": "plain_text", "text": "Details"}, "value": "details"},
                    {"text": {"type": "plain_text", "text": "Cancel"}, "value": "cancel"},
                ],
            },
        ],
    },
]
MODAL: dict[str, Any] = {
    "type": "modal",
    "callback_id": "restore",
    "private_metadata": "12345",
    "title": {"type": "plain_text", "text": "Restore a backup"},
    "submit": {"type": "plain_text", "text": "Restore"},
    "blocks": [
        {
            "type": "input",
            "block_id": "server",
            "label": {"type": "plain_text", "text": "Server id"},
            "element": {"type": "plain_text_input", "action_id": "server_id"},
        },
        {
            "type": "input",
            "block_id": "kind",
            "label": {"type": "plain_text", "text": "Kind"},
            "element": {
                "type": "static_select",
                "action_id": "kind",
                "options": [
                    {"text": {"type": "plain_text", "text": "Full"}, "value": "full"},
                    {"text": {"type": "plain_text", "text": "Files"}, "value": "files"},
                ],
            },
        },
    ],
}

WIZARD: dict[str, Any] = {**MODAL, "callback_id": "wizard"}


@pytest.fixture
def double() -> Iterator[SlackDouble]:
    with SlackDouble() as started:
        yield started


@pytest.fixture
def client(double: SlackDouble) -> WebClient:
    return WebClient(token=double.bot_token, base_url=double.api_url, timeout=5)


def error_of(excinfo: pytest.ExceptionInfo[SlackApiError]) -> str:
    return str(excinfo.value.response["error"])


# -- the Web API ---------------------------------------------------------------------------------


def test_auth_test_and_authentication_errors(double: SlackDouble, client: WebClient) -> None:
    answer = client.auth_test()
    assert answer["user_id"] == "U_BOT" and answer["team_id"] == "T111"
    assert answer["bot_id"] == "B_BOT"

    with pytest.raises(SlackApiError) as wrong:
        WebClient(token="xoxb-wrong", base_url=double.api_url).auth_test()
    assert error_of(wrong) == "invalid_auth"
    with pytest.raises(SlackApiError) as missing:
        WebClient(base_url=double.api_url).auth_test()
    assert error_of(missing) == "not_authed"
    with pytest.raises(SlackApiError) as unknown:
        client.api_call("backups.teleport")
    assert error_of(unknown) == "unknown_method"

    assert [c.method for c in double.calls][-1] == "backups.teleport"
    assert [c.error for c in double.calls_to("auth.test")] == [None, "invalid_auth", "not_authed"]
    assert double.calls[-1].status == 200 and not double.calls[-1].ok


def test_post_message_threads_and_form_bodies(double: SlackDouble, client: WebClient) -> None:
    parent = client.chat_postMessage(channel="C_OPS", text="Backup started", blocks=BUTTON_BLOCKS)
    assert parent["channel"] == "C_OPS" and parent["ts"] == "1700000000.000100"
    assert parent["message"]["blocks"][1]["elements"][0]["action_id"] == "approve"
    reply = client.chat_postMessage(channel="C_OPS", text="50%", thread_ts=parent["ts"])
    # A reply to a reply lands in the same thread, under the root.
    nested = client.chat_postMessage(channel="C_OPS", text="done", thread_ts=reply["ts"])
    assert nested["message"]["thread_ts"] == parent["ts"]
    assert parent["ts"] < reply["ts"] < nested["ts"]

    # Form-encoded, as some clients send: blocks arrive as a JSON string and are decoded.
    form = client.api_call(
        "chat.postMessage",
        data={"channel": "C_OPS", "text": "form", "blocks": json.dumps(BUTTON_BLOCKS[:1])},
    )
    assert form["ok"] and double.calls[-1].args["blocks"] == BUTTON_BLOCKS[:1]
    assert double.calls[-1].args.get("token") is None

    thread = double.messages_in("C_OPS", thread_ts=parent["ts"])
    assert [m.text for m in thread] == ["Backup started", "50%", "done"]
    assert [m.is_reply for m in thread] == [False, True, True]
    last = double.messages_in("C_OPS")[-1]
    assert last.text == "form"
    auto = last.blocks[0]["block_id"]
    assert isinstance(auto, str) and auto  # Slack fills in a block_id the app left out
    rooted = double.message_payload(thread[0])  # the parent became a thread root
    assert rooted["thread_ts"] == parent["ts"] and rooted["blocks"] == thread[0].blocks


def test_post_message_errors(double: SlackDouble, client: WebClient) -> None:
    double.add_channel("C_OLD", "old", archived=True)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"channel": "C_RANDOM", "text": "hi"}, "not_in_channel"),
        ({"channel": "C_NOPE", "text": "hi"}, "channel_not_found"),
        ({"channel": "C_OLD", "text": "hi"}, "is_archived"),
        ({"channel": "C_OPS"}, "no_text"),
        ({"channel": "C_OPS", "text": "x" * 40_001}, "msg_too_long"),
        ({"channel": "C_OPS", "text": "hi", "thread_ts": "1.000001"}, "thread_not_found"),
    ]
    for kwargs, expected in cases:
        with pytest.raises(SlackApiError) as failure:
            client.api_call("chat.postMessage", json=kwargs)
        assert error_of(failure) == expected, kwargs

    divider = {"type": "divider"}
    with pytest.raises(SlackApiError) as too_many:
        client.chat_postMessage(channel="C_OPS", text="x", blocks=[divider] * 51)
    assert error_of(too_many) == "invalid_blocks"
    assert too_many.value.response["response_metadata"]["messages"] == [
        "[ERROR] no more than 50 items allowed [json-pointer:/blocks]"
    ]
    long_button = json.loads(json.dumps(BUTTON_BLOCKS))
    long_button[1]["elements"][0]["text"]["text"] = "B" * 76
    with pytest.raises(SlackApiError) as bad_button:
        client.chat_postMessage(channel="C_OPS", text="x", blocks=long_button)
    assert bad_button.value.response["errors"] == [
        "[ERROR] text attribute cannot exceed 75 characters [json-pointer:/blocks/1]"
    ]
    unknown = [{"type": "carousel_of_doom"}, {"type": "actions", "elements": [{"type": "dial"}]}]
    twice = [{"type": "divider", "block_id": "d"}, {"type": "divider", "block_id": "d"}]
    with pytest.raises(SlackApiError) as odd:
        client.chat_postMessage(channel="C_OPS", text="x", blocks=unknown + twice)
    assert odd.value.response["errors"] == [
        "[ERROR] unsupported type [json-pointer:/blocks/0]",
        "[ERROR] unsupported element type [json-pointer:/blocks/1]",
        "[ERROR] duplicate block_id: d [json-pointer:/blocks/3]",
    ]
    assert double.messages == []
    assert all(not c.ok for c in double.calls_to("chat.postMessage"))


def test_update_keeps_a_history(double: SlackDouble, client: WebClient) -> None:
    posted = client.chat_postMessage(channel="C_OPS", text="v1", blocks=BUTTON_BLOCKS)
    client.chat_update(channel="C_OPS", ts=posted["ts"], text="v2")  # blocks kept
    updated = client.chat_update(channel="C_OPS", ts=posted["ts"], text="v3", blocks=[])
    assert updated["message"]["text"] == "v3" and "edited" in updated["message"]

    message = double.message("C_OPS", posted["ts"])
    assert message is not None
    assert message.text == "v3" and message.blocks == [] and message.updated == 2
    assert [e.text for e in message.edits] == ["v1", "v2"]
    assert message.edits[1].blocks[1]["block_id"] == "decide"

    with pytest.raises(SlackApiError) as missing:
        client.chat_update(channel="C_OPS", ts="1.000001", text="x")
    assert error_of(missing) == "message_not_found"


def test_ephemeral_messages_cannot_be_updated_or_threaded(
    double: SlackDouble, client: WebClient
) -> None:
    answer = client.chat_postEphemeral(channel="C_OPS", user="U_ALICE", text="only you")
    ts = answer["message_ts"]
    message = double.message("C_OPS", ts)
    assert message is not None and message.ephemeral and message.visible_to == "U_ALICE"

    with pytest.raises(SlackApiError) as update:
        client.chat_update(channel="C_OPS", ts=ts, text="x")
    assert error_of(update) == "message_not_found"
    with pytest.raises(SlackApiError) as thread:
        client.chat_postMessage(channel="C_OPS", text="reply", thread_ts=ts)
    assert error_of(thread) == "thread_not_found"

    for kwargs, expected in [
        ({"channel": "C_OPS", "user": "U_NOBODY"}, "user_not_found"),
        ({"channel": "D_BOB", "user": "U_ALICE"}, "user_not_in_channel"),
        ({"channel": "C_RANDOM", "user": "U_ALICE"}, "not_in_channel"),
    ]:
        with pytest.raises(SlackApiError) as failure:
            client.chat_postEphemeral(text="x", **kwargs)
        assert error_of(failure) == expected
    assert client.chat_postEphemeral(channel="D_BOB", user="U_BOB", text="ok")["ok"]


def test_dms_users_and_groups(double: SlackDouble, client: WebClient) -> None:
    double.add_user("U_DAVE", "dave", real_name="Dave Doe", tz="America/New_York")
    double.add_usergroup("S_ADMINS", ["U_ALICE", "U_DAVE"])

    opened = client.conversations_open(users="U_DAVE")
    assert opened["channel"]["id"] == "D_DAVE" and "already_open" not in opened
    again = client.conversations_open(users="U_DAVE")
    assert again["already_open"] is True and again["channel"]["id"] == "D_DAVE"
    dm = client.chat_postMessage(channel="U_DAVE", text="psst")  # a user id posts to the DM
    assert dm["channel"] == "D_DAVE"
    assert [m.text for m in double.messages_in("D_DAVE")] == ["psst"]
    dave_dm = double.channel("D_DAVE")
    assert dave_dm is not None and dave_dm.im_user == "U_DAVE"

    user = client.users_info(user="U_DAVE")["user"]
    assert user["real_name"] == "Dave Doe" and user["profile"]["display_name"] == "dave"
    assert user["tz"] == "America/New_York" and user["team_id"] == "T111"
    assert client.usergroups_users_list(usergroup="S_ADMINS")["users"] == ["U_ALICE", "U_DAVE"]
    for call, expected in [
        (lambda: client.users_info(user="U_GHOST"), "user_not_found"),
        (lambda: client.usergroups_users_list(usergroup="S_NONE"), "no_such_subteam"),
        (lambda: client.conversations_open(users="U_GHOST"), "user_not_found"),
        (lambda: client.conversations_open(users="U_DAVE,U_BOB"), "not_supported"),
        (lambda: client.api_call("conversations.open", json={}), "users_list_not_supplied"),
    ]:
        with pytest.raises(SlackApiError) as failure:
            call()
        assert error_of(failure) == expected


def test_token_types_and_socket_mode_endpoint(double: SlackDouble, client: WebClient) -> None:
    with pytest.raises(SlackApiError) as app_token_for_chat:
        WebClient(token=double.app_token, base_url=double.api_url).auth_test()
    assert error_of(app_token_for_chat) == "not_allowed_token_type"
    with pytest.raises(SlackApiError) as bot_token_for_socket:
        client.apps_connections_open(app_token=double.bot_token)
    assert error_of(bot_token_for_socket) == "not_allowed_token_type"
    with pytest.raises(SlackApiError) as detached:
        client.apps_connections_open(app_token=double.app_token)
    assert error_of(detached) == "socket_mode_not_enabled"

    double.attach_socket_mode(lambda: "ws://127.0.0.1:9/link/?ticket=t1")
    answer = client.apps_connections_open(app_token=double.app_token)
    assert answer["url"] == "ws://127.0.0.1:9/link/?ticket=t1"


def test_views_open_update_publish_and_trigger_rules(
    double: SlackDouble, client: WebClient
) -> None:
    trigger = double.new_trigger_id("U_ALICE")
    opened = client.views_open(trigger_id=trigger, view=MODAL)["view"]
    assert opened["id"].startswith("V") and opened["callback_id"] == "restore"
    assert double.open_views("U_ALICE")[0]["id"] == opened["id"]

    with pytest.raises(SlackApiError) as reused:
        client.views_open(trigger_id=trigger, view=MODAL)
    assert error_of(reused) == "exchanged_trigger_id"
    with pytest.raises(SlackApiError) as forged:
        client.views_open(trigger_id="111.222.forged", view=MODAL)
    assert error_of(forged) == "invalid_arguments"
    late = double.new_trigger_id("U_ALICE")
    double.advance(3.5)
    with pytest.raises(SlackApiError) as expired:
        client.views_open(trigger_id=late, view=MODAL)
    assert error_of(expired) == "expired_trigger_id"
    long_title = {**MODAL, "title": {"type": "plain_text", "text": "T" * 25}}
    with pytest.raises(SlackApiError) as title:
        client.views_open(trigger_id=double.new_trigger_id("U_ALICE"), view=long_title)
    assert title.value.response["response_metadata"]["messages"] == [
        "[ERROR] title must be between 1 and 24 characters [json-pointer:/view]"
    ]

    changed = {**MODAL, "private_metadata": "67890"}
    updated = client.views_update(view_id=opened["id"], hash=opened["hash"], view=changed)["view"]
    assert updated["id"] == opened["id"] and updated["private_metadata"] == "67890"
    with pytest.raises(SlackApiError) as stale:
        client.views_update(view_id=opened["id"], hash=opened["hash"], view=changed)
    assert error_of(stale) == "hash_conflict"
    with pytest.raises(SlackApiError) as gone:
        client.views_update(view_id="V_NONE", view=changed)
    assert error_of(gone) == "not_found"

    home = {"type": "home", "blocks": [{"type": "divider"}]}
    first = client.views_publish(user_id="U_BOB", view=home)["view"]
    again = client.views_publish(user_id="U_BOB", view=home)["view"]
    assert first["id"] == again["id"] and double.home_view("U_BOB") is not None
    with pytest.raises(SlackApiError) as stale_home:
        client.views_publish(user_id="U_BOB", view=home, hash=first["hash"])
    assert error_of(stale_home) == "hash_conflict"
    with pytest.raises(SlackApiError) as modal_as_home:
        client.views_publish(user_id="U_BOB", view=MODAL)
    assert modal_as_home.value.response["response_metadata"]["messages"] == [
        "[ERROR] must be home [json-pointer:/view/type]"
    ]


def test_files_upload_v2_end_to_end(double: SlackDouble, client: WebClient) -> None:
    parent = client.chat_postMessage(channel="C_OPS", text="report follows")
    answer = client.files_upload_v2(
        channel="C_OPS",
        content="server,size\n12345,10GB\n",
        filename="backups.csv",
        title="Backups",
        initial_comment="Here is the report",
        thread_ts=parent["ts"],
    )
    assert answer["file"]["title"] == "Backups"
    [upload] = double.files
    assert upload.content == b"server,size\n12345,10GB\n" and upload.filename == "backups.csv"
    assert upload.channel == "C_OPS" and upload.initial_comment == "Here is the report"
    assert upload.completed and upload.thread_ts == parent["ts"]
    shared = double.message("C_OPS", upload.message_ts or "")
    assert shared is not None and shared.files == [upload.file_id]
    assert shared.text == "Here is the report" and shared.thread_ts == parent["ts"]
    methods = [c.method for c in double.calls]
    assert methods[-2:] == ["files.getUploadURLExternal", "files.completeUploadExternal"]

    with pytest.raises(SlackApiError) as outside:
        client.files_upload_v2(channel="C_RANDOM", content=b"x", filename="x.txt")
    assert error_of(outside) == "not_in_channel"

    # Step by step: the bytes must reach the upload URL before the upload can be completed.
    ticket = client.files_getUploadURLExternal(filename="notes.txt", length=5)
    with pytest.raises(SlackApiError) as early:
        client.files_completeUploadExternal(files=[{"id": ticket["file_id"]}])
    assert error_of(early) == "file_not_found"
    posted = httpx.post(ticket["upload_url"], content=b"hello", timeout=5)
    assert posted.status_code == 200 and posted.text == "OK - 5"
    unshared = client.files_completeUploadExternal(files=[{"id": ticket["file_id"]}])
    assert unshared["files"][0]["title"] == "notes.txt"
    assert [(f.content, f.channel) for f in double.files][-1] == (b"hello", None)
    assert httpx.post(ticket["upload_url"], content=b"again", timeout=5).status_code == 404


def test_rate_limits_and_scripted_failures(
    double: SlackDouble, client: WebClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The handler sleeps Retry-After plus up to a second of jitter: no jitter keeps this fast.
    monkeypatch.setattr("slack_sdk.http_retry.builtin_handlers.random.random", lambda: 0.0)
    double.rate_limit("chat.postMessage", count=1, retry_after=0)
    patient = WebClient(
        token=double.bot_token,
        base_url=double.api_url,
        retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)],
    )
    assert patient.chat_postMessage(channel="C_OPS", text="eventually")["ok"]
    statuses = [(c.status, c.error) for c in double.calls_to("chat.postMessage")]
    assert statuses == [(429, "ratelimited"), (200, None)]

    double.rate_limit("chat.postMessage", count=1, retry_after=7)
    with pytest.raises(SlackApiError) as limited:
        client.chat_postMessage(channel="C_OPS", text="now")
    assert limited.value.response.status_code == 429
    assert limited.value.response.headers["Retry-After"] == "7"
    assert error_of(limited) == "ratelimited"

    double.rate_limit("views.publish", retry_after=30)
    home = {"type": "home", "blocks": [{"type": "divider"}]}
    with pytest.raises(SlackApiError) as publish:
        client.views_publish(user_id="U_ALICE", view=home)
    assert publish.value.response.status_code == 429
    assert publish.value.response.headers["Retry-After"] == "30"
    assert double.home_view("U_ALICE") is None
    assert client.views_publish(user_id="U_ALICE", view=home)["ok"]

    double.fail("users.info", "fatal_error", count=2)
    double.fail("chat.postMessage", "not_in_channel")
    for _ in range(2):
        with pytest.raises(SlackApiError) as failed:
            client.users_info(user="U_ALICE")
        assert error_of(failed) == "fatal_error"
    assert client.users_info(user="U_ALICE")["ok"]
    with pytest.raises(SlackApiError) as refused:
        client.chat_postMessage(channel="C_OPS", text="hi")
    assert error_of(refused) == "not_in_channel"


# -- response_urls --------------------------------------------------------------------------------


def test_response_url_posts_edits_and_limits(double: SlackDouble, client: WebClient) -> None:
    posted = client.chat_postMessage(channel="C_OPS", text="Approve?", blocks=BUTTON_BLOCKS)
    url = double.response_url(channel_id="C_OPS", user_id="U_ALICE", message_ts=posted["ts"])
    hook = WebhookClient(url)

    assert hook.send(text="only for alice").status_code == 200
    assert hook.send(text="for everyone", response_type="in_channel").body == '{"ok": true}'
    assert hook.send(text="Approved", replace_original=True).status_code == 200
    assert hook.send(text="again", replace_original=True, blocks=[]).status_code == 200
    assert hook.send(delete_original=True).status_code == 200
    sixth = hook.send(text="one too many")
    assert sixth.status_code == 404 and json.loads(sixth.body) == {"ok": False, "error": "used_url"}

    original = double.message("C_OPS", posted["ts"])
    assert original is not None and original.deleted and original.updated == 3
    assert [e.text for e in original.edits] == ["Approve?", "Approved", "again"]
    visible = double.messages_in("C_OPS")
    assert [(m.text, m.ephemeral, m.visible_to) for m in visible] == [
        ("only for alice", True, "U_ALICE"),
        ("for everyone", False, None),
    ]
    assert [r.error for r in double.responses] == [None] * 5 + ["used_url"]
    assert double.responses[1].body["response_type"] == "in_channel"

    stale = WebhookClient(double.response_url("stale"))
    double.advance(30 * 60 + 1)
    assert json.loads(stale.send(text="late").body)["error"] == "expired_url"
    unknown = WebhookClient(f"{double.base_url}/response/never-minted").send(text="?")
    assert unknown.status_code == 404 and json.loads(unknown.body)["error"] == "no_service"
    fresh = WebhookClient(double.response_url())
    assert fresh.send_dict({"response_type": "ephemeral"}).status_code == 400  # no text
    with pytest.raises(ValueError, match="already exists"):
        double.response_url("stale")


# -- recording, waiting, listening ----------------------------------------------------------------


def test_wait_for_on_event_and_reset(double: SlackDouble, client: WebClient) -> None:
    seen: list[Event] = []
    unsubscribe = double.on_event(seen.append)

    def later() -> None:
        time.sleep(0.05)
        client.chat_postMessage(channel="C_OPS", text="async hello")

    worker = threading.Thread(target=later)
    worker.start()
    started = time.monotonic()
    found = double.wait_for(
        lambda e: isinstance(e, RecordedCall) and e.args.get("text") == "async hello"
    )
    worker.join()
    assert isinstance(found, RecordedCall) and found.ok and found.response["ts"]
    assert time.monotonic() - started < 2
    WebhookClient(double.response_url("r1", channel_id="C_OPS")).send(text="via url")
    assert [type(e) for e in seen] == [RecordedCall, RecordedResponse]
    assert isinstance(seen[1], RecordedResponse) and seen[1].url_id == "r1"

    # Already recorded events satisfy wait_for at once; nothing new times out quickly.
    assert double.wait_for(lambda e: isinstance(e, RecordedResponse), timeout=0.1) == seen[1]
    with pytest.raises(TimeoutError, match=r"chat\.postMessage"):
        double.wait_for(lambda e: False, timeout=0.1)

    unsubscribe()
    client.auth_test()
    assert len(seen) == 2
    double.reset()
    assert double.calls == [] and double.responses == [] and double.messages == []
    assert client.users_info(user="U_ALICE")["ok"]  # configuration survives a reset


# -- the sender against a real Bolt app -----------------------------------------------------------


@dataclass
class Harness:
    double: SlackDouble
    sender: SlackSender
    client: WebClient
    handled: list[str]


@pytest.fixture
def bolt(double: SlackDouble) -> Iterator[Harness]:
    client = WebClient(token=double.bot_token, base_url=double.api_url, timeout=5)
    app = App(signing_secret=SECRET, client=client, token_verification_enabled=False)
    handled: list[str] = []

    @app.command("/backup")
    def backup(ack: Ack, respond: Respond, say: Say, command: dict[str, Any]) -> None:
        ack()
        handled.append(f"command:{command['text']}")
        if command["text"] == "restore":
            client.views_open(trigger_id=command["trigger_id"], view=MODAL)
            return
        respond(text=f"Working on {command['text']}")
        say(text=f"<@{command['user_id']}> asks: {command['text']}", blocks=BUTTON_BLOCKS)

    @app.action("approve")
    def approve(ack: Ack, respond: Respond, body: dict[str, Any]) -> None:
        ack()
        handled.append(f"approve:{body['actions'][0]['value']}")
        respond(replace_original=True, text=f"Approved by <@{body['user']['id']}>")

    @app.action("more")
    def more(ack: Ack, body: dict[str, Any]) -> None:
        ack()
        handled.append(f"more:{body['actions'][0]['selected_option']['value']}")

    @app.view("restore")
    def restore(ack: Ack, view: dict[str, Any]) -> None:
        server = view["state"]["values"]["server"]["server_id"]["value"]
        kind = view["state"]["values"]["kind"]["kind"]["selected_option"]["value"]
        handled.append(f"restore:{server}:{kind}:{view['private_metadata']}")
        if not server.isdigit():
            ack(response_action="errors", errors={"server": "Digits only"})
            return
        ack()

    @app.view("wizard")
    def wizard(ack: Ack, view: dict[str, Any]) -> None:
        step = view["state"]["values"]["server"]["server_id"]["value"]
        handled.append(f"wizard:{step}")
        if step == "clear":
            ack(response_action="clear")
            return
        ack(response_action=step, view={**WIZARD, "private_metadata": step})

    with WsgiServer(SlackRequestHandler(app)) as server:
        sender = SlackSender(f"{server.url}/slack/events", SECRET, double)
        yield Harness(double, sender, client, handled)


def wait_for_reply(bolt: Harness) -> RecordedResponse:
    """The app's post to the response_url of the last request the sender made."""
    url_id = (bolt.sender.last_response_url or "").rsplit("/", 1)[-1]
    found = bolt.double.wait_for(lambda e: isinstance(e, RecordedResponse) and e.url_id == url_id)
    assert isinstance(found, RecordedResponse)
    return found


def test_bolt_accepts_a_signed_slash_command(bolt: Harness) -> None:
    answer = bolt.sender.slash_command("list 12345")
    assert answer.status == 200

    sent = bolt.sender.last_payload
    assert sent is not None and list(sent) == [
        "token",
        "team_id",
        "team_domain",
        "channel_id",
        "channel_name",
        "user_id",
        "user_name",
        "command",
        "text",
        "api_app_id",
        "is_enterprise_install",
        "response_url",
        "trigger_id",
    ]
    assert sent["user_name"] == "alice" and sent["channel_name"] == "ops"
    assert sent["response_url"].startswith(f"{bolt.double.base_url}/response/")

    assert wait_for_reply(bolt).body["text"] == "Working on list 12345"
    said = bolt.double.wait_for(
        lambda e: isinstance(e, RecordedCall) and e.method == "chat.postMessage"
    )
    assert isinstance(said, RecordedCall) and said.ok and said.args["channel"] == "C_OPS"
    assert bolt.handled == ["command:list 12345"]
    [ephemeral] = [m for m in bolt.double.messages if m.ephemeral]
    assert ephemeral.visible_to == "U_ALICE" and ephemeral.via == "response_url"


def test_bolt_accepts_block_actions_and_the_reply_edits_the_message(bolt: Harness) -> None:
    posted = bolt.client.chat_postMessage(channel="C_OPS", text="Approve?", blocks=BUTTON_BLOCKS)
    message = bolt.double.message("C_OPS", posted["ts"])
    assert message is not None

    assert bolt.sender.click(message, "approve", user_id="U_BOB").status == 200
    payload = bolt.sender.last_payload
    assert payload is not None and list(payload) == [
        "type",
        "user",
        "api_app_id",
        "token",
        "container",
        "trigger_id",
        "team",
        "channel",
        "message",
        "response_url",
        "actions",
    ]
    assert payload["container"] == {
        "type": "message",
        "message_ts": posted["ts"],
        "channel_id": "C_OPS",
        "is_ephemeral": False,
    }
    assert payload["message"]["blocks"] == message.blocks
    action = payload["actions"][0]
    assert (action["type"], action["block_id"], action["value"]) == (
        "button",
        "decide",
        "restore:12345",
    )

    wait_for_reply(bolt)
    edited = bolt.double.message("C_OPS", posted["ts"])
    assert edited is not None and edited.text == "Approved by <@U_BOB>" and edited.updated == 1
    assert bolt.handled == ["approve:restore:12345"]

    # An overflow choice; then a click on an ephemeral message: no `message`, is_ephemeral true.
    assert bolt.sender.click(message, "more", value="cancel").status == 200
    ask = bolt.client.chat_postEphemeral(
        channel="C_OPS", user="U_ALICE", text="Sure?", blocks=BUTTON_BLOCKS
    )
    private = bolt.double.message("C_OPS", ask["message_ts"])
    assert private is not None
    assert bolt.sender.click(private, "approve").status == 200
    payload = bolt.sender.last_payload
    assert payload is not None and "message" not in payload
    assert payload["container"]["is_ephemeral"] is True
    wait_for_reply(bolt)
    current = bolt.double.message("C_OPS", ask["message_ts"])
    assert current is not None and current.ephemeral and current.updated == 1
    assert current.text == "Approved by <@U_ALICE>"
    assert bolt.handled[1] == "more:cancel"


def test_bolt_view_submission_from_a_modal_opened_by_a_command(bolt: Harness) -> None:
    assert bolt.sender.slash_command("restore").status == 200
    opened = bolt.double.wait_for(
        lambda e: isinstance(e, RecordedCall) and e.method == "views.open"
    )
    assert isinstance(opened, RecordedCall) and opened.ok
    view = bolt.double.view(opened.response["view"]["id"])
    assert view is not None

    rejected = bolt.sender.view_submission(
        view, values={"server": {"server_id": "web-1"}, "kind": {"kind": "full"}}
    )
    assert rejected.status == 200
    assert rejected.json() == {"response_action": "errors", "errors": {"server": "Digits only"}}
    assert bolt.double.open_views("U_ALICE")  # still open
    state = bolt.sender.last_payload["view"]["state"]["values"]  # type: ignore[index]
    assert state["kind"]["kind"]["selected_option"]["value"] == "full"

    accepted = bolt.sender.view_submission(
        view, values={"server": {"server_id": "12345"}, "kind": {"kind": "files"}}
    )
    assert accepted.status == 200 and accepted.text == ""
    assert bolt.double.open_views("U_ALICE") == []
    assert bolt.handled[-1] == "restore:12345:files:12345"


def test_bolt_rejects_forged_and_stale_signatures(bolt: Harness) -> None:
    body = urlencode(
        {
            "command": "/backup",
            "text": "list",
            "user_id": "U_ALICE",
            "channel_id": "C_OPS",
            "team_id": "T111",
            "response_url": bolt.double.response_url("genuine", channel_id="C_OPS"),
        }
    )
    forged = bolt.sender.post(body, signature="v0=" + "0" * 64)
    assert forged.status == 401
    other = SlackSender(bolt.sender.app_url, "not-the-secret", bolt.double)
    assert other.post(body).status == 401
    stale = bolt.sender.post(body, timestamp=int(time.time()) - 6 * 60)
    assert stale.status == 401
    fresh = bolt.sender.post(body)
    assert fresh.status == 200
    bolt.double.wait_for(lambda e: isinstance(e, RecordedResponse) and e.url_id == "genuine")
    assert bolt.handled == ["command:list"]  # only the genuine request reached the listener


def test_view_submission_answers_update_and_clear(bolt: Harness) -> None:
    trigger = bolt.double.new_trigger_id("U_ALICE")
    opened = bolt.client.views_open(trigger_id=trigger, view=WIZARD)["view"]

    def submit(view_id: str, step: str) -> None:
        view = bolt.double.view(view_id)
        assert view is not None
        answer = bolt.sender.view_submission(view, values={"server": {"server_id": step}})
        assert answer.status == 200 and answer.json()["response_action"] == step

    submit(opened["id"], "update")
    updated = bolt.double.view(opened["id"])
    assert updated is not None and updated["private_metadata"] == "update"
    assert [v["id"] for v in bolt.double.open_views("U_ALICE")] == [opened["id"]]
    submit(opened["id"], "clear")
    assert bolt.double.open_views("U_ALICE") == []
    assert bolt.handled == ["wizard:update", "wizard:clear"]
