//! The password file (`~/.pgpass`, or `passfile` / `PGPASSFILE`), so that scheduled
//! `basebackup create` and a `receive` service authenticate without a password on the command
//! line, exactly as `pg_basebackup` and `pg_receivewal` would with the same file.
//!
//! Format (libpq): `hostname:port:database:username:password` per line, `*` matches anything
//! in the first four fields, `\:` and `\\` escape, `#` starts a comment line, the first match
//! wins. A file readable by group or others is ignored with a warning, like libpq does.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::conninfo::Password;

/// One line of a password file.
#[derive(Clone, PartialEq, Eq)]
pub struct PgPassEntry {
    /// Host name, socket directory, or `*`.
    pub host: String,
    /// Port number or `*`.
    pub port: String,
    /// Database name (`replication` for physical replication connections) or `*`.
    pub database: String,
    /// Role name or `*`.
    pub user: String,
    /// The password.
    pub password: Password,
}

impl std::fmt::Debug for PgPassEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgPassEntry({}:{}:{}:{}:<redacted>)", self.host, self.port, self.database, self.user)
    }
}

/// Splits one line into its five fields, undoing `\` escapes; `None` for comments, blank or
/// short lines.
fn parse_line(line: &str) -> Option<PgPassEntry> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let mut fields: Vec<String> = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    fields.last_mut()?.push(n);
                }
            }
            // libpq ends the password at an unescaped colon too.
            ':' => fields.push(String::new()),
            c => fields.last_mut()?.push(c),
        }
    }
    if fields.len() < 5 {
        return None;
    }
    fields.truncate(5);
    let password = fields.pop()?;
    let user = fields.pop()?;
    let database = fields.pop()?;
    let port = fields.pop()?;
    let host = fields.pop()?;
    Some(PgPassEntry { host, port, database, user, password: Password::new(password) })
}

/// Reads all entries of a password file's text.
pub fn parse_pgpass(text: &str) -> Vec<PgPassEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn field_matches(pattern: &str, value: &str) -> bool {
    pattern == "*" || pattern == value
}

/// The password of the first entry matching the connection.
pub fn lookup<'a>(
    entries: &'a [PgPassEntry],
    host: &str,
    port: u16,
    database: &str,
    user: &str,
) -> Option<&'a Password> {
    let port = port.to_string();
    entries
        .iter()
        .find(|e| {
            field_matches(&e.host, host)
                && field_matches(&e.port, &port)
                && field_matches(&e.database, database)
                && field_matches(&e.user, user)
        })
        .map(|e| &e.password)
}

/// Looks the connection up in the password file at `path`. A missing file is no password; a
/// file with group or world permissions, or not a plain file, is ignored with a warning.
pub fn password_from_file(path: &Path, host: &str, port: u16, database: &str, user: &str) -> Option<Password> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        tracing::warn!("password file {} is not a plain file", path.display());
        return None;
    }
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            "password file {} has group or world access; permissions should be u=rw (0600) or less: ignoring it",
            path.display()
        );
        return None;
    }
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!("could not read password file {}: {e}", path.display());
            return None;
        }
    };
    lookup(&parse_pgpass(&text), host, port, database, user).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# comment line
db1.example.com:5432:prod:alice:pw1
db1.example.com:*:*:alice:pw2
/tmp:5433:replication:repl:sock\\:pw
*:*:*:bob:b\\\\o\\:b:ignored
localhost:5432:*:*:local
short:line
";

    fn find(host: &str, port: u16, db: &str, user: &str) -> Option<String> {
        lookup(&parse_pgpass(FILE), host, port, db, user).map(|p| p.expose().to_string())
    }

    #[test]
    fn first_match_wins_and_wildcards() {
        assert_eq!(find("db1.example.com", 5432, "prod", "alice").as_deref(), Some("pw1"));
        assert_eq!(find("db1.example.com", 5432, "test", "alice").as_deref(), Some("pw2"));
        assert_eq!(find("db1.example.com", 6432, "prod", "alice").as_deref(), Some("pw2"));
        assert_eq!(find("db2.example.com", 5432, "prod", "alice"), None);
        assert_eq!(find("localhost", 5432, "anything", "carol").as_deref(), Some("local"));
        assert_eq!(find("localhost", 5433, "anything", "carol"), None);
    }

    #[test]
    fn escapes_and_colons_in_password() {
        assert_eq!(find("/tmp", 5433, "replication", "repl").as_deref(), Some("sock:pw"));
        assert_eq!(find("anyhost", 1, "d", "bob").as_deref(), Some("b\\o:b"));
        let e = parse_pgpass("h\\:x:1:d:u:p");
        assert_eq!(e[0].host, "h:x");
    }

    #[test]
    fn comments_and_short_lines_are_skipped() {
        let e = parse_pgpass(FILE);
        assert_eq!(e.len(), 5);
        assert!(!format!("{e:?}").contains("pw1"), "passwords are redacted in Debug");
    }

    #[test]
    fn file_permissions_like_libpq() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgpass");
        std::fs::write(&path, "h:5432:*:u:secret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            password_from_file(&path, "h", 5432, "d", "u").map(|p| p.expose().to_string()).as_deref(),
            Some("secret")
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(password_from_file(&path, "h", 5432, "d", "u"), None, "world-readable file is ignored");
        assert_eq!(password_from_file(&dir.path().join("missing"), "h", 5432, "d", "u"), None);
        assert_eq!(password_from_file(dir.path(), "h", 5432, "d", "u"), None, "a directory is not a password file");
    }
}
