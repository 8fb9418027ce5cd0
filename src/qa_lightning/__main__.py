"""``python -m qa_lightning``: train and evaluate (see ``qa_lightning.cli.train``)."""

from qa_lightning.cli.train import main

if __name__ == "__main__":
    main()
