"""The `/backup` grammar: every form, Slack's escaping, and every error a person can make."""

from __future__ import annotations

import pickle
import random
from datetime import timedelta

import pytest

from bot.slack.parser import (
    AUDIT_ACTIONS,
    USAGE,
    AuditCommand,
    AuditExportCommand,
    Command,
    CreateCommand,
    DeleteCommand,
    HelpCommand,
    ListCommand,
    ParseError,
    RestoreCommand,
    ServerSpec,
    parse,
    usage_for,
)

WEB = ServerSpec(name="web-01")
S12 = ServerSpec(id=12345)

LIST_USAGE = "/backup list [SERVER] [manual|automatic] [public]"
CREATE_USAGE = "/backup create SERVER [description…]"
DELETE_USAGE = "/backup delete BACKUP_ID"
RESTORE_USAGE = "/backup restore BACKUP_ID [reason…]"
STATUS_USAGE = "/backup status [SERVER]"
AUDIT_USAGE = (
    "/backup audit [@user] [server:SERVER] [action:ACTION] [outcome:ok|denied|error] "
    "[approval:N] [since:7d]"
)
EXPORT_USAGE = "/backup audit export [the same filters] [format:csv|jsonl]"


def parse_error(text: str) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse(text)
    return info.value


# --- valid commands -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # help
        ("", HelpCommand()),
        ("   ", HelpCommand()),
        ("\n\t \n", HelpCommand()),
        ("help", HelpCommand()),
        ("HELP", HelpCommand()),
        ("  Help  ", HelpCommand()),
        ("help list", HelpCommand()),
        ('help "unclosed', HelpCommand()),
        # list
        ("list", ListCommand()),
        ("LIST", ListCommand()),
        ("list web-01", ListCommand(server=WEB)),
        ("list 12345", ListCommand(server=S12)),
        ("list 007", ListCommand(server=ServerSpec(id=7))),
        ("list manual", ListCommand(backup_type="manual")),
        ("list automatic", ListCommand(backup_type="automatic")),
        ("list AUTOMATIC", ListCommand(backup_type="automatic")),
        ("list public", ListCommand(public=True)),
        ("list Public", ListCommand(public=True)),
        ("list web-01 manual", ListCommand(server=WEB, backup_type="manual")),
        ("list manual web-01", ListCommand(server=WEB, backup_type="manual")),
        ("list 12345 automatic public", ListCommand(S12, "automatic", True)),
        ("list public automatic 12345", ListCommand(S12, "automatic", True)),
        ("list automatic public web-01", ListCommand(WEB, "automatic", True)),
        ("list public web-01 manual", ListCommand(WEB, "manual", True)),
        ("  list \n  web-01\t\tmanual  ", ListCommand(server=WEB, backup_type="manual")),
        # a quoted word is never a keyword: how to name a server "manual"
        ('list "manual"', ListCommand(server=ServerSpec(name="manual"))),
        ("list 'public' manual", ListCommand(ServerSpec(name="public"), "manual")),
        ("list “web-01”", ListCommand(server=WEB)),
        ("list db_2.internal", ListCommand(server=ServerSpec(name="db_2.internal"))),
        ("list 10.0.0.1", ListCommand(server=ServerSpec(name="10.0.0.1"))),
        ("list 1web", ListCommand(server=ServerSpec(name="1web"))),
        ("list " + "a" * 255, ListCommand(server=ServerSpec(name="a" * 255))),
        ("list Web-01", ListCommand(server=ServerSpec(name="Web-01"))),
        # Slack auto-links names that look like domains
        (
            "list <http://db1.example.com|db1.example.com> manual",
            ListCommand(ServerSpec(name="db1.example.com"), "manual"),
        ),
        # create
        ("create web-01", CreateCommand(server=WEB)),
        ("CREATE 12345", CreateCommand(server=S12)),
        ("create web-01 before deploy", CreateCommand(WEB, "before deploy")),
        ('create web-01 "before deploy"', CreateCommand(WEB, "before deploy")),
        ("create web-01 'before deploy'", CreateCommand(WEB, "before deploy")),
        ("create web-01 “before deploy”", CreateCommand(WEB, "before deploy")),
        ("create web-01 \u2018before deploy\u2019", CreateCommand(WEB, "before deploy")),
        ("create web-01 it's fine", CreateCommand(WEB, "it's fine")),
        ("create web-01 it\u2019s fine", CreateCommand(WEB, "it's fine")),
        ("create web-01 'it's fine'", CreateCommand(WEB, "it's fine")),
        ("create web-01 don't 'panic'", CreateCommand(WEB, "don't 'panic'")),
        ("create web-01 'a' and 'b'", CreateCommand(WEB, "'a' and 'b'")),
        ('create web-01 "a" and "b"', CreateCommand(WEB, '"a" and "b"')),
        ('create web-01 the 5" disk', CreateCommand(WEB, 'the 5" disk')),
        ('create web-01 "before deploy', CreateCommand(WEB, '"before deploy')),
        ('create web-01 ""', CreateCommand(WEB, None)),
        ("create web-01   \n  ", CreateCommand(WEB, None)),
        ("create web-01 before\n  deploy\tof  v2", CreateCommand(WEB, "before deploy of v2")),
        ("create web-01 list manual public", CreateCommand(WEB, "list manual public")),
        ("create manual", CreateCommand(ServerSpec(name="manual"))),
        ('create "web-01" before deploy', CreateCommand(WEB, "before deploy")),
        ("create web-01 R&amp;D &lt;test&gt;", CreateCommand(WEB, "R&D <test>")),
        ("create web-01 &amp;lt; is typed", CreateCommand(WEB, "&lt; is typed")),
        (
            "create web-01 for <@U123ABC|alice> in <#C42|ops> see <https://x.io/p|x.io/p>",
            CreateCommand(WEB, "for @alice in #ops see x.io/p"),
        ),
        ("create web-01 ping <@U123ABC> <!here>", CreateCommand(WEB, "ping @U123ABC @here")),
        ("create web-01 <https://example.com>", CreateCommand(WEB, "https://example.com")),
        ("create web-01 server:x since:7d", CreateCommand(WEB, "server:x since:7d")),
        # delete / restore
        ("delete 501", DeleteCommand(501)),
        ("DELETE 501", DeleteCommand(501)),
        ("delete #501", DeleteCommand(501)),
        ("delete   0042  ", DeleteCommand(42)),
        ('delete "501"', DeleteCommand(501)),
        ("delete 9223372036854775807", DeleteCommand(2**63 - 1)),
        ("restore 499", RestoreCommand(499)),
        ("Restore #499", RestoreCommand(499)),
        ("restore\n499\n", RestoreCommand(499)),
        (
            "restore 499 disk corrupted after upgrade",
            RestoreCommand(499, "disk corrupted after upgrade"),
        ),
        ('restore 499 "rollback: bad *deploy*"', RestoreCommand(499, "rollback: bad *deploy*")),
        # audit
        ("audit", AuditCommand()),
        ("AUDIT", AuditCommand()),
        ("audit <@U123ABC>", AuditCommand(user_id="U123ABC")),
        ("audit <@U123ABC|alice>", AuditCommand(user_id="U123ABC")),
        ("audit <@W0987ZY|bob.smith>", AuditCommand(user_id="W0987ZY")),
        ("audit server:web-01", AuditCommand(server=WEB)),
        ("audit server:12345", AuditCommand(server=S12)),
        ("audit SERVER:web-01", AuditCommand(server=WEB)),
        ('audit server:"web-01"', AuditCommand(server=WEB)),
        ("audit server: web-01", AuditCommand(server=WEB)),
        (
            "audit server:<http://db1.example.com|db1.example.com>",
            AuditCommand(server=ServerSpec(name="db1.example.com")),
        ),
        ("audit action:restore", AuditCommand(action="restore")),
        ("audit approval:7", AuditCommand(approval_id=7)),
        ("audit approval:#12 action:approve", AuditCommand(action="approve", approval_id=12)),
        ("audit action:Delete", AuditCommand(action="delete")),
        ("audit action: approve", AuditCommand(action="approve")),
        ("audit since:30m", AuditCommand(since=timedelta(minutes=30))),
        ("audit since:12h", AuditCommand(since=timedelta(hours=12))),
        ("audit since:7d", AuditCommand(since=timedelta(days=7))),
        ("audit since:2w", AuditCommand(since=timedelta(weeks=2))),
        ("audit since:7D", AuditCommand(since=timedelta(days=7))),
        ("audit since:007d", AuditCommand(since=timedelta(days=7))),
        ("audit since:5200w", AuditCommand(since=timedelta(weeks=5200))),
        (
            "audit <@U123ABC|alice> server:web-01 action:restore since:7d",
            AuditCommand("U123ABC", WEB, "restore", timedelta(days=7)),
        ),
        (
            "audit since:1h  action:reject\n server:12345   <@U9>",
            AuditCommand("U9", S12, "reject", timedelta(hours=1)),
        ),
        ("audit export", AuditExportCommand()),
        (
            "audit export <@U1|bob> since:7d format:jsonl",
            AuditExportCommand(AuditCommand(user_id="U1", since=timedelta(days=7)), "jsonl"),
        ),
        ("audit outcome:denied", AuditCommand(outcome="denied")),
        ("AUDIT Export", AuditExportCommand()),
        ("  audit   export \n", AuditExportCommand()),
    ],
)
def test_parses(text: str, expected: Command) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize("action", AUDIT_ACTIONS)
def test_every_audit_action(action: str) -> None:
    assert parse(f"audit action:{action}") == AuditCommand(action=action)
    assert parse(f"audit action:{action.upper()}") == AuditCommand(action=action)


