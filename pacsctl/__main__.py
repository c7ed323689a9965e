"""`python -m pacsctl`: the same as the `pacsctl` console script."""

from pacsctl.cli.app import main

if __name__ == "__main__":
    main()
