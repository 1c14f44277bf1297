"""What the tests share: synthetic data and hypertables (data), errors (errors), where tables
live (storage), certificates (pki). Imported as `support.<module>`: conftest.py puts tests/ on
the path."""
