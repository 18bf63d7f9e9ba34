//! [`Secret`]: a flag's value that must never be printed.

/// A secret flag value (a bearer token, a database URL with its password): `Debug`
/// prints `<redacted>`, so no log or panic message of the parsed flags shows it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    /// The value itself, for the one place that uses it.
    pub(crate) fn expose(self) -> String {
        self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}
