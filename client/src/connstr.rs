//! Client configuration from a connection string (`quiver://…`) or from the environment the
//! `quiver` command line reads (`QUIVER_SERVER`, `QUIVER_CA`, `QUIVER_TOKEN`,
//! `QUIVER_TIMEOUT`, `QUIVER_FOLLOWER_READS`, `QUIVER_DATA_DIR`).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use crate::ClientConfig;

/// The port a server address without one means.
///
/// ```
/// use quiver_client::{ClientConfig, PORT_DEFAULT};
/// // A host given without a port is reached on this one.
/// let config = ClientConfig::local("quiver-data").with_servers("10.0.0.5").unwrap();
/// assert_eq!(config.server.port(), PORT_DEFAULT);
/// ```
pub const PORT_DEFAULT: u16 = 7600;

/// Why a connection string, a server list or the environment does not make a configuration.
///
/// ```
/// use quiver_client::ClientConfig;
/// // A typo in a deployment's QUIVER_URL is refused, and the error says what is wrong.
/// let err = ClientConfig::from_url("quiver://10.0.0.5?timout=5").unwrap_err();
/// assert!(err.to_string().contains("unknown setting `timout`"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

fn bad(what: impl Into<String>) -> ConfigError {
    ConfigError(what.into())
}

/// One `HOST[:PORT]`: an IP address is taken as it is, a name is resolved (every address it
/// has). Returns the addresses and the name, if it was one.
fn resolve(item: &str) -> Result<(Vec<SocketAddr>, Option<String>), ConfigError> {
    if let Ok(addr) = item.parse::<SocketAddr>() {
        return Ok((vec![addr], None));
    }
    // HOST, [V6], HOST:PORT or [V6]:PORT.
    let (host, port) = match item.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') && (!h.starts_with('[') || h.ends_with(']')) => {
            let port = p.parse::<u16>().map_err(|_| {
                bad(format!(
                    "`{item}`: the port `{p}` is not a number up to 65535"
                ))
            })?;
            (h, port)
        }
        _ => (item, PORT_DEFAULT),
    };
    if host.is_empty() {
        return Err(bad(format!("`{item}`: no host")));
    }
    match url::Host::parse(host) {
        Ok(url::Host::Ipv4(ip)) => Ok((vec![SocketAddr::from((ip, port))], None)),
        Ok(url::Host::Ipv6(ip)) => Ok((vec![SocketAddr::from((ip, port))], None)),
        Ok(url::Host::Domain(name)) => {
            let addrs: Vec<SocketAddr> = (name.as_str(), port)
                .to_socket_addrs()
                .map_err(|e| bad(format!("cannot resolve `{name}`: {e}")))?
                .collect();
            if addrs.is_empty() {
                return Err(bad(format!("`{name}` resolves to no address")));
            }
            Ok((addrs, Some(name)))
        }
        Err(e) => Err(bad(format!("`{item}`: not a host name or address ({e})"))),
    }
}

impl ClientConfig {
    /// Sets the servers from a list such as the `--server` flag takes: `HOST[:PORT]`
    /// separated by commas (port 7600 when none is given; IPv6 addresses in brackets).
    /// Names are resolved now, every address they have; the first name becomes the name the
    /// servers' certificates must carry ([`ClientConfig::server_name`]).
    ///
    /// ```
    /// let config = quiver_client::ClientConfig::local("quiver-data")
    ///     .with_servers("127.0.0.1:7610,[::1]:7620,127.0.0.1")
    ///     .unwrap();
    /// assert_eq!(config.server.to_string(), "127.0.0.1:7610");
    /// assert_eq!(config.others.len(), 2);
    /// ```
    pub fn with_servers(mut self, list: &str) -> Result<Self, ConfigError> {
        let mut addrs = Vec::new();
        let mut name = None;
        for item in list.split(',').map(str::trim) {
            if item.is_empty() {
                return Err(bad(format!("`{list}`: an empty server address")));
            }
            let (found, host) = resolve(item)?;
            addrs.extend(found);
            name = name.or(host);
        }
        if let Some(name) = name {
            self.server_name = name;
        }
        Ok(self.servers(addrs))
    }