@pytest.mark.parametrize("subcommand", ["list", "LIST", "List", "lIsT"])
def test_subcommands_are_case_insensitive(subcommand: str) -> None:
    assert parse(f"{subcommand} web-01") == ListCommand(server=WEB)


def test_server_names_keep_their_case_and_ids_are_ints() -> None:
    command = parse("create Web-Prod.EU 1")
    assert isinstance(command, CreateCommand)
    assert command.server == ServerSpec(name="Web-Prod.EU")
    assert command.description == "1"
    listed = parse("list 42")
    assert isinstance(listed, ListCommand)
    assert listed.server is not None
    assert listed.server.id == 42
    assert isinstance(listed.server.id, int)
    assert listed.server.name is None


# --- ServerSpec, ParseError, usage ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ('list "Web Server 01"', "Web Server 01"),
        ("list 'Web Server 01' manual", "Web Server 01"),
        ("list веб-сервер-01", "веб-сервер-01"),
        ('audit server:"Web Server 01"', "Web Server 01"),
        ('create "db (primary)" before the upgrade', "db (primary)"),
    ],
)
def test_every_name_the_provider_allows_can_be_typed(text: str, name: str) -> None:
    parsed = parse(text)
    assert parsed.server == ServerSpec(name=name)  # type: ignore[union-attr]


