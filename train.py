"""`python train.py model=chainnet_gin data.root=data/dsn24`: train a QoS model.

The code is `chainnet.cli.train` (importable by tests and experiments); this is the entry point.
"""

from chainnet.cli.train import main

if __name__ == "__main__":
    main()
