"""Tasks beyond dual encoders: segmentation, answer scoring and language-induced adversarial search.

Importing this package registers, in :data:`vlmkit.registry.TASKS`:

* ``"segmentation"`` (grid task) — CLIPSeg (Lüddecke & Ecker 2022) masks for text prompts; IoU,
  pixel accuracy, consistency with the clean mask, drift (:mod:`.segmentation`);
* ``"answer_scoring"`` (grid task) — multiple-choice / yes-no answers of generative VLMs (BLIP-2,
  LLaVA, Qwen2-VL) by option log-likelihood; accuracy, IFR/IV, margins, POPE scores, drift of vision
  features (:mod:`.answer_scoring`);
* ``"language_adversarial"`` (search) — genetic prompt search maximising ASR under a SEM constraint
  (:mod:`vlmkit.attacks.language_search`).

Grid tasks run through :func:`vlmkit.evaluate.evaluate_grid` (the dataset type picks the task)::

    seg = load_toy_segmentation("outputs/data", n=64)
    evaluate_grid(["hf:CIDAS/clipseg-rd64-refined"], seg, perturbation_cells(["gaussian_noise"], [1, 3]),
                  out_dir="outputs/seg")
"""

from vlmkit.attacks.language_search import (
    DiffusersGenerator,
    LanguageSearchResult,
    SearchConfig,
    ToyWorldGenerator,
    language_search,
    toy_word_space,
)
from vlmkit.tasks.answer_scoring import (
    AnswerScorer,
    AnswerScoringTask,
    Blip2Adapter,
    ImageTextAdapter,
    ProcessorAdapter,
    QuestionSet,
    export_toy_questions,
    load_answer_model,
    load_question_jsonl,
    load_toy_questions,
    option_logliks,
    option_margin,
    pope_scores,
    toy_questions,
)
from vlmkit.tasks.engine import Task, TaskData, TaskRunner, evaluate_task_grid, get_task
from vlmkit.tasks.segmentation import (
    CLIPSegTaskModel,
    SegmentationSet,
    SegmentationTask,
    export_toy_segmentation,
    foreground_iou,
    load_clipseg,
    load_segmentation_folder,
    load_toy_segmentation,
    pixel_accuracy,
)

__all__ = [
    "AnswerScorer", "AnswerScoringTask", "Blip2Adapter", "CLIPSegTaskModel", "DiffusersGenerator", "ImageTextAdapter",
    "LanguageSearchResult", "ProcessorAdapter", "QuestionSet", "SearchConfig", "SegmentationSet", "SegmentationTask",
    "Task", "TaskData", "TaskRunner", "ToyWorldGenerator", "evaluate_task_grid", "export_toy_questions",
    "export_toy_segmentation", "foreground_iou", "get_task", "language_search", "load_answer_model", "load_clipseg",
    "load_question_jsonl", "load_segmentation_folder", "load_toy_questions", "load_toy_segmentation",
    "option_logliks", "option_margin", "pixel_accuracy", "pope_scores", "toy_questions", "toy_word_space",
]
