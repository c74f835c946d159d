//! The figures a province is assessed on (考核), for a region, category, direction and period:
//! transfers each way, received on time (签收及时率), resolved (办结率), resolved within the
//! deadline (按期办结率), called back (回访率), satisfied (满意率), rejected (退回率), the median
//! and p90 time to receive and to resolve, the top categories and the ones rising week on week
//! (热点). `GET /v1/stats` and gRPC `GetStats` answer them; the console draws them.
//!
//! Each figure is read from the transfers' own histories, exactly as `GET /v1/transfers` shows
//! them to the same caller (the same read policy: an endpoint its own, an agency its regions, an
//! operator all), so a figure can always be recounted from the API. Definitions are in
//! docs/DECISIONS.md ("Figures").

use std::collections::BTreeMap;

use serde::Serialize;

use crate::engine::{Engine, EngineError};
use crate::model::{HistoryEvent, ModelError, Satisfaction, State, Timestamp, Transfer};
use crate::security::Identity;
use crate::store::TransferFilter;

/// What to count.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StatsQuery {
    /// A region prefix (`33`, `3302`, `330203`): transfers whose origin, destination or case
    /// location lies in it.
    pub region: Option<String>,
    /// A canonical category (`NP03`).
    pub category: Option<String>,
    /// `110->12345` or `12345->110`.
    pub direction: Option<String>,
    /// Transfers submitted at or after (Unix seconds).
    pub since: i64,
    /// … and before (Unix seconds).
    pub until: i64,
}

impl StatsQuery {
    /// A query from what a caller gave, each part checked (the field named when it is wrong):
    /// the period defaults to the 30 days before `until`, and `until` to now.
    pub fn new(
        region: Option<String>,
        category: Option<String>,
        direction: Option<String>,
        since: Option<i64>,
        until: Option<i64>,
    ) -> Result<StatsQuery, ModelError> {
        let until = until.unwrap_or_else(|| Timestamp::now().unix_seconds() + 1);
        let since = since.unwrap_or(until - 30 * 86_400);
        if since >= until {
            return Err(ModelError::new("since", "expected a time before until"));
        }
        let region = region.filter(|r| !r.is_empty());
        if let Some(region) =
            region.as_ref().filter(|r| r.len() > 9 || !r.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(ModelError::new(
                "region",
                format!("expected a region prefix of up to nine digits, got {region:?}"),
            ));
        }
        let category = category.filter(|c| !c.is_empty());
        if let Some(category) = &category {
            category
                .parse::<crate::model::CategoryCode>()
                .map_err(|e| ModelError::new("category", e))?;
        }
        let direction = direction.filter(|d| !d.is_empty());
        if let Some(direction) =
            direction.as_ref().filter(|d| !matches!(d.as_str(), "110->12345" | "12345->110"))
        {
            return Err(ModelError::new(
                "direction",
                format!("expected 110->12345 or 12345->110, got {direction:?}"),
            ));
        }
        Ok(StatsQuery { region, category, direction, since, until })
    }
}

/// A count and its share of what it is a share of (`null` when that is zero).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Share {
    pub count: u64,
    pub rate: Option<f64>,
}

impl Share {
    fn of(count: u64, whole: u64) -> Share {
        Share { count, rate: (whole > 0).then(|| count as f64 / whole as f64) }
    }
}

/// Median and 90th percentile, in seconds (`null` when nothing was measured).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Times {
    pub count: u64,
    pub median_seconds: Option<i64>,
    pub p90_seconds: Option<i64>,
}

impl Times {
    fn of(mut seconds: Vec<i64>) -> Times {
        seconds.sort_unstable();
        // The nearest-rank percentile: the smallest value at least q of the values are at or below.
        let rank = |q: f64| {
            (!seconds.is_empty()).then(|| {
                seconds[((q * seconds.len() as f64).ceil() as usize).clamp(1, seconds.len()) - 1]
            })
        };
        Times { count: seconds.len() as u64, median_seconds: rank(0.5), p90_seconds: rank(0.9) }
    }
}

