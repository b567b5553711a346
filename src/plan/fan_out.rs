//! Which fan-out an EventLog gets: `Auto` resolved by the number of readers of the log's stream.

use crate::crd::{FanOutMode, MaterializedView, ProjectorRuntime};

/// DynamoDB advises at most two processes reading one stream shard at a time.
pub const MAX_READERS_PER_SHARD: usize = 2;

pub use crate::crd::ResolvedFanOut;

/// Who would read the log's stream with `Direct` fan-out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamReaders {
    /// Views projected by a Lambda: each has an event source mapping of its own on the stream.
    pub lambda_views: usize,
    /// Whether any view runs in-cluster: the operator reads the stream once for all of them.
    pub in_cluster: bool,
}

impl StreamReaders {
    pub fn of<'a>(views: impl IntoIterator<Item = &'a MaterializedView>) -> Self {
        let mut readers = StreamReaders::default();
        for v in views {
            match v.spec.projector.runtime {
                ProjectorRuntime::Lambda => readers.lambda_views += 1,
                ProjectorRuntime::InCluster => readers.in_cluster = true,
            }
        }
        readers
    }

    fn direct_total(self) -> usize {
        self.lambda_views + usize::from(self.in_cluster)
    }
}

/// `Sns` and `Direct` are taken as declared; `Auto` is `Direct` while the stream's readers stay within
/// DynamoDB's advice of two per shard, and `Sns` beyond (one router reads, topics fan out).
pub fn resolve_fan_out(mode: FanOutMode, readers: StreamReaders) -> ResolvedFanOut {
    match mode {
        FanOutMode::Sns => ResolvedFanOut::Sns,
        FanOutMode::Direct => ResolvedFanOut::Direct,
        FanOutMode::Auto if readers.direct_total() <= MAX_READERS_PER_SHARD => ResolvedFanOut::Direct,
        FanOutMode::Auto => ResolvedFanOut::Sns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readers(lambda_views: usize, in_cluster: bool) -> StreamReaders {
        StreamReaders { lambda_views, in_cluster }
    }

    #[test]
    fn declared_modes_are_kept() {
        assert_eq!(
            resolve_fan_out(FanOutMode::Sns, readers(0, false)),
            ResolvedFanOut::Sns
        );
        assert_eq!(
            resolve_fan_out(FanOutMode::Direct, readers(9, true)),
            ResolvedFanOut::Direct
        );
    }

    #[test]
    fn auto_is_direct_up_to_two_readers() {
        assert_eq!(
            resolve_fan_out(FanOutMode::Auto, readers(0, false)),
            ResolvedFanOut::Direct
        );
        assert_eq!(
            resolve_fan_out(FanOutMode::Auto, readers(2, false)),
            ResolvedFanOut::Direct
        );
        assert_eq!(
            resolve_fan_out(FanOutMode::Auto, readers(1, true)),
            ResolvedFanOut::Direct
        );
        assert_eq!(
            resolve_fan_out(FanOutMode::Auto, readers(3, false)),
            ResolvedFanOut::Sns
        );
        assert_eq!(
            resolve_fan_out(FanOutMode::Auto, readers(2, true)),
            ResolvedFanOut::Sns
        );
    }
}
