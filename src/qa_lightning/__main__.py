"""``python -m qa_lightning``: train and evaluate (see ``qa_lightning.train``)."""

from qa_lightning.train import main

if __name__ == "__main__":
    main()
