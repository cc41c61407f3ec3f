"""The store: the only way to the database. Typed repositories over the tables, the bulk
write paths, the migrations and the one write-conflict retry (ARCHITECTURE.md, "Where SQL
lives"); nothing outside this package imports SQLAlchemy or the tables
(tests/unit/test_architecture.py)."""
