//! The text of a failed attempt that goes into the database. `enkf.schedule_slots.last_error`
//! and `enkf.runs.detail` are read by operators and analysts without row-level security, but a
//! PostgreSQL message can quote data (a location name, a value, a table name): only the
//! SQLSTATE and its condition name are stored there. The full message goes to the sidecar's
//! own log.

/// Condition names of the SQLSTATEs a scheduled run commonly ends with (PostgreSQL,
/// Appendix A); other codes are named by their class.
const CONDITIONS: &[(&str, &str)] = &[
    ("22003", "numeric_value_out_of_range"),
    ("22012", "division_by_zero"),
    ("2202E", "array_subscript_error"),
    ("22023", "invalid_parameter_value"),
    ("22P02", "invalid_text_representation"),
    ("23502", "not_null_violation"),
    ("23503", "foreign_key_violation"),
    ("23505", "unique_violation"),
    ("23514", "check_violation"),
    ("40001", "serialization_failure"),
    ("40P01", "deadlock_detected"),
    ("42501", "insufficient_privilege"),
    ("42703", "undefined_column"),
    ("42883", "undefined_function"),
    ("42P01", "undefined_table"),
    ("53100", "disk_full"),
    ("53200", "out_of_memory"),
    ("54000", "program_limit_exceeded"),
    ("55P03", "lock_not_available"),
    ("57014", "query_canceled"),
    ("57P01", "admin_shutdown"),
];

const CLASSES: &[(&str, &str)] = &[
    ("08", "connection_exception"),
    ("0A", "feature_not_supported"),
    ("21", "cardinality_violation"),
    ("22", "data_exception"),
    ("23", "integrity_constraint_violation"),
    ("25", "invalid_transaction_state"),
    ("28", "invalid_authorization_specification"),
    ("2F", "sql_routine_exception"),
    ("38", "external_routine_exception"),
    ("39", "external_routine_invocation_exception"),
    ("3D", "invalid_catalog_name"),
    ("3F", "invalid_schema_name"),
    ("40", "transaction_rollback"),
    ("42", "syntax_error_or_access_rule_violation"),
    ("53", "insufficient_resources"),
    ("54", "program_limit_exceeded"),
    ("55", "object_not_in_prerequisite_state"),
    ("57", "operator_intervention"),
    ("58", "system_error"),
    ("P0", "plpgsql_error"),
    ("XX", "internal_error"),
];

/// `ERROR 42501 insufficient_privilege`, or `ERROR 22008 (class 22 data_exception)`: never
/// the message itself.
pub fn public_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => describe_code(db.severity(), db.code().code()),
        None => "connection or protocol error (no SQLSTATE)".to_string(),
    }
}

fn describe_code(severity: &str, code: &str) -> String {
    if let Some((_, name)) = CONDITIONS.iter().find(|(c, _)| *c == code) {
        return format!("{severity} {code} {name}");
    }
    let class = code.get(..2).unwrap_or("");
    match CLASSES.iter().find(|(c, _)| *c == class) {
        Some((_, name)) => format!("{severity} {code} (class {class} {name})"),
        None => format!("{severity} {code}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_code_and_its_name() {
        assert_eq!(
            describe_code("ERROR", "42501"),
            "ERROR 42501 insufficient_privilege"
        );
        assert_eq!(
            describe_code("ERROR", "22008"),
            "ERROR 22008 (class 22 data_exception)"
        );
        assert_eq!(describe_code("FATAL", "ZZ999"), "FATAL ZZ999");
        // Codes are ASCII; a malformed one must not panic on slicing.
        assert_eq!(describe_code("ERROR", "é"), "ERROR é");
    }
}
