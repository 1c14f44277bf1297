//! Bulk inserts into pg_enkf's tables: one statement per batch, each column one array
//! parameter unnested in parallel, and the rows' arrays (quantiles, ensembles, outputs) slices
//! of one array parameter each. A batch costs one small plan whatever its size: at county
//! scale this took the forecast's writes from 0.35-0.41 s (a multi-row VALUES list, six
//! parameters a row) to about 0.2 s (bench/twin_breakdown.py).

/// The shape of a bulk insert: the table, the columns every row shares (`$1..`), the columns
/// each row has its own value of (array parameters after them, with their SQL element type),
/// and the columns whose values are consecutive slices of one array parameter each (the last
/// parameters).
pub struct BulkInsert<'a> {
    pub table: &'a str,
    pub shared: &'a [&'a str],
    pub per_row: &'a [(&'a str, &'a str)],
    pub sliced: &'a [&'a str],
    pub slices: Slices,
}

/// How long each row's slices are.
#[derive(Clone, Copy)]
pub enum Slices {
    /// `len` values of a 1-D array, or `len` rows of a 2-D array (a slice of the first
    /// dimension keeps every column; its subscripts start at 1 whatever the rows it was cut
    /// from).
    Fixed(usize),
    /// Each row's own bounds, two more per-row int4 arrays after the per-row columns: the
    /// first and last subscript of its slices.
    Ragged,
}

impl BulkInsert<'_> {
    /// The statement; its parameters are the shared values, then one array per per-row
    /// column (then the bounds of ragged slices), then the arrays sliced.
    pub fn sql(&self) -> String {
        let n_shared = self.shared.len();
        let mut columns: Vec<&str> = self.shared.to_vec();
        columns.extend(self.per_row.iter().map(|(c, _)| *c));
        columns.extend(self.sliced.iter().copied());
        let mut values: Vec<String> = (1..=n_shared).map(|k| format!("${k}")).collect();
        values.extend(self.per_row.iter().map(|(c, _)| format!("r.{c}")));
        let mut unnested: Vec<(&str, &str)> = self.per_row.to_vec();
        if let Slices::Ragged = self.slices {
            unnested.extend([("lo", "pg_catalog.int4"), ("hi", "pg_catalog.int4")]);
        }
        let first_array = n_shared + unnested.len() + 1;
        for k in 0..self.sliced.len() {
            let p = first_array + k;
            values.push(match self.slices {
                Slices::Fixed(len) => format!("${p}[(r.k - 1) * {len} + 1 : r.k * {len}]"),
                Slices::Ragged => format!("${p}[r.lo : r.hi]"),
            });
        }
        let unnests: Vec<String> = unnested
            .iter()
            .enumerate()
            .map(|(i, (_, ty))| format!("pg_catalog.unnest(${}::{ty}[])", n_shared + 1 + i))
            .collect();
        let names: Vec<&str> = unnested.iter().map(|(c, _)| *c).collect();
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

/// The bounds of ragged slices: each row's first and last subscript (1-based) in the arrays
/// its values are appended to, from the rows' lengths.
pub fn ragged_bounds(lengths: impl IntoIterator<Item = usize>) -> (Vec<i32>, Vec<i32>) {
    let (mut lo, mut hi) = (Vec::new(), Vec::new());
    let mut end = 0usize;
    for n in lengths {
        lo.push(end as i32 + 1);
        end += n;
        hi.push(end as i32);
    }
    (lo, hi)
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
            sliced: &["d"],
            slices: Slices::Fixed(7),
        }
        .sql();
        assert!(
            sql.contains(
                "INSERT INTO enkf.t (a, b, c, d) SELECT $1, r.b, r.c, $4[(r.k - 1) * 7 + 1 : r.k * 7]"
            ),
            "{sql}"
        );
        assert!(sql.contains("ROWS FROM (pg_catalog.unnest($2::pg_catalog.text[]), pg_catalog.unnest($3::pg_catalog.int4[])) WITH ORDINALITY AS r(b, c, k)"), "{sql}");
    }

    #[test]
    fn ragged_rows_slice_every_array_by_their_bounds() {
        let sql = BulkInsert {
            table: "enkf.t",
            shared: &["a"],
            per_row: &[("b", "pg_catalog.text")],
            sliced: &["ids", "vals"],
            slices: Slices::Ragged,
        }
        .sql();
        assert!(
            sql.contains("(a, b, ids, vals) SELECT $1, r.b, $5[r.lo : r.hi], $6[r.lo : r.hi]"),
            "{sql}"
        );
        assert!(sql.contains("pg_catalog.unnest($3::pg_catalog.int4[]), pg_catalog.unnest($4::pg_catalog.int4[])) WITH ORDINALITY AS r(b, lo, hi, k)"), "{sql}");
        assert_eq!(ragged_bounds([2, 0, 3]), (vec![1, 3, 3], vec![2, 2, 5]));
    }
}
