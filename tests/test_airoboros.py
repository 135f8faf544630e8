"""The airoboros family: trivia, jokes, agent, plan, cot, contextual (roleplay has tests/test_roleplay.py).

For each: a dry run of the worked example exports valid records; its checks accept a conforming answer and reject
a violating one (answers scripted in the simulator, through the real execution core and teacher layer).
"""
from __future__ import annotations

import json

import pytest
import yaml

from conftest import ROOT, gen_cmd, sim_job
from gen.export import line_validator
from gen.instructors.agent import call_problem, parse_call
from gen.instructors.contextual import answer_problem, parse_contextual
from gen.instructors.cot import cot_structure_problem, render_cot
from gen.instructors.plan import PlanError, parse_plan
from gen.schemas import first_problem
from gen.store import UnitState
from test_neardup import run_directly


def teacher(base_url: str, name: str) -> str:
    return (f"  {name}:\n    provider: openai-compatible\n    model: sim-{name}\n    base_url: {base_url}\n"
            "    timeout: 10\n")


def job(sim, instructor: str, *, teachers: tuple[str, ...] = (), attempts: int = 2) -> str:
    return sim_job(sim.base_url, name="a", instructor=instructor,
                   extra_teacher="".join(teacher(sim.base_url, t) for t in teachers),
                   run=f"run:\n  output_attempts: {attempts}\n")


# ------------------------------------------------------------------------------------------------ dry runs
def structure_problem(instructor: str, line: dict) -> str | None:
    """The instructor-specific check of an exported line (with --meta), beyond the format's schema."""
    user, answer = line["messages"][-2]["content"], line["messages"][-1]["content"]
    meta = line["metadata"]
    if instructor == "agent":
        return call_problem(parse_call(answer, meta["answer_format"]), meta["functions"])
    if instructor == "plan":
        parse_plan(answer, meta["tools"])
    if instructor == "cot":
        return cot_structure_problem(answer)
    if instructor == "contextual":
        blocks, _ = parse_contextual(user)
        urls = {b["metadata"]["url"] for b in blocks}
        assert set(meta["sources"]) <= urls
    return None


@pytest.mark.parametrize("instructor", ["trivia", "jokes", "agent", "plan", "cot", "contextual"])
def test_a_dry_run_of_the_worked_example_exports_valid_records(instructor, tmp_path):
    result = gen_cmd("run", str(ROOT / "instructors" / f"{instructor}.yml"), "--dry-run", "--sim-latency", "0.0",
                     "-q")
    assert result.returncode == 0, result.stderr
    name = yaml.safe_load((ROOT / "instructors" / f"{instructor}.yml").read_text())["name"]
    out = tmp_path / "out.jsonl"
    exported = gen_cmd("export", name, "-o", str(out), "--format", "messages", "--meta")
    assert exported.returncode == 0, exported.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines, "the dry run exported nothing"
    validator = line_validator("messages")
    for line in lines:
        assert first_problem(validator, {"messages": line["messages"]}) is None
        assert structure_problem(instructor, line) is None


# ------------------------------------------------------------------------------------- trivia and jokes
def trivia(*pairs: tuple[str, str]) -> str:
    return json.dumps({"questions": [{"question": q, "answer": a} for q, a in pairs]})


def test_trivia_drops_exact_and_near_duplicates_across_the_job(sim, tmp_path):
    capital = ("What is the capital city of Australia?", "Canberra")
    sim.script([
        {"match": "This is batch 1 of", "answers": [trivia(capital, ("How many legs does a spider have?", "Eight"))]},
        {"match": "This is batch 2 of", "answers": [trivia(("So what is the capital city of Australia?", "Canberra"),
                                                            ("What is the capital city of Austria?", "Vienna"))]},
        {"match": "This is batch 3 of", "answers": [trivia(("what is the capital city of australia", "Canberra"),
                                                            ("Which planet is known as the red planet?", "Mars"))]},
    ])
    store, job_id, results = run_directly(tmp_path, job(sim, "  type: trivia\n  count: 6\n  batch_size: 2\n"
                                                             "  near_duplicate_threshold: 0.9\n"))
    assert [r.state for r in results] == [UnitState.DONE] * 3
    questions = sorted(r.conversation[0]["content"] for r in store.iter_records(job_id))
    # batch 2's first is a near-duplicate (the index), batch 3's first an exact one (normalised key)
    assert questions == ["How many legs does a spider have?", "What is the capital city of Australia?",
                         "What is the capital city of Austria?", "Which planet is known as the red planet?"]
    assert store.stats(job_id).duplicates == 1 and store.near_duplicates(job_id) == 1
    record = next(r for r in store.iter_records(job_id) if "Australia" in r.conversation[0]["content"])
    assert record.conversation[1] == {"role": "assistant", "content": "Canberra"}


