//! One field mapping, compiled, read from a native tree and rendered back into one.
//!
//! Each [`Field`] is the compiled form of a profile's `FieldMapping`. Reading turns a native
//! value into canonical JSON at the field's canonical path, or fails naming the native path;
//! rendering does the reverse from canonical JSON. The functions here know value *kinds*
//! (texts, times, phones, enumerations, points, code tables, flags, lists), never a format.

use serde_json::{Map, Value};

use super::profile::{FieldMapping, NamedTimeStyle, NumberStyle};
use super::tree::{describe, text_of, token_of, Node, Path};
use crate::model::geo::{self, CoordSystem};
use crate::model::json as canonical;
use crate::model::{category, phone, EndpointId, Point, Timestamp};

/// A compiled field mapping.
#[derive(Clone, Debug)]
pub enum Field {
    Text { canonical: String, path: Path },
    Time { canonical: String, path: Path, style: TimeFormat },
    Phone { canonical: String, path: Path },
    Region { canonical: String, path: Path, digits: Vec<usize> },
    Enum { canonical: String, path: Path, what: String, values: Vec<NativeChoice> },
    Bool { canonical: String, path: Path, yes: NativeValue, no: NativeValue },
    Point { canonical: String, source: PointSource, system: SystemSource, write: NumberStyle },
    Category { canonical: String, code: Path, name: Option<Path> },
    Flags { canonical: String, flags: Vec<(Path, String)>, otherwise: String },
    Const { path: Path, value: Node, when: String },
    List { canonical: String, path: Path, items: Vec<Field> },
}

/// A time style, compiled.
#[derive(Clone, Debug)]
pub enum TimeFormat {
    Layout(String),
    EpochMillis,
    Rfc3339,
}

/// A native value as the profile gives it, with its text form for matching.
#[derive(Clone, Debug)]
pub struct NativeValue {
    pub value: Node,
    pub text: String,
}

/// One `[native, canonical]` pair of an enumeration.
#[derive(Clone, Debug)]
pub struct NativeChoice {
    pub native: NativeValue,
    pub canonical: String,
}

/// Where a point's coordinates are.
#[derive(Clone, Debug)]
pub enum PointSource {
    Separate { lon: Path, lat: Path },
    Pair(Path),
}

/// Which coordinate system a point is in.
#[derive(Clone, Debug)]
pub enum SystemSource {
    Fixed(CoordSystem),
    Named { path: Path, systems: Vec<(String, CoordSystem)>, render: CoordSystem },
}

/// A code table: rows in order, and the catch-all code per side.
#[derive(Clone, Debug, Default)]
pub struct CodeTable {
    pub rows: Vec<CodeRow>,
    /// `(NP catch-all, PM catch-all)` native codes.
    pub catch_all_np: String,
    pub catch_all_pm: String,
    /// Codes retired from the live transfer-item list, with their last name: a document that
    /// still uses one is refused naming it.
    pub retired: Vec<CodeRow>,
}

/// One row of a code table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeRow {
    pub code: String,
    pub name: String,
    pub canonical: String,
}

impl CodeTable {
    /// The canonical code of a native code (exact match, after trimming).
    pub fn canonical_of(&self, code: &str) -> Option<&str> {
        self.rows.iter().find(|r| r.code == code).map(|r| r.canonical.as_str())
    }

    /// The row that renders a canonical code: the source's own native code when this table has
    /// it for the same canonical code (so a document rendered back to its own kind of endpoint
    /// keeps `070301` or `JW11`), else the first row with that canonical code, else the
    /// catch-all row for its side. The flag is true when the catch-all was used.
    pub fn row_for(
        &self,
        canonical_code: &str,
        source_code: Option<&str>,
    ) -> Option<(&CodeRow, bool)> {
        let own = source_code.and_then(|code| {
            self.rows.iter().find(|r| r.code == code && r.canonical == canonical_code)
        });
        if let Some(row) = own.or_else(|| self.rows.iter().find(|r| r.canonical == canonical_code))
        {
            return Some((row, false));
        }
        let catch_all = match category::side_of(canonical_code)? {
            category::CategorySide::NonPolice => &self.catch_all_np,
            category::CategorySide::Police => &self.catch_all_pm,
        };
        self.rows.iter().find(|r| &r.code == catch_all).map(|row| (row, true))
    }
}

