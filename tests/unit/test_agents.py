"""Chapter 09: tools, the agent loop, faults of a real service, multi-agent, evaluation, smolagents."""

from __future__ import annotations

import builtins
import json
import math
import time

import httpx
import psutil
import pytest

from course_utils.agents import (
    GIVE_UP,
    LOOP_GIVE_UP,
    AgentRun,
    CalculatorError,
    ConversationMemory,
    Encyclopedia,
    OraclePolicy,
    ScriptedLLM,
    Tool,
    ToolError,
    ToolTimeout,
    TransientToolError,
    WeatherClient,
    calculate,
    course_tools,
    evaluate_traces,
    load_questions,
    parse_action,
    parse_tool_call,
    pass_at_k,
    pass_hat_k,
    run_agent,
    run_agents,
    score_answer,
    success_by_hops,
    summarize,
    weather_report,
    weather_service,
)
from course_utils.agents import loop as loop_module
from course_utils.agents.calculator import calculator
from course_utils.agents.multi_agent import orchestrator_run
from course_utils.agents.weather import describe

TOOLS = {"search": ["query"], "weather": ["city", "date"], "calculator": ["expression"]}


@pytest.fixture(scope="module")
def tools():
    return course_tools()


@pytest.fixture(scope="module")
def service():
    with weather_service(slow_seconds=2.0, retry_after=1) as svc:
        yield svc


# ---------------------------------------------------------------- calculator

@pytest.mark.parametrize("expr, value", [("1 + 2 * 3", 7), ("(1 + 2) * 3", 9), ("2 ** 10", 1024), ("2^10", 1024),
                                          ("7 / 2", 3.5), ("7 // 2", 3), ("-3 + +4", 1), ("sqrt(16) + abs(-2)", 6.0),
                                          ("round(2.71828, 2)", 2.72), ("max(3, 9, 4) - min(3, 9)", 6),
                                          ("22.4 * 9 / 5 + 32", 22.4 * 9 / 5 + 32), ("2 * pi", 2 * math.pi)])
def test_calculator_computes_like_python(expr, value):
    assert calculate(expr) == pytest.approx(value)


