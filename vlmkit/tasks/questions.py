"""Question sets for answer scoring: images with questions, options and the right answer.

* :class:`QuestionSet` — one question per item (several may share an image), its options and the
  index of the right one;
* :func:`load_question_jsonl` — read one from a JSONL file;
* :func:`load_toy_questions` — export (once, with :func:`vlmkit.toyworld.task_sets.export_toy_questions`)
  and load a question set generated from the toy world's ground truth (counts, colours, shapes and
  POPE-style "is there a …?" questions with absent-object negatives).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vlmkit.data.files import check_dir
from vlmkit.data.images import ImageDataset, OnError, check_on_error
from vlmkit.errors import DataError, DataNotFoundError, EmptyDatasetError
from vlmkit.runtime import stable_hash
from vlmkit.toyworld import EXPORT_SEED
from vlmkit.toyworld.task_sets import TOY_KINDS, export_toy_questions


class QuestionSet(ImageDataset):
    """Questions about images, each with options and the index of the right one.

    Args:
        paths: Image file per question (several questions may share an image).
        questions: Question text per item.
        options: Candidate answers per item (at least two, distinct).
        answers: Index of the right option per item.
        kinds: Question kind per item (``"count"``, ``"color"``, ``"shape"``, ``"exists"``, ``"mcq"``...).
        ids: Identifier per item.
        name: Dataset name.

    Raises:
        DataError: Lengths disagree, fewer than two or duplicate options, or an answer index out of range.
    """

    task = "answer_scoring"

    def __init__(self, paths: Sequence[str | Path], questions: Sequence[str], options: Sequence[Sequence[str]],
                 answers: Sequence[int] | torch.Tensor, *, kinds: Sequence[str] | None = None,
                 ids: Sequence[str] | None = None, name: str = "questions", on_error: OnError = "raise") -> None:
        super().__init__(paths, name=name, on_error=on_error)
        n = len(self.paths)
        self.questions = [str(q) for q in questions]
        self.options = [[str(o) for o in opts] for opts in options]
        self.answers = torch.as_tensor(answers, dtype=torch.long).reshape(-1)
        self.kinds = [str(k) for k in kinds] if kinds is not None else ["mcq"] * n
        self.ids = [str(i) for i in ids] if ids is not None else [str(i) for i in range(n)]
        lens = {len(self.questions), len(self.options), len(self.answers), len(self.kinds), len(self.ids)}
        if lens != {n}:
            raise DataError(f"{name}: {n} images but {len(self.questions)} questions, "
                            f"{len(self.options)} option lists, "
                            f"{len(self.answers)} answers, {len(self.kinds)} kinds, {len(self.ids)} ids")
        for i, (opts, a) in enumerate(zip(self.options, self.answers.tolist())):
            _check_options(opts, f"{name} item {self.ids[i]!r}")
            if not 0 <= a < len(opts):
                raise DataError(f"{name} item {self.ids[i]!r}: answer index {a} is outside its {len(opts)} options")

    @property
    def max_options(self) -> int:
        return max((len(o) for o in self.options), default=0)

    def _select(self, indices: list[int]) -> QuestionSet:
        return QuestionSet([self.paths[i] for i in indices], [self.questions[i] for i in indices],
                           [self.options[i] for i in indices], self.answers[indices] if indices else [],
                           kinds=[self.kinds[i] for i in indices], ids=[self.ids[i] for i in indices],
                           name=self.name, on_error=self.on_error)

    def __getitem__(self, i: int) -> dict[str, Any]:
        j = self._index(i)
        return {"index": j, "id": self.ids[j], "path": self.paths[j], "question": self.questions[j],
                "options": list(self.options[j]), "answer": int(self.answers[j]), "kind": self.kinds[j]}

    def content_hash(self) -> str:
        """Hash of the images and every question, option list and answer."""
        return stable_hash(super().content_hash(), self.questions, self.options, self.answers.tolist())

    def summary(self) -> dict[str, Any]:
        kinds: dict[str, int] = {}
        for k in self.kinds:
            kinds[k] = kinds.get(k, 0) + 1
        return {**super().summary(), "questions": len(self), "kinds": kinds}


def _check_options(opts: Any, where: str) -> None:
    if not isinstance(opts, list) or len(opts) < 2:
        raise DataError(f"{where}: 'options' must be a list of at least two answers, got {opts!r}")
    if not all(isinstance(o, str) and o.strip() for o in opts):
        raise DataError(f"{where}: every option must be a non-empty string, got {opts!r}")
    if len({o.strip().lower() for o in opts}) != len(opts):
        raise DataError(f"{where}: options must be distinct, got {opts!r}")


def _answer_index(answer: Any, opts: list[str], where: str) -> int:
    if isinstance(answer, bool):
        raise DataError(f"{where}: 'answer' must be one of the options or an index, got {answer!r}")
    if isinstance(answer, int):
        if not 0 <= answer < len(opts):
            raise DataError(f"{where}: answer index {answer} is outside its {len(opts)} options {opts}")
        return answer
    if isinstance(answer, str):
        if answer in opts:
            return opts.index(answer)
        low = [o.strip().lower() for o in opts]
        if answer.strip().lower() in low:
            return low.index(answer.strip().lower())
    raise DataError(f"{where}: answer {answer!r} is not one of the options {opts}")


def load_question_jsonl(path: str | Path, image_root: str | Path | None = None, *, name: str | None = None,
                        on_error: OnError = "raise") -> QuestionSet:
    """Load questions from a JSONL file: one JSON object per line.

    Each line::

        {"image": "images/000001.png", "question": "What colour is the star?",
         "options": ["red", "blue", "green", "white"], "answer": "red",
         "id": "000001-color", "kind": "color"}                      # id and kind optional

    ``answer`` is one of the options (exact, else case-insensitive) or its index. A yes/no question
    may omit ``options`` when ``answer`` is ``"yes"`` or ``"no"`` (POPE style): the options are then
    ``["yes", "no"]``. Blank lines are skipped.

    Args:
        path: The JSONL file.
        image_root: Folder the ``image`` paths are relative to (default: the file's folder).
        name: Dataset name (default: the file's stem).
        on_error: Image decoding policy.

    Raises:
        DataNotFoundError: The file, the image root or an image is missing.
        DataError: A line is not a JSON object, lacks a field, or has bad options/answer (the message
            names the line).
        EmptyDatasetError: No questions.
    """
    check_on_error(on_error)
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataNotFoundError(f"questions file not found: {p}")
    root = check_dir(image_root if image_root is not None else p.parent, "image root")
    paths, qs, opts_all, answers, kinds, ids = [], [], [], [], [], []
    for ln, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{p.name} line {ln}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where} is not valid JSON: {e.msg} (column {e.colno})") from e
        if not isinstance(rec, dict):
            raise DataError(f"{where} must be a JSON object with image, question, options, answer")
        missing = [k for k in ("image", "question", "answer") if k not in rec]
        if missing:
            raise DataError(f"{where} lacks {missing}; expected keys image, question, options, answer "
                            f"(got {sorted(rec)})")
        if not isinstance(rec["question"], str) or not rec["question"].strip():
            raise DataError(f"{where}: 'question' must be a non-empty string")
        opts = rec.get("options")
        if opts is None:
            if isinstance(rec["answer"], str) and rec["answer"].strip().lower() in ("yes", "no"):
                opts = ["yes", "no"]
            else:
                raise DataError(f"{where} has no 'options' (only yes/no questions may omit them)")
        _check_options(opts, where)
        answers.append(_answer_index(rec["answer"], opts, where))
        paths.append(root / str(rec["image"]))
        qs.append(rec["question"])
        opts_all.append(opts)
        kinds.append(str(rec.get("kind", "yesno" if [o.lower() for o in opts] == ["yes", "no"] else "mcq")))
        ids.append(str(rec.get("id", len(ids))))
    if not qs:
        raise EmptyDatasetError(f"questions file {p} has no questions")
    ds = QuestionSet(paths, qs, opts_all, answers, kinds=kinds, ids=ids, name=name or p.stem, on_error=on_error)
    ds.check_files(on_error)
    return ds


def load_toy_questions(root: str | Path, n_images: int = 32, seed: int = 0, size: int = 64,
                       kinds: Sequence[str] = TOY_KINDS, pope: str = "random") -> QuestionSet:
    """Export (once) and load a toy-world question set under ``root/toy-questions-…``."""
    tag = f"n{n_images}-s{seed}-px{size}-{pope}-{'+'.join(kinds)}"
    folder = Path(root) / f"toy-questions-{tag}"
    if not (folder / "questions.jsonl").is_file():
        export_toy_questions(folder, n_images=n_images, seed=EXPORT_SEED + 104729 * (seed + 1), size=size,
                             kinds=kinds, pope=pope)
    return load_question_jsonl(folder / "questions.jsonl", name="toy-questions")


__all__ = ["QuestionSet", "load_question_jsonl", "load_toy_questions"]
