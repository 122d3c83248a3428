"""``python -m vlmkit.robust params/robust/toy.yaml`` — same as ``vlmkit robust``."""

from vlmkit.robust.cli import main

if __name__ == "__main__":
    main()
