"""Generate chapter 09's multi-hop questions (deterministic, seeded) into
course_utils/data/agent_questions.json.

Every question is a chain of one-hop sub-questions over the data the tools serve (the
``countryinfo`` encyclopedia and the weather service's deterministic data), labelled by its hop
count (the number of tool calls an ideal agent makes), with its gold answer and tolerance. The
countries are split once into train and held-out sets: 72 held-out questions (18 per hop count,
1 to 4 hops) for evaluation, 20 training questions per family for the tool-use fine-tuning.
See :mod:`course_utils.agents.questions`.

Usage: ``python scripts/make_agent_questions.py [--out PATH] [--seed 0]``
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

from course_utils.agents.questions import DATA, write_questions


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(DATA))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    path = write_questions(args.out, seed=args.seed)
    rows = json.loads(path.read_text())["questions"]
    counts = Counter((q["split"], q["hops"]) for q in rows)
    print(f"wrote {len(rows)} questions to {path}: " + ", ".join(f"{s} {h}-hop {n}" for (s, h), n in sorted(counts.items())))


if __name__ == "__main__":
    main()
