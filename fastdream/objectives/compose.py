"""One function that turns a Dreamer's objective options into the :class:`Objective` of a call.

    >>> plan = ObjectivePlan({"_blocks.9": 1.0})
    >>> objective = compose(plan)                     # static: built once, graph-capturable

The terms come from the registered sources that the plan asks for (``ObjectivePlan.sources``, see
``fastdream.objectives.plan``): the first per-layer one by priority (a guide image, a channel mode,
else the ``objective`` option on the chosen ``channels``) and every added one (the classes).
"""
from __future__ import annotations

from typing import Optional

from .basic import Objective, weighted_sum
from .plan import Context, ObjectivePlan, Terms


def compose(plan: ObjectivePlan, context: Optional[Context] = None, static_only: bool = False) -> Objective:
    """The objective ``plan`` asks for; ``context`` is needed (and used) only when ``plan.static`` is
    False. ``static_only``: the objective of its static sources alone (``ObjectivePlan.sources_for``)."""
    sources = plan.sources_for(static_only)
    dynamic = [s.name for s in sources if not s.static]
    if dynamic and context is None:
        raise ValueError(f"compose: the {' and '.join(dynamic)} objective needs the call's context")
    terms: Terms = []
    for source in sources:
        terms = terms + list(source.terms(plan, context))
    return weighted_sum(terms, static=not dynamic)
