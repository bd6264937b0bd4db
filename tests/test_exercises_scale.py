"""Notebook 07's checkers: right answers (and an unusual one) pass, the usual wrong ones fail with the matching hint."""

from __future__ import annotations

from chatkit import exercises_scale as ex

from .feedback import assert_fails


def next_step(last_id, incoming_id):
    if incoming_id <= last_id:
        return "duplicate"
    return "deliver" if incoming_id == last_id + 1 else "fill"


def online(local, entries, now):
    return sorted(set(local) | {k.split("\x1f", 1)[1] for k, expiry in entries.items() if expiry > now})


def finish(rows, reply_id, text, status):
    row = rows.get(reply_id)
    if row is None or row["status"] != "streaming":
        return False
    row.update(content=text, status=status)
    return True


def test_right_answers_pass(capsys):
    assert ex.check_next_step(next_step) is True
    assert ex.check_online(online) is True
    assert ex.check_fenced_finish(finish) is True
    assert capsys.readouterr().out.count("✅") == 3


def test_unusual_right_answers_pass(capsys):
    # the step as an index: (incoming > last) + (incoming > last + 1) picks one of three words
    assert ex.check_next_step(
        lambda last, new: ("duplicate", "deliver", "fill")[(new > last) + (new > last + 1)]
    )
    # partition instead of split, a generator of names, sorted() of a set union
    assert ex.check_online(
        lambda local, entries, now: sorted(
            {*local, *(k.partition("\x1f")[2] for k, t in entries.items() if now < t)}
        )
    )

    def replace_row(rows, reply_id, text, status):  # a new dict for the row, not update()
        if rows.get(reply_id, {}).get("status") != "streaming":
            return False
        rows[reply_id] = {"content": text, "status": status}
        return True

    assert ex.check_fenced_finish(replace_row) is True
    assert capsys.readouterr().out.count("✅") == 3


def test_next_step_wrong_answers(capsys):
    assert ex.check_next_step(lambda last, new: "deliver" if new > last else "duplicate") is False
    assert_fails(False, capsys.readouterr().out, "an id further on", "'fill' from the store")
    assert (
        ex.check_next_step(lambda last, new: "fill" if new > last + 1 else "deliver") is False
    )  # never drops
    assert_fails(False, capsys.readouterr().out, "an id already delivered", "'duplicate'")


def test_online_wrong_answers(capsys):
    no_expiry = lambda local, entries, now: sorted(set(local) | {k.split("\x1f")[1] for k in entries})  # noqa: E731
    assert ex.check_online(no_expiry) is False
    assert_fails(False, capsys.readouterr().out, "stopped refreshing")
    assert ex.check_online(lambda local, entries, now: sorted(set(local) | set(entries))) is False
    assert_fails(False, capsys.readouterr().out, "node\\x1fuser")
    at_now_alive = lambda local, entries, now: sorted(  # noqa: E731
        set(local) | {k.split("\x1f")[1] for k, t in entries.items() if t >= now}
    )
    assert ex.check_online(at_now_alive) is False
    assert_fails(False, capsys.readouterr().out, "not after `now`")
    twice = lambda local, entries, now: sorted(
        [*local, *(k.split("\x1f")[1] for k, t in entries.items() if t > now)]
    )  # noqa: E731
    assert ex.check_online(twice) is False
    assert_fails(False, capsys.readouterr().out, "a user on two processes", "once each")


def test_fenced_finish_wrong_answers(capsys):
    def overwrite(rows, reply_id, text, status):
        rows.setdefault(reply_id, {}).update(content=text, status=status)
        return True

    assert ex.check_fenced_finish(overwrite) is False
    assert_fails(False, capsys.readouterr().out, "still 'streaming'")

    def key_error(rows, reply_id, text, status):  # forgets that the id may be unknown
        if rows[reply_id]["status"] != "streaming":
            return False
        rows[reply_id].update(content=text, status=status)
        return True

    assert ex.check_fenced_finish(key_error) is False
    assert_fails(False, capsys.readouterr().out, "an id that is not in the store", "raised KeyError: 9")

    def says_nothing(rows, reply_id, text, status):  # writes correctly but returns None
        finish(rows, reply_id, text, status)

    assert ex.check_fenced_finish(says_nothing) is False
    assert_fails(False, capsys.readouterr().out, "return True when you wrote")


def test_scaffold_is_pending(capsys):
    def todo(*args):
        raise NotImplementedError

    assert (
        ex.check_next_step(todo) is None
        and ex.check_online(todo) is None
        and ex.check_fenced_finish(todo) is None
    )
    assert capsys.readouterr().out.count("⏳") == 3
