//! Bulk inserts into pg_enkf's tables: one statement per batch, each column one array
//! parameter unnested in parallel, and the rows' arrays (quantiles, ensembles) one array
//! parameter sliced per row. A batch costs one small plan whatever its size: at county scale
//! this took the forecast's writes from 0.35-0.41 s (a multi-row VALUES list, six parameters a
//! row) to about 0.2 s (bench/twin_breakdown.py).

/// The shape of a bulk insert: the table, the columns every row shares (`$1..`), the columns
/// each row has its own value of (array parameters after them, with their SQL element type),
/// and the column of each row's slice of one array parameter, the last.
pub struct BulkInsert<'a> {
    pub table: &'a str,
    pub shared: &'a [&'a str],
    pub per_row: &'a [(&'a str, &'a str)],
    pub sliced: Sliced<'a>,
}

/// A column whose values are consecutive slices of one array parameter: `len` values each of
/// a 1-D array, or `len` rows each of a 2-D array (a slice of the first dimension keeps every
/// column, and its subscripts start at 1 whatever the rows it was cut from).
pub struct Sliced<'a> {
    pub column: &'a str,
    pub len: usize,
}

impl BulkInsert<'_> {
    /// The statement; its parameters are the shared values, then one array per per-row
    /// column, then the array sliced.
    pub fn sql(&self) -> String {
        let n_shared = self.shared.len();
        let mut columns: Vec<&str> = self.shared.to_vec();
        columns.extend(self.per_row.iter().map(|(c, _)| *c));
        columns.push(self.sliced.column);
        let mut values: Vec<String> = (1..=n_shared).map(|k| format!("${k}")).collect();
        values.extend(self.per_row.iter().map(|(c, _)| format!("r.{c}")));
        let array = n_shared + self.per_row.len() + 1;
        let len = self.sliced.len;
        values.push(format!("${array}[(r.k - 1) * {len} + 1 : r.k * {len}]"));
        let unnests: Vec<String> = self
            .per_row
            .iter()
            .enumerate()
            .map(|(i, (_, ty))| format!("pg_catalog.unnest(${}::{ty}[])", n_shared + 1 + i))
            .collect();
        let names: Vec<&str> = self.per_row.iter().map(|(c, _)| *c).collect();
        format!(
            "INSERT INTO {table} ({columns}) SELECT {values}
               FROM ROWS FROM ({unnests}) WITH ORDINALITY AS r({names}, k)",
            table = self.table,
            columns = columns.join(", "),
            values = values.join(", "),
            unnests = unnests.join(", "),
            names = names.join(", "),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_take_their_slices_in_order() {
        let sql = BulkInsert {
            table: "enkf.t",
            shared: &["a"],
            per_row: &[("b", "pg_catalog.text"), ("c", "pg_catalog.int4")],
            sliced: Sliced {
                column: "d",
                len: 7,
            },
        }
        .sql();
        assert!(sql.contains("INSERT INTO enkf.t (a, b, c, d) SELECT $1, r.b, r.c, $4[(r.k - 1) * 7 + 1 : r.k * 7]"), "{sql}");
        assert!(sql.contains("ROWS FROM (pg_catalog.unnest($2::pg_catalog.text[]), pg_catalog.unnest($3::pg_catalog.int4[])) WITH ORDINALITY AS r(b, c, k)"), "{sql}");
    }
}
