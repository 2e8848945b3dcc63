"""lm-evaluation-harness tasks defined in local files, for the tests: a multiple-choice task and
a perplexity (loglikelihood_rolling) task over jsonl written beside them; nothing is downloaded."""

from __future__ import annotations

import json
from pathlib import Path

QUESTIONS = [
    ("The capital of France is", ["Paris", "Rome", "Berlin"], 0),
    ("def main():\n    return", ["None", "4x", "zz"], 0),
    ("import os\nimport", ["sys", "qq", "xyz"], 0),
    ("for i in", ["range(10):", "banana", "#!"], 0),
    ("x = [1, 2,", ["3]", "lol", "q"], 0),
    ("class Point:\n    def __init__(self, x, y):\n        self.x =", ["x", "7", "self"], 0),
]
TEXTS = [
    "def add(a, b):\n    return a + b\n",
    "import sys\nprint(sys.argv)\n",
    "class A:\n    pass\n" * 12,  # longer than the tests' models' max_seq_len: several windows
]

MC = """task: ember_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""

PPL = """task: ember_ppl
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
    aggregation: weighted_perplexity
    higher_is_better: false
  - metric: bits_per_byte
    aggregation: bits_per_byte
    higher_is_better: false
"""


def write_tasks(folder: Path) -> Path:
    """ember_mc and ember_ppl in `folder` (made), their data beside them; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    mc, ppl = folder / "mc.jsonl", folder / "ppl.jsonl"
    mc.write_text("".join(json.dumps({"question": q, "choices": c, "answer": a}) + "\n" for q, c, a in QUESTIONS))
    ppl.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    (folder / "ember_mc.yaml").write_text(MC.format(data=mc.resolve()))
    (folder / "ember_ppl.yaml").write_text(PPL.format(data=ppl.resolve()))
    return folder
