//! The endpoint registry: which endpoints exist, the format each speaks, and its code table.
//!
//! The six built-in profiles and the registry of the 18 endpoints of `formats.md` are compiled
//! into the binary from `profiles/`; a directory named at run time adds formats and endpoints
//! (or replaces built-in ones of the same name) without a rebuild.

use std::collections::BTreeMap;
use std::path::Path as FsPath;
use std::sync::{Arc, RwLock};

use super::engine::{add_row, Format, ReceiptKind, ReceiptReading};
use super::field::CodeTable;
use super::profile::{EndpointsFile, FormatProfile};
use super::{FormatError, ProfileError};
use crate::model::{EndpointId, StatusUpdate, TransferRequest};

/// The built-in profile files, by the name they are reported under.
pub const BUILTIN_PROFILES: &[(&str, &str)] = &[
    ("profiles/jjd-json.toml", include_str!("../../profiles/jjd-json.toml")),
    ("profiles/jqxx-xml.toml", include_str!("../../profiles/jqxx-xml.toml")),
    ("profiles/incident-json.toml", include_str!("../../profiles/incident-json.toml")),
    ("profiles/gd-json.toml", include_str!("../../profiles/gd-json.toml")),
    ("profiles/workorder-xml.toml", include_str!("../../profiles/workorder-xml.toml")),
    ("profiles/ticket-json.toml", include_str!("../../profiles/ticket-json.toml")),
];

/// The built-in endpoint registry file.
pub const BUILTIN_ENDPOINTS: (&str, &str) =
    ("profiles/endpoints.toml", include_str!("../../profiles/endpoints.toml"));

/// An endpoint with everything needed to translate its documents.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub id: EndpointId,
    /// The place, for people.
    pub place: String,
    pub format: Arc<Format>,
    /// The format's rows plus this endpoint's own extra rows: the initial contents of its
    /// transfer-item list (分流转办事项清单).
    pub codes: Arc<CodeTable>,
    /// The live transfer-item list, from the `categories` dataset once a server has loaded it
    /// (`sync::categories`); until then, `codes`.
    live_codes: Arc<RwLock<Option<Arc<CodeTable>>>>,
}

impl Endpoint {
    /// The code table documents are read and written with: the live transfer-item list.
    pub fn code_table(&self) -> Arc<CodeTable> {
        let live = self.live_codes.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        live.clone().unwrap_or_else(|| self.codes.clone())
    }

    /// Replaces the live transfer-item list (the `categories` dataset changed).
    pub fn set_code_table(&self, table: CodeTable) {
        *self.live_codes.write().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(Arc::new(table));
    }

    /// Native transfer document → canonical transfer request, as sent by this endpoint.
    pub fn read_transfer(&self, bytes: &[u8]) -> Result<TransferRequest, FormatError> {
        self.format.read_transfer(bytes, &self.id, &self.code_table())
    }

    /// Native status document → canonical status update, as sent by this endpoint.
    pub fn read_status(&self, bytes: &[u8]) -> Result<StatusUpdate, FormatError> {
        self.format.read_status(bytes, &self.id, &self.code_table())
    }

    /// A transfer rendered for this endpoint in its own format and code table.
    pub fn write_transfer(&self, request: &TransferRequest) -> Result<Vec<u8>, FormatError> {
        self.format.write_transfer(request, &self.code_table())
    }

    /// A status update rendered for this endpoint.
    pub fn write_status(&self, update: &StatusUpdate) -> Result<Vec<u8>, FormatError> {
        self.format.write_status(update)
    }

    /// The HTTP content type of this endpoint's documents.
    pub fn content_type(&self) -> String {
        match self.format.syntax {
            super::profile::Syntax::Json => "application/json; charset=utf-8".to_string(),
            super::profile::Syntax::Xml => {
                format!("application/xml; charset={}", self.format.encoding.label())
            }
        }
    }

    /// A receipt in this endpoint's format.
    pub fn write_receipt(
        &self,
        kind: ReceiptKind,
        reference: Option<&str>,
        message: Option<&str>,
    ) -> Vec<u8> {
        self.format.write_receipt(kind, reference, message)
    }

    /// The receipt for a translation error: "bad document", naming the field.
    pub fn error_receipt(&self, reference: Option<&str>, error: &FormatError) -> Vec<u8> {
        self.write_receipt(ReceiptKind::Invalid, reference, Some(&error.to_string()))
    }

    /// Reads a receipt this endpoint sent back.
    pub fn read_receipt(&self, bytes: &[u8]) -> Result<ReceiptReading, FormatError> {
        self.format.read_receipt(bytes)
    }
}

/// Formats and endpoints, ready to translate.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    formats: BTreeMap<String, Arc<Format>>,
    endpoints: BTreeMap<EndpointId, Endpoint>,
}

impl Registry {
    /// The built-in formats and endpoints.
    pub fn builtin() -> Registry {
        let mut registry = Registry::default();
        let mut endpoint_files = Vec::new();
        for (file, text) in BUILTIN_PROFILES.iter().chain([&BUILTIN_ENDPOINTS]) {
            if let Err(e) = registry.add_file(file, text, &mut endpoint_files) {
                panic!("built-in profile is broken (a test guards against this): {e}");
            }
        }
        for (file, text) in endpoint_files {
            if let Err(e) = registry.add_endpoints(&file, &text) {
                panic!("built-in endpoint registry is broken (a test guards against this): {e}");
            }
        }
        registry
    }

