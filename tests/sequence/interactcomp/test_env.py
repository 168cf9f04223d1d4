import pytest

from sequence.interactcomp.env import (IDK, NO, YES, Action, Episode, Responder, SearchEngine, Turn,
                                       expected_calibration_error, grade, run_episodes, summarise)


class Scripted:
    """Plays a fixed list of actions, whatever it is told."""

    def __init__(self, actions):
        self.actions, self.seen = list(actions), []

    def act_batch(self, observations):
        self.seen.extend(observations)
        return [self.actions.pop(0) for _ in observations]


def test_responder_reads_only_the_hidden_context(hand_kb):
    _, item = hand_kb
    r = Responder(6, 2)
    assert r(item, (4, 1)) == YES and r(item, (5, 1)) == YES
    assert r(item, (4, 0)) == NO
    assert r(item, (0, 0)) == IDK                     # public and true, but not in the context: no outside knowledge
    assert r(item, (2, 1)) == IDK
    with pytest.raises(ValueError, match="outside 6 attributes"):
        r(item, (6, 0))


def test_grader_accepts_only_the_target(hand_kb):
    _, item = hand_kb
    assert grade(item, 1) == 1 and grade(item, 0) == 0 and grade(item, None) == 0 and grade(item, 3) == 0


def test_search_returns_the_most_popular_consistent_entities(hand_kb):
    kb, _ = hand_kb
    assert SearchEngine(kb, 3)(0, [(0, 0, True)]) == (0, 1, 2)
    assert SearchEngine(kb, 5)(0, [(0, 0, True), (4, 0, False)]) == (1, 2)
    assert SearchEngine(kb, 5)(0, [(0, 1, True)]) == (4,)


def test_episode_applies_replies_to_later_searches_and_grades(hand_kb):
    kb, item = hand_kb
    policy = Scripted([Action("ask", term=(4, 0)), Action("search"), Action("answer", entity=1, confidence=80)])
    [ep] = run_episodes([item], policy, SearchEngine(kb, 5), Responder(6, 2))
    assert [t.action for t in ep.history] == ["ask", "search"]
    assert ep.history[0].reply == NO and ep.history[1].result == (1, 2)   # "no" became a negative term
    assert ep.score == 1 and ep.confidence == 80 and ep.counts() == {"ask": 1, "search": 1, "answer": 1, "invalid": 0}


def test_forced_ask_refuses_early_answers_and_the_last_round_forces_one(hand_kb):
    kb, item = hand_kb
    policy = Scripted([Action("answer", entity=1)] + [Action("search")] * 5)
    [ep] = run_episodes([item], policy, SearchEngine(kb), Responder(6, 2), "forced_ask", max_rounds=6, enforce_ask_min=5)
    assert ep.invalid == 2 and not ep.answered and ep.score == 0     # the early answer, then a search in round 6
    assert policy.seen[0].allowed == ("ask", "search") and policy.seen[-1].allowed == ("answer",)
    with pytest.raises(ValueError, match="max_rounds >= enforce_ask_min"):
        run_episodes([item], policy, SearchEngine(kb), Responder(6, 2), "forced_ask", max_rounds=5)
    with pytest.raises(ValueError, match="unknown mode"):
        run_episodes([item], policy, SearchEngine(kb), Responder(6, 2), "ask_only")


def test_ece_on_a_hand_computed_example():
    # bin 0.9: accuracy 1/2, confidence 0.9 -> 0.5 * 0.4; bin 0.2: accuracy 0, confidence 0.2 -> 0.5 * 0.2
    assert expected_calibration_error([0.9, 0.9, 0.2, 0.2], [1, 0, 0, 0]) == pytest.approx(0.3)
    assert expected_calibration_error([1.0, 0.95], [1, 1]) == pytest.approx(0.025)   # 1.0 falls in the last bin
    assert expected_calibration_error([0.55, 0.45], [1, 0]) == pytest.approx(0.45)  # bins 5 and 4: 0.5 * 0.45 each
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error([1.5], [1])


def test_summarise_on_hand_built_episodes(hand_kb):
    _, item = hand_kb
    right = Episode(item, prediction=1, confidence=90, score=1, answered=True)
    wrong = Episode(item, prediction=0, confidence=90, score=0, answered=True)
    wrong.history.append(Turn("ask", (4, 0), NO))
    s = summarise([right, wrong])
    assert s["accuracy"] == 50 and s["interaction_rate"] == 50 and s["distractor_rate"] == 50
    assert s["ece"] == pytest.approx(40) and s["abs_calibration_error"] == pytest.approx(50)
    assert s["rounds"] == 1.5 and s["ask_share"] == pytest.approx(100 / 3)
