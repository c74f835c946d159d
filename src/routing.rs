//! Three-tier routing (三级分流, `canonical.md` "Routing"): where a transfer goes when its
//! sender names only the other platform and, perhaps, a region.
//!
//! The endpoint is the region's city platform where one is registered, else its province's.
//! The unit that handles the case there comes from the shared `directory` dataset: the most
//! specific record for the case's category wins — township (nine digits) over county over city
//! (`XXXX00`) over province (`XX0000`).
//!
//! Routing is on every submission's path, so the directory is read from memory (a
//! [`LiveDataset`], loaded before the server says it is ready and following the dataset's log).

use crate::formats::Registry;
use crate::model::{EndpointId, Platform, Record, Unit};
use crate::store::live::LiveDataset;
use crate::store::{Store, StoreError};

/// The directory dataset's name.
pub const DIRECTORY: &str = "directory";

/// Why a transfer cannot be routed.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// No endpoint of the platform serves the region (names the field that led there).
    #[error("{field}: no {platform} endpoint is registered for region {region}")]
    NoEndpoint { field: &'static str, platform: &'static str, region: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where a transfer goes, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub endpoint: EndpointId,
    /// The directory's handling unit, when a record covers the category there.
    pub unit: Option<Unit>,
    /// The directory records found, most specific first; the first chose the unit.
    pub records: Vec<Record>,
    /// The directory keys looked up, most specific first.
    pub considered: Vec<String>,
}

/// The endpoint of `platform` serving `region` (six or nine digits): the region's city
/// platform where one is registered, else its province's.
pub fn endpoint_for(registry: &Registry, region: &str, platform: Platform) -> Option<EndpointId> {
    if region.len() < 6 {
        return None;
    }
    [format!("{}00", &region[..4]), format!("{}0000", &region[..2])]
        .into_iter()
        .map(|candidate| EndpointId { region: candidate, platform })
        .find(|id| registry.endpoint(id).is_ok())
}

/// Whether region `outer` contains region `inner` (`canonical.md`: regions nest by their
/// digits — a province `XX0000` holds every code starting `XX`, a city `XXYY00` every code
/// starting `XXYY`, a county `XXYYZZ` every township `XXYYZZNNN`). A region contains itself.
pub fn contains(outer: &str, inner: &str) -> bool {
    let prefix = match outer.len() {
        6 if outer.ends_with("0000") => &outer[..2],
        6 if outer.ends_with("00") => &outer[..4],
        _ => outer,
    };
    inner.starts_with(prefix)
}

/// The region a transfer is routed on, and the field it came from (`canonical.md`, "Routing"):
/// when `to_region` contains the case's `location`, the location (the more specific); else
/// `to_region`; else the location; else the sender's own region.
pub fn region_for<'a>(
    to_region: Option<&'a str>,
    location: Option<&'a str>,
    sender: &'a str,
) -> (&'a str, &'static str) {
    match (to_region, location) {
        (Some(to), Some(place)) if contains(to, place) => (place, "case.location.region"),
        (Some(to), _) => (to, "to_region"),
        (None, Some(place)) => (place, "case.location.region"),
        (None, None) => (sender, "to_region"),
    }
}

/// The directory keys for a category in a region, most specific first: the township (when the
/// region has nine digits), the county, the city, the province — each once.
pub fn directory_keys(region: &str, category: &str) -> Vec<String> {
    let mut places = Vec::with_capacity(4);
    if region.len() == 9 {
        places.push(region.to_string());
    }
    if region.len() >= 6 {
        places.push(region[..6].to_string());
        places.push(format!("{}00", &region[..4]));
        places.push(format!("{}0000", &region[..2]));
    }
    places.dedup();
    places.into_iter().map(|place| format!("{place}/{category}")).collect()
}

/// The tier a directory key's region is at.
pub fn tier_of(region: &str) -> &'static str {
    match region.len() {
        9 => "township",
        _ if region.ends_with("0000") => "province",
        _ if region.ends_with("00") => "city",
        _ => "county",
    }
}