@pytest.mark.parametrize("expr, message", [
    ("__import__('os').system('echo hi')", "functions"), ("(1).real", "Attribute"), ("x + 1", "unknown name"),
    ("10 ** 1000", "too large"), ("9 ** 9 ** 9", "too large"), ("2 ** 101", "too large"), ("1 / 0", "division by zero"),
    ("5 % 0", "division by zero"), ("0 ** -1", "division by zero"), ("sqrt(-1)", "negative"),
    ("'a' * 3", "not a number"), ("True + 1", "not a number"), ("lambda: 1", "Lambda"), ("[1, 2]", "List"),
    ("1 +", "not a valid"), ("", "empty"), ("1" * 300, "too long"), ("open('x')", "functions"),
    ("round(1.5, ndigits=1)", "keyword"), ("1e308 * 10", "finite"),
])
def test_calculator_rejects_with_a_clear_error_and_never_evals(expr, message, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("eval/exec must never be called")

    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    t0 = time.perf_counter()
    with pytest.raises(CalculatorError, match=message):
        calculate(expr)
    assert time.perf_counter() - t0 < 1.0  # huge powers are refused before computing them


def test_calculator_tool_formats_and_errors_become_observations():
    assert calculator("22.4 * 9 / 5 + 32") == "72.32"
    assert calculator("6 * 7") == "42"
    trace = run_agent(ScriptedLLM(['Action: calculator\nAction Input: {"expression": "__import__(\'os\')"}',
                                   "Final Answer: none"]), [course_tools()["calculator"]], "q", tool_timeout=60)
    assert trace.steps[0].error == "tool" and "only these functions" in trace.steps[0].observation
    assert trace.steps[0].attempts == 1  # a permanent error is not retried


# ---------------------------------------------------------------- encyclopedia

@pytest.mark.parametrize("query, title", [("capital of Peru", "Peru"), ("population of Nigeria", "Nigeria"),
                                          ("Lilongwe capital", "Malawi"), ("area of Switzerland", "Switzerland")])
def test_encyclopedia_search_returns_the_right_country(query, title):
    enc = Encyclopedia()
    assert enc.search(query, k=1)[0].metadata["title"] == title


def test_encyclopedia_articles_carry_countryinfo_facts():
    import countryinfo

    enc = Encyclopedia()
    info = countryinfo.CountryInfo("Peru").info()
    article = enc.articles["Peru"]
    assert f"Its capital is {info['capital']}." in article and f"a population of {info['population']}" in article
    passages = enc.tool()(query="capital of Peru")
    assert passages.startswith("[1] Peru is a country") and "\n[2] " in passages


# ---------------------------------------------------------------- weather service and its faults

def test_weather_data_is_deterministic_and_seasonal():
    assert weather_report("Lima", "2026-01-15") == weather_report("lima ", "2026-01-15")
    assert weather_report("Oslo", "2026-07-15")["temperature_c"] > weather_report("Oslo", "2026-01-15")["temperature_c"]
    with pytest.raises(LookupError):
        weather_report("Atlantis", "2026-01-15")
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        weather_report("Lima", "15/01/2026")


def test_service_runs_as_a_real_process_and_leaves_none(service):
    pid = service.process.pid
    assert psutil.pid_exists(pid) and pid != psutil.Process().pid
    r = httpx.get(f"{service.url}/weather", params={"city": "Lima", "date": "2026-01-15"}, timeout=10)
    assert r.status_code == 200 and r.json() == weather_report("Lima", "2026-01-15")
    with WeatherClient(service.url, timeout=5) as client:
        assert client.tool()(city="Lima", date="2026-01-15") == describe(weather_report("Lima", "2026-01-15"))


@pytest.mark.parametrize("fault, error, message", [
    ("slow", TransientToolError, "did not answer within"), ("server_error", TransientToolError, "HTTP 500"),
    ("rate_limit", TransientToolError, "HTTP 429"), ("malformed", TransientToolError, "malformed JSON"),
    ("unknown_city", ToolError, "unknown city")])
def test_every_injected_fault_becomes_the_right_tool_error(service, fault, error, message):
    with WeatherClient(service.url, timeout=0.5, fault=fault) as client:
        with pytest.raises(error, match=message) as caught:
            client.get("Lima", "2026-01-15")
    assert isinstance(caught.value, TransientToolError) == (fault != "unknown_city")
    if fault == "rate_limit":
        assert caught.value.retry_after == 1.0


def test_unknown_city_and_bad_date_are_permanent_errors(service):
    with WeatherClient(service.url, timeout=5) as client:
        with pytest.raises(ToolError, match="Atlantis.*404") as caught:
            client.get("Atlantis", "2026-01-15")
        assert not isinstance(caught.value, TransientToolError)
        with pytest.raises(ToolError, match="YYYY-MM-DD"):
            client.get("Lima", "tomorrow")


class FlakyWeather:
    """The weather tool over HTTP whose first ``failures`` calls ask the service for ``fault``."""

    def __init__(self, url: str, fault: str, failures: int = 1, timeout: float = 0.5):
        self.faulty, self.healthy = WeatherClient(url, timeout=timeout, fault=fault), WeatherClient(url, timeout=5)
        self.failures, self.calls = failures, 0
        self.tool = Tool(name="weather", description="weather", fn=self.call, parameters={
            "type": "object", "required": ["city", "date"],
            "properties": {"city": {"type": "string"}, "date": {"type": "string"}}})

    def call(self, city: str, date: str) -> str:
        self.calls += 1
        client = self.faulty if self.calls <= self.failures else self.healthy
        return describe(client.get(city, date))


@pytest.mark.parametrize("fault", ["slow", "server_error", "rate_limit", "malformed"])
def test_the_loop_recovers_from_each_transient_fault_by_retrying(service, fault, monkeypatch):
    waits = []
    monkeypatch.setattr(loop_module.time, "sleep", waits.append)
    flaky = FlakyWeather(service.url, fault)
    action = 'Action: weather\nAction Input: {"city": "Lima", "date": "2026-01-15"}'
    trace = run_agent(ScriptedLLM([action, "Final Answer: done"]), [flaky.tool], "q", max_retries=2, backoff=0.25,
                      tool_timeout=60)
    step = trace.steps[0]
    assert step.error is None and step.attempts == 2 and len(step.failures) == 1
    assert step.observation == describe(weather_report("Lima", "2026-01-15"))
    assert waits == [1.0 if fault == "rate_limit" else 0.25]  # Retry-After is honoured, else backoff
    row = evaluate_traces([trace], [{"answer": "done", "answer_type": "text"}])[0]
    assert row["errors_recovered"] == 1 and row["errors_fatal"] == 0


def test_the_loop_reports_a_fault_that_persists_and_the_model_sees_it(service, monkeypatch):
    waits = []
    monkeypatch.setattr(loop_module.time, "sleep", waits.append)
    flaky = FlakyWeather(service.url, "server_error", failures=10)
    action = 'Action: weather\nAction Input: {"city": "Lima", "date": "2026-01-15"}'
    llm = ScriptedLLM([action, "Final Answer: I could not get the weather."])
    trace = run_agent(llm, [flaky.tool], "q", max_retries=2, backoff=0.25, max_wait=0.6, tool_timeout=60)
    step = trace.steps[0]
    assert step.error == "transient" and step.attempts == 3 and waits == [0.25, 0.5]  # exponential backoff
    assert step.observation.startswith("Error: the weather service failed (HTTP 500)") and "3 times" in step.observation
    assert llm.calls[1][-1]["content"] == f"Observation: {step.observation}"
    row = evaluate_traces([trace], [{"answer": "x", "answer_type": "text"}])[0]
    assert row["errors_fatal"] == 3 and row["errors_recovered"] == 0 and trace.status == "answered"


def test_random_faults_are_reproducible_and_the_oracle_survives_them():
    questions = [q for q in load_questions("heldout") if "temperature in" in json.dumps(q["chain"])][:6]
    rows, served = [], []
    pids = []
    for _ in range(2):
        with weather_service(fault_rate=0.4, seed=3, slow_seconds=1.0) as svc:
            pids.append(svc.process.pid)
            with WeatherClient(svc.url, timeout=0.4) as client:
                tools = {**course_tools(weather=client.tool())}
                runs = [AgentRun(list(tools.values()), q["question"], max_steps=10, max_retries=3, backoff=0.01,
                                 max_wait=0.05) for q in questions]
                traces = run_agents(OraclePolicy(max_failures=6), runs)
                rows.append(evaluate_traces(traces, questions))
                served.append(httpx.get(f"{svc.url}/stats", timeout=5).json()["served"])
    assert served[0] == served[1] and sum(v for k, v in served[0].items() if k != "ok") > 0
    assert [r["success"] for r in rows[0]] == [r["success"] for r in rows[1]]
    s = summarize(rows[0])
    assert s["success"] >= 5 / 6 and s["errors_recovered"] > 0
    for pid in pids:  # stopped, no stray process
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_service_stops_and_its_process_is_gone():
    with weather_service() as svc:
        proc = psutil.Process(svc.process.pid)
        children = proc.children(recursive=True)
        assert httpx.get(f"{svc.url}/health", timeout=5).json() == {"status": "ok"}
        assert svc.log_path.exists()
    for p in [proc, *children]:
        assert not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
    assert not svc.log_path.exists(), "its temporary log file is removed after a clean exit"


def test_service_log_is_removed_by_stop_but_kept_after_an_error():
    svc = weather_service().start()
    httpx.get(f"{svc.url}/health", timeout=5)
    svc.stop()
    assert not svc.log_path.exists() and "weather API on" in svc.log_text(), "stop() keeps the text, not the file"
    with pytest.raises(KeyError):
        with weather_service() as failed:
            raise KeyError("a failing block")
    assert failed.log_path.exists(), "the log is kept to be read after an error"
    assert "weather API on" in failed.log_text()
    failed.log_path.unlink()


def test_service_dies_with_a_killed_process_that_started_it():
    """A notebook kernel killed mid-run (no __exit__) must not leave the service behind."""
    import subprocess
    import sys

    code = ("import os, sys\nfrom course_utils.agents import weather_service\nsvc = weather_service().start()\n"
            "print(svc.process.pid, flush=True)\nos.kill(os.getpid(), 9)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    pid = int(proc.stdout.split()[0])
    deadline = time.monotonic() + 30
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the service outlived the process that started it"
        time.sleep(0.2)


# ---------------------------------------------------------------- parsing

@pytest.mark.parametrize("text, expected", [
    ('Thought: need it\nAction: search\nAction Input: {"query": "capital of Peru"}', ("search", {"query": "capital of Peru"})),
    ('thought: x\naction: Search\naction input: {"query": "Peru"}\nObservation: Lima', ("search", {"query": "Peru"})),
    ("Action: search[capital of Peru]", ("search", {"query": "capital of Peru"})),
    ('Action: `weather`\nAction Input: ```json\n{"city": "Lima", "date": "2026-01-15"}\n``` I will wait.',
     ("weather", {"city": "Lima", "date": "2026-01-15"})),
    ("Action: weather\nAction Input: {'city': 'Lima', 'date': '2026-01-15'}", ("weather", {"city": "Lima", "date": "2026-01-15"})),
    ('Action: calculator\nAction Input: "2 + 2"', ("calculator", {"expression": "2 + 2"})),
    ("**Action:** search\n**Action Input:** Peru", ("search", {"query": "Peru"})),
])
def test_parser_reads_actions_written_loosely(text, expected):
    parsed = parse_action(text, TOOLS)
    assert parsed["kind"] == "action" and (parsed["tool"], parsed["args"]) == expected


@pytest.mark.parametrize("text, error", [
    ("The capital of Peru is Lima.", "no Action and no Final Answer"),
    ("Action: google\nAction Input: {}", "unknown tool 'google'"),
    ("Action: search", "missing Action Input"),
    ('Action: weather\nAction Input: {"city": "Lima", "date": ', "not valid JSON"),
    ("Action: weather\nAction Input: Lima", "JSON object with the keys: city, date"),
    ("Final Answer:\n\n", "empty"),
    ("", "no Action"),
])
def test_parser_turns_malformed_output_into_an_error_the_model_can_fix(text, error):
    parsed = parse_action(text, TOOLS)
    assert parsed["kind"] == "error" and error in parsed["error"]


def test_parser_final_answer_and_invented_observations():
    assert parse_action("Thought: done\nFinal Answer: Lima\nmore text", TOOLS)["answer"] == "Lima"
    # a model that invents the observation and the answer is stopped at "Observation:"
    invented = 'Action: search\nAction Input: {"query": "Peru"}\nObservation: Lima\nFinal Answer: Lima'
    assert parse_action(invented, TOOLS)["kind"] == "action"
    assert parse_action("Final Answer: 4\nAction: search", TOOLS)["kind"] == "final"


def test_tool_call_format_round_trips_through_a_chat_template(tools):
    from transformers import AutoTokenizer

    from course_utils.agents import HERMES_TOOL_TEMPLATE, supports_tools
    from course_utils.models import offline_model_dir

    tok = AutoTokenizer.from_pretrained(offline_model_dir())
    assert not supports_tools(tok)
    tok.chat_template = HERMES_TOOL_TEMPLATE
    assert supports_tools(tok)
    rendered = tok.apply_chat_template([{"role": "user", "content": "hi"}], tools=[t.schema() for t in tools.values()],
                                       tokenize=False, add_generation_prompt=True)
    assert '"name": "weather"' in rendered and "<tool_call>" in rendered
    call = parse_tool_call('<tool_call>\n{"name": "weather", "arguments": {"city": "Lima", "date": "2026-01-15"}}\n'
                           "</tool_call>", TOOLS)
    assert (call["kind"], call["tool"], call["args"]) == ("action", "weather", {"city": "Lima", "date": "2026-01-15"})
    assert parse_tool_call("Lima", TOOLS)["answer"] == "Lima"
    assert "unknown tool" in parse_tool_call('<tool_call>{"name": "x", "arguments": {}}</tool_call>', TOOLS)["error"]


def test_tool_schema_is_the_transformers_schema_and_arguments_are_checked(tools):
    from transformers.utils import get_json_schema

    reference = get_json_schema(calculator)
    reference["function"].pop("return", None)
    assert tools["calculator"].schema() == reference
    with pytest.raises(ToolError, match="unexpected argument 'q'"):
        tools["search"](q="Peru")
    with pytest.raises(ToolError, match="'query' is a required property"):
        tools["search"]()
    with pytest.raises(ToolError, match="is not of type 'string'"):
        tools["search"](query=3)


# ---------------------------------------------------------------- the loop

def test_step_limit_gives_a_graceful_answer():
    llm = ScriptedLLM(["I am thinking."], repeat_last=True)
    trace = run_agent(llm, [course_tools()["calculator"]], "What is 2+2?", max_steps=3)
    assert trace.status == "step_limit" and trace.answer == GIVE_UP.format(max_steps=3)
    assert len(trace.steps) == 3 and len(llm.calls) == 3 and all(s.error == "parse" for s in trace.steps)


def test_loop_detection_stops_repeats_without_calling_the_tool_again():
    calls = []
    tool = Tool(name="calculator", description="c", fn=lambda expression: calls.append(expression) or "4",
                parameters={"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]})
    action = 'Action: calculator\nAction Input: {"expression": "2+2"}'
    trace = run_agent(ScriptedLLM([action], repeat_last=True), [tool], "q", max_steps=10, repeat_limit=2,
                      tool_timeout=60)
    assert trace.status == "loop" and trace.answer == LOOP_GIVE_UP
    assert len(trace.steps) == 3 and calls == ["2+2"] and [s.error for s in trace.steps] == [None, "repeat", "repeat"]
    assert "you already called calculator" in trace.steps[1].observation


def test_a_tool_that_raises_and_a_tool_that_hangs_become_observations():
    import threading

    release = threading.Event()

    def hang(x: str) -> str:
        release.wait(10)
        return "late"

    def boom(x: str) -> str:
        raise RuntimeError("disk on fire")

    schema = {"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"]}
    tools = [Tool("hang", "h", schema, hang), Tool("boom", "b", schema, boom)]
    llm = ScriptedLLM(['Action: hang\nAction Input: {"x": "1"}', 'Action: boom\nAction Input: {"x": "1"}',
                       "Final Answer: gave up"])
    t0 = time.perf_counter()
    trace = run_agent(llm, tools, "q", tool_timeout=0.2, max_retries=1, backoff=0.0)
    release.set()
    assert time.perf_counter() - t0 < 5
    hung, boomed = trace.steps[0], trace.steps[1]
    assert hung.error == "transient" and hung.attempts == 2 and "within 0.2 s" in hung.observation
    assert boomed.error == "tool" and boomed.attempts == 1 and boomed.observation == "Error: disk on fire"
    assert trace.status == "answered" and trace.answer == "gave up"
    assert isinstance(ToolTimeout("x"), TimeoutError)


def test_trace_records_every_step_and_renders(tools):
    q = load_questions("heldout", hops=3)[0]
    trace = run_agent(OraclePolicy(), list(tools.values()), q["question"], max_steps=8)
    assert trace.status == "answered" and score_answer(trace.answer, q)
    assert len(trace.steps) == q["hops"] + 1 and trace.tool_calls == q["hops"]
    text = trace.render()
    assert q["question"] in text and "Final Answer:" in text and "answered" in text
    assert text.count("Action:") == q["hops"]


def test_memory_carries_earlier_turns():
    from course_utils.agents import Agent

    memory = ConversationMemory(max_turns=2)
    llm = ScriptedLLM(["Final Answer: Lima", "Final Answer: 10 million", "Final Answer: x"])
    agent = Agent(llm, [course_tools()["calculator"]], memory=memory)
    agent.ask("What is the capital of Peru?")
    agent.ask("And its population?")
    assert memory.turns == [("What is the capital of Peru?", "Lima"), ("And its population?", "10 million")]
    second = llm.calls[1]
    assert {"role": "assistant", "content": "Final Answer: Lima"} in second
    assert second[-1] == {"role": "user", "content": "Question: And its population?"}
    agent.ask("third")
    assert len(memory.turns) == 2 and memory.turns[0][0] == "And its population?"


def test_bad_loop_arguments_are_rejected():
    with pytest.raises(ValueError, match="max_steps"):
        AgentRun([course_tools()["calculator"]], "q", max_steps=0)
    with pytest.raises(ValueError, match="format"):
        AgentRun([course_tools()["calculator"]], "q", format="xml")


# ---------------------------------------------------------------- oracle, multi-agent, evaluation

def test_oracle_solves_every_heldout_question(tools):
    questions = load_questions("heldout")
    assert len(questions) >= 60 and {q["hops"] for q in questions} == {1, 2, 3, 4}
    runs = [AgentRun(list(tools.values()), q["question"], max_steps=8) for q in questions]
    rows = evaluate_traces(run_agents(OraclePolicy(), runs), questions)
    s = summarize(rows)
    assert s["success"] == 1.0 and s["parse_errors"] == 0
    assert s["mean_tool_calls"] == pytest.approx(sum(q["hops"] for q in questions) / len(questions))
    assert success_by_hops(rows) == {1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0}


def test_questions_are_split_by_country():
    train, held = load_questions("train"), load_questions("heldout")
    assert len(train) + len(held) == len(load_questions())
    def places(qs):  # countries and capitals (dates and expressions may repeat)
        return {v for q in qs for v in q["entities"].values() if not any(ch.isdigit() for ch in v)}

    assert places(held) and not places(train) & places(held)


def test_multi_agent_orchestrator_delegates_and_solves(tools):
    questions = load_questions("heldout")[::6]
    runs = [orchestrator_run(q["question"], tools, max_steps=8) for q in questions]
    traces = run_agents(OraclePolicy(), runs)
    rows = evaluate_traces(traces, questions)
    assert summarize(rows)["success"] == 1.0
    for t, q in zip(traces, questions):
        assert [s.tool for s in t.steps[:-1]] == [f"ask_{s.child.agent}" for s in t.steps[:-1]]
        assert all(s.child.status == "answered" for s in t.steps[:-1]) and t.tool_calls == q["hops"]
        assert t.model_calls == len(t.steps) + sum(len(s.child.steps) for s in t.steps[:-1])


def test_a_specialist_that_gives_up_is_an_error_for_the_orchestrator(tools):
    outputs = ['Action: ask_math\nAction Input: {"task": "What is 1/0?"}',  # orchestrator
               'Action: calculator\nAction Input: {"expression": "1/0"}', "nonsense",  # math agent, 2 steps
               "Final Answer: unknown"]  # orchestrator again
    run = orchestrator_run("q", tools, specialist_steps=2)
    trace = run_agents(ScriptedLLM(outputs), [run])[0]
    child = trace.steps[0].child
    assert child.status == "step_limit" and child.steps[0].observation == "Error: division by zero"
    assert trace.steps[0].error == "tool" and "math agent gave up" in trace.steps[0].observation
    assert trace.answer == "unknown"


def test_scoring():
    q_num = {"answer": "72.32", "answer_type": "number", "tolerance": 0.05}
    assert score_answer("It is 72.3 degrees.", q_num) and not score_answer("72.5", q_num)
    q_txt = {"answer": "Bogotá", "answer_type": "text"}
    assert score_answer("The capital is bogota.", q_txt) and not score_answer("Bogotaville", q_txt)
    assert not score_answer(None, q_txt)


def test_pass_hat_k_matches_a_hand_computation():
    results = [[True, True, True, False], [True, False, False, False], [True, True, True, True]]
    # task 1: c=3 of n=4: pass^1 = 3/4, pass^2 = C(3,2)/C(4,2) = 3/6, pass^3 = 1/4, pass^4 = 0
    # task 2: c=1: 1/4, 0, 0, 0; task 3: always 1
    assert pass_hat_k(results, 1) == pytest.approx((3 / 4 + 1 / 4 + 1) / 3)
    assert pass_hat_k(results, 2) == pytest.approx((3 / 6 + 0 + 1) / 3)
    assert pass_hat_k(results, 3) == pytest.approx((1 / 4 + 0 + 1) / 3)
    assert pass_hat_k(results, 4) == pytest.approx(1 / 3)
    # pass@2: 1 - C(n-c, 2)/C(n, 2): task 1: 1 - 0 = 1; task 2: 1 - 3/6 = 0.5; task 3: 1
    assert pass_at_k(results, 2) == pytest.approx((1 + 0.5 + 1) / 3)
    with pytest.raises(ValueError, match="k=5"):
        pass_hat_k(results, 5)


# ---------------------------------------------------------------- tool-use SFT data

def test_trajectory_example_learns_only_the_assistant_turns(tools):
    from transformers import AutoTokenizer

    from course_utils.agents.sft import oracle_trajectories, trajectory_example
    from course_utils.models import offline_model_dir

    tok = AutoTokenizer.from_pretrained(offline_model_dir())
    conversations, traces = oracle_trajectories(load_questions("train")[:3], tools, max_steps=8)
    assert len(conversations) >= 3
    messages = conversations[0]
    ex = trajectory_example(tok, messages)
    assert tok.decode(ex["input_ids"]) == tok.apply_chat_template(messages, tokenize=False)
    learned = tok.decode([i for i, label in zip(ex["input_ids"], ex["labels"]) if label != -100])
    for m in messages:
        assert (m["content"] in learned) == (m["role"] == "assistant")


# ---------------------------------------------------------------- smolagents

@pytest.mark.parametrize("kind", ["tool_calling", "code"])
def test_smolagents_runs_our_wrapped_tools(kind, tools):
    from course_utils.agents.smol import PolicyModel, make_agent, run_smolagents, to_smolagents

    wrapped = to_smolagents(tools["weather"])
    assert wrapped.name == "weather" and set(wrapped.inputs) == {"city", "date"}
    questions = load_questions("heldout")[::12]
    agent = make_agent(kind, list(tools.values()), PolicyModel(OraclePolicy(), list(tools), kind), max_steps=8)
    results = run_smolagents(agent, questions)
    assert all(r["error"] is None and r["step_errors"] == [] for r in results)
    assert all(score_answer(r["answer"], q) for r, q in zip(results, questions))
    assert [r["steps"] for r in results] == [q["hops"] + 1 for q in questions]


def test_smolagents_shows_a_tool_error_to_the_model(tools, capsys):
    from course_utils.agents.smol import PolicyModel, make_agent, run_smolagents

    llm = ScriptedLLM(['Action: calculator\nAction Input: {"expression": "1/0"}', "Final Answer: undefined"])
    agent = make_agent("tool_calling", list(tools.values()), PolicyModel(llm, list(tools)), max_steps=4)
    result = run_smolagents(agent, [{"question": "What is 1/0?"}])[0]
    assert result["answer"] == "undefined" and result["steps"] == 2
    assert "division by zero" in llm.calls[1][-1]["content"]
    assert len(result["step_errors"]) == 1 and "division by zero" in result["step_errors"][0]
    assert "division by zero" not in capsys.readouterr().out, "returned, not printed to the console"


def test_weather_cli_command_is_registered():
    from course_utils.tooling.cli import build_parser

    args = build_parser().parse_args(["weather", "--port", "8123", "--fault-rate", "0.2"])
    assert args.func.__name__ == "cmd_weather" and args.port == 8123 and args.fault_rate == 0.2


# ---------------------------------------------------------------- the lab's reference answers

def test_lab_references_follow_the_lab_contract(tools):
    from course_utils.agents.lab import evaluate_answers, parse_step, run_loop

    assert parse_step("Action: search[Peru]", TOOLS) == {"kind": "action", "tool": "search", "args": {"query": "Peru"},
                                                        "answer": None}
    assert parse_step("Action: search", TOOLS) == {"kind": "error", "tool": None, "args": None, "answer": None}

    def hangs(city: str) -> str:
        time.sleep(3)
        return "late"

    llm = ScriptedLLM(['Action: hangs\nAction Input: {"city": "Lima"}', 'Action: calculator\nAction Input: "6*7"',
                       "Final Answer: 42"])
    t0 = time.perf_counter()
    result = run_loop(llm, {"hangs": hangs, "calculator": calculator}, "q", tool_timeout=0.2)
    assert time.perf_counter() - t0 < 2.5
    assert result["status"] == "answered" and result["answer"] == "42"
    assert result["steps"][0]["observation"].startswith("Error:") and result["steps"][1]["observation"] == "42"
    assert [m["role"] for m in llm.calls[2]] == ["user", "assistant", "user", "assistant", "user"]
    endless = run_loop(ScriptedLLM(["hmm"], repeat_last=True), {"calculator": calculator}, "q", max_steps=2)
    assert endless["status"] == "step_limit" and endless["answer"] == GIVE_UP.format(max_steps=2)
    with pytest.raises(ValueError, match="max_steps"):
        run_loop(llm, {}, "q", max_steps=0)
    q = {"answer": "1200", "answer_type": "number", "tolerance": 0.5, "hops": 2}
    t = {"answer": "Lima", "answer_type": "text", "hops": 1}
    out = evaluate_answers(["1,200 people", "lima", None], [q, t, t])
    assert out == {"success": 2 / 3, "by_hops": {"1": 0.5, "2": 1.0}, "correct": [True, True, False]}
