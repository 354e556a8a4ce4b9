//! Connection parameters the way libpq reads them, so that `--dbname` accepts exactly what
//! `psql -d` and `pg_receivewal -d` accept: a keyword/value string (`host=/tmp port=5433
//! user=x sslmode=require`), a URI (`postgresql://user:pass@host:port/db?sslmode=require`), or
//! a bare database name, with defaults from the `PG*` environment variables and then libpq's
//! own defaults. Host lists (`host=a,b port=5432,5433`) are tried in order like libpq does.
//!
//! The password is kept in a [`Password`] that never shows in `Debug` output, and parse
//! errors never quote the input (which may hold one).

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use percent_encoding::percent_decode_str;

use crate::env::Environment;
use crate::error::{PgWireError, Result};

/// The Unix socket directory of Debian's PostgreSQL packages, libpq's default host when it
/// exists.
pub const DEFAULT_SOCKET_DIR: &str = "/var/run/postgresql";

/// libpq's default port.
pub const DEFAULT_PORT: u16 = 5432;

/// A password; its `Debug` form is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(p: impl Into<String>) -> Password {
        Password(p.into())
    }

    /// The password itself, for the authentication exchange.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// libpq's `sslmode`, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// Plaintext first; TLS only if the server refuses the plaintext connection.
    Allow,
    /// TLS if the server offers it, else plaintext (libpq's default).
    Prefer,
    /// TLS, any certificate (unless a root certificate file exists: then as `VerifyCa`).
    Require,
    /// TLS, certificate signed by a trusted root; host name not checked.
    VerifyCa,
    /// TLS, trusted certificate whose names include the host.
    VerifyFull,
}

impl FromStr for SslMode {
    type Err = PgWireError;
    fn from_str(s: &str) -> Result<SslMode> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => {
                return Err(PgWireError::Config(format!(
                    "invalid sslmode value {s:?}: expected disable, allow, prefer, require, verify-ca or verify-full"
                )))
            }
        })
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        })
    }
}

/// libpq's `channel_binding` (SCRAM-SHA-256-PLUS with `tls-server-end-point`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelBindingMode {
    /// Never bind.
    Disable,
    /// Bind when TLS is in use and the server offers it (default).
    Prefer,
    /// Refuse to authenticate without channel binding.
    Require,
}

impl FromStr for ChannelBindingMode {
    type Err = PgWireError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "disable" => Ok(ChannelBindingMode::Disable),
            "prefer" => Ok(ChannelBindingMode::Prefer),
            "require" => Ok(ChannelBindingMode::Require),
            _ => Err(PgWireError::Config(format!(
                "invalid channel_binding value {s:?}: expected disable, prefer or require"
            ))),
        }
    }
}

/// Which kind of backend to ask for in the startup packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Replication {
    /// A normal backend: SQL.
    #[default]
    Off,
    /// A physical walsender (`replication=true`): replication commands, `SHOW`, no SQL.
    Physical,
    /// A logical walsender (`replication=database`): replication commands and SQL.
    Database,
}

/// Where one server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A host name or IP address, reached over TCP.
    Tcp(String),
    /// A directory holding the server's Unix socket `.s.PGSQL.<port>`.
    Unix(PathBuf),
}

/// One server to try: host, optional numeric address, port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The host (name for TLS verification and `.pgpass`, or a socket directory).
    pub host: Host,
    /// `hostaddr`: the address to connect to instead of resolving the host name.
    pub hostaddr: Option<IpAddr>,
    /// The port (for Unix sockets: the socket file's number).
    pub port: u16,
}

impl Target {
    /// The socket file for a Unix-socket target.
    pub fn socket_path(&self) -> Option<PathBuf> {
        match &self.host {
            Host::Unix(dir) => Some(dir.join(format!(".s.PGSQL.{}", self.port))),
            Host::Tcp(_) => None,
        }
    }

    /// The host field used to match `.pgpass` lines: the default socket directory counts as
    /// `localhost`, as in libpq.
    pub fn pgpass_host(&self) -> String {
        match &self.host {
            Host::Unix(dir) if dir == Path::new(DEFAULT_SOCKET_DIR) => "localhost".to_string(),
            Host::Unix(dir) => dir.display().to_string(),
            Host::Tcp(h) => h.clone(),
        }
    }
}

