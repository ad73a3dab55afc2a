//! A cluster host's gauges: its role, the writer it sees, the position it applied, the log's
//! last position it knows and its lag, each labelled with the host. Without a cluster the
//! families have no series.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::cluster::ClusterStatus;

/// One host of a cluster, and what it is.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabels {
    host: String,
    /// `writer`, `catching up` or `follower`.
    role: &'static str,
}

/// One host of a cluster.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabel {
    host: String,
}

/// The host that writes, as one host sees it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriterLabels {
    host: String,
    writer: String,
}

/// A host's part in a cluster; without a cluster the families have no series.
pub(super) struct ClusterGauges {
    role: Family<RoleLabels, Gauge>,
    writer: Family<WriterLabels, Gauge>,
    applied: Family<HostLabel, Gauge>,
    log_last: Family<HostLabel, Gauge>,
    lag: Family<HostLabel, Gauge>,
    refused: Family<HostLabel, Gauge>,
    stopped: Family<HostLabel, Gauge>,
}

impl ClusterGauges {
    pub(super) fn register(registry: &mut Registry) -> ClusterGauges {
        let g = ClusterGauges {
            role: Family::default(),
            writer: Family::default(),
            applied: Family::default(),
            log_last: Family::default(),
            lag: Family::default(),
            refused: Family::default(),
            stopped: Family::default(),
        };
        registry.register(
            "cluster_role",
            "1 for this host's role in the cluster (writer, catching up, follower), 0 for the others",
            g.role.clone(),
        );
        registry.register(
            "cluster_writer",
            "1 for the host this host last saw writing",
            g.writer.clone(),
        );
        registry.register(
            "cluster_applied_position",
            "The position of the last log record applied on this host",
            g.applied.clone(),
        );
        registry.register(
            "cluster_log_position",
            "The last position of the cluster's log this host knows of",
            g.log_last.clone(),
        );
        registry.register(
            "cluster_lag_records",
            "Records of the cluster's log not yet applied on this host",
            g.lag.clone(),
        );
        registry.register(
            "cluster_refused_messages",
            "Messages of the cluster's log this host refused (not records of this log following the last one applied)",
            g.refused.clone(),
        );
        registry.register(
            "cluster_stopped",
            "1 while this host has stopped applying the cluster's log (see /health/ready for why)",
            g.stopped.clone(),
        );
        g
    }

    pub(super) fn set(&self, s: &ClusterStatus) {
        for role in ["writer", "catching up", "follower", "stopped"] {
            let labels = RoleLabels {
                host: s.host.clone(),
                role,
            };
            self.role.get_or_create(&labels).set(i64::from(role == s.role));
        }
        self.writer.clear();
        if let Some(writer) = &s.writer {
            let labels = WriterLabels {
                host: s.host.clone(),
                writer: writer.clone(),
            };
            self.writer.get_or_create(&labels).set(1);
        }
        let host = HostLabel { host: s.host.clone() };
        self.applied.get_or_create(&host).set(s.applied as i64);
        self.log_last.get_or_create(&host).set(s.log_last as i64);
        self.lag.get_or_create(&host).set(s.lag as i64);
        self.refused.get_or_create(&host).set(s.refused as i64);
        self.stopped
            .get_or_create(&host)
            .set(i64::from(s.stopped.is_some()));
    }
}
