-- Run first: pg_enkf, and regress.try(query) for the other tests, which prints a failing
-- statement's SQLSTATE, message and hint (or 'ok').
CREATE EXTENSION IF NOT EXISTS pg_enkf;
CREATE SCHEMA regress;
-- Some tests switch to roles without privileges: they call it too.
GRANT USAGE ON SCHEMA regress TO PUBLIC;
CREATE FUNCTION regress.try(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE s text; m text; h text;
BEGIN
  EXECUTE q;
  RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, m = MESSAGE_TEXT, h = PG_EXCEPTION_HINT;
  RETURN s || ': ' || m || E'\n  HINT: ' || coalesce(h, '(none)');
END $$;