/// What reading needs besides the document: who sent it and that endpoint's code table.
pub struct ReadContext<'a> {
    pub endpoint: &'a EndpointId,
    pub codes: &'a CodeTable,
    /// XML documents hold only text, so numbers may arrive as digit strings.
    pub xml: bool,
}

/// A field error before it is placed: (native path, problem).
pub type FieldError = (String, String);

/// Where a field is being read: the document, or item `index` of a list.
#[derive(Clone, Copy)]
pub enum Scope<'a> {
    Document,
    Item { list: &'a str, index: usize },
}

impl Scope<'_> {
    pub fn name(&self, path: &Path) -> String {
        match self {
            Scope::Document => path.display().to_string(),
            Scope::Item { list, index } => path.in_item(list, *index),
        }
    }
}

impl NativeValue {
    pub fn from_toml(value: &toml::Value) -> Result<NativeValue, String> {
        let (value, text) = match value {
            toml::Value::String(s) => (Node::String(s.clone()), s.trim().to_string()),
            toml::Value::Integer(i) => (Node::Number((*i).into()), i.to_string()),
            toml::Value::Boolean(b) => (Node::Bool(*b), b.to_string()),
            other => {
                return Err(format!(
                    "a native value must be text, an integer or a boolean, got {other}"
                ))
            }
        };
        Ok(NativeValue { value, text })
    }
}

