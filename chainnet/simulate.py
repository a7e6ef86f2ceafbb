"""`python -m chainnet.simulate`: the entry point; the command is `chainnet.cli.simulate`."""

from chainnet.cli.simulate import main

if __name__ == "__main__":
    main()
