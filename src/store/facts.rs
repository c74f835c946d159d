//! The figures' facts: one narrow row per transfer (`transfer_facts`) — who, where, what,
//! when it was submitted, received and resolved against its deadlines, called back, satisfied,
//! rejected — kept in the same transaction as every change of the transfer (they are written
//! where its feed event is), so the figures are exact at every commit. The figures of a period
//! are then SQL aggregates over a clustered range of these rows, not a decode of every
//! transfer's document: a province's year of a million transfers answers in milliseconds
//! (docs/PERFORMANCE.md), where reading the documents took seconds.
//!
//! What counts as received, resolved, on time, called back and satisfied is defined here, once
//! (docs/DECISIONS.md, "Figures").

use sqlx::{Any, Row, Transaction};

use super::sql::{values, ROWS_PER_STATEMENT};
use super::{Backend, Store, StoreError};
use crate::model::{
    category, DisputeOutcome, DisputeState, HistoryEvent, ReasonCode, RoutingBasis, Satisfaction,
    State, Timestamp, Transfer,
};

/// One transfer's facts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fact {
    pub transfer_id: String,
    /// When the gateway took it (Unix seconds): what a period counts by.
    pub submitted_at: i64,
    /// The request's own time: what times to receive and resolve run from.
    pub requested_at: i64,
    pub origin: String,
    pub destination: String,
    /// The case location's region, or empty.
    pub location: String,
    pub category: String,
    pub direction: String,
    pub receive_by: i64,
    pub resolve_by: Option<i64>,
    /// The first `received` entry, an implied one included (a desk that accepts at once has
    /// received).
    pub received_at: Option<i64>,
    pub resolved_at: Option<i64>,
    /// Feedback recorded (the origin called the citizen back).
    pub called_back: bool,
    /// … and the citizen was satisfied or basically satisfied.
    pub satisfied: bool,
    /// It stands rejected now.
    pub rejected: bool,
    /// What linkage (`linkage.md`) did with it.
    pub linkage: LinkageFact,
}

/// The routing bases in the order the facts number them (0: none).
pub const BASES: [Option<RoutingBasis>; 5] = [
    None,
    Some(RoutingBasis::Catalogue),
    Some(RoutingBasis::Negotiated),
    Some(RoutingBasis::FirstReceiver),
    Some(RoutingBasis::SafetyFirst),
];

/// A transfer's linkage facts, as small numbers (a million of them stay small in memory).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkageFact {
    /// Its routing basis: an index of [`BASES`].
    pub basis: u8,
    /// 0 never rejected; else 1 + the index in [`ReasonCode::ALL`] of its last rejection's code.
    pub reason: u8,
    /// 0 no dispute; 1 open; 2 upheld, 3 overruled, 4 first receiver.
    pub dispute: u8,
    /// Its dispute was decided by the default (`dispute_within` passed undecided).
    pub dispute_late: bool,
    pub urges: u32,
    pub extensions_asked: u8,
    pub extensions_granted: u8,
    pub extensions_refused: u8,
    /// 0 not an assist; 1 asked; 2 committed (accepted); 3 on the scene by `needed_by`.
    pub assist: u8,
}

impl LinkageFact {
    /// The fact in one word, as the index in memory keeps it (a million rows: 8 MB): basis,
    /// reason, dispute (3 bits each), decided late (1), assist (2), then urges (16, saturating)
    /// and the extensions asked, granted, refused (8 each).
    fn pack(&self) -> u64 {
        u64::from(self.basis & 7)
            | u64::from(self.reason & 7) << 3
            | u64::from(self.dispute & 7) << 6
            | u64::from(self.dispute_late) << 9
            | u64::from(self.assist & 3) << 10
            | u64::from(self.urges.min(u32::from(u16::MAX))) << 12
            | u64::from(self.extensions_asked) << 28
            | u64::from(self.extensions_granted) << 36
            | u64::from(self.extensions_refused) << 44
    }

    fn unpack(word: u64) -> LinkageFact {
        let bits = |shift: u32, width: u32| ((word >> shift) & ((1 << width) - 1)) as u8;
        LinkageFact {
            basis: bits(0, 3),
            reason: bits(3, 3),
            dispute: bits(6, 3),
            dispute_late: bits(9, 1) == 1,
            assist: bits(10, 2),
            urges: ((word >> 12) & 0xffff) as u32,
            extensions_asked: bits(28, 8),
            extensions_granted: bits(36, 8),
            extensions_refused: bits(44, 8),
        }
    }

    pub fn of(transfer: &Transfer) -> LinkageFact {
        let count = |event: HistoryEvent| {
            transfer.history.iter().filter(|h| h.state == event).count().min(255) as u8
        };
        let reason = transfer
            .history
            .iter()
            .rev()
            .find(|h| h.state == HistoryEvent::State(State::Rejected))
            .map_or(0, |h| {
                let code = h.reason_code.unwrap_or(ReasonCode::Other);
                1 + ReasonCode::ALL.iter().position(|c| *c == code).unwrap_or(5) as u8
            });
        let dispute = transfer.dispute.as_ref().map_or(0, |d| match (d.state, &d.decision) {
            (DisputeState::Open, _) | (_, None) => 1,
            (_, Some(decision)) => match decision.outcome {
                DisputeOutcome::Upheld => 2,
                DisputeOutcome::Overruled => 3,
                DisputeOutcome::FirstReceiver => 4,
            },
        });
        let assist = if category::is_assist(transfer.case.category.as_str()) {
            let at = |state: State| {
                transfer
                    .history
                    .iter()
                    .find(|h| h.state == HistoryEvent::State(state))
                    .map(|h| h.at)
            };
            let on_scene = at(State::InProgress)
                .is_some_and(|t| transfer.needed_by.is_none_or(|needed| t <= needed));
            let committed = at(State::Accepted).is_some() || at(State::InProgress).is_some();
            if on_scene {
                3
            } else if committed {
                2
            } else {
                1
            }
        } else {
            0
        };
        LinkageFact {
            basis: BASES.iter().position(|b| *b == transfer.routing_basis).unwrap_or(0) as u8,
            reason,
            dispute,
            dispute_late: transfer
                .dispute
                .as_ref()
                .and_then(|d| d.decision.as_ref())
                .is_some_and(|d| d.by == "gateway"),
            urges: transfer.urges,
            extensions_asked: count(HistoryEvent::ExtensionRequested),
            extensions_granted: count(HistoryEvent::ExtensionGranted),
            extensions_refused: count(HistoryEvent::ExtensionRefused),
            assist,
        }
    }