impl Field {
    /// Compiles a mapping; errors are (key inside the mapping, problem).
    pub fn compile(mapping: &FieldMapping) -> Result<Field, (String, String)> {
        let path = |key: &str, text: &str| Path::parse(text).map_err(|e| (key.to_string(), e));
        Ok(match mapping {
            FieldMapping::Text { canonical, path: p } => {
                Field::Text { canonical: canonical.clone(), path: path("path", p)? }
            }
            FieldMapping::Time { canonical, path: p, layout, style } => {
                let style = match (layout, style) {
                    (Some(layout), None) => {
                        check_layout(layout).map_err(|e| ("layout".to_string(), e))?;
                        TimeFormat::Layout(layout.clone())
                    }
                    (None, Some(NamedTimeStyle::EpochMillis)) => TimeFormat::EpochMillis,
                    (None, Some(NamedTimeStyle::Rfc3339)) => TimeFormat::Rfc3339,
                    _ => {
                        return Err((
                            "layout".into(),
                            "give exactly one of `layout` or `style`".into(),
                        ))
                    }
                };
                Field::Time { canonical: canonical.clone(), path: path("path", p)?, style }
            }
            FieldMapping::Phone { canonical, path: p } => {
                Field::Phone { canonical: canonical.clone(), path: path("path", p)? }
            }
            FieldMapping::Region { canonical, path: p, digits } => {
                if digits.is_empty() || digits.iter().any(|d| *d != 6 && *d != 9) {
                    return Err((
                        "digits".into(),
                        format!("a region has 6 or 9 digits, got {digits:?}"),
                    ));
                }
                Field::Region {
                    canonical: canonical.clone(),
                    path: path("path", p)?,
                    digits: digits.clone(),
                }
            }
            FieldMapping::Enum { canonical, path: p, what, values } => {
                if values.is_empty() {
                    return Err(("values".into(), "an enumeration needs at least one pair".into()));
                }
                let values = values
                    .iter()
                    .map(|(native, canonical)| {
                        Ok(NativeChoice {
                            native: NativeValue::from_toml(native)
                                .map_err(|e| ("values".to_string(), e))?,
                            canonical: canonical.clone(),
                        })
                    })
                    .collect::<Result<_, (String, String)>>()?;
                Field::Enum {
                    canonical: canonical.clone(),
                    path: path("path", p)?,
                    what: what.clone(),
                    values,
                }
            }
            FieldMapping::Bool { canonical, path: p, values: (yes, no) } => Field::Bool {
                canonical: canonical.clone(),
                path: path("path", p)?,
                yes: NativeValue::from_toml(yes).map_err(|e| ("values".to_string(), e))?,
                no: NativeValue::from_toml(no).map_err(|e| ("values".to_string(), e))?,
            },
            FieldMapping::Point {
                canonical,
                lon,
                lat,
                pair,
                system,
                system_path,
                systems,
                render_system,
                write,
            } => {
                let source = match (lon, lat, pair) {
                    (Some(lon), Some(lat), None) => {
                        PointSource::Separate { lon: path("lon", lon)?, lat: path("lat", lat)? }
                    }
                    (None, None, Some(pair)) => PointSource::Pair(path("pair", pair)?),
                    _ => {
                        return Err(("lon".into(), "give either `lon` and `lat`, or `pair`".into()))
                    }
                };
                let system = match (system, system_path) {
                    (Some(system), None) => SystemSource::Fixed(*system),
                    (None, Some(system_path)) => {
                        if systems.is_empty() {
                            return Err((
                                "systems".into(),
                                "`system_path` needs the list of `systems` it may name".into(),
                            ));
                        }
                        let render = render_system.ok_or((
                            "render_system".to_string(),
                            "`system_path` needs the `render_system` to write".to_string(),
                        ))?;
                        if !systems.iter().any(|(_, s)| *s == render) {
                            return Err((
                                "render_system".into(),
                                "must be one of `systems`".into(),
                            ));
                        }
                        SystemSource::Named {
                            path: path("system_path", system_path)?,
                            systems: systems.clone(),
                            render,
                        }
                    }
                    _ => {
                        return Err((
                            "system".into(),
                            "give exactly one of `system` or `system_path`".into(),
                        ))
                    }
                };
                Field::Point { canonical: canonical.clone(), source, system, write: *write }
            }
            FieldMapping::Category { canonical, code, name } => Field::Category {
                canonical: canonical.clone(),
                code: path("code", code)?,
                name: name.as_deref().map(|n| path("name", n)).transpose()?,
            },
            FieldMapping::Flags { canonical, flags, otherwise } => {
                if flags.is_empty() {
                    return Err(("flags".into(), "at least one flag is needed".into()));
                }
                let flags = flags
                    .iter()
                    .map(|(p, v)| Ok((path("flags", p)?, v.clone())))
                    .collect::<Result<_, (String, String)>>()?;
                Field::Flags { canonical: canonical.clone(), flags, otherwise: otherwise.clone() }
            }
            FieldMapping::Const { path: p, value, when } => Field::Const {
                path: path("path", p)?,
                value: NativeValue::from_toml(value).map_err(|e| ("value".to_string(), e))?.value,
                when: when.clone(),
            },
            FieldMapping::List { canonical, path: p, items } => {
                if !p.ends_with("[]") {
                    return Err(("path".into(), format!("a list path ends with `[]`, got {p:?}")));
                }
                let items = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        Field::compile(item).map_err(|(k, e)| (format!("items[{i}].{k}"), e))
                    })
                    .collect::<Result<_, _>>()?;
                Field::List { canonical: canonical.clone(), path: path("path", p)?, items }
            }
        })
    }

    /// The canonical path this field fills (for `Const`, the path it depends on).
    pub fn canonical(&self) -> &str {
        match self {
            Field::Text { canonical, .. }
            | Field::Time { canonical, .. }
            | Field::Phone { canonical, .. }
            | Field::Region { canonical, .. }
            | Field::Enum { canonical, .. }
            | Field::Bool { canonical, .. }
            | Field::Point { canonical, .. }
            | Field::Category { canonical, .. }
            | Field::Flags { canonical, .. }
            | Field::List { canonical, .. } => canonical,
            Field::Const { when, .. } => when,
        }
    }

    /// The native path that carries the canonical path `target` (which may lie inside this
    /// field: a point's `.lat`, a list item's `[2].uri`), for error messages.
    pub fn native_path_for(&self, target: &str, scope: Scope<'_>) -> Option<String> {
        let own = self.canonical();
        let inside = target == own
            || target
                .strip_prefix(own)
                .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['));
        match self {
            Field::Const { .. } => None,
            Field::Category { code, name, .. } => {
                let source = source_category_path(own);
                if target == own || target == format!("{source}.code") || target == source {
                    Some(scope.name(code))
                } else if target == format!("{source}.name") {
                    name.as_ref().map(|n| scope.name(n))
                } else {
                    None
                }
            }
            _ if !inside => None,
            Field::Text { path, .. }
            | Field::Time { path, .. }
            | Field::Phone { path, .. }
            | Field::Region { path, .. }
            | Field::Enum { path, .. }
            | Field::Bool { path, .. } => Some(scope.name(path)),
            Field::Point { source: PointSource::Separate { lon, lat }, .. } => {
                Some(scope.name(if target.ends_with(".lat") { lat } else { lon }))
            }
            Field::Point { source: PointSource::Pair(pair), .. } => Some(scope.name(pair)),
            Field::Flags { flags, .. } => Some(scope.name(&flags[0].0)),
            Field::List { path, items, .. } => {
                let list = scope.name(path);
                let rest = &target[own.len()..];
                let Some(rest) = rest.strip_prefix('[') else {
                    return Some(list);
                };
                let (index, rest) = rest.split_once(']')?;
                let index: usize = index.parse().ok()?;
                let item_target = rest.strip_prefix('.').unwrap_or(rest);
                let item_scope = Scope::Item { list: &list, index };
                items
                    .iter()
                    .find_map(|item| item.native_path_for(item_target, item_scope))
                    .or(Some(format!("{list}[{index}]")))
            }
        }
    }

    /// Reads this field from `native` into the canonical tree `out`.
    pub fn read(
        &self,
        native: &Node,
        ctx: &ReadContext<'_>,
        scope: Scope<'_>,
        out: &mut Value,
    ) -> Result<(), FieldError> {
        let at = |path: &Path| scope.name(path);
        match self {
            Field::Text { canonical, path } => {
                if let Some(text) = read_text(native, path, scope)? {
                    canonical::set(out, canonical, Value::String(text));
                }
            }
            Field::Time { canonical, path, style } => {
                let Some(value) = path.get(native).filter(|v| !v.is_null()) else {
                    return Ok(());
                };
                let time = match style {
                    TimeFormat::Layout(layout) => {
                        match text_of(value).map_err(|e| (at(path), e))? {
                            None => return Ok(()),
                            Some(text) => Timestamp::parse_beijing(&text, layout)
                                .map_err(|e| (at(path), e.to_string()))?,
                        }
                    }
                    TimeFormat::Rfc3339 => match text_of(value).map_err(|e| (at(path), e))? {
                        None => return Ok(()),
                        Some(text) => Timestamp::parse_rfc3339(&text, true)
                            .map_err(|e| (at(path), e.to_string()))?,
                    },
                    TimeFormat::EpochMillis => {
                        let millis = match value {
                            Node::Number(n) => n.as_i64(),
                            Node::String(s) if ctx.xml => s.trim().parse::<i64>().ok(),
                            Node::String(s) if s.trim().is_empty() => return Ok(()),
                            _ => None,
                        };
                        millis.and_then(Timestamp::from_epoch_millis).ok_or_else(|| {
                            (
                                at(path),
                                format!(
                                    "expected integer milliseconds since the epoch, got {}",
                                    describe(value)
                                ),
                            )
                        })?
                    }
                };
                canonical::set(out, canonical, Value::String(time.to_rfc3339()));
            }
            Field::Phone { canonical, path } => {
                if let Some(text) = read_text(native, path, scope)? {
                    let phone = phone::normalize(&text).map_err(|e| (at(path), e.to_string()))?;
                    canonical::set(out, canonical, Value::String(phone));
                }
            }
            Field::Region { canonical, path, digits } => {
                if let Some(text) = read_text(native, path, scope)? {
                    if !text.bytes().all(|b| b.is_ascii_digit()) || !digits.contains(&text.len()) {
                        return Err((
                            at(path),
                            format!("expected {}, got {text:?}", region_form(digits)),
                        ));
                    }
                    canonical::set(out, canonical, Value::String(text));
                }
            }
            Field::Enum { canonical, path, what, values } => {
                if let Some(token) = read_token(native, path, scope)? {
                    let choice =
                        values.iter().find(|c| c.native.text == token).ok_or_else(|| {
                            let expected: Vec<&str> =
                                values.iter().map(|c| c.native.text.as_str()).collect();
                            (
                                at(path),
                                format!(
                                    "unknown {what} {token:?}; expected one of {}",
                                    dedup(&expected).join(", ")
                                ),
                            )
                        })?;
                    canonical::set(out, canonical, Value::String(choice.canonical.clone()));
                }
            }
            Field::Bool { canonical, path, yes, no } => {
                if let Some(token) = read_token(native, path, scope)? {
                    let value = if token == yes.text || token == "true" {
                        true
                    } else if token == no.text || token == "false" {
                        false
                    } else {
                        return Err((
                            at(path),
                            format!("expected {} or {}, got {token:?}", yes.text, no.text),
                        ));
                    };
                    canonical::set(out, canonical, Value::Bool(value));
                }
            }
            Field::Point { canonical, source, system, .. } => {
                let coordinates = match source {
                    PointSource::Separate { lon, lat } => {
                        let lon_value = read_number(native, lon, scope)?;
                        let lat_value = read_number(native, lat, scope)?;
                        match (lon_value, lat_value) {
                            (None, None) => None,
                            (Some(_), None) => {
                                return Err((
                                    at(lat),
                                    format!(
                                        "latitude is missing while {} gives a longitude",
                                        at(lon)
                                    ),
                                ))
                            }
                            (None, Some(_)) => {
                                return Err((
                                    at(lon),
                                    format!(
                                        "longitude is missing while {} gives a latitude",
                                        at(lat)
                                    ),
                                ))
                            }
                            (Some(x), Some(y)) => Some((x, y, at(lon))),
                        }
                    }
                    PointSource::Pair(pair) => match pair.get(native) {
                        None | Some(Node::Null) => None,
                        Some(Node::Array(items)) if items.len() == 2 => {
                            let number = |v: &Node| match v {
                                Node::Number(n) => n.as_f64().ok_or_else(|| {
                                    (at(pair), format!("expected a number, got {n}"))
                                }),
                                other => Err((
                                    at(pair),
                                    format!(
                                        "expected [longitude, latitude] numbers, got {}",
                                        describe(other)
                                    ),
                                )),
                            };
                            Some((number(&items[0])?, number(&items[1])?, at(pair)))
                        }
                        Some(Node::Array(items)) if items.is_empty() => None,
                        Some(other) => {
                            return Err((
                                at(pair),
                                format!("expected [longitude, latitude], got {}", describe(other)),
                            ))
                        }
                    },
                };
                if let Some((lon, lat, lon_at)) = coordinates {
                    let system = match system {
                        SystemSource::Fixed(system) => *system,
                        SystemSource::Named { path, systems, .. } => {
                            let names = || {
                                systems
                                    .iter()
                                    .map(|(n, _)| n.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            };
                            let token = read_token(native, path, scope)?.ok_or_else(|| {
                                (
                                    at(path),
                                    format!(
                                        "required when coordinates are given; expected one of {}",
                                        names()
                                    ),
                                )
                            })?;
                            systems.iter().find(|(name, _)| *name == token).map(|(_, s)| *s).ok_or_else(|| {
                                (at(path), format!("unknown coordinate system {token:?}; expected one of {}", names()))
                            })?
                        }
                    };
                    Point::new(lon, lat).map_err(|e| (lon_at.clone(), e))?;
                    let (wlon, wlat) = geo::to_wgs84(system, lon, lat);
                    let point = Point::new(wlon, wlat).map_err(|e| (lon_at, e))?;
                    canonical::set(
                        out,
                        canonical,
                        serde_json::json!({"lat": point.lat, "lon": point.lon}),
                    );
                }
            }
            Field::Category { canonical, code, name } => {
                if let Some(native_code) = read_text(native, code, scope)? {
                    let canonical_code = ctx.codes.canonical_of(&native_code).ok_or_else(|| {
                        let problem = match ctx.codes.retired.iter().find(|r| r.code == native_code) {
                            Some(row) => format!(
                                "category code {native_code:?} ({}) was retired from {}'s transfer-item list; expected a current code",
                                row.name, ctx.endpoint
                            ),
                            None => format!("unknown category code {native_code:?} for endpoint {}", ctx.endpoint),
                        };
                        (at(code), problem)
                    })?;
                    canonical::set(out, canonical, Value::String(canonical_code.to_string()));
                    let mut source = Map::new();
                    source.insert("code".into(), Value::String(native_code));
                    if let Some(name) = name {
                        if let Some(text) = read_text(native, name, scope)? {
                            source.insert("name".into(), Value::String(text));
                        }
                    }
                    canonical::set(out, &source_category_path(canonical), Value::Object(source));
                }
            }
            Field::Flags { canonical, flags, otherwise } => {
                let mut any = false;
                let mut chosen = None;
                for (path, value) in flags {
                    match read_token(native, path, scope)?.as_deref() {
                        None => {}
                        Some("true") => {
                            any = true;
                            chosen = chosen.or(Some(value));
                        }
                        Some("false") => any = true,
                        Some(other) => {
                            return Err((
                                at(path),
                                format!("expected true or false, got {other:?}"),
                            ))
                        }
                    }
                }
                if let Some(value) = chosen.or(any.then_some(otherwise)) {
                    canonical::set(out, canonical, Value::String(value.clone()));
                }
            }
            Field::Const { .. } => {}
            Field::List { canonical, path, items } => {
                let list = scope.name(path);
                let native_items: Vec<&Node> = match path.get(native) {
                    None | Some(Node::Null) => Vec::new(),
                    Some(Node::Array(items)) => items.iter().collect(),
                    Some(single) => vec![single],
                };
                let mut out_items = Vec::with_capacity(native_items.len());
                for (index, item) in native_items.into_iter().enumerate() {
                    let mut out_item = Value::Object(Map::new());
                    let item_scope = Scope::Item { list: &list, index };
                    for field in items {
                        field.read(item, ctx, item_scope, &mut out_item)?;
                    }
                    out_items.push(out_item);
                }
                if !out_items.is_empty() {
                    canonical::set(out, canonical, Value::Array(out_items));
                }
            }
        }
        Ok(())
    }

    /// Writes this field from the canonical tree `source` into the native tree `native`.
    /// Errors name the canonical path.
    pub fn render(&self, source: &Value, xml: bool, native: &mut Node) -> Result<(), FieldError> {
        let Some(value) = canonical::get(source, self.canonical()) else {
            return Ok(());
        };
        let own = self.canonical().to_string();
        let text = |v: &Value| match v {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            Value::Array(_) => Err((own.clone(), "expected text, got a list".to_string())),
            _ => Err((own.clone(), "expected text, got an object".to_string())),
        };
        match self {
            Field::Text { path, .. } => path.set(native, Node::String(text(value)?)),
            Field::Time { path, style, .. } => {
                let time = Timestamp::parse_rfc3339(&text(value)?, false)
                    .map_err(|e| (own.clone(), e.to_string()))?;
                let rendered = match style {
                    TimeFormat::Layout(layout) => Node::String(time.format_beijing(layout)),
                    TimeFormat::Rfc3339 => Node::String(time.to_rfc3339()),
                    TimeFormat::EpochMillis if xml => Node::String(time.epoch_millis().to_string()),
                    TimeFormat::EpochMillis => Node::Number(time.epoch_millis().into()),
                };
                path.set(native, rendered);
            }
            Field::Phone { path, .. } => {
                path.set(native, Node::String(phone::national(&text(value)?)))
            }
            Field::Region { path, digits, .. } => {
                let region = text(value)?;
                // Regions nest by their digits: a township's county is its first six.
                let fitted = match region.len() {
                    n if digits.contains(&n) => region,
                    9 if digits.contains(&6) => region[..6].to_string(),
                    _ => {
                        return Err((
                            own.clone(),
                            format!("the format takes {}, got {region:?}", region_form(digits)),
                        ))
                    }
                };
                path.set(native, Node::String(fitted));
            }
            Field::Enum { path, what, values, .. } => {
                let wanted = text(value)?;
                let choice = values.iter().find(|c| c.canonical == wanted).ok_or_else(|| {
                    (own.clone(), format!("the format has no {what} for {wanted:?}"))
                })?;
                path.set(native, choice.native.value.clone());
            }
            Field::Bool { path, yes, no, .. } => {
                let flag = value
                    .as_bool()
                    .ok_or_else(|| (own.clone(), format!("expected true or false, got {value}")))?;
                path.set(native, if flag { yes.value.clone() } else { no.value.clone() });
            }
            Field::Point { source, system, write, .. } => {
                let coordinate = |key: &str| {
                    value
                        .get(key)
                        .and_then(Value::as_f64)
                        .ok_or_else(|| (format!("{own}.{key}"), "expected a number".to_string()))
                };
                let (lon, lat) = (coordinate("lon")?, coordinate("lat")?);
                let target = match system {
                    SystemSource::Fixed(system) => *system,
                    SystemSource::Named { render, .. } => *render,
                };
                let (x, y) = geo::from_wgs84(target, lon, lat);
                let number = |v: f64| {
                    if xml || *write == NumberStyle::String {
                        Node::String(format!("{v:.6}"))
                    } else {
                        serde_json::Number::from_f64(geo::round6(v))
                            .map_or(Node::Null, Node::Number)
                    }
                };
                match source {
                    PointSource::Separate { lon, lat } => {
                        lon.set(native, number(x));
                        lat.set(native, number(y));
                    }
                    PointSource::Pair(pair) => {
                        pair.set(native, Node::Array(vec![number(x), number(y)]))
                    }
                }
                if let SystemSource::Named { path, systems, render } = system {
                    if let Some((name, _)) = systems.iter().find(|(_, s)| s == render) {
                        path.set(native, Node::String(name.clone()));
                    }
                }
            }
            Field::Category { code, name, canonical } => {
                let source_path = source_category_path(canonical);
                let source = canonical::get(source, &source_path);
                if let Some(code_text) = source.and_then(|s| s.get("code")) {
                    code.set(native, Node::String(text(code_text)?));
                }
                if let (Some(name), Some(name_text)) = (name, source.and_then(|s| s.get("name"))) {
                    name.set(native, Node::String(text(name_text)?));
                }
            }
            Field::Flags { flags, .. } => {
                let wanted = text(value)?;
                let rank = flags.iter().position(|(_, v)| *v == wanted);
                for (i, (path, _)) in flags.iter().enumerate() {
                    path.set(native, Node::Bool(rank.is_some_and(|r| r <= i)));
                }
            }
            Field::Const { path, value, .. } => path.set(native, value.clone()),
            Field::List { path, items, .. } => {
                let Value::Array(canonical_items) = value else {
                    return Err((own, format!("expected a list, got {value}")));
                };
                let mut rendered = Vec::with_capacity(canonical_items.len());
                for (index, item) in canonical_items.iter().enumerate() {
                    let mut native_item = Node::Null;
                    for field in items {
                        field
                            .render(item, xml, &mut native_item)
                            .map_err(|(p, e)| (format!("{own}[{index}].{p}"), e))?;
                    }
                    rendered.push(native_item);
                }
                if !rendered.is_empty() {
                    path.set(native, Node::Array(rendered));
                }
            }
        }
        Ok(())
    }
}

/// The canonical path of the source category that goes with a category path
/// (`case.category` → `case.source_category`).
pub fn source_category_path(category_path: &str) -> String {
    match category_path.rsplit_once('.') {
        Some((parent, _)) => format!("{parent}.source_category"),
        None => "source_category".to_string(),
    }
}

/// How a region field's allowed lengths read in an error: "a six-digit region code".
fn region_form(digits: &[usize]) -> String {
    let words: Vec<&str> = digits.iter().map(|d| if *d == 6 { "six" } else { "nine" }).collect();
    format!("a {}-digit region code", words.join("- or "))
}

fn read_text(native: &Node, path: &Path, scope: Scope<'_>) -> Result<Option<String>, FieldError> {
    match path.get(native) {
        None => Ok(None),
        Some(value) => text_of(value).map_err(|e| (scope.name(path), e)),
    }
}

fn read_token(native: &Node, path: &Path, scope: Scope<'_>) -> Result<Option<String>, FieldError> {
    match path.get(native) {
        None => Ok(None),
        Some(value) => token_of(value).map_err(|e| (scope.name(path), e)),
    }
}

/// A coordinate: a JSON number, or a decimal string (`"121.548164"`).
fn read_number(native: &Node, path: &Path, scope: Scope<'_>) -> Result<Option<f64>, FieldError> {
    let fail =
        |v: &Node| (scope.name(path), format!("expected a decimal number, got {}", describe(v)));
    match path.get(native) {
        None | Some(Node::Null) => Ok(None),
        Some(value @ Node::Number(n)) => n.as_f64().map(Some).ok_or_else(|| fail(value)),
        Some(value @ Node::String(s)) => {
            let t = s.trim();
            if t.is_empty() {
                return Ok(None);
            }
            let decimal =
                t.bytes().all(|b| b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'+');
            match t.parse::<f64>() {
                Ok(n) if decimal && n.is_finite() => Ok(Some(n)),
                _ => Err(fail(value)),
            }
        }
        Some(other) => Err(fail(other)),
    }
}

fn dedup<'a>(items: &[&'a str]) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::with_capacity(items.len());
    for item in items {
        if !out.contains(item) {
            out.push(item);
        }
    }
    out
}

/// A layout must name every part of a time once, and read back what it writes.
fn check_layout(layout: &str) -> Result<(), String> {
    for token in ["yyyy", "MM", "dd", "HH", "mm", "ss"] {
        if layout.matches(token).count() != 1 {
            return Err(format!(
                "a layout names each of yyyy, MM, dd, HH, mm, ss once, got {layout:?}"
            ));
        }
    }
    let sample =
        Timestamp::parse_rfc3339("2023-12-31T23:58:40+08:00", false).map_err(|e| e.to_string())?;
    match Timestamp::parse_beijing(&sample.format_beijing(layout), layout) {
        Ok(back) if back == sample => Ok(()),
        _ => Err(format!("layout {layout:?} does not read back what it writes")),
    }
}
