"""`python -m chainnet.profile`: the entry point; the command is `chainnet.cli.profile`."""

from chainnet.cli.profile import main

if __name__ == "__main__":
    main()