def test_jokes_keep_the_request_and_drop_a_repeated_joke(sim, tmp_path):
    joke = "Why did the cat sit on the computer? To keep an eye on the mouse."
    sim.script([{"match": "original, clean jokes", "answers": [json.dumps({"jokes": [
        {"request": "Tell me a joke about cats.", "joke": joke},
        {"request": "Got any cat jokes?", "joke": joke.upper()},
        {"request": "Do you know a joke about bread?", "joke": "I knead a break, said the baker's dough."}]})]}])
    store, job_id, _ = run_directly(tmp_path, job(sim, "  type: jokes\n  count: 3\n  batch_size: 3\n"))
    convs = [r.conversation for r in store.iter_records(job_id)]
    assert len(convs) == 2
    assert [{"role": "user", "content": "Tell me a joke about cats."}, {"role": "assistant", "content": joke}] in convs


# ---------------------------------------------------------------------------------------------- agent
FUNCTIONS = {"functions": [
    {"name": "get weather", "description": "Current weather for a city.", "parameters": [
        {"name": "city", "type": "string", "description": "City name", "required": True},
        {"name": "units", "type": "string", "description": "metric or imperial", "required": False}]},
    {"name": "send_email", "description": "Sends an e-mail.", "parameters": [
        {"name": "to", "type": "string", "description": "Recipient", "required": True},
        {"name": "body", "type": "string", "description": "Text", "required": True}]}],
    "user_query": "What's the weather like in Lyon right now, in celsius?"}


def agent_job(sim, fmt: str) -> str:
    return job(sim, f"  type: agent\n  count: 1\n  functions_per_unit: 2\n  answer_format: {fmt}\n")


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_agent_accepts_a_call_of_a_listed_function_and_writes_it_in_the_format_asked(sim, tmp_path, fmt):
    call = {"call": {"function": "get_weather", "arguments": {"city": "Lyon", "units": "metric"}}}
    sim.script([{"match": "Invent 2 functions", "answers": [json.dumps(FUNCTIONS)]},
                {"match": "select the most suitable function", "answers": [json.dumps(call)]}])
    store, job_id, results = run_directly(tmp_path, agent_job(sim, fmt))
    assert [r.state for r in results] == [UnitState.DONE]
    [record] = store.iter_records(job_id)
    question, answer = record.conversation[0]["content"], record.conversation[1]["content"]
    assert "Input: What's the weather like in Lyon right now, in celsius?" in question
    assert "get_weather:" in question and "send_email:" in question  # names made identifiers, both listed
    assert f"Provide your response in {fmt.upper()} format." in question
    assert parse_call(answer, fmt) == call["call"]
    assert answer.startswith("function: get_weather" if fmt == "yaml" else "{")