impl fmt::Display for Target {
    /// libpq's wording: `server on socket "/tmp/.s.PGSQL.5432"`, `server at "db" (10.0.0.1), port 5432`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.host, self.hostaddr) {
            (Host::Unix(_), _) => {
                write!(f, "server on socket \"{}\"", self.socket_path().unwrap_or_default().display())
            }
            (Host::Tcp(h), Some(a)) if *h != a.to_string() => write!(f, "server at \"{h}\" ({a}), port {}", self.port),
            (Host::Tcp(h), _) => write!(f, "server at \"{h}\", port {}", self.port),
        }
    }
}

/// Everything needed to open a connection, after defaults were applied.
#[derive(Debug, Clone)]
pub struct ConnParams {
    /// Servers to try, in order (at least one).
    pub targets: Vec<Target>,
    /// Role name.
    pub user: String,
    /// Password from the connection string or `PGPASSWORD`; when absent, the password file is
    /// consulted if the server asks for one.
    pub password: Option<Password>,
    /// Database name (not sent for physical replication, but used for `.pgpass`).
    pub dbname: String,
    /// Whether `dbname` was given (connection string or `PGDATABASE`) rather than defaulted.
    pub dbname_explicit: bool,
    /// The password file (`passfile`, `PGPASSFILE`, else `~/.pgpass`).
    pub passfile: Option<PathBuf>,
    /// TLS policy.
    pub sslmode: SslMode,
    /// `sslrootcert`: a PEM file of trusted roots, or `system` for the OS store.
    pub sslrootcert: Option<String>,
    /// `sslcert`: client certificate chain (PEM).
    pub sslcert: Option<PathBuf>,
    /// `sslkey`: client private key (PEM).
    pub sslkey: Option<PathBuf>,
    /// `~/.postgresql`, where libpq looks for `root.crt`, `postgresql.crt`, `postgresql.key`.
    pub ssl_dir: Option<PathBuf>,
    /// SCRAM channel binding policy.
    pub channel_binding: ChannelBindingMode,
    /// `application_name` (what `synchronous_standby_names` matches).
    pub application_name: Option<String>,
    /// `options`: command-line options for the backend (`-c name=value`).
    pub options: Option<String>,
    /// Limit for establishing one connection (TCP, TLS, authentication), per host.
    pub connect_timeout: Option<Duration>,
    /// Walsender mode.
    pub replication: Replication,
}

/// Keywords accepted for libpq compatibility that this client does not act on.
const IGNORED_KEYWORDS: &[&str] = &[
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "sslcompression",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "sslpassword",
    "krbsrvname",
    "gsslib",
    "gssdelegation",
    "requirepeer",
    "client_encoding",
    "load_balance_hosts",
];

/// Keywords this client understands.
const KEYWORDS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "user",
    "password",
    "dbname",
    "passfile",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "channel_binding",
    "application_name",
    "fallback_application_name",
    "options",
    "connect_timeout",
    "replication",
    "target_session_attrs",
    "gssencmode",
    "sslnegotiation",
    "service",
];

fn config_err(msg: impl Into<String>) -> PgWireError {
    PgWireError::Config(msg.into())
}

/// Splits a connection string into its keyword/value pairs, in order, without applying
/// defaults: a URI (`postgresql://` or `postgres://`), a keyword/value string, or — when the
/// text has neither form — a bare database name.
pub fn parse_conninfo(s: &str) -> Result<Vec<(String, String)>> {
    let pairs = if let Some(rest) = s.strip_prefix("postgresql://").or_else(|| s.strip_prefix("postgres://")) {
        parse_uri(rest)?
    } else if s.contains('=') {
        parse_keyword_value(s)?
    } else if s.trim().is_empty() {
        Vec::new()
    } else {
        vec![("dbname".to_string(), s.to_string())]
    };
    for (k, _) in &pairs {
        if !KEYWORDS.contains(&k.as_str()) && !IGNORED_KEYWORDS.contains(&k.as_str()) {
            return Err(config_err(format!("invalid connection option {k:?}")));
        }
    }
    Ok(pairs)
}

