//! A [`Filter`] as SQL: one condition on the chunk's source, evaluated on the sources table
//! (where the source key and its metadata live), every value a parameter.
//!
//! The meaning is [`Filter::accepts`]'s: `source` is the source's key, any other key a
//! metadata field compared as JSON (`metadata -> key = value::jsonb`, so the number 2024 and
//! the string "2024" differ); `Ne` passes an absent field; `Prefix` holds only for strings.

use crate::types::{Condition, Filter};
use postgres::types::{Json, ToSql};

pub type Param = Box<dyn ToSql + Sync>;

/// A boolean SQL expression over the chunk alias `c`, and its parameters, numbered from
/// `first` on. An empty filter is `true` with no parameters.
pub fn to_sql(filter: &Filter, sources_table: &str, first: usize) -> (String, Vec<Param>) {
    if filter.is_empty() {
        return ("true".into(), Vec::new());
    }
    let mut params: Vec<Param> = Vec::new();
    let mut push = |p: Param| {
        params.push(p);
        format!("${}", first + params.len() - 1)
    };
    let mut conds = Vec::new();
    for c in &filter.0 {
        let sql = match c {
            Condition::Eq { key, value } if key == "source" => match value.as_str() {
                Some(s) => format!("s.source = {}", push(Box::new(s.to_string()))),
                None => "false".into(),
            },
            Condition::Ne { key, value } if key == "source" => match value.as_str() {
                Some(s) => format!("s.source <> {}", push(Box::new(s.to_string()))),
                None => "true".into(),
            },
            Condition::In { key, values } if key == "source" => {
                let strings: Vec<String> = values.iter().filter_map(|v| v.as_str().map(str::to_string)).collect();
                format!("s.source = ANY({}::text[])", push(Box::new(strings)))
            }
            Condition::Prefix { key, prefix } if key == "source" => format!("s.source LIKE {} ESCAPE '!'", push(Box::new(like_prefix(prefix)))),
            Condition::Eq { key, value } => {
                let k = push(Box::new(key.clone()));
                format!("s.metadata -> {k}::text = {}::jsonb", push(Box::new(Json(value.clone()))))
            }
            Condition::Ne { key, value } => {
                let k = push(Box::new(key.clone()));
                format!("(s.metadata -> {k}::text) IS DISTINCT FROM {}::jsonb", push(Box::new(Json(value.clone()))))
            }
            Condition::In { key, values } => {
                let k = push(Box::new(key.clone()));
                let values: Vec<Json<serde_json::Value>> = values.iter().cloned().map(Json).collect();
                format!("s.metadata -> {k}::text = ANY({}::jsonb[])", push(Box::new(values)))
            }
            Condition::Prefix { key, prefix } => {
                let k = push(Box::new(key.clone()));
                format!("jsonb_typeof(s.metadata -> {k}::text) = 'string' AND s.metadata ->> {k}::text LIKE {} ESCAPE '!'", push(Box::new(like_prefix(prefix))))
            }
        };
        conds.push(format!("({sql})"));
    }
    (format!("c.source IN (SELECT s.source FROM {sources_table} s WHERE {})", conds.join(" AND ")), params)
}

/// A LIKE pattern matching strings that start with `prefix`: its `%`, `_` and the escape
/// character `!` are escaped.
fn like_prefix(prefix: &str) -> String {
    let mut p = String::with_capacity(prefix.len() + 1);
    for ch in prefix.chars() {
        if matches!(ch, '%' | '_' | '!') {
            p.push('!');
        }
        p.push(ch);
    }
    p.push('%');
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_prefix("/docs/"), "/docs/%");
        assert_eq!(like_prefix("50%_off!"), "50!%!_off!!%");
    }

    #[test]
    fn values_are_parameters_numbered_from_first() {
        let f = Filter(vec![
            Condition::Eq { key: "kind".into(), value: json!("pdf'; DROP TABLE x; --") },
            Condition::Prefix { key: "source".into(), prefix: "/a".into() },
        ]);
        let (sql, params) = to_sql(&f, "\"lamina_1_sources\"", 3);
        assert_eq!(params.len(), 3);
        assert!(sql.contains("$3::text") && sql.contains("$4::jsonb") && sql.contains("LIKE $5"), "{sql}");
        assert!(!sql.contains("DROP"), "{sql}");
        assert_eq!(to_sql(&Filter::default(), "t", 1).0, "true");
    }
}
