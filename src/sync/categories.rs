//! The transfer-item lists (分流转办事项清单) as the live code tables: each endpoint's
//! `categories` records (`ENDPOINT/NATIVE_CODE` → canonical code and name) are what its
//! documents are read and written with, so a province adds, re-points or retires a transfer
//! item by writing the dataset, without a release.
//!
//! The profiles' tables are the lists' initial contents (seeded at start, never over a record
//! already there, tombstones included — a retired item stays retired). A code with no record
//! keeps its profile row; a deleted code is retired: refused on reading, naming it. The
//! catch-all codes stay (a canonical code with no row renders as its side's catch-all).

use super::live::LiveDataset;
use crate::formats::field::{CodeRow, CodeTable};
use crate::formats::Registry;
use crate::model::Record;

/// Rebuilds every endpoint's live code table from the `categories` records in memory.
/// The tables are set while the records are read, so two rebuilds racing cannot leave an older
/// one in place.
pub async fn apply(registry: &Registry, categories: &LiveDataset) {
    categories
        .read(|view| {
            for endpoint in registry.endpoints() {
                let prefix = format!("{}/", endpoint.id);
                let (live, retired) = view.with_prefix(&prefix);
                endpoint.set_code_table(table(&endpoint.codes, &prefix, &live, &retired));
            }
        })
        .await
}

/// An endpoint's code table: its profile rows in their order (as the records now say, retired
/// ones left out), then the codes the records add, in key order.
fn table(profile: &CodeTable, prefix: &str, live: &[Record], retired: &[Record]) -> CodeTable {
    let code_of =
        |record: &Record| record.key.strip_prefix(prefix).unwrap_or(&record.key).to_string();
    let row_of = |record: &Record| CodeRow {
        code: code_of(record),
        name: record.body.get("name").and_then(|v| v.as_str()).unwrap_or_default().to_string(),
        canonical: record
            .body
            .get("canonical")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string(),
    };
    let live_rows: Vec<CodeRow> = live.iter().map(row_of).collect();
    let retired_rows: Vec<CodeRow> = retired.iter().map(row_of).collect();
    let mut rows = Vec::with_capacity(profile.rows.len() + live_rows.len());
    for row in &profile.rows {
        if let Some(current) = live_rows.iter().find(|r| r.code == row.code) {
            rows.push(current.clone());
        } else if !retired_rows.iter().any(|r| r.code == row.code) {
            rows.push(row.clone());
        }
    }
    for row in &live_rows {
        if !profile.rows.iter().any(|r| r.code == row.code) {
            rows.push(row.clone());
        }
    }
    CodeTable {
        rows,
        catch_all_np: profile.catch_all_np.clone(),
        catch_all_pm: profile.catch_all_pm.clone(),
        retired: retired_rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Timestamp;

    fn record(key: &str, canonical: &str, name: &str) -> Record {
        Record {
            dataset: "categories".into(),
            key: key.into(),
            owner: "360000/110".into(),
            version: 2,
            updated_at: Timestamp::now(),
            deleted: false,
            body: serde_json::json!({"canonical": canonical, "name": name}),
        }
    }

    fn profile() -> CodeTable {
        let row = |code: &str, canonical: &str| CodeRow {
            code: code.into(),
            name: format!("n{code}"),
            canonical: canonical.into(),
        };
        CodeTable {
            rows: vec![row("A", "NP07"), row("B", "NP03"), row("Z", "NP99"), row("Y", "PM99")],
            catch_all_np: "Z".into(),
            catch_all_pm: "Y".into(),
            retired: vec![],
        }
    }

    #[test]
    fn records_re_point_add_and_retire_codes_and_the_rest_keep_the_profile() {
        let prefix = "360000/110/";
        let live = vec![record("360000/110/A", "NP01", "改"), record("360000/110/C", "NP05", "新")];
        let retired = vec![record("360000/110/B", "NP03", "劳资")];
        let table = table(&profile(), prefix, &live, &retired);
        assert_eq!(table.canonical_of("A"), Some("NP01"));
        assert_eq!(table.canonical_of("B"), None);
        assert_eq!(table.canonical_of("C"), Some("NP05"));
        assert_eq!(table.canonical_of("Z"), Some("NP99"));
        assert_eq!(
            table.retired.iter().map(|r| (r.code.as_str(), r.name.as_str())).collect::<Vec<_>>(),
            [("B", "劳资")]
        );
        let codes: Vec<&str> = table.rows.iter().map(|r| r.code.as_str()).collect();
        assert_eq!(codes, ["A", "Z", "Y", "C"]);
        // NP07 has no row any more: it renders as the catch-all.
        assert_eq!(
            table.row_for("NP07", None).map(|(r, catch_all)| (r.code.as_str(), catch_all)),
            Some(("Z", true))
        );
    }
}
