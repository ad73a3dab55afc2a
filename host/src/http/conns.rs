//! Which connections the server holds: at most `max_total` at once and `max_per_client` from
//! one client address, so that one client cannot lock everyone else out; and, near the limit,
//! idle keep-alive connections are closed early (oldest idle first) to make room for new
//! clients, as nginx and Envoy do. Idle connections cost little in tokio, so the limits are
//! high: a flood of them is answered by reaping, not by refusing newcomers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// How many connections are held, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once, from everyone.
    pub max_total: usize,
    /// Connections open at once from one client address.
    pub max_per_client: usize,
}

/// Why a connection was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// Its client holds `max_per_client` connections already.
    PerClient,
    /// `max_total` are open and none was idle to make room.
    Full,
}

/// Above this share of `max_total`, idle connections are reaped.
const HIGH_WATER: f64 = 0.9;
/// Reaping closes idle connections until this share of `max_total` is open.
const LOW_WATER: f64 = 0.8;
/// A connection idle for less than this is not reaped while there is still room: it is
/// likely between two requests of a busy client.
const MIN_IDLE: Duration = Duration::from_millis(250);

/// The connections held.
pub(super) struct Conns {
    limits: ConnectionLimits,
    epoch: Instant,
    state: Mutex<State>,
    /// Signalled whenever a connection goes away, for shutdown to wait on.
    gone: Notify,
}

#[derive(Default)]
struct State {
    next_id: u64,
    per_client: HashMap<IpAddr, usize>,
    live: HashMap<u64, Arc<Conn>>,
}

impl State {
    /// Gives back one of `client`'s places.
    fn release(&mut self, client: IpAddr) {
        if let Some(n) = self.per_client.get_mut(&client) {
            *n -= 1;
            if *n == 0 {
                self.per_client.remove(&client);
            }
        }
    }
}

/// One held connection, as the server task and the reaper see it.
pub(super) struct Conn {
    id: u64,
    client: IpAddr,
    /// Requests being served on it.
    busy: AtomicUsize,
    /// When it last started or finished a request, in ms since `Conns::epoch`.
    last_active: AtomicU64,
    /// Told to close gracefully (finish what it serves, then close).
    close: Notify,
}

impl Conn {
    /// Waits until the connection is asked to close.
    pub(super) async fn close_requested(&self) {
        self.close.notified().await;
    }
}

/// A connection's place, given back when dropped.
pub(super) struct Admitted {
    conns: Arc<Conns>,
    conn: Arc<Conn>,
}

impl Admitted {
    /// The connection.
    pub(super) fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }

    /// Marks a request started on it; the guard marks it finished.
    pub(super) fn request(&self) -> Busy {
        self.conn.busy.fetch_add(1, Ordering::AcqRel);
        self.touch();
        Busy {
            conn: self.conn.clone(),
            epoch: self.conns.epoch,
        }
    }

    fn touch(&self) {
        self.conn
            .last_active
            .store(self.conns.now_ms(), Ordering::Release);
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut s = self.conns.lock();
        // A reaped connection was given back when it was reaped.
        if s.live.remove(&self.conn.id).is_some() {
            s.release(self.conn.client);
        }
        drop(s);
        self.conns.gone.notify_waiters();
    }
}

/// A request in progress on a connection; a connection with none is idle.
pub(super) struct Busy {
    conn: Arc<Conn>,
    epoch: Instant,
}