    /// The columns of `transfer_facts` that hold it, in order.
    const COLUMNS: [&'static str; 9] = [
        "basis",
        "reason",
        "dispute",
        "dispute_late",
        "urges",
        "ext_asked",
        "ext_granted",
        "ext_refused",
        "assist",
    ];

    fn values(&self) -> [i64; 9] {
        [
            i64::from(self.basis),
            i64::from(self.reason),
            i64::from(self.dispute),
            i64::from(self.dispute_late),
            i64::from(self.urges),
            i64::from(self.extensions_asked),
            i64::from(self.extensions_granted),
            i64::from(self.extensions_refused),
            i64::from(self.assist),
        ]
    }

    fn from_values(v: &[i64]) -> Option<LinkageFact> {
        let small = |i: usize| u8::try_from(*v.get(i)?).ok();
        Some(LinkageFact {
            basis: small(0)?,
            reason: small(1)?,
            dispute: small(2)?,
            dispute_late: *v.get(3)? == 1,
            urges: u32::try_from(*v.get(4)?).ok()?,
            extensions_asked: small(5)?,
            extensions_granted: small(6)?,
            extensions_refused: small(7)?,
            assist: small(8)?,
        })
    }
}

/// Linkage counts of a group of transfers (`linkage.md`, "The figures these feed").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkageCounts {
    /// Transfers by routing basis, in [`BASES`] order (none first).
    pub by_basis: [u64; 5],
    /// Transfers ever rejected, by their last rejection's reason, in [`ReasonCode::ALL`] order.
    pub rejected_by_reason: [u64; 6],
    /// Disputes open, upheld, overruled, first receiver.
    pub disputes: [u64; 4],
    /// Disputes decided by the default.
    pub disputes_decided_late: u64,
    pub urges: u64,
    /// Transfers urged at least once.
    pub urged: u64,
    pub extensions_asked: u64,
    pub extensions_granted: u64,
    pub extensions_refused: u64,
    pub assists: u64,
    pub assists_committed: u64,
    pub assists_on_time: u64,
}

impl LinkageCounts {
    /// Adds a packed fact ([`LinkageFact::pack`]); most transfers have nothing but a basis.
    fn add_packed(&mut self, word: u64) {
        self.by_basis[((word & 7) as usize).min(4)] += 1;
        if word >> 3 != 0 {
            self.add_rest(&LinkageFact::unpack(word));
        }
    }

    fn add_rest(&mut self, f: &LinkageFact) {
        if f.reason > 0 {
            self.rejected_by_reason[usize::from(f.reason - 1).min(5)] += 1;
        }
        if f.dispute > 0 {
            self.disputes[usize::from(f.dispute - 1).min(3)] += 1;
        }
        self.disputes_decided_late += u64::from(f.dispute_late);
        self.urges += u64::from(f.urges);
        self.urged += u64::from(f.urges > 0);
        self.extensions_asked += u64::from(f.extensions_asked);
        self.extensions_granted += u64::from(f.extensions_granted);
        self.extensions_refused += u64::from(f.extensions_refused);
        self.assists += u64::from(f.assist >= 1);
        self.assists_committed += u64::from(f.assist >= 2);
        self.assists_on_time += u64::from(f.assist == 3);
    }

    /// Adds another group's counts.
    pub fn merge(&mut self, o: &LinkageCounts) {
        for (a, b) in self.by_basis.iter_mut().zip(o.by_basis) {
            *a += b;
        }
        for (a, b) in self.rejected_by_reason.iter_mut().zip(o.rejected_by_reason) {
            *a += b;
        }
        for (a, b) in self.disputes.iter_mut().zip(o.disputes) {
            *a += b;
        }
        self.disputes_decided_late += o.disputes_decided_late;
        self.urges += o.urges;
        self.urged += o.urged;
        self.extensions_asked += o.extensions_asked;
        self.extensions_granted += o.extensions_granted;
        self.extensions_refused += o.extensions_refused;
        self.assists += o.assists;
        self.assists_committed += o.assists_committed;
        self.assists_on_time += o.assists_on_time;
    }

    /// The SQL aggregates that compute these counts, in the order [`LinkageCounts::read`] takes
    /// them.
    fn sql(sum: impl Fn(&str) -> String) -> Vec<String> {
        let mut out: Vec<String> = (0..5).map(|i| sum(&format!("basis = {i}"))).collect();
        out.extend((1..=6).map(|i| sum(&format!("reason = {i}"))));
        out.extend((1..=4).map(|i| sum(&format!("dispute = {i}"))));
        out.push(sum("dispute_late = 1"));
        out.push("CAST(SUM(urges) AS BIGINT)".into());
        out.push(sum("urges > 0"));
        for column in ["ext_asked", "ext_granted", "ext_refused"] {
            out.push(format!("CAST(SUM({column}) AS BIGINT)"));
        }
        out.push(sum("assist >= 1"));
        out.push(sum("assist >= 2"));
        out.push(sum("assist = 3"));
        out
    }

