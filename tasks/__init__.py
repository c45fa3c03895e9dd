"""The tasks that ship with tasklight. Each module registers one task with
``@register_task(name)``; importing this package (the entry points do, through the config's
``task_packages``) registers them all. A task of your own needs no edit here: name it by import
path (``task=my_pkg.tasks:MyTask``) or by an entry point (docs/tasks.md, "Adding a task")."""

from tasks import (
    classification,
    embedding,
    mlm,
    multilabel,
    multiple_choice,
    ner,
    pos,
    qa,
    regression,
)

__all__ = [
    "classification",
    "embedding",
    "mlm",
    "multilabel",
    "multiple_choice",
    "ner",
    "pos",
    "qa",
    "regression",
]
