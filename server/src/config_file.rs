//! The optional configuration file, lowest in precedence after flags and environment:
//! `flags > environment > file > defaults`. It is a TOML table whose keys are the `QUIVER_*`
//! environment names without the prefix, in lower case:
//!
//! ```toml
//! data_dir = "/var/lib/quiver"
//! listen = "0.0.0.0:7600"
//! http = "0.0.0.0:7680"
//! token = "s3cret"
//! ```
//!
//! Each key the environment does not already set is exported as its `QUIVER_*` variable
//! before the command line is parsed, so clap's own flag-over-environment rule gives the
//! whole order with one mechanism. An unknown key is an error, so a typo is not ignored.

use std::path::Path;

use anyhow::{bail, Context, Result};

/// Keys a file may set, with their environment variables.
pub const KEYS: [(&str, &str); 16] = [
    ("data_dir", "QUIVER_DATA_DIR"),
    ("segment_mib", "QUIVER_SEGMENT_MIB"),
    ("store_id", "QUIVER_STORE_ID"),
    ("db_type", "QUIVER_DB_TYPE"),
    ("listen", "QUIVER_LISTEN"),
    ("http", "QUIVER_HTTP"),
    ("tls_cert", "QUIVER_TLS_CERT"),
    ("tls_key", "QUIVER_TLS_KEY"),
    ("token", "QUIVER_TOKEN"),
    ("timeout", "QUIVER_TIMEOUT"),
    ("slow_client_budget_mib", "QUIVER_SLOW_CLIENT_BUDGET_MIB"),
    ("node_id", "QUIVER_NODE_ID"),
    ("initial_members", "QUIVER_INITIAL_MEMBERS"),
    ("peer_listen", "QUIVER_PEER_LISTEN"),
    ("cluster_secret", "QUIVER_CLUSTER_SECRET"),
    ("cluster_secret_file", "QUIVER_CLUSTER_SECRET_FILE"),
];

/// The environment assignments a file asks for: `(variable, value)`, in file order, for the
/// keys `is_set` says the environment does not already have.
pub fn assignments(
    text: &str,
    is_set: impl Fn(&str) -> bool,
) -> Result<Vec<(&'static str, String)>> {
    let table: toml::Table = text.parse().context("parsing the configuration file")?;
    let mut out = Vec::new();
    for (key, value) in &table {
        let Some((_, var)) = KEYS.iter().find(|(k, _)| k == key) else {
            let known: Vec<_> = KEYS.iter().map(|(k, _)| *k).collect();
            bail!(
                "unknown key `{key}` in the configuration file (known: {})",
                known.join(", ")
            );
        };
        let value = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => bail!(
                "`{key}` must be a string or a number, not {}",
                other.type_str()
            ),
        };
        if !is_set(var) {
            out.push((*var, value));
        }
    }
    Ok(out)
}

/// The file named by `--config FILE` / `--config=FILE` in `args`, else by `QUIVER_CONFIG`.
pub fn path_from(args: &[String]) -> Option<String> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--config" {
            return it.next().cloned();
        }
        if let Some(p) = a.strip_prefix("--config=") {
            return Some(p.to_string());
        }
    }
    std::env::var("QUIVER_CONFIG").ok()
}

/// Reads the file and exports its settings (see the module doc). Call before any thread
/// starts: it changes the process environment.
pub fn apply(path: &Path) -> Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the configuration file {}", path.display()))?;
    for (var, value) in assignments(&text, |v| std::env::var_os(v).is_some())? {
        std::env::set_var(var, value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_wins_over_the_file() {
        let text = "listen = \"0.0.0.0:7600\"\ntimeout = 5\ntoken = \"t\"\n";
        let got = assignments(text, |v| v == "QUIVER_TOKEN").unwrap();
        assert_eq!(
            got,
            vec![
                ("QUIVER_LISTEN", "0.0.0.0:7600".to_string()),
                ("QUIVER_TIMEOUT", "5".into())
            ]
        );
    }

    #[test]
    fn typos_and_bad_values_are_errors() {
        let err = assignments("lisen = \"x\"", |_| false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown key `lisen`"), "{err}");
        assert!(assignments("listen = [1]", |_| false).is_err());
        assert!(assignments("not toml", |_| false).is_err());
    }

    #[test]
    fn the_path_comes_from_the_flag() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            path_from(&args(&["quiver", "serve", "--config", "a.toml"])).unwrap(),
            "a.toml"
        );
        assert_eq!(
            path_from(&args(&["quiver", "--config=b.toml", "serve"])).unwrap(),
            "b.toml"
        );
    }
}