@pytest.mark.parametrize("call, reason", [
    ({"function": "get_forecast", "arguments": {"city": "Lyon"}}, "function 'get_forecast' is not in the list"),
    ({"function": "get_weather", "arguments": {"city": "Lyon", "days": 3}}, "has no parameter 'days'"),
    ({"function": "send_email", "arguments": {"to": "a@b.c"}}, "required parameter 'body'"),
])
def test_agent_rejects_a_call_outside_the_listed_functions(sim, tmp_path, call, reason):
    sim.script([{"match": "Invent 2 functions", "answers": [json.dumps(FUNCTIONS)]},
                {"match": "select the most suitable function", "answers": [json.dumps({"call": call})]}])
    store, job_id, results = run_directly(tmp_path, agent_job(sim, "json"))
    assert [r.state for r in results] == [UnitState.REJECTED]
    assert store.stats(job_id).records == 0
    [kept] = store.iter_records(job_id, kind="rejected")  # kept for review, with the teacher's answer
    assert json.loads(kept.conversation[1]["content"]) == {"call": call}
    # the check itself names the fault (the schema sent to the teacher also narrows the call)
    functions = kept.meta["functions"]
    assert reason in call_problem(call, functions)
    assert call_problem({"function": "get_weather", "arguments": {"city": "Lyon"}}, functions) is None
    assert "must be a string" in call_problem({"function": "get_weather", "arguments": {"city": 7}}, functions)


def test_agent_answer_that_does_not_parse_is_refused():
    with pytest.raises(ValueError, match="not valid yaml"):
        parse_call("function: [unclosed", "yaml")


# ----------------------------------------------------------------------------------------------- plan
def steps(*items: tuple[str, str, str], question: str = "Who designed the tallest tower in Lyon?") -> str:
    return json.dumps({"question": question,
                       "steps": [{"plan": p, "tool": t, "input": i} for p, t, i in items]})


GOOD_PLAN = steps(("Search for the tallest tower in Lyon.", "Search", "tallest tower in Lyon"),
                  ("Extract the links.", "LinkExtractor", ":evidence1:"),
                  ("Find the architect.", "QA", "Who designed the tallest tower in Lyon, given :evidence1: "
                                                "and :evidence2:?"))


def test_plan_renders_the_rewoo_text_and_the_grammar_accepts_it(sim, tmp_path):
    sim.script([{"match": "needs several steps with tools", "answers": [GOOD_PLAN]}])
    store, job_id, results = run_directly(tmp_path, job(sim, "  type: plan\n  count: 1\n"))
    assert [r.state for r in results] == [UnitState.DONE]
    [record] = store.iter_records(job_id)
    assert record.conversation[0]["content"].endswith("Question: Who designed the tallest tower in Lyon?")
    assert "Search[input]: Searches the web" in record.conversation[0]["content"]
    assert record.conversation[1]["content"] == (
        "Plan: Search for the tallest tower in Lyon.\n:evidence1: = Search[tallest tower in Lyon]\n"
        "Plan: Extract the links.\n:evidence2: = LinkExtractor[:evidence1:]\n"
        "Plan: Find the architect.\n"
        ":evidence3: = QA[Who designed the tallest tower in Lyon, given :evidence1: and :evidence2:?]\n"
        "Answer: :evidence3:")


def test_plan_rejects_a_step_that_uses_evidence_not_yet_produced(sim, tmp_path):
    bad = steps(("Answer first.", "QA", "Given :evidence2:, who designed it?"),
                ("Then search.", "Search", "tallest tower in Lyon"))
    sim.script([{"match": "needs several steps with tools", "answers": [bad]}])
    store, job_id, results = run_directly(tmp_path, job(sim, "  type: plan\n  count: 1\n"))
    assert [r.state for r in results] == [UnitState.REJECTED]
    assert ":evidence1: uses :evidence2:, which is not an earlier step's" in store.units(job_id)[0].last_error