    /// The built-in registry plus every `*.toml` file of `dir` (profiles and endpoint files).
    pub fn with_dir(dir: &FsPath) -> Result<Registry, Vec<ProfileError>> {
        let mut registry = Registry::builtin();
        let errors = registry.load_dir(dir);
        if errors.is_empty() {
            Ok(registry)
        } else {
            Err(errors)
        }
    }

    /// Loads a directory into this registry, returning every problem found (not just the first).
    pub fn load_dir(&mut self, dir: &FsPath) -> Vec<ProfileError> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                return vec![ProfileError::file(
                    dir.display().to_string(),
                    format!("cannot read the directory: {e}"),
                )]
            }
        };
        let mut files: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        let mut errors = Vec::new();
        let mut endpoint_files = Vec::new();
        if files.is_empty() {
            errors.push(ProfileError::file(
                dir.display().to_string(),
                "no *.toml profile or endpoint files",
            ));
        }
        for path in files {
            let name = path.display().to_string();
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    if let Err(e) = self.add_file(&name, &text, &mut endpoint_files) {
                        errors.push(e);
                    }
                }
                Err(e) => errors.push(ProfileError::file(name, format!("cannot read: {e}"))),
            }
        }
        for (file, text) in endpoint_files {
            if let Err(e) = self.add_endpoints(&file, &text) {
                errors.push(e);
            }
        }
        errors
    }

    /// Adds a profile now, or keeps an endpoint file for after all profiles are in.
    fn add_file(
        &mut self,
        file: &str,
        text: &str,
        endpoint_files: &mut Vec<(String, String)>,
    ) -> Result<(), ProfileError> {
        let table: toml::Table =
            toml::from_str(text).map_err(|e| ProfileError::toml(file, text, &e))?;
        if table.contains_key("endpoint") {
            endpoint_files.push((file.to_string(), text.to_string()));
            return Ok(());
        }
        let profile: FormatProfile = deserialize(file, text)?;
        let format = Format::compile(&profile).map_err(|e| e.in_file(file))?;
        self.formats.insert(format.name.clone(), Arc::new(format));
        Ok(())
    }

    fn add_endpoints(&mut self, file: &str, text: &str) -> Result<(), ProfileError> {
        let parsed: EndpointsFile = deserialize(file, text)?;
        for (i, entry) in parsed.endpoint.iter().enumerate() {
            let at = |key: &str, problem: String| {
                ProfileError::at(format!("endpoint[{i}].{key}"), problem).in_file(file)
            };
            let id: EndpointId = entry.id.parse().map_err(|e| at("id", e))?;
            let format = self.formats.get(&entry.format).cloned().ok_or_else(|| {
                let known: Vec<&str> = self.formats.keys().map(String::as_str).collect();
                at(
                    "format",
                    format!(
                        "unknown format {:?}; expected one of {}",
                        entry.format,
                        known.join(", ")
                    ),
                )
            })?;
            let mut codes = format.codes.clone();
            for (j, (code, name, canonical)) in entry.extra_codes.iter().enumerate() {
                add_row(&mut codes, code, name, canonical)
                    .map_err(|e| at(&format!("extra_codes[{j}]"), e))?;
            }
            self.endpoints.insert(
                id.clone(),
                Endpoint {
                    id,
                    place: entry.place.clone(),
                    format,
                    codes: Arc::new(codes),
                    live_codes: Arc::default(),
                },
            );
        }
        Ok(())
    }

    /// The endpoint with this id.
    pub fn endpoint(&self, id: &EndpointId) -> Result<&Endpoint, FormatError> {
        self.endpoints.get(id).ok_or_else(|| FormatError::UnknownEndpoint(id.to_string()))
    }

    /// Looks an endpoint up by its text form (`330200/110`).
    pub fn endpoint_named(&self, id: &str) -> Result<&Endpoint, FormatError> {
        let parsed: EndpointId =
            id.parse().map_err(|_| FormatError::UnknownEndpoint(id.to_string()))?;
        self.endpoint(&parsed)
    }

    /// Every endpoint, in order.
    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.values()
    }

    /// Every format, by name.
    pub fn formats(&self) -> impl Iterator<Item = &Arc<Format>> {
        self.formats.values()
    }
}

fn deserialize<T: serde::de::DeserializeOwned>(file: &str, text: &str) -> Result<T, ProfileError> {
    let deserializer =
        toml::Deserializer::parse(text).map_err(|e| ProfileError::toml(file, text, &e))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        ProfileError {
            file: Some(file.to_string()),
            key: if key == "." { String::new() } else { key },
            problem: first_line(inner.message()),
        }
    })
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().trim().to_string()
}

impl ProfileError {
    fn toml(file: &str, text: &str, error: &toml::de::Error) -> ProfileError {
        let location = error
            .span()
            .map(|span| {
                let before = &text.as_bytes()[..span.start.min(text.len())];
                let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
                let column = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
                format!(" (line {line}, column {column})")
            })
            .unwrap_or_default();
        ProfileError::file(
            file.to_string(),
            format!("not valid TOML: {}{location}", first_line(error.message())),
        )
    }
}
