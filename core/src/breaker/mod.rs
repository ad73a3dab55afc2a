//! A circuit breaker and a bulkhead for synchronous calls into one context, in the spirit of
//! Resilience4j: a count-based sliding window of outcomes; when at least `minimum_calls` are
//! recorded and the failure rate reaches the threshold, the breaker opens and every call is
//! refused at once for `open_for`; then it lets `half_open_probes` calls through, and closes if
//! they all succeed or opens again at the first failure. The bulkhead caps calls in flight.
//!
//! Beyond Resilience4j: a call that used up a resource limit (its CPU deadline, its memory)
//! burned a whole core or its whole memory for nothing, so `exhausted_to_open` such calls in
//! the window open the breaker without waiting for `minimum_calls`.
//!
//! Time is passed in, so the state machine is tested without sleeping.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Breaker settings.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Outcomes remembered (the sliding window).
    pub window: usize,
    /// Outcomes needed before the failure rate counts.
    pub minimum_calls: usize,
    /// Failure rate (0–1) at which the breaker opens.
    pub failure_rate: f64,
    /// How long it stays open.
    pub open_for: Duration,
    /// Calls let through while half-open.
    pub half_open_probes: usize,
    /// Calls in flight at once (the bulkhead).
    pub max_concurrent: usize,
    /// Calls in the window that used up a resource limit and open the breaker on their own.
    pub exhausted_to_open: usize,
}

impl Default for BreakerConfig {
    /// Resilience4j's defaults (window 100, 50 %, 10 probes, 25 concurrent calls), except a
    /// minimum of 20 calls (not 100) and 30 s open (not 60 s), so a failing dependency is
    /// noticed sooner on a small system; and 3 calls that used up a limit open it.
    fn default() -> Self {
        BreakerConfig {
            window: 100,
            minimum_calls: 20,
            failure_rate: 0.5,
            open_for: Duration::from_secs(30),
            half_open_probes: 10,
            max_concurrent: 25,
            exhausted_to_open: 3,
        }
    }
}

/// How a call went, as its breaker counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It did its work (a refusal by the callee's rules is a success here).
    Ok,
    /// It failed: a fault, or the callee was unavailable.
    Failed,
    /// It failed after using up a resource limit (its CPU deadline, its memory).
    Exhausted,
}

/// Where the breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are refused.
    Open,
    /// A few probe calls go through.
    HalfOpen,
}

/// Why a call may not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// The breaker is open; retry after this long.
    Open(Duration),
    /// Half-open and every probe is taken.
    Probing,
    /// The bulkhead is full.
    Full,
}

/// What the breaker reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BreakerStatus {
    /// State.
    pub state: BreakerState,
    /// Failure rate over the window (0–1), once `minimum_calls` are recorded.
    pub failure_rate: Option<f64>,
    /// Outcomes in the window.
    pub calls: usize,
    /// Calls in flight.
    pub in_flight: usize,
    /// Calls refused since the process started.
    pub rejected: u64,
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    outcomes: VecDeque<Verdict>,
    failures: usize,
    exhausted: usize,
    opened_at: Option<Instant>,
    probes_started: usize,
    probes_ok: usize,
    in_flight: usize,
    rejected: u64,
    /// Bumped by [`Breaker::reset`]: outcomes of calls started before it no longer count.
    generation: u64,
}

/// A call the breaker let through; hand it back to [`Breaker::finish`] with the outcome.
#[derive(Debug)]
#[must_use = "a started call must be finished, or it holds its bulkhead place for ever"]
pub struct Ticket {
    generation: u64,
}

