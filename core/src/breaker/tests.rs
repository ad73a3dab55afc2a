//! The breaker's state machine, driven with made-up instants.

use super::*;

fn config() -> BreakerConfig {
    BreakerConfig {
        window: 10,
        minimum_calls: 4,
        failure_rate: 0.5,
        open_for: Duration::from_secs(5),
        half_open_probes: 2,
        max_concurrent: 3,
        exhausted_to_open: 2,
    }
}

fn call(b: &Breaker, ok: bool, t: Instant) -> Result<(), Rejected> {
    let verdict = if ok { Verdict::Ok } else { Verdict::Failed };
    finish(b, verdict, t)
}

fn finish(b: &Breaker, verdict: Verdict, t: Instant) -> Result<(), Rejected> {
    let ticket = b.try_start(t)?;
    b.finish(ticket, verdict, t);
    Ok(())
}

#[test]
fn opens_at_the_failure_rate_then_probes_and_closes() {
    let b = Breaker::new(config());
    let t0 = Instant::now();
    call(&b, true, t0).unwrap();
    call(&b, false, t0).unwrap();
    call(&b, true, t0).unwrap();
    assert_eq!(
        b.status(t0).state,
        BreakerState::Closed,
        "3 calls are below the minimum"
    );
    call(&b, false, t0).unwrap();
    assert_eq!(b.status(t0).state, BreakerState::Open, "2 of 4 failed");
    assert!(matches!(
        call(&b, true, t0 + Duration::from_secs(1)),
        Err(Rejected::Open(_))
    ));
    let t1 = t0 + Duration::from_secs(5);
    assert_eq!(b.status(t1).state, BreakerState::HalfOpen);
    let p1 = b.try_start(t1).unwrap();
    let p2 = b.try_start(t1).unwrap();
    assert_eq!(b.try_start(t1).unwrap_err(), Rejected::Probing, "only two probes");
    b.finish(p1, Verdict::Ok, t1);
    b.finish(p2, Verdict::Ok, t1);
    assert_eq!(b.status(t1).state, BreakerState::Closed);
    assert!(b.status(t1).rejected >= 2);
}

#[test]
fn a_failed_probe_opens_again() {
    let b = Breaker::new(config());
    let t0 = Instant::now();
    for _ in 0..4 {
        call(&b, false, t0).unwrap();
    }
    let t1 = t0 + Duration::from_secs(6);
    call(&b, false, t1).unwrap();
    assert_eq!(b.status(t1).state, BreakerState::Open);
    assert!(matches!(
        b.try_start(t1 + Duration::from_secs(1)),
        Err(Rejected::Open(_))
    ));
}

#[test]
fn a_reset_closes_at_once_and_ignores_calls_of_before() {
    let b = Breaker::new(config());
    let t0 = Instant::now();
    let slow = b.try_start(t0).unwrap();
    for _ in 0..4 {
        call(&b, false, t0).unwrap();
    }
    assert_eq!(b.status(t0).state, BreakerState::Open);
    b.reset();
    assert_eq!(b.status(t0).state, BreakerState::Closed);
    assert_eq!(b.status(t0).in_flight, 1, "the call in flight keeps its place");
    // The old version's last call fails after the reset: it does not count.
    b.finish(slow, Verdict::Failed, t0);
    assert_eq!((b.status(t0).calls, b.status(t0).in_flight), (0, 0));
    for _ in 0..3 {
        call(&b, false, t0).unwrap();
    }
    call(&b, true, t0).unwrap();
    assert_eq!(
        b.status(t0).state,
        BreakerState::Open,
        "the new version's own failures still open it"
    );
}

#[test]
fn the_window_forgets_old_failures() {
    let b = Breaker::new(BreakerConfig {
        window: 4,
        minimum_calls: 4,
        ..config()
    });
    let t = Instant::now();
    call(&b, false, t).unwrap();
    for _ in 0..6 {
        call(&b, true, t).unwrap();
    }
    call(&b, false, t).unwrap();
    assert_eq!(b.status(t).state, BreakerState::Closed, "1 of the last 4 failed");
}

#[test]
fn the_bulkhead_caps_calls_in_flight() {
    let b = Breaker::new(config());
    let t = Instant::now();
    let mut started: Vec<Ticket> = (0..3).map(|_| b.try_start(t).unwrap()).collect();
    assert_eq!(b.try_start(t).unwrap_err(), Rejected::Full);
    b.finish(started.pop().unwrap(), Verdict::Ok, t);
    started.push(b.try_start(t).unwrap());
    assert_eq!(b.status(t).in_flight, 3);
}

#[test]
fn calls_that_use_up_a_limit_open_it_before_the_minimum() {
    let b = Breaker::new(config());
    let t = Instant::now();
    finish(&b, Verdict::Exhausted, t).unwrap();
    assert_eq!(b.status(t).state, BreakerState::Closed, "one is not a pattern");
    for _ in 0..5 {
        call(&b, true, t).unwrap();
    }
    finish(&b, Verdict::Exhausted, t).unwrap();
    assert_eq!(
        b.status(t).state,
        BreakerState::Open,
        "two in the window, 2 of 7 failed"
    );
}

#[test]
fn exhausted_calls_leave_the_window_like_the_others() {
    let b = Breaker::new(BreakerConfig {
        window: 4,
        ..config()
    });
    let t = Instant::now();
    finish(&b, Verdict::Exhausted, t).unwrap();
    for _ in 0..4 {
        call(&b, true, t).unwrap();
    }
    finish(&b, Verdict::Exhausted, t).unwrap();
    assert_eq!(
        b.status(t).state,
        BreakerState::Closed,
        "the first one has left the window"
    );
}