    /// Sets the name the servers' certificates must carry (default `localhost`, which
    /// certificates `quiver serve` generates always carry).
    ///
    /// ```
    /// use quiver_client::ClientConfig;
    /// // A node reached by its address, whose certificate names the cluster's DNS name.
    /// let config = ClientConfig::local("quiver-data")
    ///     .server("10.0.0.5:7600".parse().unwrap())
    ///     .server_name("events.example.com");
    /// assert_eq!(config.server_name, "events.example.com");
    /// assert_eq!(ClientConfig::local("quiver-data").server_name, "localhost");
    /// ```
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = name.into();
        self
    }

    /// A configuration from a connection string:
    ///
    /// `quiver://HOST[:PORT][,HOST[:PORT]…][/][?ca=FILE&token=T&timeout=SECS&follower_reads=true&server_name=NAME]`
    ///
    /// `ca=system` trusts the system's certificate authorities instead of a file.
    ///
    /// Hosts as [`ClientConfig::with_servers`] takes them; values percent-encoded where they
    /// need it (a token with `&` in it: `%26`). Without `ca`, the CA a local server generated
    /// (`quiver-data/tls/ca.pem`, or under `$QUIVER_DATA_DIR`). Unknown parameters are
    /// refused, not ignored.
    ///
    /// ```
    /// let config = quiver_client::ClientConfig::from_url(
    ///     "quiver://127.0.0.1:7610,127.0.0.1:7620?ca=/etc/quiver/ca.pem&token=s3cret&timeout=5",
    /// )
    /// .unwrap();
    /// assert_eq!(config.others.len(), 1);
    /// assert_eq!(config.token.as_deref(), Some("s3cret"));
    /// assert_eq!(config.timeout.as_secs(), 5);
    /// ```
    pub fn from_url(url: &str) -> Result<ClientConfig, ConfigError> {
        let rest = url.strip_prefix("quiver://").ok_or_else(|| {
            bad(format!(
                "`{url}`: a connection string starts with quiver://"
            ))
        })?;
        let (hosts, query) = rest.split_once('?').unwrap_or((rest, ""));
        let hosts = hosts.strip_suffix('/').unwrap_or(hosts);
        if hosts.contains('/') || hosts.contains('@') {
            return Err(bad(format!(
                "`{url}`: only hosts go before `?` (give a token as ?token=…)"
            )));
        }
        if hosts.is_empty() {
            return Err(bad(format!("`{url}`: no host")));
        }
        let mut config = ClientConfig::local(data_dir(None)).with_servers(hosts)?;
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            config = config.set(&key, &value)?;
        }
        Ok(config)
    }

    /// A configuration from the environment, as the `quiver` command line reads it:
    /// `QUIVER_URL` (a connection string; the others then add to it), else `QUIVER_SERVER`
    /// (default `127.0.0.1:7600`; several separated by commas); `QUIVER_CA` (default: the CA
    /// under `$QUIVER_DATA_DIR`, or `quiver-data`); `QUIVER_TOKEN`; `QUIVER_TIMEOUT`
    /// (seconds); `QUIVER_FOLLOWER_READS` (`true`/`false`).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use quiver_client::{Client, ClientConfig};
    /// // A service configured as the `quiver` command line is: QUIVER_URL (or QUIVER_SERVER),
    /// // QUIVER_CA, QUIVER_TOKEN and the rest, set by its deployment.
    /// let config = ClientConfig::from_env()?;
    /// let client = Client::connect(config).await?;
    /// # Ok(()) }
    /// ```
    pub fn from_env() -> Result<ClientConfig, ConfigError> {
        ClientConfig::from_lookup(|key| std::env::var(key).ok().filter(|v| !v.is_empty()))
    }

    /// [`ClientConfig::from_env`] with `get` in place of the environment.
    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<ClientConfig, ConfigError> {
        let mut config = match get("QUIVER_URL") {
            Some(url) => ClientConfig::from_url(&url)?,
            None => ClientConfig::local(data_dir(get("QUIVER_DATA_DIR")))
                .with_servers(&get("QUIVER_SERVER").unwrap_or(crate::SERVER_DEFAULT.into()))?,
        };
        for (var, key) in [
            ("QUIVER_CA", "ca"),
            ("QUIVER_TOKEN", "token"),
            ("QUIVER_TIMEOUT", "timeout"),
            ("QUIVER_FOLLOWER_READS", "follower_reads"),
        ] {
            if let Some(value) = get(var) {
                config = config
                    .set(key, &value)
                    .map_err(|e| bad(format!("{var}: {e}")))?;
            }
        }
        Ok(config)
    }

    /// One setting by its connection-string name.
    fn set(self, key: &str, value: &str) -> Result<ClientConfig, ConfigError> {
        Ok(match key {
            "ca" if value == "system" => self.system_roots(true),
            "ca" => self.ca_file(value),
            "token" => self.token(value),
            "server_name" => self.server_name(value),
            "timeout" => {
                let secs: u64 = value
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| bad(format!("timeout `{value}`: seconds, at least 1")))?;
                self.timeout(Duration::from_secs(secs))
            }
            "follower_reads" => match value {
                "true" | "1" | "yes" => self.follower_reads(true),
                "false" | "0" | "no" => self.follower_reads(false),
                _ => return Err(bad(format!("follower_reads `{value}`: true or false"))),
            },
            other => {
                return Err(bad(format!(
                    "unknown setting `{other}` (ca, token, timeout, follower_reads, server_name)"
                )))
            }
        })
    }
}