    fn read(v: &[u64]) -> LinkageCounts {
        let at = |i: usize| v.get(i).copied().unwrap_or(0);
        let mut c = LinkageCounts::default();
        for i in 0..5 {
            c.by_basis[i] = at(i);
        }
        for i in 0..6 {
            c.rejected_by_reason[i] = at(5 + i);
        }
        for i in 0..4 {
            c.disputes[i] = at(11 + i);
        }
        c.disputes_decided_late = at(15);
        c.urges = at(16);
        c.urged = at(17);
        c.extensions_asked = at(18);
        c.extensions_granted = at(19);
        c.extensions_refused = at(20);
        c.assists = at(21);
        c.assists_committed = at(22);
        c.assists_on_time = at(23);
        c
    }
}

fn reached(transfer: &Transfer, state: State) -> Option<i64> {
    transfer
        .history
        .iter()
        .find(|h| h.state == HistoryEvent::State(state))
        .map(|h| h.at.unix_seconds())
}

impl Fact {
    /// The facts of a transfer, as stored at `submitted_at`.
    pub fn of(transfer: &Transfer, submitted_at: i64) -> Fact {
        let feedback = transfer.feedback.as_ref();
        Fact {
            transfer_id: transfer.transfer_id.clone(),
            submitted_at,
            requested_at: transfer.requested_at.unix_seconds(),
            origin: transfer.from.to_string(),
            destination: transfer.to.to_string(),
            location: transfer
                .case
                .location
                .as_ref()
                .and_then(|l| l.region.as_ref())
                .map(|r| r.as_str().to_string())
                .unwrap_or_default(),
            category: transfer.case.category.as_str().to_string(),
            direction: transfer.direction.clone(),
            receive_by: transfer.deadlines.receive_by.unix_seconds(),
            resolve_by: transfer.deadlines.resolve_by.map(Timestamp::unix_seconds),
            received_at: reached(transfer, State::Received),
            resolved_at: reached(transfer, State::Resolved),
            called_back: feedback.is_some(),
            satisfied: feedback.is_some_and(|f| {
                matches!(f.satisfaction, Satisfaction::Satisfied | Satisfaction::BasicallySatisfied)
            }),
            rejected: transfer.state == State::Rejected,
            linkage: LinkageFact::of(transfer),
        }
    }
}

const COLUMNS: usize = 15 + LinkageFact::COLUMNS.len();

/// Writes the facts of these transfers (inserted, or replaced where they changed). A
/// transfer's `submitted_at` never changes: it is the first write's `now`, kept on conflict.
pub(crate) async fn upsert(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    transfers: &[&Transfer],
    now: i64,
) -> Result<(), StoreError> {
    // The last state of each transfer in this batch (one may have several events).
    let mut seen = std::collections::HashSet::with_capacity(transfers.len());
    let latest: Vec<&Transfer> =
        transfers.iter().rev().copied().filter(|t| seen.insert(&t.transfer_id)).collect();
    for chunk in latest.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO transfer_facts (transfer_id, submitted_at, requested_at, origin, destination, \
             location, category, direction, receive_by, resolve_by, received_at, resolved_at, \
             called_back, satisfied, rejected, {linkage}) VALUES {} \
             ON CONFLICT (transfer_id) DO UPDATE SET received_at = excluded.received_at, \
             resolved_at = excluded.resolved_at, called_back = excluded.called_back, \
             satisfied = excluded.satisfied, rejected = excluded.rejected, \
             resolve_by = excluded.resolve_by, receive_by = excluded.receive_by, {updates}",
            values(backend, chunk.len(), COLUMNS, None),
            linkage = LinkageFact::COLUMNS.join(", "),
            updates = LinkageFact::COLUMNS
                .iter()
                .map(|c| format!("{c} = excluded.{c}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        let mut query = sqlx::query(&sql);
        for t in chunk {
            let f = Fact::of(t, now);
            query = query
                .bind(f.transfer_id)
                .bind(f.submitted_at)
                .bind(f.requested_at)
                .bind(f.origin)
                .bind(f.destination)
                .bind(f.location)
                .bind(f.category)
                .bind(f.direction)
                .bind(f.receive_by)
                .bind(f.resolve_by)
                .bind(f.received_at)
                .bind(f.resolved_at)
                .bind(i64::from(f.called_back))
                .bind(i64::from(f.satisfied))
                .bind(i64::from(f.rejected));
            for value in f.linkage.values() {
                query = query.bind(value);
            }
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Which facts to count: a period of submission, and who may see them.
#[derive(Clone, Debug, Default)]
pub struct FactsFilter {
    /// Submitted at or after, and before (Unix seconds).
    pub since: i64,
    pub until: i64,
    /// Only transfers this endpoint is a party to (an endpoint's own).
    pub party: Option<String>,
    /// Only transfers lying in one of these region prefixes (an agency's grant); `None`: all.
    pub visible_regions: Option<Vec<String>>,
    /// … and lying in this region prefix (the figures' own filter).
    pub region: Option<String>,
    pub category: Option<String>,
    pub direction: Option<String>,
}

/// Counts of one direction and category.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub direction: String,
    pub category: String,
    pub transfers: u64,
    pub received: u64,
    pub received_on_time: u64,
    pub resolved: u64,
    pub resolved_on_time: u64,
    pub called_back: u64,
    pub satisfied: u64,
    pub rejected: u64,
    pub linkage: LinkageCounts,
}

/// The aggregates of a filter: counts by direction and category, and the distributions of the
/// times to receive and to resolve as (seconds, how many) in ascending order — to the second
/// under a minute, rounded down to 10 s under an hour, to the minute under a day, to 10
/// minutes beyond (docs/DECISIONS.md).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Aggregates {
    pub counts: Vec<Counts>,
    pub to_receive: Vec<(i64, u64)>,
    pub to_resolve: Vec<(i64, u64)>,
}

/// The bucket a duration `d` (an SQL expression, seconds) is counted in.
fn bucket(d: &str) -> String {
    format!(
        "CASE WHEN {d} < 60 THEN {d} WHEN {d} < 3600 THEN ({d} / 10) * 10 \
         WHEN {d} < 86400 THEN ({d} / 60) * 60 ELSE ({d} / 600) * 600 END"
    )
}

/// An SQL `WHERE` clause and its text parameters (numbered from 1).
struct Clause {
    sql: String,
    binds: Vec<Bind>,
}

enum Bind {
    Int(i64),
    Text(String),
}

impl Clause {
    fn param(&mut self, bind: Bind) -> String {
        self.binds.push(bind);
        format!("${}", self.binds.len())
    }

    /// `origin`, `destination` or `location` lies in the region prefix `prefix`.
    fn lies_in(&mut self, prefix: &str) -> String {
        // Region prefixes are digits (checked where they are taken), so LIKE has no wildcards
        // to escape; an endpoint's id begins with its region.
        let p = self.param(Bind::Text(format!("{prefix}%")));
        format!("(origin LIKE {p} OR destination LIKE {p} OR location LIKE {p})")
    }

    fn of(filter: &FactsFilter) -> Clause {
        let mut c = Clause { sql: String::new(), binds: Vec::new() };
        let since = c.param(Bind::Int(filter.since));
        let until = c.param(Bind::Int(filter.until));
        let mut sql = format!("submitted_at >= {since} AND submitted_at < {until}");
        if let Some(party) = &filter.party {
            let p = c.param(Bind::Text(party.clone()));
            sql.push_str(&format!(" AND (origin = {p} OR destination = {p})"));
        }
        if let Some(regions) = &filter.visible_regions {
            let any: Vec<String> = regions.iter().map(|r| c.lies_in(r)).collect();
            let any = if any.is_empty() { "1 = 0".to_string() } else { any.join(" OR ") };
            sql.push_str(&format!(" AND ({any})"));
        }
        if let Some(region) = &filter.region {
            let clause = c.lies_in(region);
            sql.push_str(&format!(" AND {clause}"));
        }
        if let Some(category) = &filter.category {
            let p = c.param(Bind::Text(category.clone()));
            sql.push_str(&format!(" AND category = {p}"));
        }
        if let Some(direction) = &filter.direction {
            let p = c.param(Bind::Text(direction.clone()));
            sql.push_str(&format!(" AND direction = {p}"));
        }
        c.sql = sql;
        c
    }

    fn query<'q>(
        &'q self,
        sql: &'q str,
    ) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
        let mut query = sqlx::query(sql);
        for bind in &self.binds {
            query = match bind {
                Bind::Int(i) => query.bind(*i),
                Bind::Text(t) => query.bind(t.as_str()),
            };
        }
        query
    }
}

