"""A run's metrics.jsonl, as ``vae-dist train`` writes it: one JSON object a line.

Three kinds of line (docs/ARCHITECTURE.md lists their fields):
  training    has ``loss`` (and ``step``, ``epoch``, ``recon``, ``kl``, ``time_s``, ...)
  evaluation  has ``test_elbo`` (and ``test_recon``, ``test_kl``, ``step``, ``time_s``, ...)
  event       has ``event``: ``"stopped"`` (with ``signal``), ``"resume"`` (with ``changed``) or
              ``"startup"`` (with ``startup_s`` and its phases, ``data_load_s``, ...)
Standard library only.
"""

import json


class MetricsError(ValueError):
    """A metrics file that cannot be read; the message is one line naming the file."""


def read(path, missing_ok=False):
    """Every line of ``path`` as a dict, in file order. Blank lines are skipped. A last line
    that is not complete JSON is being written by a running trainer and is left out; any other
    line that is not a JSON object raises MetricsError naming ``path:line``. A missing file is
    an error, or no lines with ``missing_ok``."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        if missing_ok:
            return []
        raise MetricsError(f"{path}: no such file") from None
    except OSError as e:
        raise MetricsError(f"{path}: cannot read: {e.strerror}") from None
    lines = text.split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            if i == len(lines) - 1 and not text.endswith("\n"):
                break  # a line still being written
            raise MetricsError(f"{path}:{i + 1}: not a JSON object")
        out.append(obj)
    return out


def training(lines):
    """The training lines (those with ``loss``)."""
    return [m for m in lines if "loss" in m]


def evaluations(lines):
    """The held-out evaluation lines (those with ``test_elbo``)."""
    return [m for m in lines if "test_elbo" in m]


def events(lines, name=None):
    """The event lines, or only those of one event (``"stopped"``, ``"resume"``)."""
    return [m for m in lines if "event" in m and (name is None or m["event"] == name)]


def last_step(lines):
    """The largest ``step`` of any line (0 for none)."""
    return max((m["step"] for m in lines if isinstance(m.get("step"), (int, float))), default=0)


def seconds_at(lines, step=None):
    """The run time (``time_s``; a resumed run continues counting) when ``step`` was reached:
    the largest ``time_s`` of the lines up to that step (all lines when None; 0.0 for none)."""
    times = [float(m["time_s"]) for m in lines
             if isinstance(m.get("time_s"), (int, float)) and (step is None or m.get("step", 0) <= step)]
    return max(times, default=0.0)
