//! Translation between the provinces' native formats and the canonical model.
//!
//! Every endpoint speaks one of the formats of `formats.md`; each format is a data file, a
//! [`profile::FormatProfile`], read by one generic [`engine`]. Nothing here is specific to a
//! province: adding a seventh format or a new endpoint is a file in a directory named at run
//! time (`docs/PROFILES.md`).
//!
//! Invariants: reading never panics and never guesses — a document is translated whole or
//! refused whole with a [`FormatError`] that names the native field by its dotted path
//! (`JQXX.BJSJ`, `JQXX.JQLB@DM`, `gd.fj[0].lx`); rendering writes only what the model holds.

pub mod encoding;
pub mod engine;
pub mod field;
pub mod profile;
pub mod registry;
pub mod tree;
pub mod xml;

pub use engine::{DocumentKind, Format, ReceiptKind, ReceiptReading};
pub use registry::{Endpoint, Registry};

/// Why a document could not be translated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The document as a whole is unreadable: its syntax, its encoding or its root.
    #[error("{0}")]
    Document(String),
    /// A field is wrong. `path` is the native field (`JQXX.BJSJ`) when reading, the canonical
    /// one (`case.urgency`) when rendering.
    #[error("{path}: {problem}")]
    Field { path: String, problem: String },
    /// No endpoint of that name is registered.
    #[error("unknown endpoint {0}; `liandong endpoints` lists the registry")]
    UnknownEndpoint(String),
}

impl FormatError {
    /// The field at fault, if the error is about one field.
    pub fn field(&self) -> Option<&str> {
        match self {
            FormatError::Field { path, .. } => Some(path),
            _ => None,
        }
    }
}

/// A mistake in a profile or endpoint file, named by file and key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{}{problem}", file.as_deref().map(|f| format!("{f}: ")).unwrap_or_default(), if key.is_empty() { String::new() } else { format!("{key}: ") })]
pub struct ProfileError {
    pub file: Option<String>,
    /// The dotted key (`transfer.fields[3].layout`), empty for the file as a whole.
    pub key: String,
    pub problem: String,
}

impl ProfileError {
    pub fn at(key: impl Into<String>, problem: impl Into<String>) -> ProfileError {
        ProfileError { file: None, key: key.into(), problem: problem.into() }
    }

    pub fn file(file: impl Into<String>, problem: impl Into<String>) -> ProfileError {
        ProfileError { file: Some(file.into()), key: String::new(), problem: problem.into() }
    }

    pub fn in_file(mut self, file: &str) -> ProfileError {
        self.file = Some(file.to_string());
        self
    }
}
