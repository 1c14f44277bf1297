\echo Use "ALTER EXTENSION pg_enkf UPDATE TO '0.2.0'" to load this file. \quit
-- pg_enkf 0.1.0 -> 0.2.0.
--
-- UNRELEASED: 0.2.0 is not in sql/releases.toml yet, so this script may still be edited, until
-- 0.2.0 is released; NEVER after (databases updated with it would differ from those updated
-- with the edited copy). Every object added to or changed in the extension's install script
-- (sql/*.sql, #[pg_extern] functions) since 0.1.0 must be added or changed here too, so that
-- ALTER EXTENSION pg_enkf UPDATE gives the same schema as CREATE EXTENSION pg_enkf: the test
-- tests/ops/test_upgrade.py compares the two. Append below, in dependency order.
