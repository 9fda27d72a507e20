"""The Search-QA environment on a hand-made corpus: the Search-R1 protocol played to a win, a
wrong answer, running out of turns and malformed replies; prompts; skill routing; data loaders;
the environment over the real HTTP server."""

from __future__ import annotations

import importlib.util
import json
import logging
import random

import pytest
from helpers import SEARCH_CORPUS, free_port

from sdar.envs import make_env
from sdar.envs.search import make_search_env
from sdar.envs.search.dataset import QAExample, load_corpus, load_qa, write_corpus, write_qa
from sdar.envs.search.env import INVALID_ACTION_FEEDBACK, is_comparison_question, route_skills
from sdar.envs.search.retrievers import BM25Retriever, Document, RetrieverError, format_information
from sdar.envs.search.server import RetrievalServer
from sdar.skills import SkillLibrary

QUESTIONS = [
    QAExample("q0", "In what year was Chuck Berry born?", ("1926",), "wiki_attribute", ("0",)),
    QAExample("q1", "Who wrote the novel Moby-Dick?", ("Herman Melville",), "wiki_lookup", ("1",)),
    QAExample(
        "q2",
        "In what year was the author of the novel Moby-Dick born?",
        ("1819",),
        "wiki_two_hop",
        ("1", "2"),
    ),
    QAExample(
        "q3",
        "Who was born first, Chuck Berry or Herman Melville?",
        ("Herman Melville",),
        "wiki_comparison",
        ("0", "2"),
    ),
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("search-data")
    write_corpus(folder / "corpus.jsonl", SEARCH_CORPUS)
    write_qa(folder / "train.jsonl", QUESTIONS)
    write_qa(folder / "test.jsonl", QUESTIONS[:2])
    return folder


@pytest.fixture
def env(data_dir):
    with make_search_env(data_dir=str(data_dir)) as e:
        yield e


def act(env, *responses):
    """Parse and step one response per episode (None for finished episodes)."""
    actions = [None if r is None else env.parse_action(r).action for r in responses]
    return env.step(actions)


# ----- reset --------------------------------------------------------------------------------------
def test_reset_groups_copies_and_picks_tasks_by_seed(env):
    assert env.num_tasks() == 4
    states = env.reset([1, 6], group_size=2)  # seed 6 -> 6 % 4 = question 2
    assert [s.task.task_id for s in states] == ["q1", "q1", "q2", "q2"]
    s = states[2]
    assert s.task.instruction == QUESTIONS[2].question
    assert s.task.task_type == "wiki_two_hop" and s.task.skill_keys == ("two_hop",)
    assert s.observation == "" and s.step == 0 and not s.done and s.admissible_actions is None
    assert s.metrics["em"] == 0.0 and s.metrics["answered"] == 0.0
    assert env.name == "search" and env.max_steps == 4 and env.history_length == 4


def test_registry_builds_the_search_env(data_dir):
    with make_env("search", data_dir=str(data_dir), split="test") as e:
        assert e.num_tasks() == 2


# ----- episodes ----------------------------------------------------------------------------------
def test_episode_that_answers_right(env):
    env.reset([0])
    states = act(env, "<think>Look him up.</think>\n<search>Chuck Berry</search>")
    s = states[0]
    expected = format_information(BM25Retriever(SEARCH_CORPUS).retrieve(["Chuck Berry"], 3)[0])
    assert s.observation == expected
    assert s.observation.startswith(
        '<information>Doc 1(Title: "Chuck Berry") American musician (1926–2017).'
    )
    assert s.observation.count("Doc ") == 3
    assert s.valid_action and not s.done and s.reward == 0.0 and s.step == 1
    s = act(env, "<think>Born 1926.</think><answer> 1926 </answer>")[0]
    assert s.done and s.won and s.reward == 1.0 and s.step == 2
    assert s.metrics == {
        "em": 1.0,
        "f1": 1.0,
        "searches": 1.0,
        "invalid_actions": 0.0,
        "answered": 1.0,
    }


def test_episode_that_answers_wrong_scores_zero_em_and_partial_f1(env):
    env.reset([1])
    s = act(env, "<answer>Herman Melville the novelist</answer>")[0]
    assert s.done and not s.won and s.reward == 0.0 and s.valid_action
    # tokens herman melville novelist vs herman melville: P 2/3, R 1 -> F1 0.8
    assert s.metrics["em"] == 0.0 and s.metrics["f1"] == pytest.approx(0.8)
    env.reset([0])
    s = act(env, "<answer>1927</answer>")[0]
    assert s.done and s.reward == 0.0 and s.metrics["f1"] == 0.0


def test_episode_that_runs_out_of_turns(env):
    states = env.reset([2])
    for turn in range(1, 5):
        assert not states[0].done
        states = act(env, f"<search>Moby-Dick {turn}</search>")
        assert states[0].step == turn and states[0].valid_action
    s = states[0]
    assert s.done and not s.won and s.reward == 0.0
    assert s.metrics["answered"] == 0.0 and s.metrics["searches"] == 4.0 and s.metrics["em"] == 0.0
    with pytest.raises(ValueError, match="already done"):
        env.step(["answer:1819"])


def test_episode_with_malformed_tags_continues_and_counts_turns(env):
    env.reset([0])
    s = act(env, "The answer is 1926.")[0]
    assert not s.valid_action and not s.done and s.step == 1 and s.reward == 0.0
    assert s.observation == INVALID_ACTION_FEEDBACK and s.metrics["invalid_actions"] == 1.0
    s = act(env, "<search>Chuck Berry</search><answer>1926</answer>")[0]  # both: ambiguous
    assert not s.valid_action and s.step == 2 and s.metrics["invalid_actions"] == 2.0
    s = act(env, "<answer>1926")[0]  # unclosed
    assert not s.valid_action and s.step == 3
    s = act(env, "<answer>1926</answer>")[0]
    assert s.done and s.won and s.step == 4 and s.metrics["invalid_actions"] == 2.0 + 1.0


def test_invalid_last_turn_ends_the_episode_unanswered(data_dir):
    with make_search_env(data_dir=str(data_dir), max_steps=1) as e:
        e.reset([0])
        s = act(e, "no tags")[0]
        assert s.done and not s.won and not s.valid_action and s.metrics["answered"] == 0.0


@pytest.mark.parametrize(
    "response, action, ok",
    [
        ("<search>Chuck Berry</search>", "search:Chuck Berry", True),
        ("<think>maybe <answer>x</answer> later</think>\n<search> q </search>", "search:q", True),
        ("<think>I could <search>a</search></think><answer>Paris</answer>", "answer:Paris", True),
        ("<search></search>", "", False),
        ("<answer>  </answer>", "", False),
        ("<search>a</search> <answer>b</answer>", "", False),
        ("plain text", "", False),
        ("<search>first</search> then <search>second</search>", "search:second", True),
    ],
)
def test_parse_action(env, response, action, ok):
    parsed = env.parse_action(response)
    assert (parsed.action, parsed.format_ok) == (action, ok)


def test_batch_step_with_finished_episodes(env):
    env.reset([0, 1], group_size=1)
    states = act(env, "<answer>1926</answer>", "<search>Moby-Dick</search>")
    assert states[0].done and states[0].won and not states[1].done
    before = states[0]
    states = act(env, None, "<answer>Herman Melville</answer>")
    assert states[0] is before and states[1].won
    with pytest.raises(ValueError, match="still running"):
        env.reset([0])
        env.step([None])


def test_one_retrieval_call_per_step_with_repeated_queries_merged(data_dir):
    calls = []

    class CountingBM25(BM25Retriever):
        def retrieve(self, queries, topk=3):
            calls.append(list(queries))
            return super().retrieve(queries, topk)

    from sdar.envs.search.env import SearchEnv

    env = SearchEnv(load_qa(data_dir / "train.jsonl"), CountingBM25(SEARCH_CORPUS))
    env.reset([0, 1], group_size=3)
    states = act(
        env, *["<search>Chuck Berry</search>"] * 3 + ["<search>Moby-Dick</search>"] * 2 + ["oops"]
    )
    assert calls == [["Chuck Berry", "Moby-Dick"]]
    assert states[0].observation == states[2].observation != states[3].observation
    assert not states[5].valid_action


# ----- prompts -----------------------------------------------------------------------------------
def test_render_prompt_shows_question_history_and_turn_budget(env):
    states = env.reset([2])
    prompt = env.render_prompt(states[0], [], think=True)
    assert "Question: In what year was the author of the novel Moby-Dick born?" in prompt
    assert "<search>" in prompt and "<answer>" in prompt and "<think>" in prompt
    assert "You have 4 turns left" in prompt
    history = []
    for query in ["Moby-Dick", "Herman Melville", "whale"]:
        response = f"<search>{query}</search>"
        history.append((states[0].observation, env.parse_action(response).action))
        states = act(env, response)
    prompt = env.render_prompt(states[0], history[-2:], think=False)  # caller cut H to 2
    assert "Turn 2: <search>Herman Melville</search>" in prompt
    assert "Turn 3: <search>whale</search>" in prompt
    assert "Turn 1:" not in prompt  # cut away by the caller
    assert states[0].observation in prompt  # the current result is shown
    assert "This is your last turn" in prompt
    assert "<think>" not in prompt and "nothing else" in prompt


# ----- scripted policies -------------------------------------------------------------------------
def test_oracle_searches_supporting_passages_then_answers(env):
    env.reset([2])  # two-hop: passages 1 and 2
    rng = random.Random(0)
    first = env.scripted_action(0, "oracle", rng)
    assert "<search>Moby-Dick</search>" in first
    act(env, first)
    second = env.scripted_action(0, "oracle", rng)
    assert "<search>Herman Melville</search>" in second
    act(env, second)
    final = env.scripted_action(0, "oracle", rng)
    # the reasoning quotes the short description of both hops, from the passages it was shown
    assert 'Moby-Dick: "Novel by Herman Melville."' in final
    assert 'Herman Melville: "American writer (1819–1891)."' in final
    assert final.endswith("<answer>1819</answer>")
    s = act(env, final)[0]
    assert s.done and s.won and s.step == 3


def test_oracle_quotes_the_answer_sentence_for_one_passage(env):
    env.reset([1])
    rng = random.Random(0)
    act(env, env.scripted_action(0, "oracle", rng))
    final = env.scripted_action(0, "oracle", rng)
    assert final.startswith('<think>Moby-Dick: "Novel by Herman Melville." So the answer is')


def test_random_policy_and_unknown_policy(env):
    env.reset([0])
    rng = random.Random(1)
    responses = [env.scripted_action(0, "random", rng) for _ in range(30)]
    kinds = {env.parse_action(r).action.split(":")[0] for r in responses}
    assert kinds == {"search", "answer", ""}
    with pytest.raises(ValueError, match="no scripted policy"):
        env.scripted_action(0, "expert", rng)


# ----- the environment over HTTP ------------------------------------------------------------------
def test_env_over_http_equals_in_process(data_dir, env):
    with RetrievalServer(BM25Retriever(load_corpus(data_dir / "corpus.jsonl")), port=0) as server:
        with make_search_env(
            data_dir=str(data_dir), retriever="http", retriever_url=server.url
        ) as remote:
            remote.reset([0, 2])
            env.reset([0, 2])
            r = act(
                remote, "<search>Chuck Berry singer</search>", "<search>Moby-Dick author</search>"
            )
            l = act(env, "<search>Chuck Berry singer</search>", "<search>Moby-Dick author</search>")
            assert [s.observation for s in r] == [s.observation for s in l]


def test_search_r1_folder_with_a_server_and_split_placeholder(data_dir, tmp_path):
    """Search-R1's layout: question files per split, no corpus, retrieval through a server."""
    (tmp_path / "train.json").write_text(json.dumps([SEARCH_R1_ROW]))
    (tmp_path / "test.jsonl").write_text(
        json.dumps({"question": "who wrote moby-dick", "golden_answers": ["Herman Melville"]})
        + "\n"
    )
    with RetrievalServer(BM25Retriever(SEARCH_CORPUS), port=0) as server:
        with make_search_env(data_dir=str(tmp_path), retriever_url=server.url) as e:  # http implied
            assert e.questions[0].question == "Who directed Alien?" and e.titles == {}
            e.reset([0])
            s = act(e, e.scripted_action(0, "oracle", random.Random(0)))[0]  # searches the question
            assert s.observation.startswith("<information>Doc 1(Title:")
        with make_search_env(
            qa_file=str(tmp_path / "{split}.jsonl"),
            split="test",
            retriever_url=server.url,
            corpus_file=str(data_dir / "corpus.jsonl"),
        ) as e:
            assert e.questions[0].data_source == tmp_path.name and len(e.titles) == len(SEARCH_CORPUS)
    with pytest.raises(ValueError, match="only used with retriever='http'"):
        make_search_env(
            data_dir=str(data_dir), retriever="bm25", retriever_url="http://127.0.0.1:1"
        )
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no train.jsonl, train.parquet or train.json"):
        make_search_env(data_dir=str(tmp_path / "empty"), retriever_url="http://127.0.0.1:1")


def test_env_with_dead_server_raises_a_clear_error(data_dir):
    url = f"http://127.0.0.1:{free_port()}/retrieve"
    # at start: one request, so an agent that never searches cannot hide a dead server
    with pytest.raises(RetrieverError, match=f"retrieval server at {url} did not answer.*Is it running"):
        make_search_env(data_dir=str(data_dir), retriever="http", retries=0, timeout=1, retriever_url=url)
    # a server that dies during the run: the search that needs it says so
    with RetrievalServer(BM25Retriever(SEARCH_CORPUS), host="127.0.0.1", port=0) as server:
        e = make_search_env(data_dir=str(data_dir), retriever="http", retries=0, timeout=1,
                            retriever_url=server.url)
    with e:
        e.reset([0])
        with pytest.raises(RetrieverError, match="Is it running"):
            act(e, "<search>Chuck Berry</search>")


# ----- factory options ----------------------------------------------------------------------------
def test_factory_options_and_errors(data_dir):
    with make_search_env(data_dir=str(data_dir), data_sources="wiki_lookup,wiki_comparison") as e:
        assert [q.id for q in e.questions] == ["q1", "q3"]
    with make_search_env(data_dir=str(data_dir), split="validation", limit=1) as e:
        assert [q.id for q in e.questions] == ["q0"]
    with pytest.raises(ValueError, match="unknown Search-QA split"):
        make_search_env(data_dir=str(data_dir), split="dev2")
    with pytest.raises(ValueError, match="unknown retriever"):
        make_search_env(data_dir=str(data_dir), retriever="colbert")
    with pytest.raises(ValueError, match="needs retriever_url"):
        make_search_env(data_dir=str(data_dir), retriever="http")
    with pytest.raises(ValueError, match="no question .* has data_source"):
        make_search_env(data_dir=str(data_dir), data_sources=["nq"])
    with pytest.raises(FileNotFoundError, match="sdar search build"):
        make_search_env(data_dir=str(data_dir / "missing"))


# ----- skill routing ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "source, question, keys",
    [
        ("wiki_lookup", "What is the capital of Oman?", ("lookup",)),
        ("nq", "who sang i want it that way", ("lookup",)),
        ("triviaqa", "Which planet is known as the red planet?", ("lookup",)),
        ("fanoutqa", "What is the official language of San Marino?", ("lookup",)),
        ("popqa", "What is Chuck Berry's occupation?", ("attribute",)),
        ("wiki_attribute", "In what year was Chuck Berry born?", ("attribute",)),
        (
            "hotpotqa",
            "What government position was held by the woman who portrayed Corliss Archer?",
            ("two_hop",),
        ),
        ("musique", "Who is the spouse of the Green performer?", ("two_hop",)),
        (
            "bamboogle",
            "Who was president of the U.S. when superconductivity was discovered?",
            ("two_hop",),
        ),
        ("2wikimultihopqa", "Who was born first, Hiram Bingham or Ann Bancroft?", ("comparison",)),
        ("hotpotqa", "Were Scott Derrickson and Ed Wood of the same nationality?", ("comparison",)),
        ("hotpotqa", "Which is older, the Eiffel Tower or Big Ben?", ("comparison",)),
        ("hotpotqa", "Which team did the first pick of the 1998 draft play for?", ("two_hop",)),
        (
            "wiki_comparison",
            "Which element has the higher atomic number, tin or gold?",
            ("comparison",),
        ),
        ("wiki_two_hop", "In which region is the country whose capital is Quito?", ("two_hop",)),
        (
            "nq",
            "is a tomato a fruit or a vegetable",
            ("lookup",),
        ),  # form routing only for multi-hop sets
        ("NQ", "who wrote hamlet", ("lookup",)),
    ],
)
def test_route_skills_by_source_and_question_form(source, question, keys):
    assert route_skills(source, question) == keys