/// libpq's `conninfo_parse`: `key = value` pairs separated by whitespace; values may be
/// single-quoted; a backslash escapes the next character (`\'`, `\\`) in both forms.
fn parse_keyword_value(s: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(config_err(format!("missing \"=\" after {key:?} in connection info string")));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(config_err(format!("unterminated quoted string for {key:?}"))),
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => return Err(config_err(format!("unterminated quoted string for {key:?}"))),
                    },
                    Some('\'') => break,
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        value.push(n);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key, value));
    }
    Ok(out)
}

fn decode(s: &str, what: &str) -> Result<String> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| config_err(format!("invalid percent-encoded {what} in connection URI (not UTF-8)")))
}

/// libpq's `conninfo_uri_parse_options`:
/// `[user[:password]@][host][:port][,...][/dbname][?param=value&...]`, percent-decoded.
fn parse_uri(rest: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let (before_query, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let (netloc, path) = match before_query.split_once('/') {
        Some((n, p)) => (n, Some(p)),
        None => (before_query, None),
    };
    let hostspec = match netloc.rsplit_once('@') {
        Some((userspec, hostspec)) => {
            let (user, password) = match userspec.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userspec, None),
            };
            if !user.is_empty() {
                out.push(("user".to_string(), decode(user, "user name")?));
            }
            if let Some(p) = password {
                out.push(("password".to_string(), decode(p, "password")?));
            }
            hostspec
        }
        None => netloc,
    };
    if !hostspec.is_empty() {
        let mut hosts = Vec::new();
        let mut ports = Vec::new();
        for spec in hostspec.split(',') {
            let (host, port) = if let Some(v6) = spec.strip_prefix('[') {
                let (addr, after) = v6
                    .split_once(']')
                    .ok_or_else(|| config_err("missing \"]\" after IPv6 host address in connection URI"))?;
                let port = match after {
                    "" => "",
                    p => p
                        .strip_prefix(':')
                        .ok_or_else(|| config_err("unexpected text after IPv6 host address in connection URI"))?,
                };
                (addr.to_string(), port)
            } else {
                match spec.split_once(':') {
                    Some((h, p)) => (decode(h, "host")?, p),
                    None => (decode(spec, "host")?, ""),
                }
            };
            // Checked here so that a mistyped URI (say, an unescaped '/' in the password)
            // cannot echo a piece of the password in the error.
            if !port.bytes().all(|b| b.is_ascii_digit()) {
                return Err(config_err(
                    "invalid port in connection URI: percent-encode special characters (/ @ : ?) in the user name and password",
                ));
            }
            hosts.push(host);
            ports.push(port.to_string());
        }
        if hosts.iter().any(|h| !h.is_empty()) {
            out.push(("host".to_string(), hosts.join(",")));
        }
        if ports.iter().any(|p| !p.is_empty()) {
            out.push(("port".to_string(), ports.join(",")));
        }
    }
    if let Some(db) = path.filter(|p| !p.is_empty()) {
        out.push(("dbname".to_string(), decode(db, "database name")?));
    }
    if let Some(q) = query {
        for kv in q.split('&').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv.split_once('=').ok_or_else(|| {
                config_err(format!("missing key/value separator \"=\" in URI query parameter {:?}", kv))
            })?;
            let k = decode(k, "query parameter name")?;
            let v = decode(v, "query parameter value")?;
            // JDBC-style `ssl=true` is accepted by libpq as `sslmode=require`.
            if k == "ssl" && v == "true" {
                out.push(("sslmode".to_string(), "require".to_string()));
            } else {
                out.push((k, v));
            }
        }
    }
    Ok(out)
}

fn parse_bool(key: &str, v: &str) -> Result<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "t" | "true" | "on" | "y" | "yes" => Ok(true),
        "0" | "f" | "false" | "off" | "n" | "no" => Ok(false),
        _ => Err(config_err(format!("invalid {key} value {v:?}: expected a boolean"))),
    }
}

fn parse_port(p: &str) -> Result<u16> {
    match p.trim().parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(config_err(format!("invalid port number {p:?}"))),
    }
}

