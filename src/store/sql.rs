//! The SQL both databases are written with: multi-row `VALUES` lists and the transaction
//! stamp of feed events. Apart from the writes so that every part of the store that builds
//! statements (writes, records, the audit trail) shares them without depending on each other.

use super::Backend;

/// Rows per multi-row statement (13 parameters each stays far below both databases' limits).
pub(crate) const ROWS_PER_STATEMENT: usize = 200;

/// Placeholders `($1, $2, …), (…)` for `rows` rows of `columns` parameters, with `literal`
/// spliced in after the row's parameter numbered `literal.0`. SQLite gets anonymous `?`s: sqlx
/// looks each numbered one up by name, a linear search per parameter that made binding a
/// 64-row statement cost more than running it.
pub(crate) fn values(
    backend: Backend,
    rows: usize,
    columns: usize,
    literal: Option<(usize, &str)>,
) -> String {
    let mut out = String::with_capacity(rows * columns * 5);
    for row in 0..rows {
        out.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..columns {
            if column > 0 {
                out.push_str(", ");
            }
            match backend {
                Backend::Sqlite => out.push('?'),
                Backend::Postgres => {
                    out.push('$');
                    out.push_str(&(row * columns + column + 1).to_string());
                }
            }
            if let Some((after, text)) = literal {
                if column + 1 == after {
                    out.push_str(", ");
                    out.push_str(text);
                }
            }
        }
        out.push(')');
    }
    out
}

/// The SQL that stamps an event with its transaction: PostgreSQL's transaction id, so that
/// feed readers can order by commit safety (see [`super::Store::events_after`]); SQLite has one
/// writer, so its order is the sequence's.
pub(crate) fn tx_stamp(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => "txid_current()",
        Backend::Sqlite => "0",
    }
}