impl Store {
    /// The aggregates of the facts a filter selects.
    pub async fn figures(&self, filter: &FactsFilter) -> Result<Aggregates, StoreError> {
        let clause = Clause::of(filter);
        // PostgreSQL sums BIGINTs as NUMERIC: cast back, for one decoding on both.
        let sum = |condition: &str| {
            format!("CAST(SUM(CASE WHEN {condition} THEN 1 ELSE 0 END) AS BIGINT)")
        };
        let linkage = LinkageCounts::sql(sum);
        let sql = format!(
            "SELECT direction, category, COUNT(*), {}, {}, {}, {}, {}, {}, {}, {} FROM transfer_facts WHERE {} GROUP BY direction, category",
            sum("received_at IS NOT NULL"),
            sum("received_at <= receive_by"),
            sum("resolved_at IS NOT NULL"),
            sum("resolved_at IS NOT NULL AND (resolve_by IS NULL OR resolved_at <= resolve_by)"),
            sum("called_back = 1"),
            sum("satisfied = 1"),
            sum("rejected = 1"),
            linkage.join(", "),
            clause.sql,
        );
        let count = |row: &sqlx::any::AnyRow, i: usize| -> Result<u64, StoreError> {
            Ok(row.try_get::<Option<i64>, _>(i)?.unwrap_or(0).max(0) as u64)
        };
        let mut counts = Vec::new();
        for row in clause.query(&sql).fetch_all(&self.pool).await? {
            counts.push(Counts {
                direction: row.try_get(0)?,
                category: row.try_get(1)?,
                transfers: count(&row, 2)?,
                received: count(&row, 3)?,
                received_on_time: count(&row, 4)?,
                resolved: count(&row, 5)?,
                resolved_on_time: count(&row, 6)?,
                called_back: count(&row, 7)?,
                satisfied: count(&row, 8)?,
                rejected: count(&row, 9)?,
                linkage: LinkageCounts::read(
                    &(0..linkage.len())
                        .map(|i| count(&row, 10 + i))
                        .collect::<Result<Vec<u64>, StoreError>>()?,
                ),
            });
        }
        let mut times = Vec::new();
        for at in ["received_at", "resolved_at"] {
            let d = format!("({at} - requested_at)");
            let sql = format!(
                "SELECT {b} AS b, COUNT(*) FROM transfer_facts WHERE {w} AND {at} IS NOT NULL \
                 GROUP BY b ORDER BY b",
                b = bucket(&format!("(CASE WHEN {d} < 0 THEN 0 ELSE {d} END)")),
                w = clause.sql,
            );
            let mut distribution = Vec::new();
            for row in clause.query(&sql).fetch_all(&self.pool).await? {
                distribution.push((row.try_get::<i64, _>(0)?, count(&row, 1)?));
            }
            times.push(distribution);
        }
        let to_resolve = times.pop().unwrap_or_default();
        let to_receive = times.pop().unwrap_or_default();
        Ok(Aggregates { counts, to_receive, to_resolve })
    }

