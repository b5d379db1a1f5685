"""Drives a Roundcube webmail the way its browser code does, over HTTP only.

Usage: roundcube_client.py BASE_URL USER PASSWORD

Logs in through the login form (its _token, the session cookie), then sends the AJAX
requests Roundcube's app.js sends (with the X-Roundcube-Request header of the mail
page's request token): the INBOX listed by date, newest first; the same list threaded;
the newest message opened (_action=show) and moved to Archive; the next one deleted
(outside Trash app.js's delete button moves the message to Trash) and deleted again in
Trash (flagged \\Deleted and expunged there); the INBOX listed again; logout.

Prints what Roundcube answered, one record a line, fields separated by tabs:
  list COUNT PAGES / list_row UID DEPTH HAS_CHILDREN SUBJECT   (the first page, in order)
  threads COUNT THREADING / thread_row ...                     (threaded, first page)
  show UID SUBJECT BODY                                        (the opened message)
  move UID MESSAGE / delete UID MESSAGE / purge UID MESSAGE    (Roundcube's confirmation)
  trash_row ... / trash_after COUNT / after COUNT / after_row ...
Exits non-zero, saying why, when Roundcube answers with an error.
"""

import html
import http.cookiejar
import json
import re
import sys
import urllib.parse
import urllib.request

base, user, password = sys.argv[1:4]
opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
request_token = None
records = []


def fail(why, text=""):
    for r in records:
        print("\t".join(r), file=sys.stderr)
    print(f"roundcube_client: {why}\n{text[:4000]}", file=sys.stderr)
    sys.exit(1)


def record(*fields):
    records.append([" ".join(str(f).split()) for f in fields])


def call(params, post=None, ajax=False):
    """GET (or POST `post`) /?PARAMS; returns the body."""
    req = urllib.request.Request(
        base + "/?" + urllib.parse.urlencode(params),
        data=urllib.parse.urlencode(post).encode() if post is not None else None,
    )
    if ajax:
        req.add_header("X-Roundcube-Request", request_token)
        req.add_header("X-Requested-With", "XMLHttpRequest")
    with opener.open(req, timeout=60) as resp:
        return resp.read().decode("utf-8", "replace")


def ajax(params, post=None):
    """An AJAX request (_remote=1): Roundcube's JSON answer, its `exec` the commands for
    the browser; an error message in it fails."""
    params = dict(params, _remote="1")
    text = call(params, None if post is None else dict(post, _remote="1"), ajax=True)
    try:
        answer = json.loads(text)
    except ValueError:
        fail(f"not JSON from {params}", text)
    if re.search(r'display_message\("[^"]*","error"', answer.get("exec", "")):
        fail(f"error from {params}", answer["exec"])
    return answer


def confirmation(answer):
    m = re.search(r'display_message\("([^"]*)","confirmation"', answer.get("exec", ""))
    return m.group(1) if m else "-"


def rows(answer):
    """The message rows of a list answer, in order: (uid, depth, has_children, subject)."""
    out = []
    for m in re.finditer(r"this\.add_message_row\((\d+),(\{.*?\}),(\{.*?\}),(?:true|false)\);", answer["exec"]):
        cols, flags = json.loads(m.group(2)), json.loads(m.group(3))
        subject = html.unescape(re.sub(r"<[^>]*>", "", cols.get("subject", "")))
        out.append((m.group(1), flags.get("depth", 0), int(bool(flags.get("has_children"))), subject))
    return out


def listing(mbox, **extra):
    return ajax(dict({"_task": "mail", "_action": "list", "_mbox": mbox, "_page": "1"}, **extra))


# the login form: its CSRF token and the session cookie it sets; then the mail page
page = call({})
m = re.search(r'name="_token" value="([^"]+)"', page)
if not m:
    fail("no _token on the login page", page)
login = {"_token": m.group(1), "_task": "login", "_action": "login", "_timezone": "UTC", "_url": ""}
page = call({"_task": "login"}, post=dict(login, _user=user, _pass=password))
m = re.search(r'"request_token":"([^"]+)"', page)
if not m or '"task":"mail"' not in page:
    fail("login did not reach the mail view", page)
request_token = m.group(1)
record("login", "ok")

answer = listing("INBOX", _sort="date_DESC", _threads="0")
record("list", answer["env"].get("messagecount"), answer["env"].get("pagecount"))
inbox = rows(answer)
for r in inbox:
    record("list_row", *r)

answer = listing("INBOX", _sort="date_DESC", _threads="1")
record("threads", answer["env"].get("messagecount"), int(bool(answer["env"].get("threading"))))
for r in rows(answer):
    record("thread_row", *r)
listing("INBOX", _threads="0")

if len(inbox) < 2:
    fail("fewer than 2 messages listed")
moved, deleted = inbox[0][0], inbox[1][0]

# open the newest message: the page's title is its subject, #messagebody its text
page = call({"_task": "mail", "_action": "show", "_uid": moved, "_mbox": "INBOX"})
title = re.search(r"<title>(.*?)</title>", page, re.S)
body = re.search(r'<div id="messagebody"[^>]*>(.*?)</div>\s*</div>', page, re.S)
if not title or not body:
    fail("no message shown", page)
subject = html.unescape(title.group(1)).split(" :: ", 1)[-1]
record("show", moved, subject, html.unescape(re.sub(r"<[^>]*>", " ", body.group(1))))

answer = ajax({"_task": "mail", "_action": "move"}, post={"_uid": moved, "_mbox": "INBOX", "_target_mbox": "Archive"})
record("move", moved, confirmation(answer))
answer = ajax({"_task": "mail", "_action": "move"}, post={"_uid": deleted, "_mbox": "INBOX", "_target_mbox": "Trash"})
record("delete", deleted, confirmation(answer))

trash = rows(listing("Trash", _sort="date_DESC"))
for r in trash:
    record("trash_row", *r)
if len(trash) != 1:
    fail(f"Trash holds {len(trash)} messages, not 1")
answer = ajax({"_task": "mail", "_action": "delete"}, post={"_uid": trash[0][0], "_mbox": "Trash"})
record("purge", trash[0][0], confirmation(answer))
record("trash_after", len(rows(listing("Trash"))))

answer = listing("INBOX", _sort="date_DESC")
record("after", answer["env"].get("messagecount"))
for r in rows(answer)[:3]:
    record("after_row", *r)

call({"_task": "logout", "_token": request_token})
for r in records:
    print("\t".join(r))