@pytest.mark.parametrize("text, fault", [
    ("Plan: a\n:evidence1: = Search[x]\nAnswer: :evidence1:", None),
    ("Plan: a\n:evidence1: = Browse[x]\nAnswer: :evidence1:", "tool 'Browse' is not one of the listed tools"),
    ("Plan: a\n:evidence2: = Search[x]\nAnswer: :evidence2:", "numbered :evidence1: here"),
    ("Plan: a\n:evidence1: = Search[:evidence1:]\nAnswer: :evidence1:", "not an earlier step's"),
    ("Plan: a\n:evidence1: = Search[x]\nAnswer: :evidence4:", "no step produced"),
    ("Plan: a\n:evidence1: = Search[x]\nAnswer: it is x", "last line should be"),
    (":evidence1: = Search[x]\nPlan: a\nAnswer: :evidence1:", "should be 'Plan: ...'"),
    ("Plan: a\n:evidence1: = Search x\nAnswer: :evidence1:", "should be ':evidenceN: = Tool[input]'"),
    ("Plan: a\n:evidence1: = Search[]\nAnswer: :evidence1:", "without an input"),
])
def test_plan_grammar(text, fault):
    if fault is None:
        assert [s.tool for s in parse_plan(text, ["Search", "QA"])] == ["Search"]
    else:
        with pytest.raises(PlanError, match=fault.replace("[", r"\[").replace("]", r"\]")):
            parse_plan(text, ["Search", "QA"])


# ------------------------------------------------------------------------------------------------ cot
PROBLEM = "A train leaves at 9:00 and travels 180 km at 60 km/h. How many hours does the trip take?"


def solutions(ranking: list[int], answers: tuple[str, str, str] = ("3 hours", "3", "2.5 hours")) -> str:
    return json.dumps({"solutions": [{"reasoning": f"Approach {i}: distance over speed.", "answer": a}
                                     for i, a in enumerate(answers, 1)],
                       "ranking": ranking, "ranking_reason": "Solution 2 is the most direct."})


def cot_script(sim, solved: str, ranking: list[int]) -> None:
    sim.script([{"match": "problem with a single correct answer", "answers": [json.dumps(
                    {"question": PROBLEM, "answer": "3"})]},
                {"match": "Give 3 different solutions", "answers": [solutions(ranking)]},
                {"match": "Solve this problem.", "answers": [solved]}])


def test_cot_renders_solutions_ranking_and_final_answer_agreeing_with_the_blind_solver(sim, tmp_path):
    cot_script(sim, "The trip takes 3 hours.", [2, 1, 3])
    store, job_id, results = run_directly(tmp_path, job(sim, "  type: cot\n  count: 1\n", teachers=("solver",)))
    assert [r.state for r in results] == [UnitState.DONE]
    [record] = store.iter_records(job_id)
    text = record.conversation[1]["content"]
    assert record.conversation[0]["content"] == PROBLEM
    assert text.startswith("Solution 1:\nApproach 1: distance over speed.\nFinal answer: 3 hours\n\nSolution 2:")
    assert "Ranking of solutions from best to worst:\n1. Solution 2\n2. Solution 1\n3. Solution 3\n" in text
    assert text.endswith("Best and final answer: 3")
    assert cot_structure_problem(text, 3) is None
    assert record.meta["verified"] is True and record.meta["verified_by"] == "numbers compared"
    solver_calls = [c for c in store.calls_for_job(job_id) if c.teacher == "solver"]
    assert len(solver_calls) == 1 and "Solution" not in json.dumps(solver_calls[0].messages)  # blind


def test_cot_rejects_a_final_answer_the_blind_solver_disagrees_with(sim, tmp_path):
    cot_script(sim, "2.5", [2, 1, 3])
    store, job_id, results = run_directly(tmp_path, job(sim, "  type: cot\n  count: 1\n", teachers=("solver",)))
    assert [r.state for r in results] == [UnitState.REJECTED]
    assert "solver said '2.5', best and final answer is '3'" in store.units(job_id)[0].last_error
    [kept] = store.iter_records(job_id, kind="rejected")
    assert kept.meta["verified"] is False


def test_cot_rejects_a_ranking_that_is_not_a_permutation(sim, tmp_path):
    cot_script(sim, "3", [2, 2, 1])
    store, job_id, results = run_directly(tmp_path, job(sim, "  type: cot\n  count: 1\n", teachers=("solver",)))
    assert [r.state for r in results] == [UnitState.REJECTED]
    assert "ranking" in store.units(job_id)[0].last_error