    /// Transfers by category submitted in `[since, until)` under a filter's other conditions.
    pub async fn categories(&self, filter: &FactsFilter) -> Result<Vec<(String, u64)>, StoreError> {
        let clause = Clause::of(filter);
        let sql = format!(
            "SELECT category, COUNT(*) FROM transfer_facts WHERE {} GROUP BY category",
            clause.sql
        );
        let mut out = Vec::new();
        for row in clause.query(&sql).fetch_all(&self.pool).await? {
            out.push((row.try_get(0)?, row.try_get::<i64, _>(1)?.max(0) as u64));
        }
        Ok(out)
    }
}

/// Fills `transfer_facts` from the transfers of a store made by an earlier release: once, when
/// the table is first made (a new store has no transfers; an upgraded one pays this at its
/// first start, page by page).
pub(crate) async fn backfill(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
) -> Result<u64, StoreError> {
    let mut after = String::new();
    let mut filled = 0;
    loop {
        let rows = sqlx::query(
            "SELECT transfer_id, document, created_at FROM transfers WHERE transfer_id > $1 \
             ORDER BY transfer_id LIMIT 1000",
        )
        .bind(&after)
        .fetch_all(&mut *conn)
        .await?;
        let Some(last) = rows.last() else { return Ok(filled) };
        after = last.try_get(0)?;
        let mut transfers = Vec::with_capacity(rows.len());
        for row in &rows {
            transfers.push((super::transfer_from_row(row)?, row.try_get::<i64, _>(2)?));
        }
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        for (transfer, created_at) in &transfers {
            upsert(&mut tx, backend, &[transfer], *created_at).await?;
            filled += 1;
        }
        tx.commit().await?;
    }
}

/// The columns of a `transfer_facts` row (its table named by `prefix`) as one `|`-separated
/// text, as [`parse_line`] reads it.
fn fact_line(prefix: &str) -> String {
    [
        "transfer_id",
        "submitted_at",
        "requested_at",
        "origin",
        "destination",
        "location",
        "category",
        "direction",
        "receive_by",
        "resolve_by",
        "received_at",
        "resolved_at",
        "called_back",
        "satisfied",
        "rejected",
    ]
    .iter()
    .chain(LinkageFact::COLUMNS.iter())
    .map(|c| format!("COALESCE(CAST({prefix}{c} AS TEXT), '')"))
    .collect::<Vec<_>>()
    .join(" || '|' || ")
}

/// A row of `transfer_facts` read as one `|`-separated line (no field holds a `|`: ids,
/// endpoint ids, regions, codes and numbers).
fn parse_line(line: &str) -> Option<Fact> {
    let fields: Vec<&str> = line.split('|').collect();
    let (fields, linkage) = fields.split_at_checked(15)?;
    let [id, submitted, requested, origin, destination, location, category, direction, receive_by, resolve_by, received, resolved, called_back, satisfied, rejected] =
        fields
    else {
        return None;
    };
    let linkage: Vec<i64> = linkage.iter().map(|v| v.parse().ok()).collect::<Option<_>>()?;
    let time = |t: &str| t.parse::<i64>().ok();
    let optional = |t: &str| if t.is_empty() { Some(None) } else { time(t).map(Some) };
    Some(Fact {
        transfer_id: id.to_string(),
        submitted_at: time(submitted)?,
        requested_at: time(requested)?,
        origin: origin.to_string(),
        destination: destination.to_string(),
        location: location.to_string(),
        category: category.to_string(),
        direction: direction.to_string(),
        receive_by: time(receive_by)?,
        resolve_by: optional(resolve_by)?,
        received_at: optional(received)?,
        resolved_at: optional(resolved)?,
        called_back: *called_back == "1",
        satisfied: *satisfied == "1",
        rejected: *rejected == "1",
        linkage: LinkageFact::from_values(&linkage)?,
    })
}

/// "No such time" in a row of the index.
const NONE: i64 = i64::MIN;

/// One transfer's facts in memory: names interned, times as seconds ([`NONE`] when absent).
#[derive(Clone, Copy, Debug)]
struct Kept {
    submitted_at: i64,
    requested_at: i64,
    receive_by: i64,
    resolve_by: i64,
    received_at: i64,
    resolved_at: i64,
    origin: u32,
    destination: u32,
    location: u32,
    category: u32,
    direction: u32,
    called_back: bool,
    satisfied: bool,
    rejected: bool,
    /// [`LinkageFact::pack`]ed.
    linkage: u64,
}

/// Names interned as small numbers.
#[derive(Default)]
struct Names {
    names: Vec<Box<str>>,
    ids: std::collections::HashMap<Box<str>, u32>,
}

impl Names {
    fn intern(&mut self, name: &str) -> u32 {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.into());
        self.ids.insert(name.into(), id);
        id
    }

    /// The id of a name a filter gives: `None` no filter; `Some(None)` a name never seen
    /// (nothing matches).
    fn wanted(&self, name: &Option<String>) -> Option<Option<u32>> {
        name.as_ref().map(|n| self.ids.get(n.as_str()).copied())
    }

    fn name(&self, id: u32) -> String {
        self.names[id as usize].to_string()
    }
}

/// The facts of every transfer in memory, caught up with the store's change feed.
#[derive(Default)]
struct Index {
    cursor: super::FeedCursor,
    /// Endpoints and regions (origins, destinations, locations).
    places: Names,
    categories: Names,
    directions: Names,
    rows: Vec<Kept>,
    by_id: std::collections::HashMap<Box<str>, u32>,
}

