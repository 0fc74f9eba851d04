"""``arca run`` without a daemon: container records, bundles and supervision."""