/// The figures.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Figures {
    pub transfers: u64,
    pub by_direction: BTreeMap<String, u64>,
    /// Received at all, and by the receive deadline: shares of all transfers.
    pub received: Share,
    pub received_on_time: Share,
    /// Resolved at all, and by the resolve deadline: shares of all transfers.
    pub resolved: Share,
    pub resolved_on_time: Share,
    /// Called back (feedback recorded): a share of those resolved.
    pub called_back: Share,
    /// Satisfied or basically satisfied: a share of those called back.
    pub satisfied: Share,
    /// Rejected (handed back) as they stand now: a share of all transfers.
    pub rejected: Share,
    pub time_to_receive: Times,
    pub time_to_resolve: Times,
    /// The ten most frequent categories, most first.
    pub top_categories: Vec<(String, u64)>,
    /// Hot spots (热点): the categories rising fastest week on week — the last seven days of
    /// the period (or up to now, when the period runs on past it) against the seven before
    /// (which may lie before the period) — most added first, at most ten, only those that rose.
    pub rising_categories: Vec<Rising>,
}

/// A category's transfers in the last week of a period and the week before.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Rising {
    pub category: String,
    pub this_week: u64,
    pub last_week: u64,
}

const WEEK: i64 = 7 * 86_400;

/// The categories that rose week on week before `until`, most added first.
pub fn rising<'a>(transfers: impl IntoIterator<Item = &'a Transfer>, until: i64) -> Vec<Rising> {
    let mut weeks: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for t in transfers {
        let at = t.requested_at.unix_seconds();
        let counts = weeks.entry(t.case.category.as_str().to_string()).or_default();
        if (until - WEEK..until).contains(&at) {
            counts.0 += 1;
        } else if (until - 2 * WEEK..until - WEEK).contains(&at) {
            counts.1 += 1;
        }
    }
    let mut rose: Vec<Rising> = weeks
        .into_iter()
        .filter(|(_, (this, last))| this > last)
        .map(|(category, (this_week, last_week))| Rising { category, this_week, last_week })
        .collect();
    rose.sort_by(|a, b| {
        (b.this_week - b.last_week)
            .cmp(&(a.this_week - a.last_week))
            .then_with(|| a.category.cmp(&b.category))
    });
    rose.truncate(10);
    rose
}

/// When a transfer first reached `state` (an implied step counts: it was passed through).
fn reached(transfer: &Transfer, state: State) -> Option<Timestamp> {
    transfer.history.iter().find(|h| h.state == HistoryEvent::State(state)).map(|h| h.at)
}

/// Whether a transfer is one the query counts.
fn counted(transfer: &Transfer, query: &StatsQuery) -> bool {
    let region = query.region.as_deref().is_none_or(|prefix| transfer.lies_in(prefix));
    let category = query.category.as_deref().is_none_or(|c| transfer.case.category.as_str() == c);
    let direction = query.direction.as_deref().is_none_or(|d| transfer.direction == d);
    region && category && direction
}

/// The figures of these transfers.
pub fn figures<'a>(transfers: impl IntoIterator<Item = &'a Transfer>) -> Figures {
    let (mut total, mut received, mut received_on_time, mut resolved, mut resolved_on_time) =
        (0, 0, 0, 0, 0);
    let (mut called_back, mut satisfied, mut rejected) = (0, 0, 0);
    let (mut to_receive, mut to_resolve) = (Vec::new(), Vec::new());
    let mut by_direction: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_category: BTreeMap<String, u64> = BTreeMap::new();
    for t in transfers {
        total += 1;
        *by_direction.entry(t.direction.clone()).or_default() += 1;
        *by_category.entry(t.case.category.as_str().to_string()).or_default() += 1;
        let submitted = t.requested_at.unix_seconds();
        if let Some(at) = reached(t, State::Received) {
            received += 1;
            received_on_time += u64::from(at <= t.deadlines.receive_by);
            to_receive.push(at.unix_seconds() - submitted);
        }
        if let Some(at) = reached(t, State::Resolved) {
            resolved += 1;
            resolved_on_time += u64::from(t.deadlines.resolve_by.is_none_or(|by| at <= by));
            to_resolve.push(at.unix_seconds() - submitted);
        }
        if let Some(feedback) = &t.feedback {
            called_back += 1;
            satisfied += u64::from(matches!(
                feedback.satisfaction,
                Satisfaction::Satisfied | Satisfaction::BasicallySatisfied
            ));
        }
        rejected += u64::from(t.state == State::Rejected);
    }
    let mut top_categories: Vec<(String, u64)> = by_category.into_iter().collect();
    top_categories.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top_categories.truncate(10);
    Figures {
        transfers: total,
        by_direction,
        received: Share::of(received, total),
        received_on_time: Share::of(received_on_time, total),
        resolved: Share::of(resolved, total),
        resolved_on_time: Share::of(resolved_on_time, total),
        called_back: Share::of(called_back, resolved),
        satisfied: Share::of(satisfied, called_back),
        rejected: Share::of(rejected, total),
        time_to_receive: Times::of(to_receive),
        time_to_resolve: Times::of(to_resolve),
        top_categories,
        rising_categories: Vec::new(),
    }
}

