from sequence.interactcomp.env import Observation, Responder, SearchEngine, run_episodes
from sequence.interactcomp.policies import AnswerOnly, InfoGainAsker, OverConfident, SearchOnly, best_question, entropy


def _play(kb, item, policy, top_k=5, mode="normal"):
    [ep] = run_episodes([item], policy, SearchEngine(kb, top_k), Responder(6, 2), mode)
    return ep


def test_entropy_values():
    assert list(entropy([0.0, 0.5, 1.0])) == [0.0, 1.0, 0.0]


def test_information_gain_question_on_the_hand_built_kb(hand_kb):
    kb, item = hand_kb
    obs = Observation(0, 0, item.question, [], 1, ("answer", "ask", "search"))
    # over e0..e3 attributes 4 and 5 split 2:2 (1 bit); attributes 0-3 are in the question
    assert best_question(kb, obs, [0, 1, 2, 3]) == ((4, 0), 1.0)
    assert best_question(kb, obs, [1, 2]) == ((5, 0), 1.0)


def test_info_gain_asker_asks_the_splitting_questions_then_answers_the_target(hand_kb):
    kb, item = hand_kb
    ep = _play(kb, item, InfoGainAsker(kb))
    assert [(t.action, t.term, t.reply) for t in ep.history] == [
        ("search", None, None), ("ask", (4, 0), "no"), ("ask", (5, 0), "no")]
    assert ep.score == 1 and ep.confidence == 100


def test_info_gain_asker_searches_again_when_a_full_page_narrows_to_one(hand_kb):
    kb, item = hand_kb
    ep = _play(kb, item, InfoGainAsker(kb, top_k=3), top_k=3)
    assert [t.action for t in ep.history] == ["search", "ask", "ask", "search"]
    assert ep.history[-1].result == (1,) and ep.score == 1


def test_guessers_answer_the_popular_distractor(hand_kb):
    kb, item = hand_kb
    for policy, rounds in ((AnswerOnly(kb), 1), (SearchOnly(kb), 2), (OverConfident(kb), 2)):
        ep = _play(kb, item, policy)
        assert ep.prediction == item.distractor and ep.score == 0 and len(ep.history) + 1 == rounds
    assert _play(kb, item, OverConfident(kb)).confidence == 95


def test_forcing_asks_lets_the_over_confident_policy_find_the_target(hand_kb):
    kb, item = hand_kb
    ep = _play(kb, item, OverConfident(kb), mode="forced_ask")
    # only 4 terms are askable here (attributes 4 and 5); it asks them all, then answers in the last round
    assert ep.counts()["ask"] == 4 and ep.score == 1 and ep.prediction == item.target


def test_context_mode_needs_no_question(hand_kb):
    kb, item = hand_kb
    ep = _play(kb, item, InfoGainAsker(kb), mode="with_context")
    assert ep.counts()["ask"] == 0 and ep.score == 1
