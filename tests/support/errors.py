"""Errors as the tests compare them."""

from __future__ import annotations

import psycopg
import pytest


def sqlstate(conn, query, params=None):
    with pytest.raises(psycopg.Error) as err:
        conn.execute(query, params)
    return err.value.sqlstate, err.value.diag.message_primary, err.value.diag.message_hint
