//! The figures a province is assessed on (考核), for a region, category, direction and period:
//! transfers each way, received on time (签收及时率), resolved (办结率), resolved within the
//! deadline (按期办结率), called back (回访率), satisfied (满意率), rejected (退回率), the median
//! and p90 time to receive and to resolve, the top categories and the ones rising week on week
//! (热点), and what linkage did (routing basis, rejection reasons, disputes, urges, extensions,
//! assists: `linkage.md`). `GET /v1/stats` and gRPC `GetStats` answer them; the console draws
//! them.
//!
//! Each figure is read from the transfers' own histories, exactly as `GET /v1/transfers` shows
//! them to the same caller (the same read policy: an endpoint its own, an agency its regions, an
//! operator all), so a figure can always be recounted from the API. Definitions are in
//! docs/DECISIONS.md ("Figures").

use std::collections::BTreeMap;

use serde::Serialize;

use crate::engine::{Engine, EngineError};
use crate::model::ReasonCode;
use crate::model::{ModelError, Timestamp};
use crate::security::Identity;
use crate::store::facts::{Aggregates, Counts, FactsFilter, LinkageCounts, BASES};

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
    /// The nearest-rank percentiles of a distribution of (seconds, how many), ascending: the
    /// smallest value at least q of the values are at or below.
    fn of(distribution: &[(i64, u64)]) -> Times {
        let count: u64 = distribution.iter().map(|(_, n)| n).sum();
        let rank = |q: f64| {
            (count > 0).then(|| {
                let wanted = ((q * count as f64).ceil() as u64).clamp(1, count);
                let mut seen = 0;
                distribution
                    .iter()
                    .find(|(_, n)| {
                        seen += n;
                        seen >= wanted
                    })
                    .map_or(0, |(seconds, _)| *seconds)
            })
        };
        Times { count, median_seconds: rank(0.5), p90_seconds: rank(0.9) }
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
    /// What linkage did (`linkage.md`, "The figures these feed").
    pub linkage: LinkageFigures,
}

