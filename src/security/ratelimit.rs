//! Rate limits, keyed by the caller's identity, so that no one can crowd out an emergency.
//!
//! Each identity class (endpoints, agencies, operators) has a quota per kind of call —
//! submissions, status updates, reads — and transfers of urgency `immediate` have a budget of
//! their own, so a desk's bulk traffic can never hold back its life-or-death case. An identity
//! may have its own quota (`[[limits.override]]`). Limiters are GCRA (governor) keyed by
//! identity; governor never forgets keys, so [`RateLimits::forget_idle`] runs every minute and
//! keeps memory bounded however many identities come and go. The clock is a parameter so tests
//! drive time by hand.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, MonotonicClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use serde::Deserialize;

use super::Identity;

/// A kind of call, each with its own budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallKind {
    Submit,
    /// A submission of urgency `immediate`.
    Immediate,
    Status,
    Read,
}

impl CallKind {
    /// The budget a submission draws on: `immediate` transfers have their own.
    pub fn for_submission(urgency: Option<crate::model::Urgency>) -> CallKind {
        if urgency == Some(crate::model::Urgency::Immediate) {
            CallKind::Immediate
        } else {
            CallKind::Submit
        }
    }
}

/// A quota: so many a second, with a burst.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Sustained calls per second.
    pub per_second: u32,
    /// Calls allowed at once after a quiet spell.
    pub burst: u32,
}

/// The quotas of one identity class.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClassLimits {
    pub submit: Rate,
    pub immediate: Rate,
    pub status: Rate,
    pub read: Rate,
}

impl ClassLimits {
    fn rate(&self, kind: CallKind) -> Rate {
        match kind {
            CallKind::Submit => self.submit,
            CallKind::Immediate => self.immediate,
            CallKind::Status => self.status,
            CallKind::Read => self.read,
        }
    }
}

/// One identity's own quota for one kind of call.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Override {
    /// The identity URI (`liandong://endpoint/360000/110`).
    pub identity: String,
    /// `submit`, `immediate`, `status` or `read`.
    pub kind: String,
    pub per_second: u32,
    pub burst: u32,
}

/// `[limits]` in the configuration.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Off only for measuring the limiter's cost.
    pub enabled: bool,
    pub endpoint: ClassLimits,
    pub agency: ClassLimits,
    pub operator: ClassLimits,
    #[serde(rename = "override")]
    pub overrides: Vec<Override>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let r = |per_second, burst| Rate { per_second, burst };
        LimitsConfig {
            enabled: true,
            endpoint: ClassLimits {
                submit: r(500, 1000),
                immediate: r(100, 200),
                status: r(500, 1000),
                read: r(200, 400),
            },
            agency: ClassLimits {
                submit: r(50, 100),
                immediate: r(20, 40),
                status: r(50, 100),
                read: r(100, 200),
            },
            operator: ClassLimits {
                submit: r(1, 1),
                immediate: r(1, 1),
                status: r(1, 1),
                read: r(50, 100),
            },
            overrides: Vec::new(),
        }
    }
}

fn parse_kind(kind: &str) -> Option<CallKind> {
    match kind {
        "submit" => Some(CallKind::Submit),
        "immediate" => Some(CallKind::Immediate),
        "status" => Some(CallKind::Status),
        "read" => Some(CallKind::Read),
        _ => None,
    }
}

impl LimitsConfig {
    /// Checks what serde cannot; errors are (key, problem).
    pub fn validate(&self) -> Result<(), (String, String)> {
        for (class, limits) in
            [("endpoint", &self.endpoint), ("agency", &self.agency), ("operator", &self.operator)]
        {
            for kind in ["submit", "immediate", "status", "read"] {
                let rate = limits.rate(parse_kind(kind).unwrap_or(CallKind::Read));
                if rate.per_second == 0 || rate.burst == 0 {
                    return Err((
                        format!("limits.{class}.{kind}"),
                        "per_second and burst must be at least 1".into(),
                    ));
                }
            }
        }
        for (i, o) in self.overrides.iter().enumerate() {
            Identity::from_uri(&o.identity)
                .map_err(|e| (format!("limits.override[{i}].identity"), e))?;
            if parse_kind(&o.kind).is_none() {
                return Err((
                    format!("limits.override[{i}].kind"),
                    format!("expected submit, immediate, status or read, got {:?}", o.kind),
                ));
            }
            if o.per_second == 0 || o.burst == 0 {
                return Err((
                    format!("limits.override[{i}]"),
                    "per_second and burst must be at least 1".into(),
                ));
            }
        }
        Ok(())
    }
}

type Keyed<C> =
    RateLimiter<String, DefaultKeyedStateStore<String>, C, NoOpMiddleware<<C as Clock>::Instant>>;