/// One cell of the directory's coverage: a place and a category, and the record that answers
/// for it (the most specific of [`directory_keys`]), if any.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Cell {
    pub region: String,
    pub category: String,
    /// The key of the record that gives the unit; `None`: no unit at all.
    pub answered_by: Option<String>,
    /// Its tier (`township`, `county`, `city`, `province`).
    pub tier: Option<&'static str>,
}

impl Cell {
    /// Whether the place's own record answers (not a coarser tier, not nobody).
    pub fn covered_at_its_tier(&self) -> bool {
        self.tier == Some(tier_of(&self.region))
    }
}

/// The coverage of `region` for `categories` (`liandong route --coverage`): a cell for each
/// township and county the directory names inside `region` (and `region` itself when it is a
/// county or township), for each category.
pub fn coverage(
    directory: &crate::store::live::View<'_>,
    region: &str,
    categories: &[&str],
) -> Vec<Cell> {
    let mut places: std::collections::BTreeSet<String> = directory
        .keys()
        .filter_map(|key| key.split_once('/').map(|(place, _)| place))
        .filter(|place| matches!(tier_of(place), "township" | "county") && contains(region, place))
        .map(str::to_string)
        .collect();
    if matches!(tier_of(region), "township" | "county") {
        places.insert(region.to_string());
    }
    let mut cells = Vec::with_capacity(places.len() * categories.len());
    for place in &places {
        for category in categories {
            let answered_by =
                directory_keys(place, category).into_iter().find(|key| directory.contains(key));
            let tier =
                answered_by.as_deref().and_then(|k| k.split_once('/')).map(|(r, _)| tier_of(r));
            cells.push(Cell {
                region: place.clone(),
                category: category.to_string(),
                answered_by,
                tier,
            });
        }
    }
    cells
}

/// Routes a transfer of `category` for `region` to `platform`. `field` names where the region
/// came from, for the error.
pub async fn route(
    directory: &LiveDataset,
    store: &Store,
    registry: &Registry,
    platform: Platform,
    region: &str,
    category: &str,
    field: &'static str,
) -> Result<Decision, RouteError> {
    let endpoint = endpoint_for(registry, region, platform).ok_or_else(|| {
        RouteError::NoEndpoint { field, platform: platform.as_str(), region: region.to_string() }
    })?;
    let considered = directory_keys(region, category);
    let found = directory.lookup(store, &considered).await?;
    let records: Vec<Record> =
        considered.iter().filter_map(|key| found.iter().find(|r| &r.key == key)).cloned().collect();
    let unit = records.first().and_then(|r| unit_of(&r.body));
    Ok(Decision { endpoint, unit, records, considered })
}

/// The `unit` of a directory record's body.
pub fn unit_of(body: &serde_json::Value) -> Option<Unit> {
    serde_json::from_value(body.get("unit")?.clone()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_run_from_township_to_province() {
        assert_eq!(
            directory_keys("330203005", "NP07"),
            ["330203005/NP07", "330203/NP07", "330200/NP07", "330000/NP07"]
        );
        assert_eq!(directory_keys("330200", "NP07"), ["330200/NP07", "330000/NP07"]);
        assert_eq!(directory_keys("330000", "PM01"), ["330000/PM01"]);
    }

    #[test]
    fn regions_nest_by_their_digits() {
        assert!(contains("330000", "330203101"), "a province holds its townships");
        assert!(contains("330200", "330203101"), "a city holds its townships");
        assert!(contains("330203", "330203101"), "a county holds its townships");
        assert!(contains("330200", "330203"));
        assert!(contains("330203", "330203"));
        assert!(!contains("330203", "330204001"), "another county's township");
        assert!(!contains("330100", "330203101"), "another city");
        assert!(!contains("330203101", "330203"), "a township does not hold its county");
        assert!(!contains("320000", "330203"));
    }

    #[test]
    fn the_city_platform_is_preferred_to_the_province() {
        let registry = Registry::builtin();
        let ningbo = endpoint_for(&registry, "330203005", Platform::Hotline).unwrap();
        assert_eq!(ningbo.to_string(), "330200/12345");
        let hangzhou = endpoint_for(&registry, "330106", Platform::Hotline).unwrap();
        assert_eq!(hangzhou.to_string(), "330000/12345");
        assert_eq!(endpoint_for(&registry, "990101", Platform::Police), None);
    }
}