def test_cot_structure_check():
    sols = [{"reasoning": "r1", "answer": "4"}, {"reasoning": "r2", "answer": "5"}]
    good = render_cot(sols, [2, 1], "why")
    assert cot_structure_problem(good, 2) is None
    assert "not the answer of Solution 2" in cot_structure_problem(good.replace("final answer: 5", "final answer: 4"))
    assert "numbered Solution 1..N" in cot_structure_problem(good.replace("Solution 2:\n", "Solution 3:\n"))
    assert "every solution once" in cot_structure_problem(good.replace("2. Solution 1", "2. Solution 2"))
    assert "3 solutions were asked for" in cot_structure_problem(good, 3)
    assert "Best and final answer" in cot_structure_problem(good.rsplit("\n\n", 1)[0])


# ----------------------------------------------------------------------------------------- contextual
BLOCKS = json.dumps({"blocks": [
    {"metadata": {"title": "Harbour Bakery opens", "author": "J. Ode", "date": "2024-03-02",
                  "url": "https://news.example/bakery"},
     "text": "The Harbour Bakery opened on Pier 4, run by Ana Lim."},
    {"metadata": {"title": "Pier 4 repairs", "author": "K. Mo", "date": "2024-02-11",
                  "url": "https://news.example/pier"}, "text": "Pier 4 was repaired in February for 2.1 million."}]})


def contextual_job(sim, *, unanswerable: float, cite: float = 1.0, judge: bool = False) -> str:
    return job(sim, f"  type: contextual\n  count: 1\n  min_blocks: 2\n  max_blocks: 2\n"
                    f"  unanswerable_share: {unanswerable}\n  cite_share: {cite}\n",
               teachers=("judge",) if judge else ())


def contextual_script(sim, instruction: str, answer: dict, verdict: dict | None = None) -> None:
    rules = [{"match": "Write 2 short, plausible", "answers": [BLOCKS]},
             {"match": "Write only the instruction.", "answers": [instruction]},
             {"match": "Write only the question.", "answers": [instruction]},
             {"match": "Answer the instruction using only", "answers": [json.dumps(answer)]}]
    if verdict:
        rules.append({"match": "nevertheless invents one", "answers": [json.dumps(verdict)]})
    sim.script(rules)


def test_contextual_answer_in_the_delimiter_format_citing_its_source(sim, tmp_path):
    contextual_script(sim, "Who runs the Harbour Bakery?",
                      {"answer": "Ana Lim runs the Harbour Bakery.", "sources": ["https://news.example/bakery"]})
    store, job_id, results = run_directly(tmp_path, contextual_job(sim, unanswerable=0))
    assert [r.state for r in results] == [UnitState.DONE]
    [record] = store.iter_records(job_id)
    user = record.conversation[0]["content"]
    assert user.startswith("BEGININPUT\nBEGINCONTEXT\ntitle: Harbour Bakery opens\nauthor: J. Ode\n"
                           "date: 2024-03-02\nurl: https://news.example/bakery\nENDCONTEXT\n"
                           "The Harbour Bakery opened on Pier 4, run by Ana Lim.\nENDINPUT\nBEGININPUT\n")
    assert user.endswith("BEGININSTRUCTION\nWho runs the Harbour Bakery? Cite the source (title and url) of your "
                         "answer.\nENDINSTRUCTION")
    blocks, _ = parse_contextual(user)
    assert [b["metadata"]["url"] for b in blocks] == ["https://news.example/bakery", "https://news.example/pier"]
    assert record.conversation[1]["content"] == (
        "Ana Lim runs the Harbour Bakery.\n\nReference(s):\ntitle: Harbour Bakery opens\n"
        "url: https://news.example/bakery\ndate: 2024-03-02")
    assert record.meta["answerable"] is True and record.meta["sources"] == ["https://news.example/bakery"]


@pytest.mark.parametrize("answer, fault", [
    ({"answer": "The provided context does not contain that information.", "sources": ["https://news.example/bakery"]},
     "the answer says it does not"),
    ({"answer": "Ana Lim runs it.", "sources": []}, "sources: must have at least 1 items"),  # the schema asks too
])
def test_contextual_rejects_a_bad_answer_to_an_answerable_instruction(sim, tmp_path, answer, fault):
    contextual_script(sim, "Who runs the Harbour Bakery?", answer)
    store, job_id, results = run_directly(tmp_path, contextual_job(sim, unanswerable=0))
    assert [r.state for r in results] == [UnitState.REJECTED]
    assert fault in store.units(job_id)[0].last_error


