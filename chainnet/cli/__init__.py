"""The commands, each a thin Hydra shell over library calls: simulate, score, optimize, train and
eval. Users type `python -m chainnet.simulate|score|optimize`, `python train.py`, `python eval.py`;
those entry points only call `main` here."""