fn quota(rate: Rate) -> Quota {
    let per_second = NonZeroU32::new(rate.per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(rate.burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(per_second).allow_burst(burst)
}

/// The limiters of a gateway.
pub struct RateLimits<C: Clock = MonotonicClock> {
    enabled: bool,
    clock: C,
    /// (class, kind) → a limiter keyed by identity.
    classes: HashMap<(u8, CallKind), Keyed<C>>,
    /// identity URI → kind → that identity's own limiter.
    overrides: HashMap<String, HashMap<CallKind, Keyed<C>>>,
}

fn class_of(identity: &Identity) -> u8 {
    match identity {
        Identity::Endpoint(_) => 0,
        Identity::Agency(_) | Identity::Office(_) => 1,
        Identity::Operator(_) | Identity::Gateway(_) => 2,
    }
}

impl RateLimits<MonotonicClock> {
    pub fn new(config: &LimitsConfig) -> Self {
        RateLimits::with_clock(config, MonotonicClock)
    }
}

impl<C: Clock + Clone> RateLimits<C> {
    pub fn with_clock(config: &LimitsConfig, clock: C) -> Self {
        let mut classes = HashMap::new();
        for (class, limits) in [(0u8, &config.endpoint), (1, &config.agency), (2, &config.operator)]
        {
            for kind in [CallKind::Submit, CallKind::Immediate, CallKind::Status, CallKind::Read] {
                classes.insert(
                    (class, kind),
                    RateLimiter::new(
                        quota(limits.rate(kind)),
                        DefaultKeyedStateStore::default(),
                        clock.clone(),
                    ),
                );
            }
        }
        let mut overrides: HashMap<String, HashMap<CallKind, Keyed<C>>> = HashMap::new();
        for o in &config.overrides {
            if let Some(kind) = parse_kind(&o.kind) {
                let rate = Rate { per_second: o.per_second, burst: o.burst };
                let limiter =
                    RateLimiter::new(quota(rate), DefaultKeyedStateStore::default(), clock.clone());
                overrides.entry(o.identity.clone()).or_default().insert(kind, limiter);
            }
        }
        RateLimits { enabled: config.enabled, clock, classes, overrides }
    }

    /// Takes one call from the identity's budget; when it is spent, how long until it is not.
    pub fn check(&self, identity: &Identity, kind: CallKind) -> Result<(), Duration> {
        self.check_keyed(identity, &identity.uri(), kind)
    }

    /// [`RateLimits::check`] with the identity's URI already made (the hot path: the TLS layer
    /// makes it once per connection).
    pub fn check_keyed(
        &self,
        identity: &Identity,
        key: &String,
        kind: CallKind,
    ) -> Result<(), Duration> {
        if !self.enabled {
            return Ok(());
        }
        let own = if self.overrides.is_empty() {
            None
        } else {
            self.overrides.get(key).and_then(|kinds| kinds.get(&kind))
        };
        let Some(limiter) = own.or_else(|| self.classes.get(&(class_of(identity), kind))) else {
            return Ok(());
        };
        limiter.check_key(key).map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets identities whose budgets are full again, and gives the memory back.
    pub fn forget_idle(&self) {
        for limiter in
            self.classes.values().chain(self.overrides.values().flat_map(HashMap::values))
        {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// How many identities the limiters remember (for tests and metrics).
    pub fn remembered(&self) -> usize {
        self.classes
            .values()
            .chain(self.overrides.values().flat_map(HashMap::values))
            .map(|l| l.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn endpoint(id: &str) -> Identity {
        Identity::Endpoint(id.parse().unwrap())
    }

    fn limits(submit: Rate) -> LimitsConfig {
        let mut config = LimitsConfig::default();
        config.endpoint.submit = submit;
        config
    }

    #[test]
    fn a_burst_then_the_sustained_rate_with_the_time_to_wait() {
        let clock = FakeRelativeClock::default();
        let limits =
            RateLimits::with_clock(&limits(Rate { per_second: 10, burst: 3 }), clock.clone());
        let desk = endpoint("330200/110");
        for _ in 0..3 {
            assert!(limits.check(&desk, CallKind::Submit).is_ok());
        }
        let wait = limits.check(&desk, CallKind::Submit).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(100), "{wait:?}");
        clock.advance(Duration::from_millis(100));
        assert!(limits.check(&desk, CallKind::Submit).is_ok());
    }

    #[test]
    fn one_noisy_client_does_not_slow_another_and_immediate_has_its_own_budget() {
        let clock = FakeRelativeClock::default();
        let limits = RateLimits::with_clock(&limits(Rate { per_second: 1, burst: 1 }), clock);
        let (noisy, quiet) = (endpoint("330200/110"), endpoint("360000/110"));
        assert!(limits.check(&noisy, CallKind::Submit).is_ok());
        assert!(limits.check(&noisy, CallKind::Submit).is_err());
        assert!(
            limits.check(&quiet, CallKind::Submit).is_ok(),
            "another identity keeps its budget"
        );
        assert!(
            limits.check(&noisy, CallKind::Immediate).is_ok(),
            "an immediate transfer is not behind bulk traffic"
        );
        assert!(limits.check(&noisy, CallKind::Read).is_ok(), "reads have their own budget");
    }

    #[test]
    fn overrides_and_bounded_memory() {
        let clock = FakeRelativeClock::default();
        let mut config = limits(Rate { per_second: 1, burst: 1 });
        config.overrides.push(Override {
            identity: "liandong://endpoint/360000/110".into(),
            kind: "submit".into(),
            per_second: 100,
            burst: 100,
        });
        config.validate().unwrap();
        let limits = RateLimits::with_clock(&config, clock.clone());
        let jiangxi = endpoint("360000/110");
        for _ in 0..50 {
            assert!(limits.check(&jiangxi, CallKind::Submit).is_ok());
        }
        for i in 0..1000 {
            let _ = limits.check(&Identity::Agency(format!("a{i}")), CallKind::Read);
        }
        assert!(limits.remembered() >= 1000);
        clock.advance(Duration::from_secs(60));
        limits.forget_idle();
        assert_eq!(limits.remembered(), 0, "idle identities are forgotten");
    }

    #[test]
    fn bad_settings_are_named() {
        let mut config = LimitsConfig::default();
        config.overrides.push(Override {
            identity: "nobody".into(),
            kind: "submit".into(),
            per_second: 1,
            burst: 1,
        });
        assert_eq!(config.validate().unwrap_err().0, "limits.override[0].identity");
        let mut config = LimitsConfig::default();
        config.agency.read.burst = 0;
        assert_eq!(config.validate().unwrap_err().0, "limits.agency.read");
    }
}
