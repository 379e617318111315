"""`personarag users ...`: the user store from the command line.

    personarag users import --store users.db --task LaMP-3 dev_questions.json
    personarag users import --store postgresql://me@db-host/users export.jsonl
    personarag users export --store users.db users.jsonl
    personarag users add-item --store users.db --user ann --id r1 --text "Great strings." --date 2024-05-01
    personarag users delete --store users.db --user ann [--item r1]
    personarag users share --store users.db --user ann off
    personarag users show --store users.db [--user ann]
    personarag users compact --store users.db [--through SEQ] [--keep N]
    personarag users summarize users.db --llm transformers:PATH --task LaMP-3 [--llm-option threads=1]

STORE is a path, sqlite:///path.db or postgresql://user:password@host:port/database
(default: $PERSONARAG_STORE). Imports are resumable: each batch of users is one transaction,
and rerunning the same import after a crash continues and ends with the same store.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable

from personarag.errors import InputError

GROUP = "users"
STORE_ENV = "PERSONARAG_STORE"


def _add_store(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", metavar="STORE", default=os.environ.get(STORE_ENV),
                        help=f"path, sqlite:///path.db or postgresql://user:pw@host/db (default: ${STORE_ENV})")


def _open(args: argparse.Namespace) -> Any:
    from personarag.personal.store import UserStore

    if not args.store:
        raise InputError(f"no user store given: pass --store PATH_OR_URL or set ${STORE_ENV}")
    return UserStore(args.store)


# -- import -------------------------------------------------------------------------------
def _import_arguments(parser: argparse.ArgumentParser) -> None:
    _add_store(parser)
    parser.add_argument("file", metavar="FILE", help="a LaMP *_questions.json file, or a .jsonl export")
    parser.add_argument("--task", help="LaMP task of a questions file (default: from a LaMP_N folder in the path)")
    parser.add_argument("--format", choices=("auto", "lamp", "jsonl"), default="auto",
                        help="auto: .jsonl files are exports, anything else a LaMP questions file")
    parser.add_argument("--batch-size", type=int, default=64, metavar="N", help="users per transaction (default: 64)")


def _import(args: argparse.Namespace) -> int:
    kind = args.format if args.format != "auto" else ("jsonl" if args.file.endswith(".jsonl") else "lamp")
    with _open(args) as store:
        if kind == "jsonl":
            report = store.import_jsonl(args.file, batch_size=args.batch_size, progress=True)
        else:
            report = store.import_lamp(args.file, args.task, batch_size=args.batch_size, progress=True)
        print(f"{store.url}: {report.users} users ({report.new_users} new), items: {report.items_added} added, "
              f"{report.items_updated} updated, {report.items_unchanged} unchanged; {len(store)} users in the store")
    return 0


# -- export -------------------------------------------------------------------------------
def _export_arguments(parser: argparse.ArgumentParser) -> None:
    _add_store(parser)
    parser.add_argument("output", metavar="OUT", help="JSONL file to write (one user per line)")


def _export(args: argparse.Namespace) -> int:
    with _open(args) as store:
        count = store.export(args.output)
    print(f"wrote {count} users to {args.output}")
    return 0


# -- add-item -----------------------------------------------------------------------------
def _add_item_arguments(parser: argparse.ArgumentParser) -> None:
    _add_store(parser)
    parser.add_argument("--user", required=True, help="user id (created when missing)")
    parser.add_argument("--id", required=True, dest="item_id", help="item id, unique within the user's history")
    parser.add_argument("--text", required=True, help="the item text")
    parser.add_argument("--title", help="optional title")
    parser.add_argument("--date", help="e.g. 2024-05-01 (ISO dates order the history)")
    parser.add_argument("--private", action="store_true", help="never show this item in other users' results")
    parser.add_argument("--field", action="append", default=[], metavar="KEY=VALUE",
                        help="a task field such as score=4; repeat for several")


def _add_item(args: argparse.Namespace) -> int:
    from personarag.types import Document

    meta: dict[str, Any] = {}
    for field in args.field:
        key, sep, value = field.partition("=")
        if not sep or not key:
            raise InputError(f"--field expects KEY=VALUE, got {field!r}")
        meta[key] = value
    if args.date:
        meta["date"] = args.date
    if args.private:
        meta["shared"] = False
    with _open(args) as store:
        version = store.add_items(args.user, [Document(args.item_id, args.text, args.title, meta)])
    print(f"user {args.user!r}: history version {version}")
    return 0


# -- delete -------------------------------------------------------------------------------
def _delete_arguments(parser: argparse.ArgumentParser) -> None:
    _add_store(parser)
    parser.add_argument("--user", required=True, help="user id")
    parser.add_argument("--item", metavar="ID", help="delete only this item (default: the user and all derived data)")


def _delete(args: argparse.Namespace) -> int:
    with _open(args) as store:
        if args.item is not None:
            version = store.delete_item(args.user, args.item)
            print(f"user {args.user!r}: deleted item {args.item!r}; history version {version}")
        else:
            store.delete_user(args.user)
            print(f"deleted user {args.user!r}")
    return 0


# -- share ---------------------------------------------------------------------------------
def _share_arguments(parser: argparse.ArgumentParser) -> None:
    _add_store(parser)
    parser.add_argument("--user", required=True, help="user id")
    parser.add_argument("state", choices=("on", "off"), help="off: keep the user out of other users' results")


def _share(args: argparse.Namespace) -> int:
    with _open(args) as store:
        store.set_user_shared(args.user, args.state == "on")
    print(f"user {args.user!r}: shared {args.state}")
    return 0


# -- show ---------------------------------------------------------------------------------
def _show_arguments(parser: argparse.ArgumentParser) -> None:
    _add_store(parser)
    parser.add_argument("--user", help="show this user's history, newest first (default: list the users)")
    parser.add_argument("--json", action="store_true", help="JSON output")


def _show(args: argparse.Namespace) -> int:
    with _open(args) as store:
        if args.user is None:
            versions, private = store.history_versions(), store.private_user_ids()
            users = [(u.id, versions[u.id], len(u.history), u.id not in private) for u in store.users()]
            if args.json:
                print(json.dumps([{"user_id": i, "history_version": v, "items": n, "shared": shared}
                                  for i, v, n, shared in users]))
            else:
                print(f"{store.url}: {len(users)} users")
                for user_id, version, count, shared in users:
                    print(f"{user_id}\t{count} items\tversion {version}{'' if shared else chr(9) + 'private'}")
            return 0
        user = store.user(args.user)
        version = store.history_version(args.user)
    if args.json:
        history = [{"id": d.id, "text": d.text, "title": d.title, "meta": dict(d.meta)} for d in user.history]
        print(json.dumps({"user_id": user.id, "history_version": version, "history": history}, ensure_ascii=False))
        return 0
    print(f"user {user.id!r}: {len(user.history)} items, history version {version}")
    for d in user.history:
        text = d.text if len(d.text) <= 100 else d.text[:97] + "..."
        date = d.meta.get("date", "undated")
        private = "  (private)" if d.meta.get("shared") is False else ""
        print(f"{d.id}\t{date}\t{(d.title + ': ') if d.title else ''}{text}{private}")
    sys.stdout.flush()
    return 0


# -- compact ------------------------------------------------------------------------------
def _compact_arguments(parser: argparse.ArgumentParser) -> None:
    _add_store(parser)
    parser.add_argument("--through", type=int, metavar="SEQ",
                        help="drop changes up to this sequence number (default: every change but the newest)")
    parser.add_argument("--keep", type=int, default=0, metavar="N", help="keep at least the newest N changes (default: 0)")
    parser.add_argument("--json", action="store_true", help="JSON output")


def _compact(args: argparse.Namespace) -> int:
    with _open(args) as store:
        report = store.compact_changes(args.through, keep=args.keep)
    if args.json:
        print(json.dumps({"dropped": report.dropped, "floor": report.floor, "sequence": report.sequence,
                          "remaining": report.remaining}))
    else:
        print(f"dropped {report.dropped} change-log rows; changes through {report.floor} are gone "
              f"(consumers behind it re-read every user), {report.remaining} left, newest {report.sequence}")
    return 0


# -- summarize ----------------------------------------------------------------------------
def _summarize_arguments(parser: argparse.ArgumentParser) -> None:
    _add_store(parser)
    parser.add_argument("store_location", nargs="?", metavar="STORE", help="the store (same as --store)")
    parser.add_argument("--llm", required=True, metavar="SPEC", help="the LLM that writes the summaries, e.g. transformers:PATH")
    parser.add_argument("--llm-option", metavar="KEY=VALUE", action="append",
                        help="an option of the LLM, e.g. threads=1 or cache_dir=DIR (VALUE read as YAML); repeat for several")
    parser.add_argument("--task", help="the LaMP task the summaries are for (their kind); default: a general summary")
    parser.add_argument("--user", action="append", metavar="ID", help="summarize only this user; repeat for several")
    parser.add_argument("--batch-size", type=int, default=8, metavar="N", help="users per LLM call and per write (default: 8)")
    parser.add_argument("--max-prompt-tokens", type=int, default=1024, metavar="N", help="budget of a summary prompt")
    parser.add_argument("--max-items", type=int, default=50, metavar="N", help="newest history items a summary reads")
    parser.add_argument("--label-stats", action="store_true",
                        help="begin LaMP-2/3 summaries with exact counts of the user's labels")
    parser.add_argument("--force", action="store_true", help="rewrite every summary, also those that are up to date")


def _summarize(args: argparse.Namespace) -> int:
    from personarag.commands.common import llm_options
    from personarag.llm import load_llm
    from personarag.personal.summaries import summarize_users

    if args.store_location and args.store and args.store_location != args.store:
        raise InputError(f"two stores given: {args.store_location!r} and --store {args.store!r}")
    args.store = args.store_location or args.store
    llm = load_llm(args.llm, **llm_options(args, {}))
    with _open(args) as store:
        report = summarize_users(store, llm, args.task, user_ids=args.user, batch_size=args.batch_size, force=args.force,
                                 progress=True, max_prompt_tokens=args.max_prompt_tokens, max_items=args.max_items,
                                 label_stats=args.label_stats)
    print(f"{store.url}: {report.written} summaries written ({report.empty} of empty histories), "
          f"{report.up_to_date} up to date, of {report.users} users")
    return 0


@dataclass(frozen=True)
class _Command:
    NAME: str
    HELP: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


SUBCOMMANDS = [
    _Command("import", "import users from a LaMP questions file or a JSONL export (resumable)", _import_arguments, _import),
    _Command("export", "write every user and their history as JSONL (re-importable)", _export_arguments, _export),
    _Command("add-item", "add or update one history item of a user", _add_item_arguments, _add_item),
    _Command("delete", "delete a user with all derived data, or one item", _delete_arguments, _delete),
    _Command("share", "mark a user shared (on) or kept out of other users' results (off)", _share_arguments, _share),
    _Command("show", "list the users, or show one user's history newest first", _show_arguments, _show),
    _Command("compact", "drop old change-log rows (bound retrievers behind them re-read every user)",
             _compact_arguments, _compact),
    _Command("summarize", "write an LLM summary of each user's history where it is missing or stale (resumable)",
             _summarize_arguments, _summarize),
]
