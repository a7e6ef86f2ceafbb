"""`python eval.py ckpt_path=model.ckpt data.root=data/chainnet_val`: evaluate a model.

The code is `chainnet.cli.eval` (importable by tests and experiments); this is the entry point.
"""

from chainnet.cli.eval import main

if __name__ == "__main__":
    main()