def test_server_spec_str_is_what_the_user_typed() -> None:
    assert str(ServerSpec(id=12345)) == "12345"
    assert str(ServerSpec(name="web-01")) == "web-01"


@pytest.mark.parametrize("kwargs", [{}, {"id": 1, "name": "web-01"}])
def test_server_spec_needs_exactly_one_of_id_and_name(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        ServerSpec(**kwargs)  # type: ignore[arg-type]


def test_commands_are_frozen_and_hashable() -> None:
    command = parse("list web-01 manual")
    with pytest.raises(AttributeError):
        command.public = True  # type: ignore[misc,union-attr]
    assert len({parse("delete 1"), parse("delete #1"), parse("restore 1")}) == 2


def test_parse_error_carries_message_and_usage() -> None:
    error = ParseError("create needs a server.", CREATE_USAGE)
    assert error.message == "create needs a server."
    assert error.usage == CREATE_USAGE
    assert str(error) == "create needs a server."
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own object
    assert (copy.message, copy.usage) == (error.message, error.usage)


def test_usage_has_one_line_per_form() -> None:
    assert USAGE.splitlines() == [
        "/backup help",
        LIST_USAGE,
        CREATE_USAGE,
        DELETE_USAGE,
        RESTORE_USAGE,
        STATUS_USAGE,
        AUDIT_USAGE,
        EXPORT_USAGE,
    ]


@pytest.mark.parametrize(
    ("subcommand", "expected"),
    [
        ("help", "/backup help"),
        ("list", LIST_USAGE),
        ("LIST", LIST_USAGE),
        (" create ", CREATE_USAGE),
        ("delete", DELETE_USAGE),
        ("restore", RESTORE_USAGE),
        ("audit", f"{AUDIT_USAGE}\n{EXPORT_USAGE}"),
        ("audit export", EXPORT_USAGE),
        ("audit  EXPORT", EXPORT_USAGE),
        ("", USAGE),
        ("nonsense", USAGE),
    ],
)
def test_usage_for(subcommand: str, expected: str) -> None:
    assert usage_for(subcommand) == expected


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragments", "usage"),
    [
        # unknown subcommand, with the closest known one
        ("lst", ["`lst` is not a /backup command", "Did you mean `list`?"], USAGE),
        ("LSIT web-01", ["`LSIT`", "Did you mean `list`?"], USAGE),
        ("creat web-01", ["Did you mean `create`?"], USAGE),
        ("delet 5", ["Did you mean `delete`?"], USAGE),
        ("restor 5", ["Did you mean `restore`?"], USAGE),
        ("audti", ["Did you mean `audit`?"], USAGE),
        ("hlep", ["Did you mean `help`?"], USAGE),
        ("rm 5", ["`rm` is not a /backup command", "Did you mean `delete`?"], USAGE),
        ("ls", ["Did you mean `list`?"], USAGE),
        ("rollback 5", ["Did you mean `restore`?"], USAGE),
        ("frobnicate", ["`frobnicate` is not a /backup command."], USAGE),
        ("web-01", ["`web-01` is not a /backup command"], USAGE),
        ("<@U123|alice> list", ["`@alice` is not a /backup command."], USAGE),
        ("export", ["`export` is not a /backup command"], USAGE),
        ('"list', ["unclosed double quote"], USAGE),
        # list
        ("list <@U123ABC|alice>", ["list needs a server id or name", "mention", "@alice"], None),
        ("list <@U123ABC>", ["list needs a server id or name", "mention", "`@U123ABC`"], None),
        ("list <#C123|general>", ["list needs a server id or name", "channel", "#general"], None),
        ("list <!here>", ["list needs a server id or name", "`@here`"], None),
        ("list <!subteam^S1|@ops>", ["list needs a server id or name", "user group"], None),
        ("list 0", ["server id is a positive whole number, not `0`"], None),
        ("list -5", ["server id is a positive whole number, not `-5`"], None),
        ("list 99999999999999999999", ["server id `99999999999999999999` is too large"], None),
        ("list web_01!", ["`web_01!` is not a server id or name"], None),
        ("list -web", ["`-web` is not a server id or name", "starts with a letter or digit"], None),
        ("list " + "a" * 256, ["too long for a server name", "255"], None),
        ("list .hidden", ["`.hidden` is not a server id or name"], None),
        ('list "  "', ["is not a server id or name", "quotes"], None),
        ('list "web\x0701"', ["is not a server id or name"], None),
        ("list type:manual", ["`type:manual` is not a server id or name"], None),
        ("list web-01 daily", ["`daily` is not a backup type", "only one server"], None),
        ("list web-01 web-02", ["`web-02` is not a backup type", "`web-01` is already"], None),
        ("list web-01 manul", ["Unknown backup type `manul`", "Did you mean `manual`?"], None),
        ("list 5 automatc", ["Unknown backup type `automatc`", "`automatic`?"], None),
        ("list web-01 pubic", ["Unknown backup type `pubic`", "Did you mean `public`?"], None),
        ("list web-01 <@U1|bob>", ["mention", "@bob"], None),
        ("list manual manual", ["backup type `manual` is given twice"], None),
        ("list manual automatic", ["one backup type", "`manual` and `automatic`"], None),
        ("list automatic web-01 MANUAL", ["one backup type", "`automatic` and `manual`"], None),
        ("list public public", ["`public` is given twice"], None),
        ('list "web-01', ["unclosed double quote", "`web-01`"], None),
        # create
        ("create", ["create needs a server"], None),
        ("create   \n ", ["create needs a server"], None),
        ("create <@U123ABC|alice> nightly", ["create needs a server id or name", "@alice"], None),
        ("create <#C1|prod>", ["create needs a server id or name", "channel"], None),
        ("create 0 before deploy", ["server id is a positive whole number, not `0`"], None),
        ("create web/01", ["`web/01` is not a server id or name"], None),
        ('create "web-01 before deploy', ["unclosed double quote"], None),
        # delete and restore
        ("delete", ["delete needs a backup id"], None),
        ("restore", ["restore needs a backup id"], None),
        ("delete abc", ["backup id is a positive whole number, not `abc`"], None),
        ("delete web-01", ["backup id is a positive whole number, not `web-01`"], None),
        ("delete 0", ["backup id is a positive whole number, not `0`"], None),
        ("delete #0", ["backup id is a positive whole number, not `0`"], None),
        ("delete -3", ["backup id is a positive whole number, not `-3`"], None),
        ("delete 1.5", ["backup id is a positive whole number, not `1.5`"], None),
        ("delete #", ["backup id is a positive whole number, not `#`"], None),
        ("delete ##5", ["not `#5`"], None),
        ("delete \uff15", ["backup id is a positive whole number"], None),
        ("delete 9223372036854775808", ["`9223372036854775808` is too large"], None),
        ("delete " + "9" * 5000, ["is too large"], None),
        ("restore ½", ["backup id is a positive whole number"], None),
        ("delete <@U1|bob>", ["delete needs a backup id, not a mention", "@bob"], None),
        ("restore <#C1|general>", ["restore needs a backup id, not a channel"], None),
        ("delete 1 2", ["Too many arguments", "delete takes one backup id", "`2`"], None),
        ("delete 1, 2", ["backup id is a positive whole number, not `1,`"], None),
        # audit
        ("audit <@U1|alice> <@U2|bob>", ["one person", "`@alice` and `@bob`"], AUDIT_USAGE),
        ("audit <@U1> <@U1>", ["one person"], AUDIT_USAGE),
        ("audit <#C1|general>", ["not by a channel", "#general"], AUDIT_USAGE),
        ("audit <!subteam^S9|@ops>", ["not by a user group", "@ops"], AUDIT_USAGE),
        ("audit <!channel>", ["not by `@channel`"], AUDIT_USAGE),
        ("audit @alice", ["`@alice` did not reach me as a Slack mention"], AUDIT_USAGE),
        ("audit server:a server:b", ["`server:` once", "`server:a` and `server:b`"], AUDIT_USAGE),
        ("audit action:list action:list", ["`action:` once"], AUDIT_USAGE),
        ("audit since:1d since:2d", ["`since:` once"], AUDIT_USAGE),
        ("audit Server:a server:a", ["`server:` once"], AUDIT_USAGE),
        ("audit server:<@U1|bob>", ["`server:` needs a server id or name", "mention"], AUDIT_USAGE),
        ("audit server:0", ["server id is a positive whole number, not `0`"], AUDIT_USAGE),
        ("audit server:bad/name", ["`bad/name` is not a server id or name"], AUDIT_USAGE),
        ('audit server:"web-01', ["unclosed double quote"], AUDIT_USAGE),
        ("audit server:", ["`server:` needs a value", "`server:web-01`"], AUDIT_USAGE),
        ("audit action:", ["`action:` needs a value"], AUDIT_USAGE),
        ("audit since:", ["`since:` needs a value", "`since:7d`"], AUDIT_USAGE),
        ("audit server: since:7d", ["`server:` needs a value"], AUDIT_USAGE),
        ("audit server: <@U1>", ["`server:` needs a value"], AUDIT_USAGE),
        ("audit action:deploy", ["`deploy` is not an audit action", "approve"], AUDIT_USAGE),
        ("audit action:delet", ["`delet` is not an audit action", "`delete`?"], AUDIT_USAGE),
        ("audit action:<@U1|bob>", ["`action:` needs an action name, not a mention"], AUDIT_USAGE),
        ("audit approval:seven", ["`approval:` needs an approval number"], AUDIT_USAGE),
        ("audit since:7", ["`since:` takes a number and a unit", "`7` is not one"], AUDIT_USAGE),
        ("audit since:d", ["`since:` takes a number and a unit", "`d` is not one"], AUDIT_USAGE),
        ("audit since:week", ["`since:` takes a number and a unit"], AUDIT_USAGE),
        ("audit since:-7d", ["`since:` takes a number and a unit"], AUDIT_USAGE),
        ("audit since:1.5d", ["`since:` takes a number and a unit"], AUDIT_USAGE),
        ("audit since:7y", ["`y` is not a unit of `since:`", "w (weeks)"], AUDIT_USAGE),
        ("audit since:3days", ["`days` is not a unit of `since:`"], AUDIT_USAGE),
        ("audit since:0d", ["`since:` must be longer than zero"], AUDIT_USAGE),
        ("audit since:000h", ["`since:` must be longer than zero"], AUDIT_USAGE),
        ("audit since:99999w", ["goes back too far"], AUDIT_USAGE),
        ("audit since:" + "9" * 5000 + "d", ["goes back too far"], AUDIT_USAGE),
        ("audit since:<@U1>", ["`since:` needs a time", "mention"], AUDIT_USAGE),
        ("audit user:alice", ["Unknown audit filter `user:`", "@-mention them"], AUDIT_USAGE),
        ("audit foo:bar", ["Unknown audit filter `foo:`", "`action:`"], AUDIT_USAGE),
        (
            "audit serv:web",
            ["Unknown audit filter `serv:`", "Did you mean `server:`?"],
            AUDIT_USAGE,
        ),
        ("audit acton:list", ["Unknown audit filter `acton:`", "`action:`?"], AUDIT_USAGE),
        ("audit web-01", ["Unknown audit filter `web-01`", "`server:web-01`?"], AUDIT_USAGE),
        ("audit restore", ["Unknown audit filter `restore`", "`action:restore`?"], AUDIT_USAGE),
        ("audit 7d", ["Unknown audit filter `7d`", "Did you mean `since:7d`?"], AUDIT_USAGE),
        ("audit ???", ["Unknown audit filter `???`"], AUDIT_USAGE),
        ('audit "server:web-01"', ["Unknown audit filter `server:web-01`"], AUDIT_USAGE),
        ("audit <@U1> export", ["`export` goes right after audit"], AUDIT_USAGE),
        ("audit export format:xml", ["`format:` takes `csv` or `jsonl`, not `xml`"], EXPORT_USAGE),
        ("audit format:csv", ["`format:` goes with `audit export`"], AUDIT_USAGE),
        ("audit outcome:maybe", ["`outcome:` takes `ok`, `denied` or `error`"], AUDIT_USAGE),
    ],
)
def test_errors_name_the_problem(text: str, fragments: list[str], usage: str | None) -> None:
    error = parse_error(text)
    for fragment in fragments:
        assert fragment in error.message
    subcommand = text.split()[0].lower() if text.split() else ""
    expected_usage = usage if usage is not None else usage_for(subcommand)
    assert error.usage == expected_usage