/// The figures `who` may see for `query`: the transfers `GET /v1/transfers` would list to
/// `who` in the period, narrowed by region, category and direction. (It reads them page by
/// page: proportional to the period's transfers, not yet pre-aggregated.)
pub async fn compute(
    engine: &Engine,
    who: &Identity,
    query: &StatsQuery,
) -> Result<Figures, EngineError> {
    // The two weeks before `until` are read too, for the week-on-week comparison.
    let mut chosen = Vec::new();
    let mut after = None;
    loop {
        let filter = TransferFilter {
            party: None,
            state: None,
            overdue: None,
            since: Some(
                query.since.min(query.until.min(Timestamp::now().unix_seconds() + 1) - 2 * WEEK),
            ),
            until: Some(query.until),
            limit: 500,
            after,
            reference: None,
            phone: None,
        };
        let (page, next) = engine.transfers_for(who, filter).await?;
        chosen.extend(page.into_iter().filter(|t| counted(t, query)));
        match next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let in_period = chosen.iter().filter(|t| t.requested_at.unix_seconds() >= query.since);
    let mut figures = figures(in_period);
    // A period that runs on past now (this month's report) compares the last seven days.
    let end = query.until.min(Timestamp::now().unix_seconds() + 1);
    figures.rising_categories = rising(&chosen, end);
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let times = Times::of(vec![10, 1, 9, 2, 8, 3, 7, 4, 6, 5]);
        assert_eq!((times.median_seconds, times.p90_seconds), (Some(5), Some(9)));
        assert_eq!(Times::of(vec![42]).p90_seconds, Some(42));
        assert_eq!(Times::of(Vec::new()).median_seconds, None);
    }

    #[test]
    fn rising_compares_the_last_week_with_the_one_before() {
        let until = 1_800_000_000;
        let at = |category: &str, seconds_before: i64| {
            let mut t: Transfer = serde_json::from_value(serde_json::json!({
                "transfer_id": "T1",
                "case": {"case_id": "c", "origin": {"endpoint": "330200/110", "local_id": "J"},
                         "received_at": "2023-05-08T09:41:09+08:00", "category": "NP07", "summary": "s"},
                "from": "330200/110", "to": "330200/12345", "direction": "110->12345",
                "requested_at": "2023-05-08T09:43:00+08:00",
                "deadlines": {"receive_by": "2023-05-08T10:13:00+08:00"}, "state": "submitted", "history": []
            }))
            .unwrap();
            t.requested_at = Timestamp::from_unix_seconds(until - seconds_before).unwrap();
            t.case.category = category.parse().unwrap();
            t
        };
        let day = 86_400;
        let transfers = vec![
            at("NP03", day),      // this week
            at("NP03", 2 * day),  // this week
            at("NP03", 8 * day),  // last week
            at("PM01", 3 * day),  // this week
            at("PM02", 9 * day),  // last week only: fell
            at("PM02", 20 * day), // before both weeks: not counted
            at("NP05", 6 * day),  // this week
            at("NP05", 10 * day), // last week: level
        ];
        let rose = rising(&transfers, until);
        let summary: Vec<_> =
            rose.iter().map(|r| (r.category.as_str(), r.this_week, r.last_week)).collect();
        assert_eq!(summary, vec![("NP03", 2, 1), ("PM01", 1, 0)]);
    }

    #[test]
    fn a_share_of_nothing_has_no_rate() {
        assert_eq!(Share::of(0, 0).rate, None);
        assert_eq!(Share::of(1, 4).rate, Some(0.25));
    }
}