/// The dense index of a duration's bucket (the buckets of [`bucket`]'s SQL): 60 one-second
/// buckets, then 354 of ten seconds, 1,380 of a minute, then one per ten minutes.
fn bucket_index(seconds: i64) -> usize {
    let d = seconds.max(0);
    (match d {
        0..60 => d,
        60..3_600 => 60 + (d - 60) / 10,
        3_600..86_400 => 414 + (d - 3_600) / 60,
        _ => 1_794 + (d - 86_400) / 600,
    }) as usize
}

/// The bucket's duration (its lower bound), as [`bucket`]'s SQL gives it.
fn bucket_seconds(index: usize) -> i64 {
    let i = index as i64;
    match i {
        0..60 => i,
        60..414 => 60 + (i - 60) * 10,
        414..1_794 => 3_600 + (i - 414) * 60,
        _ => 86_400 + (i - 1_794) * 600,
    }
}

/// Buckets of the first day (dense).
const DAY_BUCKETS: usize = 1_794;

/// Counts per bucket: the first day's buckets dense, the rest (ten minutes each, as far as a
/// document's times reach: a century is millions of them) only where something fell.
#[derive(Default)]
struct Histogram {
    day: Vec<u64>,
    beyond: std::collections::BTreeMap<usize, u64>,
}

impl Histogram {
    fn add(&mut self, seconds: i64) {
        let i = bucket_index(seconds);
        if i < DAY_BUCKETS {
            if self.day.is_empty() {
                self.day = vec![0; DAY_BUCKETS];
            }
            self.day[i] += 1;
        } else {
            *self.beyond.entry(i).or_default() += 1;
        }
    }

    fn distribution(&self) -> Vec<(i64, u64)> {
        let day = self.day.iter().enumerate().filter(|(_, n)| **n > 0);
        let buckets = day.map(|(i, n)| (i, *n)).chain(self.beyond.iter().map(|(i, n)| (*i, *n)));
        buckets.map(|(i, n)| (bucket_seconds(i), n)).collect()
    }
}

impl Index {
    /// Adds a transfer's facts, or updates them (its submission time kept).
    fn apply(&mut self, f: Fact) {
        let time = |t: Option<i64>| t.unwrap_or(NONE);
        let row = Kept {
            submitted_at: f.submitted_at,
            requested_at: f.requested_at,
            receive_by: f.receive_by,
            resolve_by: time(f.resolve_by),
            received_at: time(f.received_at),
            resolved_at: time(f.resolved_at),
            origin: self.places.intern(&f.origin),
            destination: self.places.intern(&f.destination),
            location: self.places.intern(&f.location),
            category: self.categories.intern(&f.category),
            direction: self.directions.intern(&f.direction),
            called_back: f.called_back,
            satisfied: f.satisfied,
            rejected: f.rejected,
            linkage: f.linkage.pack(),
        };
        match self.by_id.get(f.transfer_id.as_str()) {
            Some(&i) => {
                let kept = self.rows[i as usize].submitted_at;
                self.rows[i as usize] = Kept { submitted_at: kept, ..row };
            }
            None => {
                self.by_id.insert(f.transfer_id.into(), self.rows.len() as u32);
                self.rows.push(row);
            }
        }
    }

    /// Applies every change committed since the last one applied: the facts rows of the
    /// transfers the feed's new events name, as they stand now (applying is idempotent, and
    /// the newest facts are what counts). The rows, not the events: an event carries the whole
    /// transfer as JSON, and parsing one per event cost the gateway a twentieth of its CPU
    /// under load (docs/PERFORMANCE.md, "Delivery").
    ///
    /// The cursor moves only up to the store's horizon (on PostgreSQL, below every transaction
    /// still running, so none that commits later is skipped). With `to_the_end`, what is
    /// committed beyond it is applied too, without moving the cursor: an answer then counts
    /// every write committed before it was asked, even while another transaction in the same
    /// server (an import, another replica's long write) holds the horizon back; it is applied
    /// again once settled, which changes nothing.
    async fn catch_up(&mut self, store: &Store, to_the_end: bool) -> Result<(), StoreError> {
        self.cursor = self.apply_after(store, self.cursor, store.horizon()).await?;
        if to_the_end && !store.horizon().is_empty() {
            self.apply_after(store, self.cursor, "").await?;
        }
        Ok(())
    }

    /// Applies the facts of every event after `cursor` (below `horizon`), a page at a time;
    /// returns the cursor of the last one.
    async fn apply_after(
        &mut self,
        store: &Store,
        mut cursor: super::FeedCursor,
        horizon: &str,
    ) -> Result<super::FeedCursor, StoreError> {
        const PAGE: usize = 1000;
        let sql = format!(
            "SELECT e.tx, e.seq, {} FROM events e JOIN transfer_facts f ON f.transfer_id = e.transfer_id \
             WHERE {} {horizon} ORDER BY e.tx, e.seq LIMIT {PAGE}",
            fact_line("f."),
            store.after_cursor(1, 2, 3),
        );
        loop {
            let rows = sqlx::query(&sql)
                .bind(cursor.tx)
                .bind(cursor.tx)
                .bind(cursor.seq)
                .fetch_all(&store.pool)
                .await?;
            for row in &rows {
                let line: String = row.try_get(2)?;
                let fact = parse_line(&line).ok_or_else(|| StoreError::Corrupt {
                    id: "transfer_facts".into(),
                    problem: format!("unreadable row {line:?}"),
                })?;
                self.apply(fact);
            }
            if let Some(last) = rows.last() {
                cursor = super::FeedCursor { tx: last.try_get(0)?, seq: last.try_get(1)? };
            }
            if rows.len() < PAGE {
                return Ok(cursor);
            }
        }
    }