impl ConnParams {
    /// Parses `conninfo` and fills the gaps from the process environment and libpq's defaults.
    pub fn parse(conninfo: &str) -> Result<ConnParams> {
        Self::parse_with_env(conninfo, &crate::env::ProcessEnv)
    }

    /// Parses `conninfo` and fills the gaps from `env` and libpq's defaults.
    pub fn parse_with_env(conninfo: &str, env: &dyn Environment) -> Result<ConnParams> {
        Self::from_pairs(parse_conninfo(conninfo)?, env)
    }

    /// Builds parameters from keyword/value pairs (later pairs win), then `env`, then libpq's
    /// defaults.
    pub fn from_pairs(pairs: Vec<(String, String)>, env: &dyn Environment) -> Result<ConnParams> {
        let get = |key: &str| -> Option<String> { pairs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.clone()) };
        // A keyword given with an empty value means "default", as in libpq.
        let given = |key: &str| get(key).filter(|v| !v.is_empty());
        let or_env = |key: &str, var: &str| given(key).or_else(|| env.var(var));

        if given("service").is_some() {
            return Err(config_err(
                "connection service files (service=...) are not supported: spell out host, port, user and dbname",
            ));
        }
        if let Some(v) = given("target_session_attrs").filter(|v| v != "any") {
            return Err(config_err(format!("target_session_attrs={v} is not supported (only \"any\")")));
        }
        if given("gssencmode").is_some_and(|v| v == "require") {
            return Err(config_err("gssencmode=require is not supported: GSSAPI encryption is not implemented"));
        }
        if given("sslnegotiation").is_some_and(|v| v != "postgres") {
            return Err(config_err("only sslnegotiation=postgres is supported"));
        }

        let home = env.home_dir();
        let user = match or_env("user", "PGUSER").or_else(|| env.user_name()) {
            Some(u) => u,
            None => return Err(config_err("no user name given and the OS user name is unknown: set user= or PGUSER")),
        };
        let dbname_given = or_env("dbname", "PGDATABASE");
        let dbname_explicit = dbname_given.is_some();
        let dbname = dbname_given.unwrap_or_else(|| user.clone());
        let password = given("password").or_else(|| env.var("PGPASSWORD")).map(Password);
        let passfile =
            or_env("passfile", "PGPASSFILE").map(PathBuf::from).or_else(|| home.as_ref().map(|h| h.join(".pgpass")));
        let sslmode = match or_env("sslmode", "PGSSLMODE") {
            Some(m) => m.parse()?,
            None => SslMode::Prefer,
        };
        let sslrootcert = or_env("sslrootcert", "PGSSLROOTCERT");
        if sslrootcert.as_deref() == Some("system") && sslmode != SslMode::VerifyFull {
            return Err(config_err(format!(
                "weak sslmode \"{sslmode}\" may not be used with sslrootcert=system (use \"verify-full\")"
            )));
        }
        let channel_binding = match or_env("channel_binding", "PGCHANNELBINDING") {
            Some(m) => m.parse()?,
            None => ChannelBindingMode::Prefer,
        };
        let connect_timeout = match or_env("connect_timeout", "PGCONNECT_TIMEOUT") {
            None => None,
            Some(t) => match t.trim().parse::<i64>() {
                Ok(n) if n <= 0 => None,
                // libpq treats values below 2 s as 2 s.
                Ok(n) => Some(Duration::from_secs(n.max(2) as u64)),
                Err(_) => return Err(config_err(format!("invalid connect_timeout value {t:?}: expected seconds"))),
            },
        };
        let replication = match given("replication") {
            None => Replication::Off,
            Some(v) if v == "database" => Replication::Database,
            Some(v) => {
                if parse_bool("replication", &v)? {
                    Replication::Physical
                } else {
                    Replication::Off
                }
            }
        };

        let targets =
            Self::targets(or_env("host", "PGHOST"), or_env("hostaddr", "PGHOSTADDR"), or_env("port", "PGPORT"), env)?;

