"""Generated reasoning tasks with a difficulty knob, a verifier, held-out templates and retry data.

from cogfm_hf.tasks import TASKS
example = next(TASKS["chains"].generate(seed=0, op=5))
TASKS["chains"].verify(example, "... so the answer is 7")
"""

from .answers import BACK
from .arithmetic import AdditionTask, ArithmeticTask, ReversedAdditionTask
from .base import Example, ReasoningTask
from .chains import ChainsTask, LinkedChainsTask, PlannedChainsTask
from .code import CodeTask
from .logic import LogicTask
from .mixture import Mixture, MixtureComponent
from .reasoning_gym import PREFIX as REASONING_GYM_PREFIX
from .reasoning_gym import ReasoningGymTask, reasoning_gym_tasks, task_name
from .retry import add_retries, strip_retries
from .rules import MappingRulesTask, ModularRulesTask

TASKS: dict[str, ReasoningTask] = {
    task.name: task
    for task in (
        ChainsTask(),
        PlannedChainsTask(),
        LinkedChainsTask(),
        ArithmeticTask(),
        LogicTask(),
        CodeTask(),
        AdditionTask(),
        ReversedAdditionTask(),
        MappingRulesTask(),
        ModularRulesTask(),
        *reasoning_gym_tasks(),
    )
}


def get_task(name: str) -> ReasoningTask:
    """A task by name; `rg:<dataset>` names a reasoning-gym dataset (cogfm_hf.tasks.reasoning_gym)."""
    if name.startswith(REASONING_GYM_PREFIX):
        dataset = name[len(REASONING_GYM_PREFIX) :]
        return TASKS.get(task_name(dataset)) or ReasoningGymTask(dataset)  # the latter raises, naming the offer
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(TASKS)}")
    return TASKS[name]


__all__ = [
    "TASKS",
    "get_task",
    "Example",
    "ReasoningTask",
    "ReasoningGymTask",
    "BACK",
    "Mixture",
    "MixtureComponent",
    "add_retries",
    "strip_retries",
]
