"""Deployment decisions: the problem file as frozen data (`problem`), its search space built once
(`space`), the objective (`objective`), random problems (`generators`), scorers (surrogate or
simulator, `scorers`), search strategies (`strategies`), the search loop under a budget in seconds
or evaluations (`search`), and its outputs (`report`)."""