@pytest.mark.parametrize(
    "text",
    [
        "lst",
        "list <@U1|bob>",
        "list web-01 daily",
        "create",
        "delete 1 2",
        "delete " + "7" * 300,
        "audit since:7y",
        "audit foo:bar",
        'create "x',
        "restore " + "x" * 10_000,
    ],
)
def test_messages_are_short_sentences_without_python_reprs(text: str) -> None:
    message = parse_error(text).message
    assert "\n" not in message
    assert len(message) < 300
    assert message[0].isupper() or message[0] in "`" or message.split()[0] in {"create", "list"}
    assert message.rstrip("`").endswith((".", "?"))
    for python in ("Traceback", "None", "Error(", "'", "\\n", "re.Match", "<_Token"):
        assert python not in message


def test_long_values_are_shortened_in_messages() -> None:
    error = parse_error("list " + "a" * 30 + "!" + "b" * 200)
    assert "…`" in error.message
    assert "b" * 50 not in error.message


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("&lt;!channel&gt;", "`\u2039!channel\u203a`"),
        ("list a`b", "`a'b`"),
        ("delete &lt;https://evil.example|click&gt;", "`\u2039https://evil.example|click\u203a`"),
    ],
)
def test_echoed_values_cannot_break_out_into_slack_markup(text: str, shown: str) -> None:
    message = parse_error(text).message
    assert shown in message
    assert "<" not in message
    assert ">" not in message


