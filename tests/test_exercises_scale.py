"""Notebook 07's checkers: right answers pass, the usual wrong ones fail with the matching hint."""

from __future__ import annotations

from chatkit import exercises_scale as ex


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


def test_wrong_answers_fail_with_the_hint(capsys):
    assert ex.check_next_step(lambda last, new: "deliver" if new > last else "duplicate") is False
    assert "fill" in capsys.readouterr().out
    assert (
        ex.check_online(
            lambda local, entries, now: sorted(set(local) | {k.split("\x1f")[1] for k in entries})
        )
        is False
    )
    assert "stopped refreshing" in capsys.readouterr().out
    assert ex.check_online(lambda local, entries, now: sorted(set(local) | set(entries))) is False
    assert "node\\x1fuser" in capsys.readouterr().out

    def overwrite(rows, reply_id, text, status):
        rows.setdefault(reply_id, {}).update(content=text, status=status)
        return True

    assert ex.check_fenced_finish(overwrite) is False
    assert "still 'streaming'" in capsys.readouterr().out


def test_scaffold_is_pending(capsys):
    def todo(*args):
        raise NotImplementedError

    assert (
        ex.check_next_step(todo) is None
        and ex.check_online(todo) is None
        and ex.check_fenced_finish(todo) is None
    )
    assert capsys.readouterr().out.count("⏳") == 3
