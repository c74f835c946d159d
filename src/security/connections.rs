//! Caps on open connections, in total and per source address, taken before TLS starts: a flood
//! of TCP connections that never begin a handshake (no certificate needed) must not run the
//! process out of file descriptors or crowd out everyone else. What is shed is counted and
//! logged (at most once a second), and the connection closed at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The open connections, by source.
#[derive(Debug)]
pub struct ConnectionLimits {
    total: usize,
    per_source: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
    last_logged: Option<Instant>,
}

/// Why a connection was shed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shed {
    /// The gateway holds `listen.max_connections` already.
    Total,
    /// This source address holds `listen.max_connections_per_source` already.
    PerSource,
}

impl Shed {
    /// The reason label counted in metrics.
    pub fn reason(self) -> &'static str {
        match self {
            Shed::Total => "connections_total",
            Shed::PerSource => "connections_per_source",
        }
    }
}

/// An admitted connection's place; given back when dropped.
#[derive(Debug)]
pub struct Admitted {
    limits: Arc<ConnectionLimits>,
    source: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.by_source.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                open.by_source.remove(&self.source);
            }
        }
    }
}

impl ConnectionLimits {
    pub fn new(total: usize, per_source: usize) -> Arc<ConnectionLimits> {
        Arc::new(ConnectionLimits { total, per_source, open: Mutex::new(Open::default()) })
    }

    /// Admits a connection from `source`, or says why not (and logs it, at most once a second).
    pub fn admit(self: &Arc<Self>, source: IpAddr) -> Result<Admitted, Shed> {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let from_source = open.by_source.get(&source).copied().unwrap_or(0);
        let shed = if open.total >= self.total {
            Some(Shed::Total)
        } else if from_source >= self.per_source {
            Some(Shed::PerSource)
        } else {
            None
        };
        if let Some(shed) = shed {
            crate::metrics::refuse(shed.reason());
            if open.last_logged.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                open.last_logged = Some(Instant::now());
                tracing::warn!(%source, open = open.total, from_source, reason = shed.reason(), "shedding connections over the limit");
            }
            return Err(shed);
        }
        open.total += 1;
        *open.by_source.entry(source).or_default() += 1;
        Ok(Admitted { limits: self.clone(), source })
    }

    /// How many connections are open.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner).total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_over_its_share_is_shed_and_places_come_back() {
        let limits = ConnectionLimits::new(3, 2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = limits.admit(a).unwrap();
        let _second = limits.admit(a).unwrap();
        assert_eq!(limits.admit(a).unwrap_err(), Shed::PerSource);
        let _third = limits.admit(b).unwrap();
        assert_eq!(limits.admit(b).unwrap_err(), Shed::Total);
        drop(first);
        let _again = limits.admit(a).unwrap();
        assert_eq!(limits.open(), 3);
    }
}
