"""An offline encyclopedia: one short article per country, searched with BM25 (chapter 08).

The course has no internet, so the "Wikipedia" tool reads the data of the ``countryinfo`` package
(MIT licence; 256 countries and territories in version 1.0: capital, population, area, borders,
currencies, languages, region). Each record is rendered as a paragraph of prose
(:func:`render_article`), and the search tool returns *passages*, not fields: the agent has to read
``It has a population of 30814175`` to get a number, as it would with a real search engine.

Search is :class:`course_utils.rag.BM25Retriever` over one chunk per article (articles are short).
"""

from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass

from course_utils import checks
from course_utils.agents.calculator import format_number


@dataclass(frozen=True)
class Country:
    """The fields of one ``countryinfo`` record that the articles and questions use."""

    name: str
    capital: str | None
    population: int | None
    area: float | None
    region: str | None
    subregion: str | None
    borders: tuple[str, ...]
    currencies: tuple[str, ...]
    languages: tuple[str, ...]
    capital_latlng: tuple[float, float] | None


def fold(text: str) -> str:
    """Lower-case, accents removed, spaces collapsed: ``"Bogotá "`` → ``"bogota"``."""
    decomposed = unicodedata.normalize("NFKD", text)
    return " ".join("".join(c for c in decomposed if not unicodedata.combining(c)).casefold().split())


@functools.lru_cache(maxsize=1)
def load_countries() -> tuple[Country, ...]:
    """Every ``countryinfo`` record, sorted by name; borders as country names (unknown codes dropped)."""
    import countryinfo

    infos = [c.info() for c in countryinfo.all_countries()]
    by_code = {i.get("ISO", {}).get("alpha3"): i["name"] for i in infos if i.get("ISO")}
    out = []
    for i in infos:
        capital = i.get("capital") if isinstance(i.get("capital"), str) and i.get("capital") else None
        latlng = i.get("capital_latlng")
        out.append(Country(
            name=i["name"].strip(), capital=capital, population=i.get("population") or None,
            area=i.get("area") or None, region=i.get("region") or None, subregion=i.get("subregion") or None,
            borders=tuple(sorted(by_code[b] for b in i.get("borders") or () if b in by_code)),
            currencies=tuple(i.get("currencies") or ()), languages=tuple(i.get("languages") or ()),
            capital_latlng=(float(latlng[0]), float(latlng[1])) if latlng and len(latlng) == 2 else None))
    return tuple(sorted(out, key=lambda c: c.name))


def _listing(items: tuple[str, ...]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def render_article(c: Country) -> str:
    """The article of one country, e.g. ``Peru is a country in South America ... Its capital is Lima.
    It has a population of 30814175 and an area of 1285216 square kilometres. It borders Bolivia, ...``"""
    where = f" in {c.subregion} ({c.region})" if c.subregion and c.region else f" in {c.region}" if c.region else ""
    parts = [f"{c.name} is a country or territory{where}."]
    if c.capital:
        parts.append(f"Its capital is {c.capital}.")
    facts = []
    if c.population:
        facts.append(f"a population of {c.population}")
    if c.area:
        facts.append(f"an area of {format_number(c.area)} square kilometres")
    if facts:
        parts.append(f"It has {' and '.join(facts)}.")
    parts.append(f"It borders {_listing(c.borders)}." if c.borders else "It has no land borders.")
    if c.currencies:
        parts.append(f"Currency: {', '.join(c.currencies)}.")
    if c.languages:
        parts.append(f"Languages: {', '.join(c.languages)}.")
    return " ".join(parts)


class Encyclopedia:
    """Articles of :func:`load_countries`, searchable with BM25.

    >>> enc = Encyclopedia()
    >>> enc.search("capital of Peru", k=1)[0].metadata["title"]
    'Peru'
    """

    def __init__(self, countries: tuple[Country, ...] | None = None):
        from course_utils.rag.chunking import Chunk
        from course_utils.rag.retrievers import BM25Retriever

        self.countries = countries if countries is not None else load_countries()
        checks.non_empty("countries", self.countries)
        self.articles = {c.name: render_article(c) for c in self.countries}
        chunks = [Chunk(id=f"country:{name}", text=f"{name}\n{text}", metadata={"title": name})
                  for name, text in self.articles.items()]
        self.retriever = BM25Retriever(chunks)
        self.by_name = {fold(c.name): c for c in self.countries}

    def __len__(self) -> int:
        return len(self.articles)

    def country(self, name: str) -> Country | None:
        """The record of a country by name (case and accents ignored)."""
        return self.by_name.get(fold(name))

    def search(self, query: str, k: int = 2):
        """The ``k`` best articles for ``query`` as :class:`course_utils.rag.Hit` (``metadata["title"]``)."""
        return self.retriever.search(query, k)

    def passages(self, query: str, k: int = 2) -> str:
        """What the search tool returns: the ``k`` best articles, numbered, one per line."""
        hits = self.search(query, k)
        return "\n".join(f"[{i}] {self.articles[h.metadata['title']]}" for i, h in enumerate(hits, 1))

    def tool(self, k: int = 2):
        """The ``search`` tool over this encyclopedia (returns ``k`` passages)."""
        from course_utils.agents.tools import Tool

        def search(query: str) -> str:
            """Search the encyclopedia of countries; returns the best matching articles.

            Args:
                query: what to look for, e.g. "capital of Peru".
            """
            checks.instance("query", query, str)
            if not query.strip():
                raise ValueError("query is empty")
            return self.passages(query, k)

        return Tool.from_function(search)
