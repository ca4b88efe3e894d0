"""Multi-hop questions with gold answers, generated from the data the tools serve.

A question is a chain of one-hop *sub-questions*, each answered by exactly one tool call:

============================ ============ =====================================================
sub-question                 tool         e.g.
============================ ============ =====================================================
``capital``                  search       What is the capital of Peru?
``population`` / ``area``    search       What is the population of Peru?
``country_of_capital``       search       Which country has Lima as its capital?
``temperature``              weather      What is the temperature in Lima on 2026-01-15, in degrees Celsius?
``arithmetic``               calculator   What is 22.4 * 9 / 5 + 32?
============================ ============ =====================================================

A *family* is a plan (a generator that yields sub-questions and receives their answers), and its
**hop count** is the number of sub-questions, so the number of tool calls an ideal agent makes:
``capital_fahrenheit`` = capital → temperature → arithmetic is 3 hops. The same plan gives the gold
answer (each sub-question answered from the data directly: ``countryinfo`` and
:func:`~course_utils.agents.weather.weather_report`) and drives the scripted oracle, which has to get
every value by calling the real tools and reading their output (:func:`read_observation`).

The countries are split once into train and held-out sets, so questions used to fine-tune never
mention a held-out country or capital. ``scripts/make_agent_questions.py`` writes the shipped file.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from course_utils import checks
from course_utils.agents.calculator import calculate, format_number
from course_utils.agents.encyclopedia import Country, Encyclopedia, fold

DATA = Path(__file__).resolve().parents[1] / "data" / "agent_questions.json"
SPLITS = ("train", "heldout")

SUB_TEMPLATES = {
    "capital": "What is the capital of {country}?",
    "population": "What is the population of {country}?",
    "area": "What is the area of {country} in square kilometres?",
    "country_of_capital": "Which country has {capital} as its capital?",
    "temperature": "What is the temperature in {city} on {date}, in degrees Celsius?",
    "arithmetic": "What is {expression}?",
}
SUB_TOOLS = {"capital": "search", "population": "search", "area": "search", "country_of_capital": "search",
             "temperature": "weather", "arithmetic": "calculator"}


@dataclass(frozen=True)
class Ask:
    """A one-hop sub-question: ``kind`` (a key of :data:`SUB_TEMPLATES`) and its fields."""

    kind: str
    fields: tuple[tuple[str, str], ...]

    @classmethod
    def make(cls, kind: str, **fields: str) -> Ask:
        return cls(kind, tuple(sorted(fields.items())))

    def __getitem__(self, key: str) -> str:
        return dict(self.fields)[key]

    @property
    def text(self) -> str:
        return SUB_TEMPLATES[self.kind].format(**dict(self.fields))

    def action(self) -> tuple[str, dict[str, str]]:
        """The one tool call that answers it: (tool, arguments)."""
        f = dict(self.fields)
        if self.kind in ("capital", "population", "area"):
            return "search", {"query": f"{self.kind} of {f['country']}"}
        if self.kind == "country_of_capital":
            return "search", {"query": f"{f['capital']} capital"}
        if self.kind == "temperature":
            return "weather", {"city": f["city"], "date": f["date"]}
        return "calculator", {"expression": f["expression"]}

    def thought(self) -> str:
        f = dict(self.fields)
        return {"capital": "I need the capital of {country}.", "population": "I need the population of {country}.",
                "area": "I need the area of {country}.",
                "country_of_capital": "I need the country whose capital is {capital}.",
                "temperature": "I need the temperature in {city} on {date}.",
                "arithmetic": "I need to compute {expression}."}[self.kind].format(**f)


Plan = Generator[Ask, str, str]


def _ask(kind: str, **fields: str) -> Ask:
    return Ask.make(kind, **fields)


# ---- the plans: each yields sub-questions, receives their answers (as text) and returns the answer ----

def plan_single(kind: str) -> Callable[[dict], Plan]:
    def plan(e: dict) -> Plan:
        return (yield _ask(kind, **e))
    return plan


def plan_capital_temperature(e: dict) -> Plan:
    city = yield _ask("capital", country=e["country"])
    return (yield _ask("temperature", city=city, date=e["date"]))


def plan_fahrenheit(e: dict) -> Plan:
    c = yield _ask("temperature", city=e["city"], date=e["date"])
    return (yield _ask("arithmetic", expression=f"{c} * 9 / 5 + 32"))


def plan_population_by_capital(e: dict) -> Plan:
    country = yield _ask("country_of_capital", capital=e["capital"])
    return (yield _ask("population", country=country))


def plan_capital_fahrenheit(e: dict) -> Plan:
    city = yield _ask("capital", country=e["country"])
    c = yield _ask("temperature", city=city, date=e["date"])
    return (yield _ask("arithmetic", expression=f"{c} * 9 / 5 + 32"))


def plan_density(e: dict) -> Plan:
    people = yield _ask("population", country=e["country"])
    area = yield _ask("area", country=e["country"])
    return (yield _ask("arithmetic", expression=f"{people} / {area}"))


def plan_population_difference(e: dict) -> Plan:
    a = yield _ask("population", country=e["country_a"])
    b = yield _ask("population", country=e["country_b"])
    return (yield _ask("arithmetic", expression=f"{a} - {b}"))


def plan_temperature_difference(e: dict) -> Plan:
    a = yield _ask("temperature", city=e["city_a"], date=e["date"])
    b = yield _ask("temperature", city=e["city_b"], date=e["date"])
    return (yield _ask("arithmetic", expression=f"{a} - {b}"))


def plan_more_populous_capital_temperature(e: dict) -> Plan:
    a = yield _ask("population", country=e["country_a"])
    b = yield _ask("population", country=e["country_b"])
    bigger = e["country_a"] if float(a) >= float(b) else e["country_b"]
    city = yield _ask("capital", country=bigger)
    return (yield _ask("temperature", city=city, date=e["date"]))


def plan_density_by_capital(e: dict) -> Plan:
    country = yield _ask("country_of_capital", capital=e["capital"])
    people = yield _ask("population", country=country)
    area = yield _ask("area", country=country)
    return (yield _ask("arithmetic", expression=f"{people} / {area}"))


@dataclass(frozen=True)
class Family:
    name: str
    hops: int
    template: str
    plan: Callable[[dict], Plan]
    answer_type: str = "number"
    entities: tuple[str, ...] = field(default=())


FAMILIES = {f.name: f for f in [
    Family("capital", 1, SUB_TEMPLATES["capital"], plan_single("capital"), "text", ("country",)),
    Family("population", 1, SUB_TEMPLATES["population"], plan_single("population"), "number", ("country",)),
    Family("area", 1, SUB_TEMPLATES["area"], plan_single("area"), "number", ("country",)),
    Family("country_of_capital", 1, SUB_TEMPLATES["country_of_capital"], plan_single("country_of_capital"), "text",
           ("capital",)),
    Family("temperature", 1, SUB_TEMPLATES["temperature"], plan_single("temperature"), "number", ("city", "date")),
    Family("arithmetic", 1, SUB_TEMPLATES["arithmetic"], plan_single("arithmetic"), "number", ("expression",)),
    Family("capital_temperature", 2, "What is the temperature in the capital of {country} on {date}, in degrees "
           "Celsius?", plan_capital_temperature, "number", ("country", "date")),
    Family("fahrenheit", 2, "How many degrees Fahrenheit is it in {city} on {date}?", plan_fahrenheit, "number",
           ("city", "date")),
    Family("population_by_capital", 2, "What is the population of the country whose capital is {capital}?",
           plan_population_by_capital, "number", ("capital",)),
    Family("capital_fahrenheit", 3, "How many degrees Fahrenheit is it in the capital of {country} on {date}?",
           plan_capital_fahrenheit, "number", ("country", "date")),
    Family("density", 3, "What is the population density of {country}, in people per square kilometre?",
           plan_density, "number", ("country",)),
    Family("population_difference", 3, "How many more people live in {country_a} than in {country_b}?",
           plan_population_difference, "number", ("country_a", "country_b")),
    Family("temperature_difference", 3, "How much warmer is it in {city_a} than in {city_b} on {date}, in degrees "
           "Celsius?", plan_temperature_difference, "number", ("city_a", "city_b", "date")),
    Family("more_populous_capital_temperature", 4, "What is the temperature on {date} in the capital of whichever is "
           "more populous, {country_a} or {country_b}, in degrees Celsius?", plan_more_populous_capital_temperature,
           "number", ("country_a", "country_b", "date")),
    Family("density_by_capital", 4, "What is the population density of the country whose capital is {capital}, in "
           "people per square kilometre?", plan_density_by_capital, "number", ("capital",)),
]}


# ---- gold answers from the data ----

def gold_value(ask: Ask, countries: dict[str, Country]) -> str:
    """The answer to a sub-question from the data, formatted as the tools format it."""
    from course_utils.agents.weather import weather_report

    f = dict(ask.fields)
    if ask.kind == "capital":
        return countries[f["country"]].capital
    if ask.kind == "population":
        return str(countries[f["country"]].population)
    if ask.kind == "area":
        return format_number(countries[f["country"]].area)
    if ask.kind == "country_of_capital":
        return next(c.name for c in countries.values() if c.capital == f["capital"])
    if ask.kind == "temperature":
        return str(weather_report(f["city"], f["date"])["temperature_c"])
    return format_number(calculate(f["expression"]))


def solve(family: str, entities: dict, answer: Callable[[Ask], str]) -> tuple[str, list[tuple[str, str]]]:
    """Run a family's plan, answering each sub-question with ``answer`` → (final answer, chain)."""
    plan = FAMILIES[family].plan(entities)
    chain: list[tuple[str, str]] = []
    try:
        ask = next(plan)
        while True:
            value = answer(ask)
            chain.append((ask.text, value))
            ask = plan.send(value)
    except StopIteration as stop:
        return stop.value, chain


