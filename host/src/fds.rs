//! The process's open-file limit: every connection is a file descriptor, so the server raises
//! its soft limit to the hard one at start (as nginx's `worker_rlimit_nofile` and Go's runtime
//! do), and sizes its default connection cap from what it may open.

// getrlimit and setrlimit have no safe wrapper in std; each call says why it is sound.
#![allow(unsafe_code)]

/// Descriptors kept back from the connection cap: the database, compiled components, the
/// watch directory, the runtime's own.
const RESERVED: u64 = 256;

/// The open-file limits (soft, hard), if the system tells them.
fn nofile() -> Option<(u64, u64)> {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own and reads nothing else.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) } == 0;
    // `rlim_t` is u64 on Linux but not on every system libc supports.
    #[allow(clippy::unnecessary_cast)]
    let limits = (l.rlim_cur as u64, l.rlim_max as u64);
    ok.then_some(limits)
}

/// Raises the soft open-file limit to the hard one; returns the soft limit now in force.
pub fn raise_nofile_limit() -> Option<u64> {
    let (soft, hard) = nofile()?;
    if soft < hard {
        let l = libc::rlimit {
            rlim_cur: hard as libc::rlim_t,
            rlim_max: hard as libc::rlim_t,
        };
        // SAFETY: setrlimit reads the struct we own; raising the soft limit up to the hard
        // one is always allowed.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &l) } == 0 {
            return Some(hard);
        }
    }
    Some(soft)
}

/// Connections the server can hold with `limit` descriptors, keeping some back.
pub fn connections_for(limit: u64) -> usize {
    limit.saturating_sub(RESERVED).clamp(64, 1_000_000) as usize
}

/// The default connection cap: what the hard open-file limit allows, at most 100,000.
pub fn default_max_connections() -> usize {
    nofile()
        .map(|(_, hard)| connections_for(hard).min(100_000))
        .unwrap_or(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_keeps_descriptors_back_and_has_a_floor() {
        assert_eq!(connections_for(20_000), 19_744);
        assert_eq!(connections_for(100), 64);
        let soft = raise_nofile_limit().expect("Linux tells its limits");
        let (now, hard) = nofile().unwrap();
        assert_eq!((soft, now), (hard, hard), "raised to the hard limit");
        assert!(default_max_connections() <= connections_for(hard));
    }
}