    /// Which rows a filter selects, as a test per row over interned names.
    fn selector(&self, filter: &FactsFilter) -> impl Fn(&Kept) -> bool + '_ {
        let within = |prefix: &str| -> Vec<bool> {
            self.places.names.iter().map(|n| !n.is_empty() && n.starts_with(prefix)).collect()
        };
        let visible: Option<Vec<Vec<bool>>> = filter
            .visible_regions
            .as_ref()
            .map(|regions| regions.iter().map(|r| within(r)).collect());
        let region = filter.region.as_deref().map(within);
        let party = self.places.wanted(&filter.party);
        let category = self.categories.wanted(&filter.category);
        let direction = self.directions.wanted(&filter.direction);
        let (since, until) = (filter.since, filter.until);
        move |row: &Kept| {
            let lies = |table: &Vec<bool>| {
                table[row.origin as usize]
                    || table[row.destination as usize]
                    || table[row.location as usize]
            };
            row.submitted_at >= since
                && row.submitted_at < until
                && party.is_none_or(|p| p.is_some_and(|p| row.origin == p || row.destination == p))
                && category.is_none_or(|c| c == Some(row.category))
                && direction.is_none_or(|d| d == Some(row.direction))
                && visible.as_ref().is_none_or(|tables| tables.iter().any(lies))
                && region.as_ref().is_none_or(lies)
        }
    }

    fn figures(&self, filter: &FactsFilter) -> Aggregates {
        let selected = self.selector(filter);
        let width = self.categories.names.len();
        let mut counts: Vec<Counts> = vec![Counts::default(); width * self.directions.names.len()];
        let (mut to_receive, mut to_resolve) = (Histogram::default(), Histogram::default());
        for row in self.rows.iter().filter(|r| selected(r)) {
            let c = &mut counts[row.direction as usize * width + row.category as usize];
            c.transfers += 1;
            if row.received_at != NONE {
                c.received += 1;
                c.received_on_time += u64::from(row.received_at <= row.receive_by);
                to_receive.add(row.received_at - row.requested_at);
            }
            if row.resolved_at != NONE {
                c.resolved += 1;
                c.resolved_on_time +=
                    u64::from(row.resolve_by == NONE || row.resolved_at <= row.resolve_by);
                to_resolve.add(row.resolved_at - row.requested_at);
            }
            c.called_back += u64::from(row.called_back);
            c.satisfied += u64::from(row.satisfied);
            c.rejected += u64::from(row.rejected);
            c.linkage.add_packed(row.linkage);
        }
        let counts = counts
            .into_iter()
            .enumerate()
            .filter(|(_, c)| c.transfers > 0)
            .map(|(i, c)| Counts {
                direction: self.directions.name((i / width) as u32),
                category: self.categories.name((i % width) as u32),
                ..c
            })
            .collect();
        Aggregates {
            counts,
            to_receive: to_receive.distribution(),
            to_resolve: to_resolve.distribution(),
        }
    }

    fn categories(&self, filter: &FactsFilter) -> Vec<(String, u64)> {
        let selected = self.selector(filter);
        let mut counts = vec![0u64; self.categories.names.len()];
        for row in self.rows.iter().filter(|r| selected(r)) {
            counts[row.category as usize] += 1;
        }
        let seen = counts.into_iter().enumerate().filter(|(_, n)| *n > 0);
        seen.map(|(c, n)| (self.categories.name(c as u32), n)).collect()
    }
}

/// The figures' facts in memory (a million transfers aggregate in milliseconds, where the
/// databases sort a million rows to group them: docs/PERFORMANCE.md). Loaded from
/// `transfer_facts` in the background after start and kept caught up with the change feed —
/// this gateway's commits and other replicas' alike — every few seconds and before each
/// answer, so an answer counts every write committed before it. Until it is loaded, the figures are
/// aggregated by the database ([`Store::figures`]), the same figures more slowly.
///
/// Memory grows with the transfers kept (about 130 MB a million), so it is bounded: past
/// `limit` transfers (`[figures] memory_limit`) the facts are let go and the database answers
/// every figure from then on (docs/DECISIONS.md, "Figures"). A limit of 0 never loads them.
pub struct FactsIndex {
    index: tokio::sync::Mutex<Option<Index>>,
    limit: usize,
}

impl FactsIndex {
    /// Facts of up to `limit` transfers in memory.
    pub fn new(limit: usize) -> std::sync::Arc<FactsIndex> {
        std::sync::Arc::new(FactsIndex { index: tokio::sync::Mutex::new(None), limit })
    }

    /// Whether the facts are in memory yet.
    pub async fn loaded(&self) -> bool {
        self.index.lock().await.is_some()
    }

    /// The facts, or `None` when there are more than `limit`.
    async fn load(store: &Store, limit: usize) -> Result<Option<Index>, StoreError> {
        use tokio_stream::StreamExt;
        // The feed's end first: whatever commits while the table is read is applied again
        // after (applying is idempotent), so nothing falls between the two.
        let mut index = Index { cursor: store.feed_end(true).await?, ..Index::default() };
        // One text column per row: decoding fifteen columns of a million rows through the
        // Any driver took ten times as long as splitting one string.
        let sql = format!("SELECT {} FROM transfer_facts", fact_line(""));
        let mut rows = sqlx::query(&sql).fetch(&store.pool);
        while let Some(row) = rows.next().await {
            let line: String = row?.try_get(0)?;
            let fact = parse_line(&line).ok_or_else(|| StoreError::Corrupt {
                id: "transfer_facts".into(),
                problem: format!("unreadable row {line:?}"),
            })?;
            index.apply(fact);
            if index.rows.len() > limit {
                return Ok(None);
            }
        }
        drop(rows);
        index.catch_up(store, false).await?;
        Ok((index.rows.len() <= limit).then_some(index))
    }

