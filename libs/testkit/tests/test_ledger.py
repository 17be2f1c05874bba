"""The ledger's arithmetic (no servers): what counts as lost, doubled, partial or a same-id re-send."""

from __future__ import annotations

from worldloom.testkit.ledger import Tally, effect_count, event_count


def test_count_names_lost_doubled_unexpected_and_partial() -> None:
    c = effect_count("clip records", ["a", "b", "c", "d"], ["a", "b", "b", "x"], partial=["c"])
    assert (c.expected, c.found) == (4, 4)
    assert c.lost == ["d", "c (partial)"]
    assert c.doubled == ["b x2", "x (unexpected)"]
    assert effect_count("clip records", ["a"], ["a"]).lost == effect_count("clip records", ["a"], ["a"]).doubled == []


def test_events_are_counted_by_id_so_a_resend_is_not_a_double() -> None:
    resent = event_count("clips.tokenized", ["a", "b"], {"a": ["e1", "e1"], "b": ["e2"]})
    assert not resent.lost and not resent.doubled and resent.note == "1 re-sent with the same id"
    twice = event_count("clips.curated", ["a", "b"], {"a": ["e1", "e3"]})
    assert twice.lost == ["b"] and twice.doubled == ["a x2"]
    tally = Tally([resent, twice])
    assert (tally.lost, tally.doubled) == (1, 1)
    assert "lost    b" in tally.report() and "doubled a x2" in tally.report()