def _tolerance(family: str, gold: float) -> float:
    if family in ("population", "area", "population_difference"):
        return max(0.5, 1e-3 * abs(gold))
    if family in ("density", "density_by_capital"):
        return max(0.05, 0.01 * abs(gold))
    if family in ("fahrenheit", "capital_fahrenheit"):
        return 0.1
    if family == "arithmetic":
        return 0.01
    return 0.05  # temperatures, read as they are


# ---- the data: which countries, and the questions ----

def clean_countries(encyclopedia: Encyclopedia | None = None) -> list[Country]:
    """Countries a question may name: plain-ASCII name and capital, a capital of their own (not a
    country's name, not shared), population ≥ 50,000, an area, a weather record, and every search the
    oracle makes (``capital of X``, ``population of X``, ``area of X``, ``<capital> capital``) finds the
    country's article among the first two hits."""
    from course_utils.agents.weather import cities

    enc = encyclopedia or Encyclopedia()
    names = {fold(c.name) for c in enc.countries}
    capitals = [c.capital for c in enc.countries if c.capital]
    ok = re.compile(r"^[A-Za-z][A-Za-z' -]*[A-Za-z]$")
    out = []
    for c in enc.countries:
        if not (c.capital and c.population and c.area and ok.match(c.name) and ok.match(c.capital)):
            continue
        if c.population < 50_000 or fold(c.capital) in names or capitals.count(c.capital) > 1:
            continue
        if cities().get(fold(c.capital), ("", ""))[1] != c.name:
            continue
        queries = [f"capital of {c.name}", f"population of {c.name}", f"area of {c.name}", f"{c.capital} capital"]
        if all(c.name in [h.metadata["title"] for h in enc.search(q, 2)] for q in queries):
            out.append(c)
    return out