def test_unbalanced_quote_in_a_description_is_kept_literally() -> None:
    assert parse('create web-01 "before deploy') == CreateCommand(WEB, '"before deploy')
    assert parse("create web-01 'before deploy") == CreateCommand(WEB, "'before deploy")


# --- robustness -----------------------------------------------------------------------------

ALPHABET = [
    *"abcXYZ019 \n\t\"'<>@#|!^:&;-_./\u201c\u201d\u2018\u2019",
    *("&amp;", "&lt;", "&gt;", "<@U1|x>", "<#C1|c>", "<http://a.b|a.b>"),
]
PREFIXES = ["", "list ", "create ", "delete ", "restore ", "audit ", "audit export ", "help "]


def test_any_text_gives_a_command_or_a_parse_error() -> None:
    rng = random.Random(20250116)
    for _ in range(3000):
        text = rng.choice(PREFIXES) + "".join(
            rng.choice(ALPHABET) for _ in range(rng.randint(0, 25))
        )
        try:
            command = parse(text)
        except ParseError as error:
            assert error.message.strip()
            assert error.usage.startswith("/backup ")
            assert "<" not in error.message
        else:
            assert isinstance(
                command,
                HelpCommand
                | ListCommand
                | CreateCommand
                | DeleteCommand
                | RestoreCommand
                | AuditCommand
                | AuditExportCommand,
            )
