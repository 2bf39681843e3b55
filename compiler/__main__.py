"""`python -m vlc`: the same command line as the `vlc` script."""

from vlc.cli.app import main

if __name__ == "__main__":
    main()
