"""Deployment decisions: the problem file as frozen data (`problem`), services written with an
early-exit profile (`profiles`), its search space built once (`space`), the objective
(`objective`), random problems (`generators`), the batched graphs of many candidates straight from
their genes (`batch_graphs`), scorers (surrogate, simulator or both, `scorers`), search strategies
(`strategies`), the search loop under a budget in seconds or evaluations (`search`), the hybrid
search: the surrogate searches, the simulator confirms (`hybrid`), and its outputs (`report`)."""