/// The data directory whose CA a local server generated.
fn data_dir(given: Option<String>) -> PathBuf {
    given
        .or_else(|| std::env::var("QUIVER_DATA_DIR").ok())
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from("quiver-data"), PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn a_connection_string_sets_every_field() {
        let c = ClientConfig::from_url(
            "quiver://127.0.0.1:7610,[::1]:7620,10.0.0.3/?ca=%2Ftmp%2Fca.pem&token=a%26b\
             &timeout=7&follower_reads=true&server_name=quiver.example",
        )
        .unwrap();
        assert_eq!(c.server, "127.0.0.1:7610".parse().unwrap());
        assert_eq!(
            c.others,
            vec![
                "[::1]:7620".parse::<SocketAddr>().unwrap(),
                "10.0.0.3:7600".parse().unwrap()
            ]
        );
        assert_eq!(c.ca_file, PathBuf::from("/tmp/ca.pem"));
        assert_eq!(c.token.as_deref(), Some("a&b"));
        assert_eq!(c.timeout, Duration::from_secs(7));
        assert!(c.follower_reads);
        assert_eq!(c.server_name, "quiver.example");
    }

    #[test]
    fn a_name_is_resolved_and_becomes_the_certificate_name() {
        let c = ClientConfig::from_url("quiver://localhost:7611").unwrap();
        assert_eq!(c.server_name, "localhost");
        assert!(std::iter::once(c.server)
            .chain(c.others)
            .all(|a| a.port() == 7611 && a.ip().is_loopback()));
    }

    #[test]
    fn bad_strings_say_what_is_wrong() {
        for (url, says) in [
            ("http://127.0.0.1", "starts with quiver://"),
            ("quiver://127.0.0.1:99999", "port `99999`"),
            ("quiver://", "no host"),
            ("quiver://127.0.0.1,,127.0.0.2", "empty server address"),
            ("quiver://127.0.0.1?colour=blue", "unknown setting `colour`"),
            ("quiver://127.0.0.1?timeout=0", "at least 1"),
            ("quiver://127.0.0.1?follower_reads=maybe", "true or false"),
            ("quiver://user:pw@127.0.0.1", "only hosts"),
            ("quiver://no such host.invalid", "not a host name"),
        ] {
            let e = ClientConfig::from_url(url).unwrap_err().to_string();
            assert!(e.contains(says), "{url}: {e}");
        }
    }

    #[test]
    fn the_environment_reads_as_the_command_line_does() {
        let env = |pairs: &[(&str, &str)]| {
            let map: HashMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            ClientConfig::from_lookup(move |k| map.get(k).cloned())
        };
        let c = env(&[]).unwrap();
        assert_eq!(c.server, crate::SERVER_DEFAULT.parse().unwrap());
        assert_eq!(c.ca_file, data_dir(None).join("tls").join("ca.pem"));
        let c = env(&[
            ("QUIVER_SERVER", "127.0.0.1:1,127.0.0.1:2"),
            ("QUIVER_DATA_DIR", "/srv/q"),
            ("QUIVER_TOKEN", "t"),
            ("QUIVER_TIMEOUT", "9"),
        ])
        .unwrap();
        assert_eq!(c.others, vec!["127.0.0.1:2".parse::<SocketAddr>().unwrap()]);
        assert_eq!(c.ca_file, PathBuf::from("/srv/q/tls/ca.pem"));
        assert_eq!(c.token.as_deref(), Some("t"));
        assert_eq!(c.timeout, Duration::from_secs(9));
        let c = env(&[
            ("QUIVER_URL", "quiver://127.0.0.1:5?token=u"),
            ("QUIVER_CA", "/x/ca.pem"),
        ])
        .unwrap();
        assert_eq!(c.server.port(), 5);
        assert_eq!(c.token.as_deref(), Some("u"));
        assert_eq!(c.ca_file, PathBuf::from("/x/ca.pem"));
        let e = env(&[("QUIVER_TIMEOUT", "soon")]).unwrap_err().to_string();
        assert!(e.starts_with("QUIVER_TIMEOUT:"), "{e}");
    }
}