/// One breaker with its bulkhead.
#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    inner: Mutex<Inner>,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Breaker {
            config,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                outcomes: VecDeque::new(),
                failures: 0,
                exhausted: 0,
                opened_at: None,
                probes_started: 0,
                probes_ok: 0,
                in_flight: 0,
                rejected: 0,
                generation: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks to start a call at `now`. On `Ok`, the caller must report the outcome with
    /// [`Breaker::finish`].
    pub fn try_start(&self, now: Instant) -> Result<Ticket, Rejected> {
        let mut s = self.lock();
        if s.state == BreakerState::Open {
            let opened = s.opened_at.unwrap_or(now);
            let elapsed = now.saturating_duration_since(opened);
            if elapsed < self.config.open_for {
                s.rejected += 1;
                return Err(Rejected::Open(self.config.open_for - elapsed));
            }
            s.state = BreakerState::HalfOpen;
            s.probes_started = 0;
            s.probes_ok = 0;
        }
        if s.state == BreakerState::HalfOpen {
            if s.probes_started >= self.config.half_open_probes.max(1) {
                s.rejected += 1;
                return Err(Rejected::Probing);
            }
            s.probes_started += 1;
        }
        if s.in_flight >= self.config.max_concurrent.max(1) {
            if s.state == BreakerState::HalfOpen {
                s.probes_started -= 1;
            }
            s.rejected += 1;
            return Err(Rejected::Full);
        }
        s.in_flight += 1;
        Ok(Ticket {
            generation: s.generation,
        })
    }

    /// Starts afresh, closed with no outcomes recorded: the callee was replaced (swapped or
    /// rolled back), and what its old version did says nothing about the new one. Calls in
    /// flight keep their bulkhead places until they finish, but their outcomes are ignored.
    pub fn reset(&self) {
        let mut s = self.lock();
        s.state = BreakerState::Closed;
        Self::forget(&mut s);
        s.opened_at = None;
        s.probes_started = 0;
        s.probes_ok = 0;
        s.generation += 1;
    }

    /// Reports how a call started with [`Breaker::try_start`] went.
    pub fn finish(&self, ticket: Ticket, verdict: Verdict, now: Instant) {
        let mut s = self.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        if ticket.generation != s.generation {
            return;
        }
        match s.state {
            BreakerState::HalfOpen => {
                if verdict != Verdict::Ok {
                    self.open(&mut s, now);
                } else {
                    s.probes_ok += 1;
                    if s.probes_ok >= self.config.half_open_probes.max(1) {
                        s.state = BreakerState::Closed;
                        Self::forget(&mut s);
                    }
                }
            }
            BreakerState::Closed => {
                Self::count(&mut s, verdict, 1);
                s.outcomes.push_back(verdict);
                while s.outcomes.len() > self.config.window.max(1) {
                    if let Some(old) = s.outcomes.pop_front() {
                        Self::count(&mut s, old, -1);
                    }
                }
                let rate_reached = s.outcomes.len() >= self.config.minimum_calls.max(1)
                    && s.failures as f64 >= self.config.failure_rate * s.outcomes.len() as f64;
                if rate_reached || s.exhausted >= self.config.exhausted_to_open.max(1) {
                    self.open(&mut s, now);
                }
            }
            // A call that started before the breaker opened: its outcome no longer counts.
            BreakerState::Open => {}
        }
    }

    /// Adds (`by` 1) or removes (`by` -1) `verdict` from the window's tallies.
    fn count(s: &mut Inner, verdict: Verdict, by: isize) {
        if verdict != Verdict::Ok {
            s.failures = s.failures.saturating_add_signed(by);
        }
        if verdict == Verdict::Exhausted {
            s.exhausted = s.exhausted.saturating_add_signed(by);
        }
    }

    fn forget(s: &mut Inner) {
        s.outcomes.clear();
        s.failures = 0;
        s.exhausted = 0;
    }

    fn open(&self, s: &mut Inner, now: Instant) {
        s.state = BreakerState::Open;
        s.opened_at = Some(now);
        Self::forget(s);
    }

    /// The breaker's state at `now` (an open breaker whose time is up reads as half-open).
    pub fn status(&self, now: Instant) -> BreakerStatus {
        let s = self.lock();
        let state = match (s.state, s.opened_at) {
            (BreakerState::Open, Some(at)) if now.saturating_duration_since(at) >= self.config.open_for => {
                BreakerState::HalfOpen
            }
            (st, _) => st,
        };
        let n = s.outcomes.len();
        BreakerStatus {
            state,
            failure_rate: (n >= self.config.minimum_calls.max(1)).then(|| s.failures as f64 / n as f64),
            calls: n,
            in_flight: s.in_flight,
            rejected: s.rejected,
        }
    }
}

#[cfg(test)]
mod tests;