def _sample_entities(family: Family, rng: random.Random, pool: list[Country]) -> dict[str, str]:
    date = (dt.date(2026, 1, 1) + dt.timedelta(days=rng.randrange(365))).isoformat()
    a, b = rng.sample(pool, 2)
    e = {"country": a.name, "capital": a.capital, "city": a.capital, "date": date, "country_a": a.name,
         "country_b": b.name, "city_a": a.capital, "city_b": b.capital,
         "expression": f"{rng.randint(12, 99)} * {rng.randint(12, 99)} {rng.choice('+-')} {rng.randint(100, 999)}"}
    return {k: e[k] for k in family.entities}


def generate_questions(seed: int = 0, heldout_per_hop: int = 18, train_per_family: int = 20,
                       heldout_fraction: float = 0.35) -> list[dict[str, Any]]:
    """The question set: ``heldout_per_hop`` held-out questions per hop count (spread over that hop
    count's families) and ``train_per_family`` training questions per family, from disjoint countries."""
    checks.positive_int(heldout_per_hop=heldout_per_hop, train_per_family=train_per_family)
    checks.probability("heldout_fraction", heldout_fraction, allow_zero=False, allow_one=False)
    enc = Encyclopedia()
    pool = clean_countries(enc)
    rng = random.Random(seed)
    rng.shuffle(pool)
    n_held = round(len(pool) * heldout_fraction)
    pools = {"heldout": sorted(pool[:n_held], key=lambda c: c.name), "train": sorted(pool[n_held:], key=lambda c: c.name)}
    by_name = {c.name: c for c in enc.countries}
    counts: dict[tuple[str, str], int] = {}
    for hops in sorted({f.hops for f in FAMILIES.values()}):
        fams = [f for f in FAMILIES.values() if f.hops == hops]
        for i, f in enumerate(fams):
            counts[("heldout", f.name)] = heldout_per_hop // len(fams) + (i < heldout_per_hop % len(fams))
    for f in FAMILIES.values():
        counts[("train", f.name)] = train_per_family
    questions, seen = [], set()
    for split in SPLITS[::-1]:
        for f in FAMILIES.values():
            made = 0
            while made < counts[(split, f.name)]:
                entities = _sample_entities(f, rng, pools[split])
                answer, chain = solve(f.name, entities, lambda ask: gold_value(ask, by_name))
                if f.name == "population_difference" and float(answer) <= 0:
                    continue  # "how many more people" needs the larger country first
                if f.name == "temperature_difference" and float(answer) <= 0:
                    continue
                text = f.template.format(**entities)
                if text in seen:
                    continue
                seen.add(text)
                made += 1
                q = {"id": f"{split}-{f.name}-{made:02d}", "split": split, "family": f.name, "hops": f.hops,
                     "question": text, "answer": answer, "answer_type": f.answer_type, "entities": entities,
                     "chain": [list(c) for c in chain]}
                if f.answer_type == "number":
                    q["tolerance"] = float(f"{_tolerance(f.name, float(answer)):.3g}")
                questions.append(q)
    return questions