def test_unknown_source_routes_to_general_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="sdar.envs.search.env"):
        assert route_skills("my_private_set", "anything?") == ()
    assert "my_private_set" in caplog.text and "general skills only" in caplog.text


def test_comparison_form_detection():
    assert is_comparison_question("Who was born later, A or B?")
    assert is_comparison_question("Are both Cypress and Ajuga genera?")
    assert not is_comparison_question("Who wrote the novel Moby-Dick?")


def test_every_routed_key_has_a_skill_file():
    library = SkillLibrary("search")
    assert library.keys() == ["attribute", "comparison", "lookup", "two_hop"]
    for key in library.keys():
        selection = library.select_keys((key,))
        assert selection.files == ("search/general.md", f"search/{key}.md")
        assert "Apply when" in selection.text


def test_env_tasks_select_the_routed_skill_files(env):
    library = SkillLibrary("search")
    states = env.reset([0, 1, 2, 3])
    files = [library.select(s.task).files[-1] for s in states]
    assert files == [
        "search/attribute.md",
        "search/lookup.md",
        "search/two_hop.md",
        "search/comparison.md",
    ]


# ----- loaders ------------------------------------------------------------------------------------
def test_load_qa_flashrag_jsonl_takes_data_source_from_folder(tmp_path):
    path = tmp_path / "nq" / "test.jsonl"
    path.parent.mkdir()
    path.write_text(
        json.dumps(
            {
                "id": "test_0",
                "question": "who wrote hamlet",
                "golden_answers": ["Shakespeare", "William Shakespeare"],
            }
        )
        + "\n\n"
    )
    [ex] = load_qa(path)
    assert ex == QAExample(
        "test_0", "who wrote hamlet", ("Shakespeare", "William Shakespeare"), "nq", ()
    )


