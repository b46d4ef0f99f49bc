//! JSON-array binds: one statement's rows (or values) from one bound JSON array, whatever
//! their number, on both backends (PostgreSQL `jsonb_array_elements`, SQLite `json_each`).

use super::sql::Dialect;

/// A column of [`json_rows`].
#[derive(Clone, Copy)]
pub(crate) enum Col {
    Text(&'static str),
    Int(&'static str),
}

/// `SELECT <cols> FROM <the JSON array of objects bound at $n>`: one statement's rows from one
/// bind, whatever their number.
pub(crate) fn json_rows(d: Dialect, n: usize, cols: &[Col]) -> String {
    let cols: Vec<String> = cols
        .iter()
        .map(|c| match (d, c) {
            (Dialect::Postgres, Col::Text(c)) => format!("j.v->>'{c}' AS {c}"),
            (Dialect::Postgres, Col::Int(c)) => format!("(j.v->>'{c}')::bigint AS {c}"),
            (Dialect::Sqlite, Col::Text(c) | Col::Int(c)) => {
                format!("json_extract(j.value, '$.{c}') AS {c}")
            }
        })
        .collect();
    let from = match d {
        Dialect::Postgres => format!("jsonb_array_elements(${n}::jsonb) AS j(v)"),
        Dialect::Sqlite => format!("json_each(${n}) AS j"),
    };
    format!("SELECT {} FROM {from}", cols.join(", "))
}

/// `SELECT value FROM <the JSON array of strings bound at $n>`.
pub(crate) fn json_texts(d: Dialect, n: usize) -> String {
    match d {
        Dialect::Postgres => format!("SELECT jsonb_array_elements_text(${n}::jsonb)"),
        Dialect::Sqlite => format!("SELECT value FROM json_each(${n})"),
    }
}

/// The JSON text a [`json_rows`] or [`json_texts`] bind takes.
pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> String {
    // Serializing plain structs of strings and numbers cannot fail.
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}
