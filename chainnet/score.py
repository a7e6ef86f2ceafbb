"""`python -m chainnet.score`: the entry point; the command is `chainnet.cli.score`."""

from chainnet.cli.score import main

if __name__ == "__main__":
    main()