/// The linkage figures (`linkage.md`): why transfers went where they went, why they came back,
/// the disputes and how they ended, urges, extensions, and help on site.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LinkageFigures {
    /// Transfers by routing basis; `none`: a category on no transfer-item list (what a
    /// catalogue revision looks at).
    pub routing_basis: BTreeMap<String, u64>,
    /// Transfers ever rejected, by their last rejection's reason.
    pub rejections_by_reason: BTreeMap<String, u64>,
    pub disputes: DisputeFigures,
    pub urges: UrgeFigures,
    pub extensions: ExtensionFigures,
    pub assists: AssistFigures,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DisputeFigures {
    pub opened: u64,
    pub open: u64,
    pub upheld: u64,
    pub overruled: u64,
    pub first_receiver: u64,
    /// Decided by the default: `dispute_within` passed undecided.
    pub decided_late: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UrgeFigures {
    pub total: u64,
    /// Transfers urged at least once, as a share of all transfers.
    pub urged: Share,
    /// Urges per transfer (`null` with no transfers).
    pub per_transfer: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExtensionFigures {
    pub asked: u64,
    pub granted: u64,
    pub refused: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AssistFigures {
    /// Assists (PM10/NP11) asked for.
    pub asked: u64,
    /// Committed (accepted), a share of those asked.
    pub committed: Share,
    /// On the scene by `needed_by`, a share of those asked.
    pub on_scene_in_time: Share,
}

impl LinkageFigures {
    fn of(c: &LinkageCounts, transfers: u64) -> LinkageFigures {
        let routing_basis = BASES
            .iter()
            .zip(c.by_basis)
            .map(|(b, n)| (b.map_or("none", |b| b.as_str()).to_string(), n))
            .collect();
        let rejections_by_reason = ReasonCode::ALL
            .iter()
            .zip(c.rejected_by_reason)
            .map(|(code, n)| (code.as_str().to_string(), n))
            .collect();
        let [open, upheld, overruled, first_receiver] = c.disputes;
        LinkageFigures {
            routing_basis,
            rejections_by_reason,
            disputes: DisputeFigures {
                opened: c.disputes.iter().sum(),
                open,
                upheld,
                overruled,
                first_receiver,
                decided_late: c.disputes_decided_late,
            },
            urges: UrgeFigures {
                total: c.urges,
                urged: Share::of(c.urged, transfers),
                per_transfer: (transfers > 0).then(|| c.urges as f64 / transfers as f64),
            },
            extensions: ExtensionFigures {
                asked: c.extensions_asked,
                granted: c.extensions_granted,
                refused: c.extensions_refused,
            },
            assists: AssistFigures {
                asked: c.assists,
                committed: Share::of(c.assists_committed, c.assists),
                on_scene_in_time: Share::of(c.assists_on_time, c.assists),
            },
        }
    }
}

/// A category's transfers in the last week of a period and the week before.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Rising {
    pub category: String,
    pub this_week: u64,
    pub last_week: u64,
}

const WEEK: i64 = 7 * 86_400;

/// The categories that rose from last week's counts to this week's, most added first.
pub fn rising(this_week: &[(String, u64)], last_week: &[(String, u64)]) -> Vec<Rising> {
    let before =
        |category: &str| last_week.iter().find(|(c, _)| c == category).map_or(0, |(_, n)| *n);
    let mut rose: Vec<Rising> = this_week
        .iter()
        .map(|(category, n)| Rising {
            category: category.clone(),
            this_week: *n,
            last_week: before(category),
        })
        .filter(|r| r.this_week > r.last_week)
        .collect();
    rose.sort_by(|a, b| {
        (b.this_week - b.last_week)
            .cmp(&(a.this_week - a.last_week))
            .then_with(|| a.category.cmp(&b.category))
    });
    rose.truncate(10);
    rose
}

/// The figures of the facts' aggregates.
pub fn figures(aggregates: &Aggregates) -> Figures {
    let mut total = Counts::default();
    let mut by_direction: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_category: BTreeMap<String, u64> = BTreeMap::new();
    for c in &aggregates.counts {
        *by_direction.entry(c.direction.clone()).or_default() += c.transfers;
        *by_category.entry(c.category.clone()).or_default() += c.transfers;
        total.transfers += c.transfers;
        total.received += c.received;
        total.received_on_time += c.received_on_time;
        total.resolved += c.resolved;
        total.resolved_on_time += c.resolved_on_time;
        total.called_back += c.called_back;
        total.satisfied += c.satisfied;
        total.rejected += c.rejected;
        total.linkage.merge(&c.linkage);
    }
    let mut top_categories: Vec<(String, u64)> = by_category.into_iter().collect();
    top_categories.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top_categories.truncate(10);
    let all = total.transfers;
    Figures {
        transfers: all,
        by_direction,
        received: Share::of(total.received, all),
        received_on_time: Share::of(total.received_on_time, all),
        resolved: Share::of(total.resolved, all),
        resolved_on_time: Share::of(total.resolved_on_time, all),
        called_back: Share::of(total.called_back, total.resolved),
        satisfied: Share::of(total.satisfied, total.called_back),
        rejected: Share::of(total.rejected, all),
        time_to_receive: Times::of(&aggregates.to_receive),
        time_to_resolve: Times::of(&aggregates.to_resolve),
        top_categories,
        rising_categories: Vec::new(),
        linkage: LinkageFigures::of(&total.linkage, all),
    }
}

/// The figures `who` may see for `query`: the transfers `GET /v1/transfers` would list to
/// `who` (the same read policy, [`crate::security::policy::Policy::scope`]) submitted in the
/// period, narrowed by region, category and direction — aggregated by the store over the
/// transfers' facts ([`crate::store::facts`]), not read one by one.
pub async fn compute(
    engine: &Engine,
    who: &Identity,
    query: &StatsQuery,
) -> Result<Figures, EngineError> {
    let filter = FactsFilter {
        since: query.since,
        until: query.until,
        region: query.region.clone(),
        category: query.category.clone(),
        direction: query.direction.clone(),
        ..FactsFilter::default()
    };
    let mut figures = figures(&engine.figures_for(who, filter.clone()).await?);
    // A period that runs on past now (this month's report) compares the last seven days.
    let end = query.until.min(Timestamp::now().unix_seconds() + 1);
    let week = |since, until| FactsFilter { since, until, ..filter.clone() };
    let this_week = engine.categories_for(who, week(end - WEEK, end)).await?;
    let last_week = engine.categories_for(who, week(end - 2 * WEEK, end - WEEK)).await?;
    figures.rising_categories = rising(&this_week, &last_week);
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let ones: Vec<(i64, u64)> = (1..=10).map(|s| (s, 1)).collect();
        let times = Times::of(&ones);
        assert_eq!((times.median_seconds, times.p90_seconds), (Some(5), Some(9)));
        assert_eq!(Times::of(&[(42, 1)]).p90_seconds, Some(42));
        assert_eq!(Times::of(&[]).median_seconds, None);
        // weighted: 7 at 10 s, 2 at 600 s, 1 at 7200 s
        let times = Times::of(&[(10, 7), (600, 2), (7200, 1)]);
        assert_eq!(
            (times.count, times.median_seconds, times.p90_seconds),
            (10, Some(10), Some(600))
        );
    }

    #[test]
    fn rising_compares_this_week_with_the_last() {
        let week = |pairs: &[(&str, u64)]| -> Vec<(String, u64)> {
            pairs.iter().map(|(c, n)| (c.to_string(), *n)).collect()
        };
        let this = week(&[("NP03", 2), ("PM01", 1), ("NP05", 1)]);
        let last = week(&[("NP03", 1), ("PM02", 1), ("NP05", 1)]);
        let rose = rising(&this, &last);
        let summary: Vec<_> =
            rose.iter().map(|r| (r.category.as_str(), r.this_week, r.last_week)).collect();
        assert_eq!(summary, vec![("NP03", 2, 1), ("PM01", 1, 0)], "PM02 fell, NP05 is level");
    }

    #[test]
    fn a_share_of_nothing_has_no_rate() {
        assert_eq!(Share::of(0, 0).rate, None);
        assert_eq!(Share::of(1, 4).rate, Some(0.25));
    }
}
