"""`python -m chainnet.optimize`: the entry point; the command is `chainnet.cli.optimize`."""

from chainnet.cli.optimize import main

if __name__ == "__main__":
    main()