SEARCH_R1_ROW = {
    "id": "train_7",
    "data_source": "hotpotqa",
    "prompt": [
        {
            "role": "user",
            "content": "Answer the given question. ... Question: Who directed Alien?\n",
        }
    ],
    "reward_model": {"style": "rule", "ground_truth": {"target": ["Ridley Scott"]}},
}


def test_load_qa_search_r1_processed_rows(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps([SEARCH_R1_ROW]))
    [ex] = load_qa(path)
    assert (ex.question, ex.golden_answers, ex.data_source) == (
        "Who directed Alien?",
        ("Ridley Scott",),
        "hotpotqa",
    )


@pytest.mark.skipif(
    importlib.util.find_spec("pyarrow") is None, reason="pyarrow not installed (parquet only)"
)
def test_load_qa_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        SEARCH_R1_ROW,
        {
            **SEARCH_R1_ROW,
            "id": "train_8",
            "question": "Who directed Heat?",
            "golden_answers": ["Michael Mann"],
            "data_source": "nq",
        },
    ]
    rows[0] = {**rows[0], "question": None, "golden_answers": None}
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "train.parquet")
    examples = load_qa(tmp_path / "train.parquet")
    assert [(e.question, e.golden_answers, e.data_source) for e in examples] == [
        ("Who directed Alien?", ("Ridley Scott",), "hotpotqa"),
        ("Who directed Heat?", ("Michael Mann",), "nq"),
    ]


def test_load_qa_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_qa(tmp_path / "none.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q?"}) + "\n")
    with pytest.raises(ValueError, match="row 0: no 'golden_answers'"):
        load_qa(bad)
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="unsupported question file type"):
        load_qa(tmp_path / "x.csv")


def test_corpus_round_trip_and_title_text_rows(tmp_path):
    write_corpus(tmp_path / "c.jsonl", SEARCH_CORPUS)
    assert load_corpus(tmp_path / "c.jsonl") == SEARCH_CORPUS
    (tmp_path / "d.jsonl").write_text(
        json.dumps({"id": 9, "title": "Paris", "text": "A city."}) + "\n"
    )
    assert load_corpus(tmp_path / "d.jsonl") == [Document("9", '"Paris"\nA city.')]
    (tmp_path / "e.jsonl").write_text(json.dumps({"id": 1}) + "\n")
    with pytest.raises(ValueError, match="no 'contents' string"):
        load_corpus(tmp_path / "e.jsonl")