def test_contextual_unanswerable_instruction_answered_with_an_invented_fact_is_rejected(sim, tmp_path):
    contextual_script(sim, "What does a loaf cost at the Harbour Bakery?",
                      {"answer": "A loaf costs 3 euros.", "sources": []})
    store, job_id, results = run_directly(tmp_path, contextual_job(sim, unanswerable=1))
    assert [r.state for r in results] == [UnitState.REJECTED]
    assert "does not answer this instruction, and the answer does not say so" in store.units(job_id)[0].last_error
    [kept] = store.iter_records(job_id, kind="rejected")
    assert kept.meta["answerable"] is False


@pytest.mark.parametrize("invents, state", [(False, UnitState.DONE), (True, UnitState.REJECTED)])
def test_contextual_unanswerable_instruction_needs_the_pattern_and_the_judge(sim, tmp_path, invents, state):
    said = "The provided context does not mention the price of a loaf; it only says Ana Lim runs the bakery."
    contextual_script(sim, "What does a loaf cost at the Harbour Bakery?", {"answer": said, "sources": []},
                      verdict={"reason": "It adds a price." if invents else "It invents nothing.",
                               "invents": invents})
    store, job_id, results = run_directly(tmp_path, contextual_job(sim, unanswerable=1, judge=True))
    assert [r.state for r in results] == [state]
    if invents:
        assert "invents what the context does not say: It adds a price." in store.units(job_id)[0].last_error
    else:
        [record] = store.iter_records(job_id)
        assert record.conversation[1]["content"] == said
        assert record.meta["answerable"] is False and record.meta["judged"] is True
        assert "Cite the source" not in record.conversation[0]["content"]


def test_contextual_answer_checks_in_code():
    urls = ["https://news.example/bakery"]
    assert answer_problem({"answer": "Ana Lim.", "sources": urls}, urls, answerable=True, cite=True) is None
    assert "cites none" in answer_problem({"answer": "Ana Lim.", "sources": []}, urls, answerable=True, cite=True)
    assert "which is not one of the input blocks" in answer_problem(
        {"answer": "x", "sources": ["https://elsewhere"]}, urls, answerable=True, cite=True)
    assert "yet the answer cites a source" in answer_problem(
        {"answer": "The context does not say.", "sources": urls}, urls, answerable=False, cite=False)
    for said in ("The text doesn't mention it.", "No information about prices is given.",
                 "I am unable to find that in the context.", "That is not specified in the input."):
        assert answer_problem({"answer": said, "sources": []}, urls, answerable=False, cite=False) is None, said


def test_contextual_parser_refuses_a_broken_format():
    good = ("BEGININPUT\nBEGINCONTEXT\nurl: u\nENDCONTEXT\ntext\nENDINPUT\nBEGININSTRUCTION\nq\nENDINSTRUCTION")
    assert parse_contextual(good)[1] == "q"
    for broken in (good.replace("ENDCONTEXT\n", ""), good.replace("url: u", "url u"),
                   good.replace("\nENDINSTRUCTION", ""), good.replace("ENDINPUT\n", "")):
        with pytest.raises(ValueError):
            parse_contextual(broken)


def test_job_file_problems_are_one_line_errors(tmp_path):
    path = tmp_path / "bad.yml"
    path.write_text(sim_job("http://127.0.0.1:9/v1", instructor="  type: cot\n  count: 2\n"))
    result = gen_cmd("validate", str(path))
    assert result.returncode == 2
    assert "needs a teacher named 'solver'" in result.stderr and "Traceback" not in result.stderr
    path.write_text(sim_job("http://127.0.0.1:9/v1", instructor="  type: agent\n  count: 2\n  answer_format: toml\n"))
    result = gen_cmd("validate", str(path))
    assert result.returncode == 2 and "instructor.answer_format" in result.stderr
