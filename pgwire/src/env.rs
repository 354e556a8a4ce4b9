//! Where connection defaults come from: the `PG*` environment variables, the home directory
//! (for `~/.pgpass` and `~/.postgresql/`), the OS user name and whether the default socket
//! directory exists.
//!
//! Behind a trait so that the connection-string and `.pgpass` rules can be unit-tested with a
//! [`FakeEnv`] without mutating the process environment (which is shared by parallel tests).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The process facts that libpq consults for defaults.
pub trait Environment: fmt::Debug + Send + Sync {
    /// An environment variable; empty values count as unset.
    fn var(&self, name: &str) -> Option<String>;
    /// The user's home directory.
    fn home_dir(&self) -> Option<PathBuf>;
    /// The OS user name (libpq's default for `user`).
    fn user_name(&self) -> Option<String>;
    /// Whether `path` is an existing directory (for the default Unix socket directory).
    fn is_dir(&self, path: &Path) -> bool;
}

/// The real process environment.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessEnv;

impl Environment for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }

    fn home_dir(&self) -> Option<PathBuf> {
        self.var("HOME").map(PathBuf::from).or_else(std::env::home_dir)
    }

    fn user_name(&self) -> Option<String> {
        whoami::fallible::username().ok().filter(|u| !u.is_empty())
    }

    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }
}

/// A made-up environment for tests: only what is set exists.
#[derive(Debug, Default, Clone)]
pub struct FakeEnv {
    vars: HashMap<String, String>,
    home: Option<PathBuf>,
    user: Option<String>,
    dirs: Vec<PathBuf>,
}

impl FakeEnv {
    /// An empty environment: no variables, no home, no user, no directories.
    pub fn new() -> FakeEnv {
        FakeEnv::default()
    }

    /// Sets a variable.
    pub fn var(mut self, name: &str, value: &str) -> FakeEnv {
        self.vars.insert(name.to_string(), value.to_string());
        self
    }

    /// Sets the home directory.
    pub fn home(mut self, home: impl Into<PathBuf>) -> FakeEnv {
        self.home = Some(home.into());
        self
    }

    /// Sets the OS user name.
    pub fn user(mut self, user: &str) -> FakeEnv {
        self.user = Some(user.to_string());
        self
    }

    /// Declares that a directory exists.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> FakeEnv {
        self.dirs.push(dir.into());
        self
    }
}

impl Environment for FakeEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.vars.get(name).filter(|v| !v.is_empty()).cloned()
    }

    fn home_dir(&self) -> Option<PathBuf> {
        self.home.clone()
    }

    fn user_name(&self) -> Option<String> {
        self.user.clone()
    }

    fn is_dir(&self, path: &Path) -> bool {
        self.dirs.iter().any(|d| d == path)
    }
}