impl Drop for Busy {
    fn drop(&mut self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.conn.last_active.store(now, Ordering::Release);
        self.conn.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Conns {
    /// No connections yet.
    pub(super) fn new(limits: ConnectionLimits) -> Arc<Self> {
        Arc::new(Conns {
            limits: ConnectionLimits {
                max_total: limits.max_total.max(1),
                max_per_client: limits.max_per_client.max(1),
            },
            epoch: Instant::now(),
            state: Mutex::new(State::default()),
            gone: Notify::new(),
        })
    }

    // A std mutex: held for map updates only, never across an await.
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Connections open now.
    pub(super) fn open(&self) -> usize {
        self.lock().live.len()
    }

    /// Takes a connection from `client`, making room by closing idle ones when the server is
    /// near or at its limit.
    pub(super) fn admit(self: &Arc<Self>, client: IpAddr) -> Result<Admitted, Refused> {
        let mut s = self.lock();
        if s.per_client.get(&client).copied().unwrap_or(0) >= self.limits.max_per_client {
            return Err(Refused::PerClient);
        }
        let high = ((self.limits.max_total as f64) * HIGH_WATER) as usize;
        if s.live.len() >= high {
            // At the limit, any idle connection goes; short of it, only those idle a while.
            let full = s.live.len() >= self.limits.max_total;
            self.reap(&mut s, if full { Duration::ZERO } else { MIN_IDLE });
            if full && s.live.len() >= self.limits.max_total {
                return Err(Refused::Full);
            }
        }
        let id = s.next_id;
        s.next_id += 1;
        let conn = Arc::new(Conn {
            id,
            client,
            busy: AtomicUsize::new(0),
            last_active: AtomicU64::new(self.now_ms()),
            close: Notify::new(),
        });
        s.live.insert(id, conn.clone());
        *s.per_client.entry(client).or_insert(0) += 1;
        Ok(Admitted {
            conns: self.clone(),
            conn,
        })
    }

    /// Asks idle connections (idle for at least `min_idle`), oldest idle first, to close,
    /// until the low-water mark is reached. They stay counted until their tasks end, which
    /// for an idle connection is at once; what is asked to close is not asked twice.
    fn reap(&self, s: &mut State, min_idle: Duration) {
        let low = ((self.limits.max_total as f64) * LOW_WATER) as usize;
        let now = self.now_ms();
        let mut idle: Vec<(u64, u64)> = s
            .live
            .values()
            .filter(|c| c.busy.load(Ordering::Acquire) == 0)
            .map(|c| (c.last_active.load(Ordering::Acquire), c.id))
            .filter(|(last, _)| now.saturating_sub(*last) >= min_idle.as_millis() as u64)
            .collect();
        idle.sort_unstable();
        let excess = s.live.len().saturating_sub(low);
        for (_, id) in idle.into_iter().take(excess) {
            if let Some(c) = s.live.remove(&id) {
                // Given back now, so that the newcomer has its place; the task closes the
                // socket as soon as it sees the request.
                s.release(c.client);
                c.close.notify_one();
            }
        }
    }

    /// Asks every connection to close gracefully.
    pub(super) fn close_all(&self) {
        for c in self.lock().live.values() {
            c.close.notify_one();
        }
    }

    /// Waits until no connection is open, or `grace` has passed; returns whether all closed.
    pub(super) async fn drained(&self, grace: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let gone = self.gone.notified();
            if self.open() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, gone).await.is_err() {
                return self.open() == 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[tokio::test]
    async fn one_client_gets_its_share_and_no_more() {
        let c = Conns::new(ConnectionLimits {
            max_total: 100,
            max_per_client: 3,
        });
        let held: Vec<_> = (0..3).map(|_| c.admit(ip(2)).unwrap()).collect();
        assert_eq!(c.admit(ip(2)).err(), Some(Refused::PerClient));
        let other = c.admit(ip(3)).unwrap();
        drop(held);
        assert_eq!(c.open(), 1);
        c.admit(ip(2)).unwrap();
        drop(other);
    }

    #[tokio::test]
    async fn near_the_limit_the_longest_idle_make_room() {
        let c = Conns::new(ConnectionLimits {
            max_total: 10,
            max_per_client: 100,
        });
        let mut held: Vec<_> = (0..9).map(|_| c.admit(ip(2)).unwrap()).collect();
        // One of them is serving a request: it is never reaped.
        let busy = held[0].request();
        // Nothing is idle long enough yet, and there is still room.
        held.push(c.admit(ip(4)).unwrap());
        assert_eq!(c.open(), 10);
        tokio::time::sleep(MIN_IDLE + Duration::from_millis(20)).await;
        // At the limit: idle ones are asked to close, down to the low-water mark.
        let newcomer = c.admit(ip(3)).unwrap();
        assert_eq!(c.open(), 8 + 1);
        let asked: Vec<bool> = held
            .iter()
            .map(|h| h.conn().close.notified().now_or_never_ready())
            .collect();
        assert!(!asked[0], "the busy connection stays");
        assert_eq!(asked.iter().filter(|a| **a).count(), 2);
        drop((busy, newcomer));
    }

    #[tokio::test]
    async fn full_of_busy_connections_refuses() {
        let c = Conns::new(ConnectionLimits {
            max_total: 2,
            max_per_client: 100,
        });
        let a = c.admit(ip(2)).unwrap();
        let b = c.admit(ip(2)).unwrap();
        let (_ra, _rb) = (a.request(), b.request());
        assert_eq!(c.admit(ip(3)).err(), Some(Refused::Full));
    }

    /// Whether a `notified()` future completes at once (a stored permit).
    trait NowOrNever {
        fn now_or_never_ready(self) -> bool;
    }

    impl<F: std::future::Future> NowOrNever for F {
        fn now_or_never_ready(self) -> bool {
            let waker = std::task::Waker::noop();
            let mut cx = std::task::Context::from_waker(waker);
            let mut f = std::pin::pin!(self);
            f.as_mut().poll(&mut cx).is_ready()
        }
    }
}
