"""Small helpers shared by Arca's product code and its tests; not part of the public API."""
