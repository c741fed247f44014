"""Task formats (GSM8K, MATH, MMLU-Pro), one file each, in a registry: `get_task(name)`, `TASKS`."""

from jaxprune.tasks import competition_math, gsm8k, mmlu_pro  # noqa: F401  (each registers its task)
from jaxprune.tasks.base import TASKS, Task, get_task, register

__all__ = ["TASKS", "Task", "get_task", "register"]