        Ok(ConnParams {
            targets,
            user,
            password,
            dbname,
            dbname_explicit,
            passfile,
            sslmode,
            sslrootcert,
            sslcert: or_env("sslcert", "PGSSLCERT").map(PathBuf::from),
            sslkey: or_env("sslkey", "PGSSLKEY").map(PathBuf::from),
            ssl_dir: home.map(|h| h.join(".postgresql")),
            channel_binding,
            application_name: or_env("application_name", "PGAPPNAME").or_else(|| given("fallback_application_name")),
            options: or_env("options", "PGOPTIONS"),
            connect_timeout,
            replication,
        })
    }

    /// libpq's host list rules: `host` and `hostaddr` lists of equal length (or one of them
    /// absent), `port` either one value for all or one per host; empty entries take defaults.
    fn targets(
        host: Option<String>,
        hostaddr: Option<String>,
        port: Option<String>,
        env: &dyn Environment,
    ) -> Result<Vec<Target>> {
        let split = |s: &Option<String>| -> Vec<String> {
            s.as_deref().map(|s| s.split(',').map(|p| p.trim().to_string()).collect()).unwrap_or_default()
        };
        let hosts = split(&host);
        let addrs = split(&hostaddr);
        let ports = split(&port);
        let n = hosts.len().max(addrs.len()).max(1);
        if !hosts.is_empty() && !addrs.is_empty() && hosts.len() != addrs.len() {
            return Err(config_err(format!(
                "could not match {} host names to {} hostaddr values",
                hosts.len(),
                addrs.len()
            )));
        }
        if ports.len() > 1 && ports.len() != n {
            return Err(config_err(format!("could not match {} port numbers to {} hosts", ports.len(), n)));
        }
        let default_host = || {
            if env.is_dir(Path::new(DEFAULT_SOCKET_DIR)) {
                Host::Unix(PathBuf::from(DEFAULT_SOCKET_DIR))
            } else {
                Host::Tcp("localhost".to_string())
            }
        };
        let mut targets = Vec::with_capacity(n);
        for i in 0..n {
            let hostaddr = match addrs.get(i).filter(|a| !a.is_empty()) {
                Some(a) => Some(
                    a.parse::<IpAddr>()
                        .map_err(|_| config_err(format!("invalid hostaddr {a:?}: expected a numeric IP address")))?,
                ),
                None => None,
            };
            let host = match hosts.get(i).filter(|h| !h.is_empty()) {
                Some(h) if h.starts_with('/') => Host::Unix(PathBuf::from(h)),
                Some(h) => Host::Tcp(h.clone()),
                None => match hostaddr {
                    Some(a) => Host::Tcp(a.to_string()),
                    None => default_host(),
                },
            };
            let port_text = if ports.len() == 1 { ports.first() } else { ports.get(i) };
            let port = match port_text.filter(|p| !p.is_empty()) {
                Some(p) => parse_port(p)?,
                None => DEFAULT_PORT,
            };
            targets.push(Target { host, hostaddr, port });
        }
        Ok(targets)
    }

    /// Sets `application_name` unless the connection string or `PGAPPNAME` already did (libpq's
    /// `fallback_application_name`).
    pub fn with_fallback_application_name(mut self, name: &str) -> ConnParams {
        if self.application_name.is_none() {
            self.application_name = Some(name.to_string());
        }
        self
    }

    /// Sets the walsender mode.
    pub fn with_replication(mut self, replication: Replication) -> ConnParams {
        self.replication = replication;
        self
    }

    /// The database name to match in `.pgpass`: `replication` for a physical walsender when no
    /// database was named (as pg_basebackup and pg_receivewal do).
    pub fn pgpass_dbname(&self) -> &str {
        if self.replication == Replication::Physical && !self.dbname_explicit {
            "replication"
        } else {
            &self.dbname
        }
    }

    /// A one-line description for logs, without the password.
    pub fn describe(&self) -> String {
        let hosts: Vec<String> = self
            .targets
            .iter()
            .map(|t| match &t.host {
                Host::Unix(d) => format!("{}:{}", d.display(), t.port),
                Host::Tcp(h) => format!("{h}:{}", t.port),
            })
            .collect();
        format!("host={} user={} dbname={} sslmode={}", hosts.join(","), self.user, self.dbname, self.sslmode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::FakeEnv;

    fn pairs(s: &str) -> Vec<(String, String)> {
        parse_conninfo(s).unwrap()
    }

    fn p(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    fn env() -> FakeEnv {
        FakeEnv::new().user("osuser").home("/home/osuser")
    }

    #[test]
    fn keyword_value_basic_and_spacing() {
        assert_eq!(
            pairs("host=/tmp port=5433  user=x dbname=y sslmode=require application_name=z"),
            vec![
                p("host", "/tmp"),
                p("port", "5433"),
                p("user", "x"),
                p("dbname", "y"),
                p("sslmode", "require"),
                p("application_name", "z")
            ]
        );
        assert_eq!(pairs("  host = db1\tport= 1 "), vec![p("host", "db1"), p("port", "1")]);
    }

    #[test]
    fn keyword_value_quoting_and_escapes() {
        assert_eq!(pairs(r"password='a b\'c\\d' user=u"), vec![p("password", r"a b'c\d"), p("user", "u")]);
        assert_eq!(pairs(r"password=a\ b"), vec![p("password", "a b")]);
        assert_eq!(pairs("password='' user=u"), vec![p("password", ""), p("user", "u")]);
        assert_eq!(pairs("options='-c wal_sender_timeout=0'"), vec![p("options", "-c wal_sender_timeout=0")]);
        assert_eq!(pairs("password=x=y"), vec![p("password", "x=y")]);
    }

    #[test]
    fn keyword_value_errors_do_not_echo_values() {
        let e = parse_conninfo("host=a password='secret").unwrap_err().to_string();
        assert!(e.contains("unterminated quoted string"), "{e}");
        assert!(!e.contains("secret"), "{e}");
        let e = parse_conninfo("host=a user").unwrap_err().to_string();
        assert!(e.contains("missing \"=\" after \"user\""), "{e}");
        let e = parse_conninfo("hots=a").unwrap_err().to_string();
        assert!(e.contains("invalid connection option \"hots\""), "{e}");
    }

    #[test]
    fn bare_word_is_a_database_name() {
        assert_eq!(pairs("mydb"), vec![p("dbname", "mydb")]);
        assert_eq!(pairs(""), vec![]);
    }

    #[test]
    fn uri_full_form() {
        assert_eq!(
            pairs("postgresql://us%40er:p%3Ass@db.example.com:6432/my%20db?sslmode=verify-full&application_name=walarchiver"),
            vec![
                p("user", "us@er"),
                p("password", "p:ss"),
                p("host", "db.example.com"),
                p("port", "6432"),
                p("dbname", "my db"),
                p("sslmode", "verify-full"),
                p("application_name", "walarchiver")
            ]
        );
    }

    #[test]
    fn uri_short_forms() {
        assert_eq!(pairs("postgresql://"), vec![]);
        assert_eq!(pairs("postgres://localhost"), vec![p("host", "localhost")]);
        assert_eq!(pairs("postgresql://localhost:5433"), vec![p("host", "localhost"), p("port", "5433")]);
        assert_eq!(pairs("postgresql:///mydb"), vec![p("dbname", "mydb")]);
        assert_eq!(pairs("postgresql://user@"), vec![p("user", "user")]);
        assert_eq!(pairs("postgresql://%2Ftmp:5433/db"), vec![p("host", "/tmp"), p("port", "5433"), p("dbname", "db")]);
        assert_eq!(pairs("postgresql:///db?host=/var/lib/pg"), vec![p("dbname", "db"), p("host", "/var/lib/pg")]);
        assert_eq!(pairs("postgresql://[::1]:5433/db"), vec![p("host", "::1"), p("port", "5433"), p("dbname", "db")]);
        assert_eq!(pairs("postgresql://a:1,b,c:3"), vec![p("host", "a,b,c"), p("port", "1,,3")]);
        assert_eq!(pairs("postgresql://h?ssl=true"), vec![p("host", "h"), p("sslmode", "require")]);
        let e = parse_conninfo("postgresql://h?foo=bar").unwrap_err().to_string();
        assert!(e.contains("invalid connection option \"foo\""), "{e}");
        assert!(parse_conninfo("postgresql://h?sslmode").is_err());
        assert!(parse_conninfo("postgresql://[::1/db").is_err());
    }

    #[test]
    fn defaults_without_env() {
        let c = ConnParams::parse_with_env("", &env()).unwrap();
        assert_eq!(c.targets, vec![Target { host: Host::Tcp("localhost".into()), hostaddr: None, port: 5432 }]);
        assert_eq!(c.user, "osuser");
        assert_eq!(c.dbname, "osuser");
        assert!(!c.dbname_explicit);
        assert_eq!(c.password, None);
        assert_eq!(c.passfile, Some(PathBuf::from("/home/osuser/.pgpass")));
        assert_eq!(c.sslmode, SslMode::Prefer);
        assert_eq!(c.replication, Replication::Off);
        assert_eq!(c.connect_timeout, None);
        assert_eq!(c.ssl_dir, Some(PathBuf::from("/home/osuser/.postgresql")));

        let with_socket_dir = env().dir(DEFAULT_SOCKET_DIR);
        let c = ConnParams::parse_with_env("", &with_socket_dir).unwrap();
        assert_eq!(c.targets[0].host, Host::Unix(PathBuf::from(DEFAULT_SOCKET_DIR)));
        assert_eq!(c.targets[0].socket_path().unwrap(), PathBuf::from("/var/run/postgresql/.s.PGSQL.5432"));
        assert_eq!(c.targets[0].pgpass_host(), "localhost");
    }

    #[test]
    fn env_defaults_and_precedence() {
        let e = env()
            .var("PGHOST", "envhost")
            .var("PGPORT", "6000")
            .var("PGUSER", "envuser")
            .var("PGPASSWORD", "envpw")
            .var("PGDATABASE", "envdb")
            .var("PGSSLMODE", "require")
            .var("PGAPPNAME", "envapp")
            .var("PGPASSFILE", "/etc/pgpass")
            .var("PGCONNECT_TIMEOUT", "7");
        let c = ConnParams::parse_with_env("", &e).unwrap();
        assert_eq!(c.targets, vec![Target { host: Host::Tcp("envhost".into()), hostaddr: None, port: 6000 }]);
        assert_eq!((c.user.as_str(), c.dbname.as_str()), ("envuser", "envdb"));
        assert!(c.dbname_explicit);
        assert_eq!(c.password.as_ref().map(Password::expose), Some("envpw"));
        assert_eq!(c.sslmode, SslMode::Require);
        assert_eq!(c.application_name.as_deref(), Some("envapp"));
        assert_eq!(c.passfile, Some(PathBuf::from("/etc/pgpass")));
        assert_eq!(c.connect_timeout, Some(Duration::from_secs(7)));

        // The connection string wins over the environment, in both forms.
        let c =
            ConnParams::parse_with_env("host=/tmp port=5433 user=x dbname=y sslmode=disable password=pw", &e).unwrap();
        assert_eq!(c.targets, vec![Target { host: Host::Unix("/tmp".into()), hostaddr: None, port: 5433 }]);
        assert_eq!((c.user.as_str(), c.dbname.as_str(), c.sslmode), ("x", "y", SslMode::Disable));
        assert_eq!(c.password.as_ref().map(Password::expose), Some("pw"));
        let c = ConnParams::parse_with_env("postgresql://u@h/d?application_name=a", &e).unwrap();
        assert_eq!(c.targets[0], Target { host: Host::Tcp("h".into()), hostaddr: None, port: 6000 });
        assert_eq!((c.user.as_str(), c.dbname.as_str()), ("u", "d"));
        assert_eq!(c.application_name.as_deref(), Some("a"));
        // Later keywords win; an empty value means "default".
        let c = ConnParams::parse_with_env("port=1 port=2 host=", &e).unwrap();
        assert_eq!(c.targets[0], Target { host: Host::Tcp("envhost".into()), hostaddr: None, port: 2 });
    }

    #[test]
    fn fallback_application_name_and_replication() {
        let c = ConnParams::parse_with_env("fallback_application_name=fb", &env()).unwrap();
        assert_eq!(c.application_name.as_deref(), Some("fb"));
        let c = ConnParams::parse_with_env("", &env()).unwrap().with_fallback_application_name("walarchiver");
        assert_eq!(c.application_name.as_deref(), Some("walarchiver"));
        let c = ConnParams::parse_with_env("application_name=x", &env()).unwrap().with_fallback_application_name("w");
        assert_eq!(c.application_name.as_deref(), Some("x"));
        let c = ConnParams::parse_with_env("replication=true", &env()).unwrap();
        assert_eq!(c.replication, Replication::Physical);
        assert_eq!(c.pgpass_dbname(), "replication");
        let c = ConnParams::parse_with_env("replication=database dbname=d", &env()).unwrap();
        assert_eq!(c.replication, Replication::Database);
        assert_eq!(c.pgpass_dbname(), "d");
        assert!(ConnParams::parse_with_env("replication=maybe", &env()).is_err());
    }

    #[test]
    fn host_lists() {
        let c = ConnParams::parse_with_env("host=a,/tmp,c port=1,2,", &env()).unwrap();
        assert_eq!(
            c.targets,
            vec![
                Target { host: Host::Tcp("a".into()), hostaddr: None, port: 1 },
                Target { host: Host::Unix("/tmp".into()), hostaddr: None, port: 2 },
                Target { host: Host::Tcp("c".into()), hostaddr: None, port: 5432 },
            ]
        );
        let c = ConnParams::parse_with_env("host=a,b port=7", &env()).unwrap();
        assert!(c.targets.iter().all(|t| t.port == 7));
        let c = ConnParams::parse_with_env("hostaddr=127.0.0.1", &env()).unwrap();
        assert_eq!(c.targets[0].host, Host::Tcp("127.0.0.1".into()));
        assert_eq!(c.targets[0].hostaddr, Some("127.0.0.1".parse().unwrap()));
        let c = ConnParams::parse_with_env("host=db hostaddr=10.0.0.1", &env()).unwrap();
        assert_eq!(c.targets[0].to_string(), "server at \"db\" (10.0.0.1), port 5432");
        assert!(ConnParams::parse_with_env("host=a,b port=1,2,3", &env()).is_err());
        assert!(ConnParams::parse_with_env("host=a,b hostaddr=1.2.3.4", &env()).is_err());
        assert!(ConnParams::parse_with_env("hostaddr=db.example.com", &env()).is_err());
        assert!(ConnParams::parse_with_env("port=0", &env()).is_err());
        assert!(ConnParams::parse_with_env("port=http", &env()).is_err());
    }

    #[test]
    fn value_validation() {
        assert!(ConnParams::parse_with_env("sslmode=required", &env()).is_err());
        assert!(ConnParams::parse_with_env("connect_timeout=soon", &env()).is_err());
        let c = ConnParams::parse_with_env("connect_timeout=1", &env()).unwrap();
        assert_eq!(c.connect_timeout, Some(Duration::from_secs(2)), "libpq's minimum");
        let c = ConnParams::parse_with_env("connect_timeout=0", &env()).unwrap();
        assert_eq!(c.connect_timeout, None);
        assert!(ConnParams::parse_with_env("service=prod", &env()).is_err());
        assert!(ConnParams::parse_with_env("sslrootcert=system sslmode=require", &env()).is_err());
        assert!(ConnParams::parse_with_env("sslrootcert=system sslmode=verify-full", &env()).is_ok());
        assert!(ConnParams::parse_with_env("keepalives=1 target_session_attrs=any", &env()).is_ok());
        assert!(ConnParams::parse_with_env("target_session_attrs=read-write", &env()).is_err());
        let e = ConnParams::parse_with_env("", &FakeEnv::new()).unwrap_err().to_string();
        assert!(e.contains("PGUSER"), "{e}");
    }

    #[test]
    fn password_never_in_debug() {
        let c = ConnParams::parse_with_env("password=hunter2 user=u", &env()).unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("<redacted>"));
        assert!(!c.describe().contains("hunter2"));
        let c = ConnParams::parse_with_env("postgresql://u:hunter2@h/d", &env()).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        let e = ConnParams::parse_with_env("postgresql://u:hunter2@h/d?port=x", &env()).unwrap_err();
        assert!(!e.to_string().contains("hunter2"));
        let e = ConnParams::parse_with_env("postgresql://u:hun/ter2@h/d", &env()).unwrap_err();
        assert!(!e.to_string().contains("hun"), "{e}");
    }
}
