"""What the study tools share: their one-line input error, reading a JSON result file, and
writing a results CSV. Standard library only."""

import csv
import json
import os


class StudyError(Exception):
    """A missing or unusable input; the message is one line naming the file or setting."""


def load_json(path):
    """The JSON value in ``path``; StudyError naming the file when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise StudyError(f"{path}: cannot read: {e}") from None


def write_csv(rows, path, fields):
    """``rows`` (dicts) as CSV with the header ``fields``, written atomically."""
    with open(path + ".tmp", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    os.replace(path + ".tmp", path)
