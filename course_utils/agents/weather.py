"""A weather API as a real HTTP service (FastAPI on 127.0.0.1), with faults you can inject.

**Data.** :func:`weather_report` is deterministic per city and date: the temperature follows the
capital's latitude ``φ`` and the season, plus noise seeded by a hash of ``(city, date)``::

    T = 28 − 0.35·|φ| + 0.3·|φ|·cos(2π (day − peak) / 365.25) + u,   u ~ U(−3, 3) from sha256(city|date)

with the peak in mid-July north of the equator and mid-January south of it. Cities are the
capitals of the encyclopedia's countries (case and accents ignored); any other city is unknown.

**Faults.** Real tools fail, and an agent has to survive it. Each request can be made to fail:

=============== =================================================================
``slow``        answers after ``slow_seconds`` (past the client's timeout)
``server_error`` HTTP 500
``rate_limit``  HTTP 429 with a ``Retry-After`` header
``malformed``   HTTP 200 whose body is cut-off JSON
``unknown_city`` HTTP 404, as if the city did not exist
=============== =================================================================

on request (header ``X-Fault: <name>``), or at random: with ``fault_rate > 0`` the n-th request
for a given (city, date) fails with probability ``fault_rate``, drawn from a generator seeded by
``(seed, city, date, n)`` — so a run is reproducible whatever order other questions come in, and a
retry is a fresh draw.

**Running it.** ``with weather_service() as svc:`` starts it as a real process on a free port and
stops it (no stray process); ``llm-course weather --port 8000`` runs it in a terminal. Agents call
it with :class:`WeatherClient` (httpx), which turns each failure into a :class:`ToolError` or a
:class:`TransientToolError`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import hashlib
import math
import random
import sys
from collections import Counter
from typing import Any

from course_utils import checks
from course_utils.agents.encyclopedia import fold, load_countries
from course_utils.agents.tools import Tool, ToolError, TransientToolError

FAULTS = ("slow", "server_error", "rate_limit", "malformed", "unknown_city")
CONDITIONS = ("sunny", "partly cloudy", "cloudy", "rain", "thunderstorms", "fog", "windy")


@functools.lru_cache(maxsize=1)
def cities() -> dict[str, tuple[str, str, float, float]]:
    """``fold(city) → (city, country, latitude, longitude)`` for every capital with coordinates
    (a capital shared by two records belongs to the first by name)."""
    table: dict[str, tuple[str, str, float, float]] = {}
    for c in load_countries():
        if c.capital and c.capital_latlng:
            table.setdefault(fold(c.capital), (c.capital, c.name, *c.capital_latlng))
    return table


class UnknownCity(LookupError):
    pass


def parse_date(date: str) -> dt.date:
    try:
        return dt.date.fromisoformat(date)
    except (TypeError, ValueError):
        raise ValueError(f"date must be YYYY-MM-DD, got {date!r}") from None


def _unit_draws(*key: Any) -> random.Random:
    digest = hashlib.sha256("|".join(str(k) for k in key).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def weather_report(city: str, date: str) -> dict[str, Any]:
    """The weather of a capital on a date (``YYYY-MM-DD``): temperature (°C, one decimal),
    condition, humidity (%), wind (km/h). Raises :class:`UnknownCity` or ``ValueError`` (bad date)."""
    day = parse_date(date)
    entry = cities().get(fold(city)) if isinstance(city, str) else None
    if entry is None:
        raise UnknownCity(f"unknown city {city!r}")
    name, country, lat, _ = entry
    doy = day.timetuple().tm_yday
    peak = 196 if lat >= 0 else 15
    rng = _unit_draws("weather", name, day.isoformat())
    temp = 28 - 0.35 * abs(lat) + 0.3 * abs(lat) * math.cos(2 * math.pi * (doy - peak) / 365.25) + rng.uniform(-3, 3)
    condition = rng.choice(CONDITIONS)
    if temp < 0 and condition in ("rain", "thunderstorms"):
        condition = "snow"
    return {"city": name, "country": country, "date": day.isoformat(), "temperature_c": round(temp, 1),
            "condition": condition, "humidity": rng.randint(20, 95), "wind_kph": rng.randint(0, 40)}


def describe(report: dict[str, Any]) -> str:
    """The observation an agent reads: ``Lima, 2026-01-15: 22.4 °C, sunny, humidity 71%, wind 12 km/h.``"""
    return (f"{report['city']}, {report['date']}: {report['temperature_c']} °C, {report['condition']}, "
            f"humidity {report['humidity']}%, wind {report['wind_kph']} km/h.")


def create_app(*, fault_rate: float = 0.0, seed: int = 0, slow_seconds: float = 3.0, retry_after: int = 1):
    """The FastAPI app: ``GET /weather?city=&date=``, ``GET /health``, ``GET /stats``."""
    from fastapi import FastAPI, Header, Query
    from fastapi.responses import JSONResponse, Response

    checks.probability("fault_rate", fault_rate)
    checks.number("slow_seconds", slow_seconds, low=0)
    checks.non_negative_int(retry_after=retry_after)
    app = FastAPI(title="Course weather API", version="1.0")
    requests: Counter[tuple[str, str]] = Counter()
    served: Counter[str] = Counter()

    def pick_fault(city: str, date: str, requested: str | None) -> str | None:
        if requested:
            return requested
        key = (fold(city), date)
        requests[key] += 1
        if fault_rate == 0:
            return None
        rng = _unit_draws("fault", seed, *key, requests[key])
        return rng.choice(FAULTS) if rng.random() < fault_rate else None

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/stats")
    def stats() -> dict[str, Any]:
        return {"requests": sum(requests.values()), "served": dict(served)}

    @app.get("/weather")
    async def weather(city: str = Query(..., max_length=100), date: str = Query(..., max_length=20),
                      x_fault: str | None = Header(default=None)):
        if x_fault is not None and x_fault not in FAULTS:
            return JSONResponse({"detail": f"unknown fault {x_fault!r}; faults: {', '.join(FAULTS)}"}, status_code=400)
        fault = pick_fault(city, date, x_fault)
        served[fault or "ok"] += 1
        if fault == "slow":
            await asyncio.sleep(slow_seconds)
        elif fault == "server_error":
            return JSONResponse({"detail": "internal server error"}, status_code=500)
        elif fault == "rate_limit":
            return JSONResponse({"detail": "too many requests"}, status_code=429,
                                headers={"Retry-After": str(retry_after)})
        elif fault == "unknown_city":
            return JSONResponse({"detail": f"unknown city {city!r}"}, status_code=404)
        try:
            report = weather_report(city, date)
        except UnknownCity as err:
            return JSONResponse({"detail": str(err)}, status_code=404)
        except ValueError as err:
            return JSONResponse({"detail": str(err)}, status_code=400)
        if fault == "malformed":
            body = JSONResponse(report).body
            return Response(body[: len(body) // 2], media_type="application/json")
        return report

    return app


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llm-course weather", description="the course's weather API (chapter 09)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8009)
    p.add_argument("--fault-rate", type=float, default=0.0, help="probability that a request fails (random faults)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random faults")
    p.add_argument("--slow-seconds", type=float, default=3.0, help="delay of a 'slow' fault")
    p.add_argument("--retry-after", type=int, default=1, help="Retry-After seconds of a 429")
    p.add_argument("--log-level", default="warning")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the service in the foreground (Ctrl-C stops it)."""
    import uvicorn

    args = build_parser().parse_args(argv)
    app = create_app(fault_rate=args.fault_rate, seed=args.seed, slow_seconds=args.slow_seconds,
                     retry_after=args.retry_after)
    print(f"weather API on http://{args.host}:{args.port}/weather?city=Lima&date=2026-01-15", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def weather_command(port: int, *, host: str = "127.0.0.1", fault_rate: float = 0.0, seed: int = 0,
                    slow_seconds: float = 3.0, retry_after: int = 1) -> list[str]:
    return [sys.executable, "-m", "course_utils.agents.weather", "--host", host, "--port", str(port),
            "--fault-rate", str(fault_rate), "--seed", str(seed), "--slow-seconds", str(slow_seconds),
            "--retry-after", str(retry_after)]


def weather_service(port: int | None = None, **options: Any):
    """The service as a real process on a free loopback port, as a context manager::

        with weather_service(fault_rate=0.2, seed=1) as svc:
            client = WeatherClient(svc.url)

    Options are those of :func:`create_app`. Stopped (and its process group killed if need be) on exit."""
    from course_utils.serving.server import ManagedServer, free_port

    port = port or free_port()
    return ManagedServer(weather_command(port, **options), f"http://127.0.0.1:{port}", startup_timeout=60,
                         stop_timeout=10)


class WeatherClient:
    """An httpx client of the weather API; every failure becomes a tool error the agent can read.

    ``timeout`` is the client's budget per request (a ``slow`` fault exceeds it); ``fault`` asks the
    service for a fault on every request (for demonstrations and tests)."""

    def __init__(self, base_url: str, *, timeout: float = 1.0, fault: str | None = None):
        import httpx

        checks.positive_number(timeout=timeout)
        if fault is not None:
            checks.one_of("fault", fault, FAULTS)
        self.base_url, self.timeout, self.fault = base_url.rstrip("/"), timeout, fault
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def get(self, city: str, date: str) -> dict[str, Any]:
        """The report for ``city`` on ``date``; raises :class:`TransientToolError` (timeout, 5xx, 429 with
        ``retry_after``, malformed JSON) or :class:`ToolError` (unknown city, bad date)."""
        import httpx

        headers = {"X-Fault": self.fault} if self.fault else {}
        try:
            r = self.http.get("/weather", params={"city": city, "date": date}, headers=headers)
        except httpx.TimeoutException:
            raise TransientToolError(f"the weather service did not answer within {self.timeout:g} s") from None
        except httpx.TransportError as err:
            raise TransientToolError(f"cannot reach the weather service: {type(err).__name__}") from None
        if r.status_code == 429:
            wait = r.headers.get("Retry-After", "")
            raise TransientToolError("the weather service is rate limited (HTTP 429)",
                                     retry_after=float(wait) if wait.isdigit() else None)
        if r.status_code >= 500:
            raise TransientToolError(f"the weather service failed (HTTP {r.status_code})")
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            raise ToolError(f"{detail} (HTTP {r.status_code})")
        try:
            data = r.json()
        except ValueError:
            raise TransientToolError("the weather service returned malformed JSON") from None
        if not isinstance(data, dict) or "temperature_c" not in data:
            raise TransientToolError("the weather service returned an unexpected response")
        return data

    def tool(self) -> Tool:
        """The ``weather`` tool backed by this client."""

        def weather(city: str, date: str) -> str:
            """Get the weather in a city on a date: temperature in degrees Celsius, sky, humidity, wind.

            Args:
                city: the city, e.g. "Lima".
                date: the date as YYYY-MM-DD, e.g. "2026-01-15".
            """
            return describe(self.get(city, date))

        return Tool.from_function(weather)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> WeatherClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def local_weather_tool() -> Tool:
    """The ``weather`` tool computed in-process, without the HTTP service (same data, no faults):
    for places without a loopback network, such as a lab's grading sandbox."""

    def weather(city: str, date: str) -> str:
        """Get the weather in a city on a date: temperature in degrees Celsius, sky, humidity, wind.

        Args:
            city: the city, e.g. "Lima".
            date: the date as YYYY-MM-DD, e.g. "2026-01-15".
        """
        try:
            return describe(weather_report(city, date))
        except UnknownCity as err:
            raise ToolError(str(err)) from None

    return Tool.from_function(weather)


def course_tools(weather: Tool | None = None, encyclopedia: Any = None, k: int = 2) -> dict[str, Tool]:
    """The chapter's three tools by name: ``search`` (the encyclopedia, ``k`` passages), ``weather``
    (``weather``, e.g. ``WeatherClient(url).tool()``; the in-process one if None) and ``calculator``."""
    from course_utils.agents.calculator import calculator_tool
    from course_utils.agents.encyclopedia import Encyclopedia

    encyclopedia = encyclopedia if encyclopedia is not None else Encyclopedia()
    return {"search": encyclopedia.tool(k), "weather": weather if weather is not None else local_weather_tool(),
            "calculator": calculator_tool()}


if __name__ == "__main__":
    sys.exit(main())
