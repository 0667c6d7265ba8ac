"""What the letter classifier costs: loading it at start-up, and reading one letter.

    python -m bench.classifier            # 3 runs over the corpus shapes and the labelled letters

Per run, in this process:
- loading: ``KindClassifier.load()`` of the saved model (numpy only), against
  what training at start-up would cost instead (importing scikit-learn, in a
  fresh interpreter, and fitting the model);
- per letter: ``parse_mail`` alone (the baseline, measured in the same run) and
  ``understand`` of the parsed letter (the classifier with the machine-mail and
  spam checks and the field extraction), over the mail corpus's letters
  (``tests/data/mail``) and the held-out letters made into e-mails.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path

from bench.common import Table, machine, median, ratio
from mail.classifier import KindClassifier, training_files
from mail.parsing import parse_mail
from mail.training import HELD_OUT, fit, read_letters
from mail.understanding import understand

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "data" / "mail"


def _letters() -> list[bytes]:
    made = [path.read_bytes() for path in sorted(CORPUS.glob("*.eml"))]
    for number, letter in enumerate(read_letters([HELD_OUT])):
        message = EmailMessage()
        message["From"] = f"person{number}@example.kz"
        message["Subject"] = letter.subject
        message["Message-ID"] = f"<bench-{number}@example.kz>"
        message.set_content(letter.body)
        made.append(bytes(message))
    return made


def _sklearn_import_seconds() -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "import sklearn.feature_extraction.text, sklearn.linear_model"],
        check=True,
    )
    bare = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return (bare - started) - (time.perf_counter() - bare)


def run_once(letters: list[bytes]) -> dict[str, float]:
    started = time.perf_counter()
    classifier = KindClassifier.load()
    load = time.perf_counter() - started

    started = time.perf_counter()
    fit(read_letters(training_files()))
    training = time.perf_counter() - started

    started = time.perf_counter()
    parsed = [parse_mail(raw) for raw in letters]
    parse = (time.perf_counter() - started) / len(letters)

    started = time.perf_counter()
    for mail in parsed:
        understand(mail, classifier=classifier)
    reading = (time.perf_counter() - started) / len(letters)
    return {"load": load, "training": training, "parse": parse, "understand": reading}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.classifier")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    letters = _letters()
    runs = [run_once(letters) for _ in range(max(1, args.runs))]
    sklearn_import = median([_sklearn_import_seconds() for _ in range(max(1, args.runs))])
    figures = {name: median([run[name] for run in runs]) for name in runs[0]}
    print(machine())
    print(f"{len(letters)} letters, medians of {len(runs)} runs\n")
    print(
        Table(
            ["what", "time", "against"],
            [
                ["loading the saved model (numpy)", f"{figures['load'] * 1000:.0f} ms", ""],
                [
                    "training at start-up instead: importing scikit-learn",
                    f"{sklearn_import * 1000:.0f} ms",
                    "",
                ],
                ["... and fitting", f"{figures['training'] * 1000:.0f} ms", ""],
                ["parse_mail, a letter (baseline)", f"{figures['parse'] * 1000:.2f} ms", "1.00x"],
                [
                    "understand, a letter (classifier, checks, fields)",
                    f"{figures['understand'] * 1000:.2f} ms",
                    ratio(figures["understand"], figures["parse"]),
                ],
            ],
        ).render()
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
