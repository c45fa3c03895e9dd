"""The tasks that ship with tasklight. Each module registers one task with
``@register_task(name)``; importing this package (the entry points do, through the config's
``task_packages``) registers them all. A new task: its module here, one import line below, and
its YAML in ``conf/task/``."""

from tasks import classification, mlm, multilabel, multiple_choice, ner, qa, regression

__all__ = [
    "classification",
    "mlm",
    "multilabel",
    "multiple_choice",
    "ner",
    "qa",
    "regression",
]