def write_questions(path: str | Path = DATA, seed: int = 0) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"generator": "scripts/make_agent_questions.py", "seed": seed, "questions": generate_questions(seed)}
    path.write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n")
    return path


def load_questions(split: str | None = None, hops: int | None = None, path: str | Path = DATA) -> list[dict[str, Any]]:
    """The shipped questions, optionally one split and one hop count."""
    if split is not None:
        checks.one_of("split", split, SPLITS)
    rows = json.loads(Path(path).read_text())["questions"]
    return [q for q in rows if (split is None or q["split"] == split) and (hops is None or q["hops"] == hops)]


# ---- reading a question and a tool's output back (the oracle's side) ----

def _template_regex(template: str) -> re.Pattern:
    pattern = re.escape(template)
    for name in re.findall(r"\{(\w+)\}", template):
        pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>.+?)", 1)
    return re.compile(f"^{pattern}$")


_QUESTION_PATTERNS = sorted(((f.name, _template_regex(f.template)) for f in FAMILIES.values()),
                            key=lambda item: -len(FAMILIES[item[0]].template))


def match_question(text: str) -> tuple[str, dict[str, str]] | None:
    """The family and entities of a question written from a template, else None."""
    for name, pattern in _QUESTION_PATTERNS:
        m = pattern.match(text.strip())
        if m:
            return name, m.groupdict()
    return None


def _passages(observation: str) -> list[str]:
    return [re.sub(r"^\[\d+\]\s*", "", line).strip() for line in observation.splitlines() if line.strip()]


def read_observation(ask: Ask, observation: str) -> str | None:
    """The value a sub-question asks for, read from the tool's output (None if it is not there)."""
    f = dict(ask.fields)
    if ask.kind == "country_of_capital":
        for p in _passages(observation):
            m = re.match(r"(.+?) is a country or territory", p)
            if m and f"Its capital is {f['capital']}." in p:
                return m.group(1)
        return None
    if ask.kind in ("capital", "population", "area"):
        pattern = {"capital": r"Its capital is (.+?)\. It ", "population": r"a population of (\d+)",
                   "area": r"an area of ([\d.]+) square"}[ask.kind]
        for p in _passages(observation):
            if p.startswith(f"{f['country']} is a country"):
                m = re.search(pattern, p)
                return m.group(1) if m else None
        return None
    if ask.kind == "temperature":
        m = re.search(r"(-?\d+(?:\.\d+)?) °C", observation)
        return m.group(1) if m else None
    value = observation.strip()
    return value if re.fullmatch(r"-?\d+(?:\.\d+)?", value) else None
