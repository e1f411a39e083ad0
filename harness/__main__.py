"""python -m harness: the command line (harness.commands; the console script magface-bench is the same)."""
from harness.commands import main

if __name__ == "__main__":
    main()
