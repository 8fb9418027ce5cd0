"""Lightning callbacks, one per module; ``conf/callbacks/`` composes them."""
