"""Run the lightkit CLI: ``python cli.py fit --config configs/quickstart.yaml``."""
from lightkit.cli import main

if __name__ == "__main__":
    main()