    /// Lets the facts go when they have grown past the limit: the database answers from then on.
    fn let_go_if_over(&self, slot: &mut Option<Index>) {
        if slot.as_ref().is_some_and(|index| index.rows.len() > self.limit) {
            *slot = None;
            tracing::warn!(
                limit = self.limit,
                "the figures' facts have outgrown [figures] memory_limit and were let go; \
                 figures are aggregated by the database from now on (slower)"
            );
        }
    }

    /// Loads the facts, then keeps them caught up with `store` until `stop`, every five seconds
    /// (and before every answer).
    pub async fn follow(
        self: std::sync::Arc<Self>,
        store: Store,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        if self.limit == 0 {
            return;
        }
        let started = std::time::Instant::now();
        let index = loop {
            match FactsIndex::load(&store, self.limit).await {
                Ok(Some(index)) => break index,
                Ok(None) => {
                    tracing::warn!(
                        limit = self.limit,
                        "more transfers than [figures] memory_limit: the figures' facts are not \
                         kept in memory; figures are aggregated by the database (slower)"
                    );
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the figures' facts could not be loaded; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
                        _ = stop.changed() => return,
                    }
                }
            }
        };
        tracing::info!(
            transfers = index.rows.len(),
            ms = started.elapsed().as_millis() as u64,
            "the figures' facts are in memory"
        );
        *self.index.lock().await = Some(index);
        loop {
            // Every answer catches up first; this only keeps an answer's catch-up short. (Waking
            // on every commit cost a tenth of the intake: a feed read per group commit.)
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
                _ = stop.changed() => return,
            }
            let mut slot = self.index.lock().await;
            let Some(index) = slot.as_mut() else { return };
            if let Err(e) = index.catch_up(&store, false).await {
                tracing::warn!(error = %e, "the figures' facts could not catch up");
            }
            self.let_go_if_over(&mut slot);
        }
    }

    /// An answer from memory, caught up first, once loaded; until then from the database.
    async fn answer<T>(
        &self,
        store: &Store,
        from_memory: impl FnOnce(&Index) -> T,
        from_database: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let mut slot = self.index.lock().await;
        if let Some(index) = slot.as_mut() {
            index.catch_up(store, true).await?;
            self.let_go_if_over(&mut slot);
            if let Some(index) = slot.as_ref() {
                return Ok(from_memory(index));
            }
        }
        drop(slot);
        from_database.await
    }

    /// The aggregates of a filter.
    pub async fn figures(
        &self,
        store: &Store,
        filter: &FactsFilter,
    ) -> Result<Aggregates, StoreError> {
        self.answer(store, |index| index.figures(filter), store.figures(filter)).await
    }

    /// Transfers by category under a filter, as [`FactsIndex::figures`] counts them.
    pub async fn categories(
        &self,
        store: &Store,
        filter: &FactsFilter,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        self.answer(store, |index| index.categories(filter), store.categories(filter)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SQL's buckets, written out: what the database path reports for a duration.
    fn sql_bucket(d: i64) -> i64 {
        match d.max(0) {
            d @ 0..60 => d,
            d @ 60..3_600 => d / 10 * 10,
            d @ 3_600..86_400 => d / 60 * 60,
            d => d / 600 * 600,
        }
    }

    #[test]
    fn memory_and_database_count_a_duration_in_the_same_bucket() {
        for d in [
            -5, 0, 1, 59, 60, 61, 69, 70, 3_599, 3_600, 3_659, 3_660, 86_399, 86_400, 86_999,
            87_000, 900_123,
        ] {
            assert_eq!(bucket_seconds(bucket_index(d)), sql_bucket(d), "{d} s");
        }
    }

    #[test]
    fn a_histogram_keeps_a_century_in_one_bucket_not_millions() {
        let mut h = Histogram::default();
        let century = 100 * 365 * 86_400;
        for d in [10, 10, 3_700, century] {
            h.add(d);
        }
        assert_eq!(h.distribution(), vec![(10, 2), (3_660, 1), (sql_bucket(century), 1)]);
        assert_eq!(h.beyond.len(), 1);
    }

    #[test]
    fn a_linkage_fact_packs_into_a_word_and_back() {
        let fact = LinkageFact {
            basis: 4,
            reason: 6,
            dispute: 4,
            dispute_late: true,
            urges: 70_000,
            extensions_asked: 255,
            extensions_granted: 3,
            extensions_refused: 250,
            assist: 3,
        };
        let back = LinkageFact::unpack(fact.pack());
        assert_eq!(back, LinkageFact { urges: 65_535, ..fact }, "urges saturate");
        assert_eq!(LinkageFact::unpack(LinkageFact::default().pack()), LinkageFact::default());
        let (mut packed, mut plain) = (LinkageCounts::default(), LinkageCounts::default());
        for f in [fact, LinkageFact::default(), LinkageFact { basis: 1, ..LinkageFact::default() }]
        {
            packed.add_packed(f.pack());
            let f = LinkageFact::unpack(f.pack());
            plain.by_basis[usize::from(f.basis)] += 1;
            plain.add_rest(&f);
        }
        assert_eq!(packed, plain);
    }

    #[test]
    fn a_line_of_facts_reads_back() {
        let line = "01J|100|90|330200/110|330200/12345|330203101|NP07|110->12345|400||120||1|0|0|2|1|3|0|4|1|1|0|0";
        let fact = parse_line(line).unwrap();
        assert_eq!((fact.resolve_by, fact.received_at, fact.called_back), (None, Some(120), true));
        let l = fact.linkage;
        assert_eq!((l.basis, l.reason, l.dispute, l.urges, l.extensions_granted), (2, 1, 3, 4, 1));
        assert!(parse_line("01J|100").is_none(), "too few fields");
        assert!(parse_line(line.rsplit_once('|').unwrap().0).is_none(), "a linkage field short");
        assert!(parse_line(&line.replace("|400|", "|x|")).is_none(), "a number that is not one");
    }
}
