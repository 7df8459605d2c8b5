//! vaultctl's operator commands over the REST API: pools, tokens (credentials), the audit trail,
//! the events stream and client tokens. Human tables by default, `--json` for scripts.

//! One module per command group; the table and JSON output helpers here.

mod audit;
mod client;
mod events;
mod pool;
mod token;

pub(crate) use audit::{audit, AuditOp};
pub(crate) use client::{client, ClientOp};
pub(crate) use events::{events, EventsOp};
pub(crate) use pool::{pool, PoolOp};
pub(crate) use token::{token, TokenOp};

use comfy_table::{presets::UTF8_BORDERS_ONLY, ContentArrangement, Table};
use serde_json::Value;

pub(crate) fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.iter().copied());
    t
}

/// The vault's answer read as the type the server wrote (shared with it, so the two cannot
/// drift apart).
pub(crate) fn typed<T: serde::de::DeserializeOwned>(v: &Value) -> anyhow::Result<T> {
    serde_json::from_value(v.clone()).map_err(|e| {
        anyhow::anyhow!(
            "the vault's answer is not a {}: {e}",
            std::any::type_name::<T>()
                .rsplit("::")
                .next()
                .unwrap_or("known answer")
        )
    })
}

/// An optional value as a table cell.
pub(crate) fn cell<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "–".into(), |v| v.to_string())
}

pub(crate) fn text(v: &Value) -> String {
    match v {
        Value::Null => "–".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A JSON object as a two-column table (nested objects flattened with dots).
pub(crate) fn fields(v: &Value) -> Table {
    fn walk(prefix: &str, v: &Value, rows: &mut Vec<(String, String)>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, x) in m {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, x, rows);
                }
            }
            // A list of named things (a pool's or a token's quotas): a row group per name.
            Value::Array(items)
                if !items.is_empty() && items.iter().all(|i| i["name"].is_string()) =>
            {
                for i in items {
                    let key = format!("{prefix}.{}", text(&i["name"]));
                    let mut rest = i.clone();
                    rest.as_object_mut().map(|m| m.remove("name"));
                    walk(&key, &rest, rows);
                }
            }
            other => rows.push((prefix.to_string(), text(other))),
        }
    }
    let mut rows = Vec::new();
    walk("", v, &mut rows);
    let mut t = table(&["field", "value"]);
    for (k, x) in rows {
        t.add_row(vec![k, x]);
    }
    t
}

pub(crate) fn show(json_out: bool, v: &Value, human: impl FnOnce(&Value) -> String) {
    if json_out {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        println!("{}", human(v));
    }
}

/// The answer `v` as the vault wrote it (`--json`), or read as the type `T` the server wrote and
/// told in words.
pub(crate) fn show_as<T: serde::de::DeserializeOwned>(
    json_out: bool,
    v: &Value,
    human: impl FnOnce(T) -> String,
) -> anyhow::Result<()> {
    if json_out {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        println!("{}", human(typed(v)?));
    }
    Ok(())
}
